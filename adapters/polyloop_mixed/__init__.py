"""Mixed mode: asyncio, Tornado, Twisted and gevent in one process and one thread.

``polyloop.run(main, backend="mixed")`` runs ``main`` with all four frameworks on one
set of machinery, each available as a session; ``polyloop_mixed.session(name)`` gives
the session of a framework (``"asyncio"``, ``"tornado"``, ``"twisted"``, ``"gevent"``).
``polyloop_mixed.attach()`` adds the asyncio, Tornado and Twisted sessions to an
application that already runs one of them on an asyncio loop.
"""

from ._session import FRAMEWORKS as FRAMEWORKS
from ._session import HubSelector as HubSelector
from ._session import Mixed as Mixed
from ._session import MixedBackend as MixedBackend
from ._session import MixedLoop as MixedLoop
from ._session import attach as attach
from ._session import session as session
from ._session import sessions as sessions

__all__ = [
    "FRAMEWORKS", "HubSelector", "Mixed", "MixedBackend", "MixedLoop", "attach", "session",
    "sessions",
]  # fmt: skip
for _obj in (HubSelector, Mixed, MixedBackend, MixedLoop, attach, session, sessions):
    _obj.__module__ = "polyloop_mixed"
