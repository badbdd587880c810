"""The Tornado backend: a fresh IOLoop per run, or the application's own (host mode).

Rule: this file is the lifecycle (owning or borrowing an IOLoop), scheduling and
readiness through the IOLoop. Sockets (TCP, Unix, UDP) and TLS are the core's
transports on that readiness (see "sockets" below); tasks are asyncio tasks on the
asyncio loop under the IOLoop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from tornado.ioloop import IOLoop
from tornado.platform.asyncio import BaseAsyncIOLoop

import polyloop
from polyloop.lowlevel import (
    AsyncioTask,
    Callback,
    Session,
    end_with_asyncio_loop,
    fd_of,
    in_asyncio_executor,
)

from ._backend import TornadoBackend

T = TypeVar("T")
log = logging.getLogger("polyloop")


def own_ioloop(backend: TornadoBackend, body: Callable[[Session], Coroutine[Any, Any, T]]) -> T:
    """``TornadoBackend.own_loop``.

    A new IOLoop makes its own asyncio loop, which asyncio.Runner drives (the main task in
    session.context). The shutdown is done here, not by the Runner: Runner.close() closes
    the asyncio loop, and IOLoop.close() must come *before* that. It drops Tornado's
    asyncio->IOLoop entry and then closes the loop; in the other order an IOLoop made
    meanwhile in another thread sees the closed loop, drops the entry itself, and our
    close() fails with KeyError (Tornado's comment in BaseAsyncIOLoop.close; measured: 24
    of 960 runs in 8 threads failed so)."""
    ioloop = IOLoop(make_current=False)
    assert isinstance(ioloop, BaseAsyncIOLoop)
    runner = asyncio.Runner(loop_factory=lambda: ioloop.asyncio_loop)
    try:
        session = TornadoSession(backend, ioloop, owned=True)
        return runner.run(body(session), context=session.context)
    finally:
        try:
            runner.run(_wind_down())
        finally:
            ioloop.close(all_fds=True)  # the runner is dropped, never closed


def borrow_ioloop(backend: TornadoBackend, native: Any) -> Session:
    """``TornadoBackend.borrow_loop``: a session on an IOLoop the application runs."""
    if not isinstance(native, BaseAsyncIOLoop):
        raise TypeError(f"the tornado backend attaches to a running IOLoop, not {native!r}")
    session = TornadoSession(backend, native, owned=False)
    end_with_asyncio_loop(session)  # the IOLoop ends with its asyncio loop
    return session


async def _wind_down() -> None:
    """What ``asyncio.Runner.close()`` does before it closes the loop."""
    loop = asyncio.get_running_loop()
    left = asyncio.all_tasks(loop) - {asyncio.current_task()}
    for task in left:
        task.cancel()
    await asyncio.gather(*left, return_exceptions=True)
    for task in left:
        if not task.cancelled() and task.exception() is not None:
            loop.call_exception_handler(
                {"message": "polyloop.run() shutdown", "exception": task.exception()}
            )
    await loop.shutdown_asyncgens()
    await loop.shutdown_default_executor()


class TornadoSession(Session):
    """A session on one Tornado ``IOLoop``."""

    name = "tornado"

    def __init__(self, backend: TornadoBackend, ioloop: BaseAsyncIOLoop, *, owned: bool):
        super().__init__(backend, ioloop, owned=owned)
        #: The Tornado IOLoop.
        self.ioloop = ioloop
        #: The asyncio loop under it (its tasks run polyloop's).
        self.loop = ioloop.asyncio_loop
        self._readers: dict[int, Callable[[], object]] = {}
        self._writers: dict[int, Callable[[], object]] = {}

    def asyncio_loop(self) -> asyncio.AbstractEventLoop:
        return self.loop

    def host_gone(self) -> bool:
        return self.loop.is_closed()

    # --- tier 1: scheduling ---

    def time(self) -> float:
        return self.ioloop.time()

    def call_soon(self, fn: Callable[..., object], *args: Any) -> polyloop.Handle:
        handle = Callback(fn, args)
        self.ioloop.add_callback(handle)
        return handle

    def start_timer(
        self, delay: float, fn: Callable[..., object], args: tuple[Any, ...]
    ) -> polyloop.Handle:
        return _Timeout(self.ioloop, self.ioloop.call_later(delay, Callback(fn, args)))

    def call_soon_threadsafe(self, fn: Callable[..., object], *args: Any) -> None:
        # add_callback is Tornado's thread-safe entry. The other thread's context knows
        # no session: run in this one's.
        self.ioloop.add_callback(Callback(self.context.run, (fn, *args)))

    # --- tier 1: readiness (one IOLoop handler per fd, for both directions) ---

    def add_reader(self, fd: Any, fn: Callable[[], object]) -> None:
        self._watch(fd, self._readers, fn)

    def remove_reader(self, fd: Any) -> bool:
        return self._unwatch(fd, self._readers)

    def add_writer(self, fd: Any, fn: Callable[[], object]) -> None:
        self._watch(fd, self._writers, fn)

    def remove_writer(self, fd: Any) -> bool:
        return self._unwatch(fd, self._writers)

    def _events(self, fileno: int) -> int:
        return (IOLoop.READ if fileno in self._readers else 0) | (
            IOLoop.WRITE if fileno in self._writers else 0
        )

    def _watch(self, fd: Any, table: dict[int, Callable[[], object]], fn: Any) -> None:
        fileno = fd_of(fd)
        known = self._events(fileno)
        table[fileno] = fn
        if known:
            self.ioloop.update_handler(fileno, self._events(fileno))
        else:
            # The object itself, so that IOLoop.close(all_fds=True) closes a socket as one.
            handler = functools.partial(self._ready, fileno)
            self.ioloop.add_handler(fd, handler, self._events(fileno))

    def _unwatch(self, fd: Any, table: dict[int, Callable[[], object]]) -> bool:
        fileno = fd_of(fd)
        if table.pop(fileno, None) is None:
            return False
        events = self._events(fileno)
        if events:
            self.ioloop.update_handler(fileno, events)
        else:
            self.ioloop.remove_handler(fileno)
        return True

    def _ready(self, fileno: int, fileobj: Any, events: int) -> None:
        # On asyncio, Tornado calls us once per direction (events is READ or WRITE).
        fn = self._readers.get(fileno) if events & IOLoop.READ else None
        if fn is not None:
            fn()
        fn = self._writers.get(fileno) if events & IOLoop.WRITE else None
        if fn is not None:
            fn()

    # --- tasks and threads ---

    def new_task(self, coro: Coroutine[Any, Any, T], name: str | None) -> polyloop.Task[T]:
        return AsyncioTask(self, coro, name, self.loop)

    async def run_in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        # IOLoop.run_in_executor on an asyncio loop is the asyncio loop's (platform/asyncio.py).
        return await in_asyncio_executor(self, self.loop, fn, *args)

    # --- sockets: the core's transports on IOLoop readiness ---
    #
    # Listening and connected sockets are served by the core's acceptor and socket
    # transport (Session's defaults) on add_reader/add_writer above, and TLS by the
    # core's layer (native_tls = False), not by TCPServer and IOStream/SSLIOStream.
    # Measured with pingpong (50 connections x 1 KiB, interleaved rounds): an echo
    # through IOStream ran at 0.89x Tornado's own IOStream echo server (IOStream resolves
    # a future through call_soon per read, copies into its buffer, and re-arms), through
    # the core's transport on the same IOLoop 2.42x. SSLIOStream also reported a TLS
    # record cut in the middle as a clean close; the core's layer reports it as an error,
    # as on every backend (docs/tls.md).


class _Timeout:
    """The handle of a ``call_later``: ``IOLoop.call_later`` returns an opaque timeout."""

    __slots__ = ("ioloop", "timeout")

    def __init__(self, ioloop: IOLoop, timeout: object) -> None:
        self.ioloop = ioloop
        self.timeout = timeout

    def cancel(self) -> None:
        self.ioloop.remove_timeout(self.timeout)
