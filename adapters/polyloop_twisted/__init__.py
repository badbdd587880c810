"""The Twisted backend: ``polyloop.run(main, backend="twisted", reactor="epoll")``.

``reactor`` is ``"epoll"`` (the default where available), ``"poll"``, ``"select"`` or
``"asyncio"``. Each run builds a private reactor; the global
``twisted.internet.reactor`` is never imported.
"""

from ._backend import TwistedBackend as TwistedBackend

__all__ = ["TwistedBackend"]
TwistedBackend.__module__ = "polyloop_twisted"
