"""The asyncio backend (optionally on uvloop): ``polyloop.run(main, backend="asyncio")``.

Host mode needs nothing from here: polyloop code awaited in any asyncio task finds this
backend's session for the running loop by itself.
"""

from ._session import AsyncioBackend as AsyncioBackend
from ._session import AsyncioSession as AsyncioSession

__all__ = ["AsyncioBackend", "AsyncioSession"]
AsyncioBackend.__module__ = AsyncioSession.__module__ = "polyloop_asyncio"
