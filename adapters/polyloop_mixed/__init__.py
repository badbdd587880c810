"""Mixed mode: asyncio, Tornado, Twisted and gevent in one process and one thread.

``polyloop.run(main, backend="mixed")`` runs ``main`` with all four frameworks on one
set of machinery, each available as a session; ``polyloop_mixed.session(name)`` gives
the session of a framework (``"asyncio"``, ``"tornado"``, ``"twisted"``, ``"gevent"``).
``polyloop_mixed.attach()`` adds the asyncio, Tornado and Twisted sessions to an
application that already runs one of them on an asyncio loop. Importing this package
imports no framework.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from polyloop.lowlevel import lazy_attributes

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

__getattr__ = lazy_attributes(
    "polyloop_mixed",
    {
        n: f"._session:{n}"
        for n in ("HubSelector", "Mixed", "MixedLoop", "attach", "session", "sessions")
    },
)


MixedBackend.__module__ = "polyloop_mixed"
