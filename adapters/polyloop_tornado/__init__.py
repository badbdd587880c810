"""The Tornado backend: ``polyloop.run(main, backend="tornado")``, or host mode.

Tornado's IOLoop schedules, ``TCPServer`` accepts, ``IOStream`` and ``SSLIOStream`` move
the bytes. Host mode needs nothing from here: polyloop code awaited in a Tornado
``RequestHandler`` or any coroutine on a running IOLoop finds that IOLoop's session by
itself. Needs ``pip install 'polyloop[tornado]'``.
"""

from ._session import TornadoBackend as TornadoBackend
from ._session import TornadoSession as TornadoSession

__all__ = ["TornadoBackend", "TornadoSession"]
TornadoBackend.__module__ = TornadoSession.__module__ = "polyloop_tornado"
