"""The Tornado backend's class: detection, host mode, bridges.

Rule: this file imports no Tornado (``polyloop.current_backend()`` loads every installed
backend class to ask its ``detect``); Tornado is imported once a session is made.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import polyloop
from polyloop.lowlevel import Session

__all__ = ["TornadoBackend"]

T = TypeVar("T")


class TornadoBackend(polyloop.Backend):
    """polyloop on Tornado: ``polyloop.run(main, backend="tornado")``, or host mode in a
    Tornado application (``await`` polyloop code in a ``RequestHandler``). No options."""

    name = "tornado"
    native_tls = False  # the core's TLS layer on the core's transports (see _session)
    requires = ("tornado", "tornado")
    detect_order = 30  # before asyncio's: an IOLoop wraps a running asyncio loop

    @classmethod
    def framework_version(cls) -> str:
        import tornado

        return f"Tornado {tornado.version}"

    def own_loop(self, body: Callable[[Session], Coroutine[Any, Any, T]]) -> T:
        from ._session import own_ioloop

        return own_ioloop(self, body)

    def borrow_loop(self, native: Any) -> Session:
        from ._session import borrow_ioloop

        return borrow_ioloop(self, native)

    @classmethod
    def running_native(cls, *, soon: bool = False) -> Any:
        # Never IOLoop.current(): it would make an IOLoop for any asyncio loop, so a plain
        # asyncio application would get one. The existing mapping is looked up instead.
        # Not in mixed mode, where every framework shares the loop and a plain asyncio task
        # is asyncio's (Tornado's own code names its session through the context).
        ioloop_module = sys.modules.get("tornado.ioloop")
        loop = asyncio._get_running_loop()
        if ioloop_module is None or loop is None or getattr(loop, "_polyloop_mixed", False):
            return None
        return ioloop_module.IOLoop._ioloop_for_asyncio.get(loop)

    def run_hosted(self, main: Callable[[], Awaitable[T]]) -> T:
        # As a Tornado script does: IOLoop.current().run_sync(...), one IOLoop per process.
        from tornado.ioloop import IOLoop

        return IOLoop.current().run_sync(main)  # type: ignore[no-any-return]


def to_tornado(x: Any, *, ioloop: Any = None) -> asyncio.Future[Any]:
    """``x`` (any future, task, coroutine or native future ``polyloop.bridge`` takes) as a
    Tornado ``Future`` of ``ioloop`` (default ``IOLoop.current()``).

    Tornado's ``Future`` is ``asyncio.Future`` (Tornado 5 on), so this is
    ``polyloop.bridge.to_asyncio`` on the ``IOLoop``'s asyncio loop; a ``gen.coroutine``, a
    native coroutine and ``IOLoop.add_future`` all take it."""
    if ioloop is None:
        from tornado.ioloop import IOLoop

        ioloop = IOLoop.current()
    return polyloop.bridge.to_asyncio(x, loop=ioloop.asyncio_loop)
