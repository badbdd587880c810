"""The kit's own dependencies, checked before anything imports them.

The conformance suite needs the extra ``polyloop[conformance]``: the apps' sans-io
parsers (h11, wsproto), trustme's test certificates and rich's tables. The core does not,
so ``pip install polyloop`` leaves them out; importing the suite without them says which
extra to install instead of failing deep inside an app module.
"""

from __future__ import annotations

import importlib.util

REQUIREMENTS = ("h11", "wsproto", "trustme", "rich")

_missing = [name for name in REQUIREMENTS if importlib.util.find_spec(name) is None]
if _missing:
    raise ImportError(
        f"polyloop_conformance needs {', '.join(_missing)}: pip install 'polyloop[conformance]'"
    )
