"""Mixed mode: asyncio, Tornado, Twisted and gevent in one process and one thread.

``polyloop.run(main, backend="mixed")`` runs ``main`` with all four frameworks on one
set of machinery, each available as a session; ``polyloop_mixed.session(name)`` gives
the session of a framework (``"asyncio"``, ``"tornado"``, ``"twisted"``, ``"gevent"``).
``polyloop_mixed.attach()`` adds the asyncio, Tornado and Twisted sessions to an
application that already runs one of them on an asyncio loop. Importing this package
imports no framework.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._backend import FRAMEWORKS as FRAMEWORKS
from ._backend import MixedBackend as MixedBackend

if TYPE_CHECKING:
    from ._session import HubSelector as HubSelector
    from ._session import Mixed as Mixed
    from ._session import MixedLoop as MixedLoop
    from ._session import attach as attach
    from ._session import session as session
    from ._session import sessions as sessions

__all__ = [
    "FRAMEWORKS", "HubSelector", "Mixed", "MixedBackend", "MixedLoop", "attach", "session",
    "sessions",
]  # fmt: skip

_LAZY = ("HubSelector", "Mixed", "MixedLoop", "attach", "session", "sessions")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import _session

        value = getattr(_session, name)
        value.__module__ = "polyloop_mixed"
        return value
    raise AttributeError(f"module 'polyloop_mixed' has no attribute {name!r}")


MixedBackend.__module__ = "polyloop_mixed"
