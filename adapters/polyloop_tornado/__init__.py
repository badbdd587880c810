"""The Tornado backend: ``polyloop.run(main, backend="tornado")``, or host mode.

Tornado's IOLoop schedules, ``TCPServer`` accepts, ``IOStream`` and ``SSLIOStream`` move
the bytes. Host mode needs nothing from here: polyloop code awaited in a Tornado
``RequestHandler`` or any coroutine on a running IOLoop finds that IOLoop's session by
itself. ``to_tornado`` bridges any future into a Tornado ``Future``. Needs ``pip install
'polyloop[tornado]'``; importing this package imports no Tornado.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from polyloop.lowlevel import lazy_attributes

from ._backend import TornadoBackend as TornadoBackend
from ._backend import to_tornado as to_tornado

if TYPE_CHECKING:
    from ._session import TornadoSession as TornadoSession

__all__ = ["TornadoBackend", "TornadoSession", "to_tornado"]


__getattr__ = lazy_attributes("polyloop_tornado", {"TornadoSession": "._session:TornadoSession"})


TornadoBackend.__module__ = to_tornado.__module__ = "polyloop_tornado"
