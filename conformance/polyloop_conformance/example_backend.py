"""A complete polyloop backend on the standard library's ``selectors``, in one sitting.

It is the worked example of ``docs/writing-a-backend.md``: a third party writes this
much, and the core does the rest (tasks, TCP, Unix sockets, UDP, TLS, servers, the
connect loop, disposal). It implements tier 1 of the contract only: a clock, ``call_soon``
/ ``start_timer`` / ``call_soon_threadsafe``, readiness callbacks, owning a loop, and host
mode: borrowing a loop an application runs (``running_native``, ``borrow_loop``), and
running a case the way such an application would (``run_hosted``), so that
``polyloop conformance --host`` runs on it too.
``polyloop conformance --backend polyloop_conformance.example_backend:SelectorsBackend``
runs the whole suite on it, and the project's tests keep it passing.
"""

from __future__ import annotations

import collections
import contextvars
import heapq
import itertools
import logging
import selectors
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ClassVar, TypeVar

import polyloop
from polyloop.lowlevel import Session, signal_cancelled

__all__ = ["SelectorsBackend", "SelectorsSession"]

T = TypeVar("T")
log = logging.getLogger("polyloop")


class _Handle:
    """A call scheduled with ``call_soon``/``call_later``: cancel() before it runs."""

    __slots__ = ("args", "context", "fn", "when")

    def __init__(self, fn: Callable[..., object], args: tuple[Any, ...], when: float) -> None:
        self.fn: Callable[..., object] | None = fn
        self.args = args
        self.when = when
        self.context = contextvars.copy_context()  # callbacks run in the caller's context

    def __lt__(self, other: _Handle) -> bool:
        return self.when < other.when

    def cancel(self) -> None:
        self.fn = None

    def run(self) -> None:
        fn = self.fn
        if fn is None:
            return
        self.fn = None
        try:
            self.context.run(fn, *self.args)
        except Exception:
            log.exception("polyloop: exception in callback %r", fn)


#: The loop running in each thread (what ``running_native`` answers).
_running = threading.local()


class _Loop:
    """The event loop: ready callbacks, a timer heap, a selector, a self-pipe waker."""

    def __init__(self, owner: type[SelectorsBackend]) -> None:
        #: The backend class whose loop this is (a mutant's is its own).
        self.owner = owner
        #: Called when the loop closes (a borrowed session that is still open ends).
        self.on_close: list[Callable[[], object]] = []
        self.selector = selectors.DefaultSelector()
        self.ready: collections.deque[_Handle] = collections.deque()
        self.timers: list[tuple[float, int, _Handle]] = []
        self.order = itertools.count()  # ties in the heap keep FIFO order
        self.from_threads: collections.deque[_Handle] = collections.deque()
        self.waker_r, self.waker_w = socket.socketpair()
        self.waker_r.setblocking(False)
        self.waker_w.setblocking(False)
        self.selector.register(self.waker_r, selectors.EVENT_READ, (self._drain_waker, None))

    def _drain_waker(self) -> None:
        try:
            while self.waker_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        while self.from_threads:
            self.ready.append(self.from_threads.popleft())

    def wake(self) -> None:
        try:
            self.waker_w.send(b"\0")
        except BlockingIOError:
            pass  # a wake-up is pending already

    def run_until(self, done: Callable[[], bool]) -> None:
        outer, _running.loop = getattr(_running, "loop", None), self
        try:
            while not done():
                self.run_once()
        finally:
            _running.loop = outer

    def run_once(self) -> None:
        timeout: float | None = None
        if self.ready:
            timeout = 0
        elif self.timers:
            timeout = max(0.0, self.timers[0][0] - time.monotonic())
        for key, events in self.selector.select(timeout):
            # The callback is looked up when it runs: one removed in the meantime (by an
            # earlier callback of this round) must not run.
            if events & selectors.EVENT_READ:
                self.ready.append(_Handle(self._dispatch, (key.fileobj, 0), 0))
            if events & selectors.EVENT_WRITE:
                self.ready.append(_Handle(self._dispatch, (key.fileobj, 1), 0))
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            self.ready.append(heapq.heappop(self.timers)[2])
        for _ in range(len(self.ready)):  # what these schedule runs next time round
            self.ready.popleft().run()

    def _dispatch(self, fd: Any, which: int) -> None:
        try:
            fn = self.selector.get_key(fd).data[which]
        except (KeyError, ValueError):  # no longer watched, or closed
            return
        if fn is not None:
            fn()

    def watch(self, fd: Any, reader: Any, writer: Any) -> None:
        """Set (or clear, with None) the reader and writer callbacks of ``fd``."""
        try:
            key = self.selector.get_key(fd)
        except KeyError:
            key = None
        old_reader, old_writer = key.data if key is not None else (None, None)
        reader = old_reader if reader is _KEEP else reader
        writer = old_writer if writer is _KEEP else writer
        mask = (selectors.EVENT_READ if reader else 0) | (selectors.EVENT_WRITE if writer else 0)
        if key is None:
            if mask:
                self.selector.register(fd, mask, (reader, writer))
        elif mask:
            self.selector.modify(fd, mask, (reader, writer))
        else:
            self.selector.unregister(fd)

    def watching(self, fd: Any, which: int) -> bool:
        try:
            return self.selector.get_key(fd).data[which] is not None
        except KeyError:
            return False

    def close(self) -> None:
        for fn in self.on_close:
            fn()
        self.selector.close()
        self.waker_r.close()
        self.waker_w.close()


