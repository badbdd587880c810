"""The Tornado backend: ``polyloop.run(main, backend="tornado")``.

Tornado's IOLoop schedules, ``TCPServer``/``TCPClient`` listen and connect, ``IOStream``
and ``SSLIOStream`` move the bytes. Needs ``pip install 'polyloop[tornado]'``.
"""

from ._backend import TornadoBackend as TornadoBackend

__all__ = ["TornadoBackend"]
TornadoBackend.__module__ = "polyloop_tornado"
