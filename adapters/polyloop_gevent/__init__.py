"""The gevent backend: ``polyloop.run(main, backend="gevent")``.

Coroutines run in greenlets on the thread's hub; nothing is monkey-patched, and it works
the same in a process where ``gevent.monkey.patch_all()`` ran.
"""

from ._backend import GeventBackend as GeventBackend

__all__ = ["GeventBackend"]
GeventBackend.__module__ = "polyloop_gevent"