_KEEP = object()


class SelectorsBackend(polyloop.Backend):
    """polyloop on ``selectors`` alone: ``polyloop.run(main, backend=SelectorsBackend)``."""

    name = "selectors"
    #: The session class each run makes (the suite's mutants replace it).
    session_class: ClassVar[type[SelectorsSession]]

    @classmethod
    def framework_version(cls) -> str:
        return f"selectors ({selectors.DefaultSelector.__name__})"

    def own_loop(self, body: Callable[[Session], Coroutine[Any, Any, T]]) -> T:
        loop = _Loop(type(self))
        session = self.session_class(self, loop, owned=True)
        try:
            # Run the loop in the session's context: every callback then sees the
            # session, also those of readiness events (a protocol's connection_made).
            task = session.context.run(session.spawn, body(session))
            escaped: BaseException | None = None
            while not task.done():
                try:
                    session.context.run(loop.run_until, task.done)
                except (SystemExit, KeyboardInterrupt) as exc:
                    # From a callback (sys.exit() in a timer): as asyncio.run, cancel main,
                    # let it clean up and the session end, then raise it. A second one
                    # (a second Ctrl-C on a clean-up that hangs) goes out at once.
                    # (signal_cancelled: the first Ctrl-C cancelled main through the
                    # signal handler, so this KeyboardInterrupt is the second.)
                    if escaped is not None or signal_cancelled(session):
                        raise
                    escaped = exc
                    task.cancel()
            if escaped is not None:
                raise escaped
            return task.result()
        finally:
            loop.close()

    # --- host mode: a loop the application runs ---

    @classmethod
    def running_native(cls, *, soon: bool = False) -> Any:
        loop = getattr(_running, "loop", None)
        return loop if loop is not None and loop.owner is cls else None

    def borrow_loop(self, native: Any) -> Session:
        if not isinstance(native, _Loop):
            raise TypeError(f"the selectors backend attaches to its own loop, not {native!r}")
        session = self.session_class(self, native, owned=False)
        # The end comes with the loop's: whatever is still open then is simply dropped
        # (the loop no longer runs to deliver connection_lost), and the hooks run.
        native.on_close.append(session.mark_ended)
        return session

    def run_hosted(self, main: Callable[[], Awaitable[T]]) -> T:
        # How an application on this loop runs a coroutine: from a loop callback, with
        # polyloop finding the session by itself (detection), until it is done.
        loop = _Loop(type(self))
        outcome: list[polyloop.Task[T]] = []

        async def call() -> T:
            return await main()

        def start() -> None:
            outcome.append(polyloop.current_backend().spawn(call()))

        try:
            loop.ready.append(_Handle(start, (), 0))
            loop.run_until(lambda: bool(outcome) and outcome[0].done())
            return outcome[0].result()
        finally:
            loop.close()


class SelectorsSession(Session):
    """Tier 1 of the contract on a ``_Loop``; everything else is the core's."""

    name = "selectors"

    def __init__(self, backend: SelectorsBackend, loop: _Loop, *, owned: bool = True) -> None:
        super().__init__(backend, loop, owned=owned)
        self.loop = loop

    def time(self) -> float:
        return time.monotonic()

    def call_soon(self, fn: Callable[..., object], *args: Any) -> polyloop.Handle:
        handle = _Handle(fn, args, 0)
        self.loop.ready.append(handle)
        return handle

    def start_timer(
        self, delay: float, fn: Callable[..., object], args: tuple[Any, ...]
    ) -> polyloop.Handle:
        handle = _Handle(fn, args, time.monotonic() + delay)
        heapq.heappush(self.loop.timers, (handle.when, next(self.loop.order), handle))
        return handle

    def call_soon_threadsafe(self, fn: Callable[..., object], *args: Any) -> None:
        handle = _Handle(fn, args, 0)
        # The other thread's context knows no session: run in a copy of the session's
        # (a copy: the loop runs inside session.context, and a context cannot be
        # entered twice at once).
        handle.context = self.context.copy()
        self.loop.from_threads.append(handle)  # deque.append is atomic
        self.loop.wake()

    def add_reader(self, fd: Any, fn: Callable[[], object]) -> None:
        self.loop.watch(fd, fn, _KEEP)

    def remove_reader(self, fd: Any) -> bool:
        watched = self.loop.watching(fd, 0)
        if watched:
            self.loop.watch(fd, None, _KEEP)
        return watched

    def add_writer(self, fd: Any, fn: Callable[[], object]) -> None:
        self.loop.watch(fd, _KEEP, fn)

    def remove_writer(self, fd: Any) -> bool:
        watched = self.loop.watching(fd, 1)
        if watched:
            self.loop.watch(fd, _KEEP, None)
        return watched


SelectorsBackend.session_class = SelectorsSession
