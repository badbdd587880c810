"""The asyncio backend (optionally on uvloop): ``polyloop.run(main, backend="asyncio")``."""

from ._backend import AsyncioBackend as AsyncioBackend

__all__ = ["AsyncioBackend"]
AsyncioBackend.__module__ = "polyloop_asyncio"
