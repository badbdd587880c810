"""The kit's own dependencies, checked before anything imports them.

The conformance suite needs the extra ``polyloop[conformance]``: the apps' sans-io
parsers (h11, wsproto), trustme's test certificates and rich's tables. The core does not,
so ``pip install polyloop`` leaves them out; importing the suite without them says which
extra to install instead of failing deep inside an app module.
"""

from __future__ import annotations

import importlib.util

REQUIREMENTS = ("h11", "wsproto", "trustme", "rich")


def missing_message(missing: list[str]) -> str:
    """What to say when the libraries ``missing`` are not installed."""
    return f"polyloop_conformance needs {', '.join(missing)}: pip install 'polyloop[conformance]'"


_missing = [name for name in REQUIREMENTS if importlib.util.find_spec(name) is None]
if _missing:
    raise ImportError(missing_message(_missing))
