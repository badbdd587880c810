"""The Twisted backend: a private reactor per run (``reactor="epoll"``, ``"poll"``,
``"select"``, ``"asyncio"``), or a reactor the application runs (host mode).

Rule: this file is the lifecycle (owning or borrowing a reactor), scheduling and
readiness, tasks' waits on Deferreds. Sockets are the core's transports on that
readiness (see "sockets" below); reactors live in ``_reactor.py``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import ssl as _ssl
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool

import polyloop
from polyloop.lowlevel import (
    Acceptor,
    Callback,
    Session,
    end_with_asyncio_loop,
    fd_of,
    signal_cancelled,
)

from . import _process, _reactor
from ._backend import TwistedBackend
from ._deferreds import DeferredWait, future_of, start, suspend
from ._errors import map_errors, translate
from ._transport import BridgeFactory, Listening, SendAfterReads, TCPPort, UnixPort

__all__ = ["TwistedSession", "borrow_reactor", "own_reactor"]

T = TypeVar("T")

log = logging.getLogger("polyloop")


def own_reactor(backend: TwistedBackend, body: Callable[[Session], Coroutine[Any, Any, T]]) -> T:
    """``TwistedBackend.own_loop``: a private reactor, run until ``body`` is done."""
    reactor = _reactor.build_reactor(backend.reactor_kind)
    session = TwistedSession(backend, reactor, owned=True)
    main: list[polyloop.Task[T]] = []
    escaped: list[BaseException] = []

    def start_main() -> None:
        task = session.spawn(body(session))
        task.add_done_callback(lambda _: reactor.stop())
        main.append(task)

    def on_escape(exc: BaseException) -> None:
        # What asyncio.run does with a SystemExit from a callback: main is cancelled and
        # cleans up (the session ends), then run() raises it.
        if escaped or signal_cancelled(session):
            # A second one (a Ctrl-C on a clean-up that hangs, also after the first
            # Ctrl-C cancelled main through the signal handler): out at once.
            escaped.append(exc)
            reactor.crash()
            return
        escaped.append(exc)
        if main and not main[0].done():
            main[0].cancel()
        elif not main:
            reactor.stop()

    session.on_escape = on_escape
    reactor.callWhenRunning(start_main)
    try:
        session.context.run(_reactor.run_reactor, reactor, on_escape)
    finally:
        _reactor.unbuild_reactor(reactor)
    if escaped:
        if main and not main[0].done():
            session.driver.kill(main[0])
        raise escaped[0]
    if not main or not main[0].done():
        if main:
            session.driver.kill(main[0])  # close the coroutine: no "never awaited"
        raise RuntimeError("the reactor stopped before main() returned")
    return main[0].result()


def borrow_reactor(backend: TwistedBackend, native: Any) -> Session:
    """``TwistedBackend.borrow_loop``: a session on a reactor the application runs."""
    if not all(hasattr(native, a) for a in ("callLater", "addReader", "adoptStreamPort")):
        raise TypeError(f"the twisted backend attaches to a reactor, not {native!r}")
    session = TwistedSession(backend, native, owned=False)
    session.end_with_reactor()
    return session


class _Timer:
    __slots__ = ("_call",)

    def __init__(self, call: Any) -> None:
        self._call = call

    def cancel(self) -> None:
        # DelayedCall.cancel() raises AlreadyCalled/AlreadyCancelled; ours is a no-op.
        if self._call.active():
            self._call.cancel()


def _reraise(exc: BaseException) -> None:
    raise exc


def _call(fn: Callable[..., T], *args: Any) -> T:
    return fn(*args)


class TwistedSession(Session):
    """A session on one Twisted reactor (``session.reactor``)."""

    name = "twisted"

    def __init__(self, backend: TwistedBackend, reactor: Any, *, owned: bool) -> None:
        super().__init__(backend, reactor, owned=owned)
        #: The reactor.
        self.reactor = reactor
        self._loop: asyncio.AbstractEventLoop | None = getattr(reactor, "_asyncioEventloop", None)
        # Where the reactor calls us. An owned posix reactor runs inside session.context
        # and calls everything there. asyncio runs each callback in the context captured
        # when it was scheduled (an AsyncioSelectorReactor's timed calls: the context of
        # whoever rescheduled its timer last, a worker thread's for callFromThread), and a
        # borrowed reactor runs in the application's: each entry then goes into a copy of
        # session.context (a copy: a nested entry must not find it entered already).
        direct = owned and self._loop is None
        self._enter: Callable[..., Any] = _call if direct else self._in_context
        self._logged = self._bind(self._run_logged)
        #: Where a SystemExit or KeyboardInterrupt raised by a callback goes: set by
        #: own_reactor (cancel main, and run() raises it at the end); see escape().
        self.on_escape: Callable[[BaseException], None] | None = None
        self._drain_bound = self._bind(self._drain)
        self._ready: deque[Callback] = deque()
        self._drain_scheduled = False
        self._watches: dict[int, _reactor.Watch] = {}
        self._trigger: Any = None
        #: Sockets on Twisted's tcp.Port/tcp.Connection (option transports="twisted"),
        #: else on the core's transports.
        self._twisted_transports = backend.transports == "twisted"
        #: Transports holding writes until the reactor has dispatched its reads, the
        #: reactor's iteration, and the one in which a write last went out at once.
        #: Counted on an owned posix reactor only (a borrowed one is the application's,
        #: an AsyncioSelectorReactor never iterates): elsewhere nothing is held.
        self._held: list[SendAfterReads] = []
        self._send_held_bound = self._send_held
        self._iteration = self._wrote_in = 0
        self._wrote_by = 0
        self._dispatching = False
        self._batches = owned and self._loop is None
        if self._batches:
            self._count_iterations()

    def _run_logged(self, fn: Callable[..., object], args: tuple[Any, ...]) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("polyloop: exception in callback %r", fn)
        except (SystemExit, KeyboardInterrupt) as exc:
            self.escape(exc)

    def escape(self, exc: BaseException) -> None:
        """A ``SystemExit`` or ``KeyboardInterrupt`` raised by a callback leaves ``run()``
        as itself, as on asyncio. Twisted's reactor would log it and go on (its
        ``runUntilCurrent`` and ``doRead`` catch ``BaseException``), so it never goes
        back to the reactor: an owned reactor cancels main and ``own_reactor`` raises it
        once the session has ended; a reactor on an asyncio loop (mixed mode, a borrowed
        ``AsyncioSelectorReactor``) gets it raised from a plain asyncio callback, which
        asyncio lets out of ``run_forever``; a borrowed posix reactor is the
        application's, and gets it back (its own policy: Twisted logs it)."""
        if self.on_escape is not None:
            self.on_escape(exc)
        elif self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon(_reraise, exc)
        else:
            raise exc

    def bind_received(self, fn: Callable[[bytes], object]) -> Callable[[bytes], None]:
        """``fn`` (a protocol's ``data_received``) as the ``dataReceived`` of a Twisted
        connection (``transports="twisted"``, and the compatibility layer): where this
        session is current, and a SystemExit or KeyboardInterrupt it raises goes to
        ``escape``. Twisted's callers of ``doRead`` (``_doReadOrWrite`` of the posix
        reactors) log and drop every exception, ``BaseException`` included, and
        disconnect: ``sys.exit()`` in ``data_received`` used to end only the connection.
        One more Python frame per read: 52 ns in a microbenchmark, against 14-16 µs of
        server CPU per round trip of a 64-byte echo (0.3 %)."""
        escape = self.escape

        def received(data: bytes) -> None:
            try:
                fn(data)
            except (SystemExit, KeyboardInterrupt) as exc:
                escape(exc)

        return self._bind(received)

    def _in_context(self, fn: Callable[..., T], *args: Any) -> T:
        return self.context.copy().run(fn, *args)

    def _bind(self, fn: Callable[..., T]) -> Callable[..., T]:
        """``fn`` as the reactor should call it: where this session is current."""
        if self._enter is _call:
            return fn
        return functools.partial(self._in_context, fn)

    # --- host mode: the end comes with the reactor's ---

    def end_with_reactor(self) -> None:
        """End with the reactor: a \"before shutdown\" trigger (or the asyncio loop's end)."""
        # "before" triggers run while the reactor still runs, and Twisted waits for the
        # Deferred one returns: the connections close before the reactor stops.
        self._trigger = self.reactor.addSystemEventTrigger("before", "shutdown", self._shutdown)
        loop = self._loop
        if loop is not None and loop.is_running() and _running_loop() is loop:
            end_with_asyncio_loop(self)  # a loop asyncio.run runs, the reactor never stopped

    def _shutdown(self) -> Deferred[None]:
        self._trigger = None
        return start(self, self.end())

    def dispose(self) -> None:
        trigger, self._trigger = self._trigger, None
        if trigger is not None:  # ended by aclose() or the asyncio loop
            self.reactor.removeSystemEventTrigger(trigger)
        super().dispose()

    def host_gone(self) -> bool:
        return self._loop is not None and self._loop.is_closed()

    # --- tier 1 ---

    def time(self) -> float:
        # The clock callLater's delays are measured against: monotonic on every kind of
        # reactor we build (see _reactor.build_reactor).
        return float(self.reactor.seconds())

    def call_soon(self, fn: Callable[..., object], *args: Any) -> polyloop.Handle:
        # A FIFO queue drained once per iteration: Twisted's callLater(0) calls sit in a
        # heap ordered by time only, which does not promise FIFO for equal times.
        call = Callback(fn, args, self.callback_context())  # the caller's context, copied
        self._ready.append(call)
        if not self._drain_scheduled:
            self._drain_scheduled = True
            self.reactor.callLater(0, self._drain_bound)
        return call

    def _drain(self) -> None:
        self._drain_scheduled = False
        ready = self._ready
        for _ in range(len(ready)):  # what is added meanwhile runs next iteration
            self._run_logged(ready.popleft(), ())
        if ready and not self._drain_scheduled:
            self._drain_scheduled = True
            self.reactor.callLater(0, self._drain_bound)

    def start_timer(
        self, delay: float, fn: Callable[..., object], args: tuple[Any, ...]
    ) -> polyloop.Handle:
        context = self.callback_context()  # the caller's, copied: callLater copies none
        return _Timer(self.reactor.callLater(delay, self._logged, context.run, (fn, *args)))

    def call_soon_threadsafe(self, fn: Callable[..., object], *args: Any) -> None:
        # The other thread's context knows no session: always enter ours.
        self.reactor.callFromThread(self._in_context, self._run_logged, fn, args)

    def _set_watch(self, fd: Any, reading: bool, fn: Callable[[], object] | None) -> bool:
        fd = fd_of(fd)
        watch = self._watches.get(fd)
        if watch is None:
            if fn is None:
                return False
            watch = self._watches[fd] = _reactor.Watch(self.reactor, fd, self._logged)
        was = watch.set(reading, fn)
        if watch.reader is None and watch.writer is None:
            del self._watches[fd]
        return was

    # On an AsyncioSelectorReactor (mixed mode, twisted:reactor=asyncio, a borrowed one)
    # the fds go to the asyncio loop under it, directly: the reactor's addReader would
    # wrap each in a FileDescriptor and come back through its _readOrWrite, and there is
    # no epoll quirk to hide (see _reactor.Watch). asyncio runs the callback in the
    # context current when it was added, so it is added in this session's.

    def add_reader(self, fd: Any, fn: Callable[[], object]) -> None:
        if self._loop is None:
            self._set_watch(fd, True, fn)
        else:
            self._enter(self._loop.add_reader, fd, fn)

    def remove_reader(self, fd: Any) -> bool:
        if self._loop is None:
            return self._set_watch(fd, True, None)
        return self._loop.remove_reader(fd)

    def add_writer(self, fd: Any, fn: Callable[[], object]) -> None:
        if self._loop is None:
            self._set_watch(fd, False, fn)
        else:
            self._enter(self._loop.add_writer, fd, fn)

    def remove_writer(self, fd: Any) -> bool:
        if self._loop is None:
            return self._set_watch(fd, False, None)
        return self._loop.remove_writer(fd)

    # --- writes held until the reads of an iteration are dispatched (SendAfterReads) ---

    def _count_iterations(self) -> None:
        """Count the reactor's iterations (``doIteration``: one poll and the dispatch of
        what it returned), for ``hold``."""
        reactor = self.reactor
        poll = reactor.doIteration

        def do_iteration(delay: float | None) -> None:
            self._iteration += 1
            self._dispatching = True
            try:
                poll(delay)
            finally:
                self._dispatching = False

        reactor.doIteration = do_iteration

    def batching(self, transport: SendAfterReads) -> bool:
        """Whether a write of ``transport`` now should be held until this iteration's
        reads are dispatched: yes if another transport's write went out at once earlier
        in this iteration. The first goes at once, and so do the later writes of that
        same transport (one busy connection, ping-pong or a pipeline: nothing to batch).
        Only while the reactor dispatches what its poll returned: a write from a call
        (a task's step, in ``_drain``) goes at once, as a held one would wait for the
        next iteration's calls, one more poll later (Stream echo, 50 connections x
        1 KiB: 1.24 -> 1.03x native when held). Never on a reactor whose iterations this
        session does not count."""
        if not self._dispatching:
            return False
        if self._iteration != self._wrote_in:
            self._wrote_in = self._iteration
            self._wrote_by = id(transport)  # no reference kept: a reused id only costs a batch
            return False
        return id(transport) != self._wrote_by

    def hold(self, transport: SendAfterReads) -> None:
        """``transport`` holds a write: send it with the others in one ``call_soon``,
        which runs when the reactor next runs its calls, after ``doIteration``
        dispatched every ready descriptor."""
        held = self._held
        if not held:
            self.call_soon(self._send_held_bound)
        held.append(transport)

    def _send_held(self) -> None:
        held, self._held = self._held, []
        for transport in held:
            transport.send_held()

    # --- tasks (the core's CoroutineTask) and Twisted's coroutine runner ---

    def wait_native(self, yielded: Any, wake: Callable[[], None]) -> Any:
        # A polyloop task awaits a Deferred.
        if isinstance(yielded, Deferred):
            return DeferredWait(yielded, wake)
        return super().wait_native(yielded, wake)

    def suspend_foreign(self, fut: polyloop.Future[Any]) -> Generator[Any, Any, None]:
        # Twisted's runner awaits a polyloop future.
        return suspend(fut)

    def native_error(self, exc: BaseException) -> BaseException:
        return translate(exc)

    async def run_in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        reactor = self.reactor
        if not reactor.running:
            # A reactor that was never started (an AsyncioSelectorReactor on a loop that
            # asyncio runs) never starts its pool either: getThreadPool() starts it with
            # callWhenRunning. The core's worker threads serve then.
            return await super().run_in_thread(fn, *args)
        # Never deferToThread: it uses (and installs) the global reactor.
        ctx = self.callback_context()  # names this session, whatever the caller has
        d = deferToThreadPool(reactor, reactor.getThreadPool(), ctx.run, fn, *args)
        return await future_of(self, d)

    # --- sockets: the core's transports on this session's readiness ---
    #
    # Listening and connected sockets are served by the core's acceptor and socket
    # transport (Session's defaults), on add_reader/add_writer above, not adopted by
    # Twisted's tcp.Port and tcp.Connection: measured with pingpong (50 connections x
    # 1 KiB, interleaved rounds), the core's transport on the epoll reactor ran at 1.71x
    # Twisted's own echo server where Twisted's tcp.Connection under our protocol ran at
    # 0.93x (its doRead runs under log.callWithContext, each write goes through its
    # buffer and producer machinery); on an AsyncioSelectorReactor (mixed mode) 1.96x
    # Twisted alone instead of 0.56x. Twisted's own (tcp.Port and tcp.Connection, with
    # the Twisted protocol in _transport.py) serve with the option transports="twisted":
    # the compatibility layer puts a polyloop protocol under Twisted's listenTCP with
    # that protocol, and tests/test_twisted.py runs the whole catalogue on it. Twisted's
    # adopt* calls socket.fromfd() (tcp.py, unix.py), which dups the fd: the port or
    # connection owns the duplicate, and our socket is closed once Twisted has it.
    #
    # UDP is the core's SocketDatagramTransport as well. Twisted's UDP port would need
    # three fixes: its maxPacketSize truncates at 8192 bytes, an adopted connected socket
    # is not "connected" to it (write() then asserts an address), and an ICMP error
    # closes it on epoll and poll; the last is handled once, for every fd, in
    # _reactor.Watch.

    async def serve_socket(
        self,
        sock: socket.socket,
        factory: Callable[[], polyloop.Protocol],
        ssl: _ssl.SSLContext | None,
        backlog: int,
        handshake_timeout: float | None = None,
    ) -> Acceptor:
        if not self._twisted_transports:
            return await super().serve_socket(sock, factory, ssl, backlog, handshake_timeout)
        bridges = BridgeFactory(self, factory)
        try:
            with map_errors():
                if sock.family == socket.AF_UNIX:
                    # adoptStreamPort with our port class; its startListening calls
                    # listen() again, with the port's backlog (50 unless told).
                    port = UnixPort._fromListeningDescriptor(  # type: ignore[no-untyped-call]
                        self.reactor, sock.fileno(), bridges
                    )
                    port.backlog = backlog
                    port.startListening()
                else:
                    # adoptStreamPort, with our port class (see _PausingAccept).
                    port = TCPPort._fromListeningDescriptor(  # type: ignore[no-untyped-call]
                        self.reactor, sock.fileno(), sock.family, bridges
                    )
                    port.startListening()
        finally:
            sock.close()  # the port listens on a duplicate of its fd
        return Listening(self, port)

    def adopt_stream(
        self, sock: socket.socket, factory: Callable[[], polyloop.Protocol]
    ) -> polyloop.Transport:
        if not self._twisted_transports:
            if not self._batches:  # nothing would be held: no batching() call a write
                return super().adopt_stream(sock, factory)
            return SendAfterReads(self, sock, factory)
        failed: list[BaseException] = []
        try:
            with map_errors():
                t = self.reactor.adoptStreamConnection(
                    sock.fileno(), sock.family, BridgeFactory(self, factory, failed)
                )
        finally:
            sock.close()
        if failed:
            raise failed[0]  # connection_made raised: aborted, and the caller is told
        transport: polyloop.Transport = t.protocol  # the TwistedTransport
        return transport

    # --- child processes: spawnProcess (_process.py) ---

    async def subprocess(
        self, protocol: Any, args: Any, shell: bool, stdin: Any, stdout: Any, stderr: Any,
        popen_kwargs: dict[str, Any],
    ) -> polyloop.SubprocessTransport:  # fmt: skip
        return await _process.spawn(
            self, protocol, args, shell, stdin, stdout, stderr, popen_kwargs
        )


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
