"""The Twisted backend: a private reactor per run; the global reactor is never touched.

Facts measured on Twisted 26.10 that shaped this file (docs/backends/twisted.md):
- ``from twisted.internet import reactor`` installs a process-wide reactor, and so do
  ``deferToThread``, ``LoopingCall()``, ``coiterate``, ``react`` and
  ``listenSSL``/``connectSSL``/``startTLS`` (a TLS echo on a private reactor hangs).
  We build the reactor class ourselves and pass it around; TLS is the core's layer.
- A stopped reactor cannot run again, so each ``run`` builds a new one, and must then
  take it apart as Twisted's own ``ReactorBuilder._unbuildReactor`` does: else every
  run leaks the waker pipe (and, for epoll, the epoll fd; for asyncio, the loop).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import ssl as _ssl
import stat
import threading
import time as _time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ClassVar, TypeVar

from twisted.internet import protocol
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool

import polyloop
from polyloop import _context
from polyloop._errors import pick_connect_error

from ._errors import map_errors
from ._futures import TwistedFuture, TwistedTask, Wait
from ._transport import (
    Bridge,
    DatagramBridge,
    TwistedDatagramTransport,
    UDPPort,
)

__all__ = ["TwistedBackend"]

T = TypeVar("T")
DP = TypeVar("DP", bound=polyloop.DatagramProtocol)

log = logging.getLogger("polyloop")

REACTORS = ("epoll", "poll", "select", "asyncio")

# Twisted's UDP ports read at most ``maxPacketSize`` bytes a datagram, 8192 by
# default, and silently truncate the rest. The contract sends up to 65,507 bytes whole.
_MAX_DATAGRAM = 65535


def _build_reactor(kind: str) -> Any:
    """A new, private reactor of ``kind``; ``install()`` is never called."""
    if kind == "asyncio":
        from twisted.internet.asyncioreactor import AsyncioSelectorReactor

        # Its seconds() is the asyncio loop's time(): monotonic already.
        return AsyncioSelectorReactor(asyncio.new_event_loop())
    reactor = _build_posix_reactor(kind)
    # Twisted's posix reactors time every callLater with the wall clock (time.time), so a
    # clock step moves every timer. This reactor is ours alone: give it the monotonic
    # clock the contract promises for time(), and its timers follow it.
    reactor.seconds = _time.monotonic
    return reactor


def _build_posix_reactor(kind: str) -> Any:
    if kind == "epoll":
        from twisted.internet.epollreactor import EPollReactor

        return EPollReactor()  # type: ignore[no-untyped-call]
    if kind == "poll":
        from twisted.internet.pollreactor import PollReactor

        return PollReactor()  # type: ignore[no-untyped-call]
    if kind == "select":
        from twisted.internet.selectreactor import SelectReactor

        return SelectReactor()
    raise ValueError(f"unknown reactor kind {kind!r}")


def _default_reactor() -> str:
    import select

    if hasattr(select, "epoll"):
        return "epoll"
    return "poll" if hasattr(select, "poll") else "select"


def _unbuild_reactor(reactor: Any) -> None:
    """Free what a stopped reactor holds (``ReactorBuilder._unbuildReactor``, minus the
    global-reactor restore): the waker pipe, leftover selectables and timed calls, the
    poller's own fd, and the asyncio loop of an ``AsyncioSelectorReactor``."""
    reactor._uninstallHandler()
    if reactor.threadpool is not None:
        reactor._stopThreadPool()  # a shutdown trigger, which an interrupted run skips
    for reader in list(reactor._internalReaders):
        reactor.removeReader(reader)
        reader.connectionLost(None)
    reactor._internalReaders.clear()
    reactor.disconnectAll()
    for call in reactor.getDelayedCalls():
        call.cancel()
    poller = getattr(reactor, "_poller", None)
    if poller is not None and hasattr(poller, "close"):
        poller.close()  # epoll; poll() objects own no fd
    loop = getattr(reactor, "_asyncioEventloop", None)
    if loop is not None:
        loop.close()


def _run_reactor(reactor: Any) -> None:
    """``reactor.run(installSignalHandlers=False)``, but Ctrl-C gets through.

    ``ReactorBase.mainLoop`` runs each iteration under a handler that logs and swallows
    *every* exception, ``KeyboardInterrupt`` and ``SystemExit`` included: without our
    signal handlers (we install none) a Ctrl-C or a test timeout would vanish and the
    run would go on. This is the same loop without that handler; errors in callbacks
    are still caught and logged by the reactor where they happen.
    """
    if hasattr(reactor, "_asyncioEventloop"):
        reactor.run(installSignalHandlers=False)  # run_forever() lets them through
        return
    reactor.startRunning(installSignalHandlers=False)
    while reactor._started:
        reactor.runUntilCurrent()
        reactor.doIteration(reactor.running and reactor.timeout())


class _Handle:
    __slots__ = ("args", "cancelled", "fn")

    def __init__(self, fn: Callable[..., object], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class _TimerHandle:
    __slots__ = ("_call",)

    def __init__(self, call: Any) -> None:
        self._call = call

    def cancel(self) -> None:
        # DelayedCall.cancel() raises AlreadyCalled/AlreadyCancelled; ours is a no-op.
        if self._call.active():
            self._call.cancel()


def _run_logged(fn: Callable[..., object], args: tuple[Any, ...]) -> None:
    try:
        fn(*args)
    except Exception:
        log.exception("polyloop: exception in callback %r", fn)


class TwistedServer(polyloop.Server):
    def __init__(self, ports: list[Any], path: str | None = None) -> None:
        self._ports = ports
        self._path = path
        # Read now: the sockets are gone after close().
        self._addresses = [path] if path is not None else [p.socket.getsockname() for p in ports]
        self._closed: list[Deferred[Any]] = []

    @property
    def addresses(self) -> list[Any]:
        return list(self._addresses)

    def close(self) -> None:
        ports, self._ports = self._ports, []
        if self._path is not None and ports:
            _remove_stale_socket(self._path)  # at once, as the contract says
        for port in ports:
            # The socket (and a Unix socket's file) go on the next reactor iteration.
            d = port.stopListening()
            if d is not None:
                self._closed.append(d)

    async def wait_closed(self) -> None:
        closed, self._closed = self._closed, []
        for d in closed:
            await Wait(d)


def _unix_port_class() -> type[Any]:
    from twisted.internet import tcp, unix

    class UnixPort(unix.Port):
        """A Unix listening port whose socket file ``TwistedServer.close()`` removes.

        Twisted's own unlinks the file one iteration after ``stopListening``, without
        looking: a new server on the same path by then loses its file, and if the file
        is already gone the ``FileNotFoundError`` skips closing the socket (an fd leak).
        """

        def connectionLost(self, reason: Any) -> None:
            tcp.Port.connectionLost(self, reason)  # type: ignore[no-untyped-call]

    return UnixPort


class _ClientFactory(protocol.ClientFactory):
    """One connection attempt: ``connected`` fires with (transport, protocol)."""

    noisy = False

    def __init__(self, backend: TwistedBackend, factory: Callable[[], polyloop.Protocol]):
        self.connector: Any = None
        self.bridge: Bridge | None = None
        self.cancelled = False
        self.connected: Deferred[Any] = Deferred(self._cancel)
        self.backend = backend
        self.factory = factory

    def buildProtocol(self, addr: Any) -> Bridge:
        self.bridge = Bridge(self.backend, self.factory, self.connected)
        return self.bridge

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        if not self.cancelled and not self.connected.called:
            self.connected.errback(reason)

    def _cancel(self, d: Deferred[Any]) -> None:
        self.cancelled = True
        if self.bridge is not None and self.bridge.tr is not None:
            self.bridge.tr.abort()  # connected; the caller just never sees it
        elif self.connector is not None:
            self.connector.stopConnecting()


class _ServerFactory(protocol.Factory):
    noisy = False

    def __init__(self, backend: TwistedBackend, factory: Callable[[], polyloop.Protocol]):
        self.backend = backend
        self.factory = factory

    def buildProtocol(self, addr: Any) -> Bridge:
        return Bridge(self.backend, self.factory)


class TwistedBackend(polyloop.Backend):
    """polyloop on Twisted. Option: ``reactor="epoll"`` (default; else ``poll``,
    ``select``, or ``asyncio`` for an ``AsyncioSelectorReactor`` on a fresh asyncio loop).
    """

    name = "twisted"
    native_tls = False
    options: ClassVar[tuple[str, ...]] = ("reactor",)

    def __init__(self, *, reactor: str | None = None) -> None:
        super().__init__()
        kind = reactor or _default_reactor()
        if kind not in REACTORS:
            raise ValueError(f"reactor must be one of {', '.join(REACTORS)}, not {kind!r}")
        if kind == "epoll" and _default_reactor() != "epoll":
            kind = _default_reactor()  # no epoll on this platform
        self.reactor_kind = kind
        self._reactor: Any = None
        self._ready: deque[_Handle] = deque()
        self._drain_scheduled = False
        self._tasks: set[TwistedTask[Any]] = set()
        self._main: polyloop.Task[None] | None = None
        self._servers: list[TwistedServer] = []
        self._transports: weakref.WeakSet[Any] = weakref.WeakSet()

    @classmethod
    def framework_version(cls) -> str:
        import twisted

        return f"Twisted {twisted.__version__}"

    def __repr__(self) -> str:
        return f"<polyloop twisted backend, {self.reactor_kind} reactor>"

    @property
    def reactor(self) -> Any:
        """The running private reactor."""
        if self._reactor is None:
            raise RuntimeError("this backend is not running")
        return self._reactor

    # --- lifecycle ---

    def run(self, main: Callable[..., Awaitable[T]], *args: Any) -> T:
        if self._reactor is not None:
            raise RuntimeError("this backend instance is already running")
        reactor = self._reactor = _build_reactor(self.reactor_kind)
        outcome: list[tuple[bool, Any]] = []

        async def body() -> None:
            try:
                try:
                    result = await main(*args)
                finally:
                    await self._dispose()
            except BaseException as exc:
                outcome.append((False, exc))
            else:
                outcome.append((True, result))
            finally:
                if self._reactor is reactor:  # not when garbage-collected after the run
                    reactor.stop()

        interrupted: list[bool] = []
        restore = self._catch_sigint(interrupted)
        try:
            with _context.running(self):
                reactor.callWhenRunning(self._start_main, body())
                try:
                    _run_reactor(reactor)
                finally:
                    _unbuild_reactor(reactor)
        finally:
            restore()
            self._reactor = None
            self._ready.clear()
            self._drain_scheduled = False
        if interrupted and outcome and not outcome[0][0]:
            if isinstance(outcome[0][1], polyloop.Cancelled):
                raise KeyboardInterrupt()
        if not outcome:
            raise RuntimeError("the reactor stopped before main() returned")
        ok, value = outcome[0]
        if ok:
            return value  # type: ignore[no-any-return]
        raise value

    def _catch_sigint(self, interrupted: list[bool]) -> Callable[[], None]:
        """Ctrl-C cancels main, as ``asyncio.Runner`` does; a second one interrupts.

        Twisted's reactor catches ``BaseException`` around every callback and iteration,
        so a ``KeyboardInterrupt`` raised by the default handler would usually be logged
        and dropped. Like asyncio.Runner, only in the main thread and only if SIGINT has
        Python's default handler; it is restored when ``run`` returns.
        """
        if (
            threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
        ):
            return lambda: None

        def on_sigint(signum: int, frame: object) -> None:
            main = self._main
            if not interrupted and main is not None and not main.done():
                interrupted.append(True)
                # callFromThread is safe in a signal handler: it wakes the reactor.
                self.reactor.callFromThread(main.cancel)
                return
            raise KeyboardInterrupt()

        def restore() -> None:
            signal.signal(signal.SIGINT, signal.default_int_handler)

        signal.signal(signal.SIGINT, on_sigint)
        return restore

    def _start_main(self, body: Coroutine[Any, Any, None]) -> None:
        self._main = self.spawn(body)
        self._tasks.discard(self._main)  # _dispose() must not cancel main itself

    async def _dispose(self) -> None:
        """Cancel leftover tasks, close servers and connections, while the reactor runs."""
        for task in list(self._tasks):
            task.cancel()
        for server in self._servers:
            server.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        for transport in list(self._transports):
            if not transport.is_closing():
                transport.abort()
        # Aborts report connectionLost on the next iteration; tasks need a few to unwind.
        for _ in range(20):
            if not self._tasks and all(
                getattr(t, "_lost", True) or isinstance(t, TwistedDatagramTransport)
                for t in self._transports
            ):
                break
            await self.sleep(0)
        await self.sleep(0)

    def _track(self, transport: Any) -> None:
        self._transports.add(transport)

    # --- scheduling ---

    def time(self) -> float:
        # The clock callLater's delays are measured against: monotonic on every kind of
        # reactor we build (see _build_reactor).
        return float(self.reactor.seconds())

    def call_soon(self, fn: Callable[..., object], *args: Any) -> polyloop.Handle:
        # A FIFO queue drained once per iteration: Twisted's callLater(0) calls sit in a
        # heap ordered by time only, which does not promise FIFO for equal times.
        handle = _Handle(fn, args)
        self._ready.append(handle)
        if not self._drain_scheduled:
            self._drain_scheduled = True
            self.reactor.callLater(0, self._drain)
        return handle

    def _drain(self) -> None:
        self._drain_scheduled = False
        ready = self._ready
        for _ in range(len(ready)):  # what is added meanwhile runs next iteration
            handle = ready.popleft()
            if not handle.cancelled:
                _run_logged(handle.fn, handle.args)
        if ready and not self._drain_scheduled:
            self._drain_scheduled = True
            self.reactor.callLater(0, self._drain)

    def call_later(self, delay: float, fn: Callable[..., object], *args: Any) -> polyloop.Handle:
        return _TimerHandle(self.reactor.callLater(max(0.0, delay), _run_logged, fn, args))

    def call_soon_threadsafe(self, fn: Callable[..., object], *args: Any) -> None:
        self.reactor.callFromThread(_run_logged, fn, args)

    def spawn(self, coro: Coroutine[Any, Any, T]) -> polyloop.Task[T]:
        task = TwistedTask(self, coro)
        self._tasks.add(task)
        return task

    def create_future(self) -> polyloop.Future[Any]:
        return TwistedFuture(self)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            d: Deferred[None] = Deferred()
            self.call_soon(_fire_none, d)
            await Wait(d)
            return
        d = Deferred()
        call = self.reactor.callLater(seconds, d.callback, None)
        try:
            await Wait(d)
        finally:
            if call.active():
                call.cancel()

    async def run_in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        reactor = self.reactor
        # Never deferToThread: it uses (and installs) the global reactor.
        return await Wait(deferToThreadPool(reactor, reactor.getThreadPool(), fn, *args))

    # --- networking ---

    async def _resolve(
        self, host: str | None, port: int, type_: int, passive: bool = False
    ) -> list[tuple[int, Any]]:
        """(family, sockaddr) pairs; numeric hosts without a thread, names in the pool."""
        flags = socket.AI_PASSIVE if passive else 0
        try:
            infos = socket.getaddrinfo(host, port, 0, type_, 0, flags | socket.AI_NUMERICHOST)
        except socket.gaierror:
            infos = await self.run_in_thread(socket.getaddrinfo, host, port, 0, type_, 0, flags)
        seen: list[tuple[int, Any]] = []
        for family, *_, addr in infos:
            if (family, addr) not in seen and family in (socket.AF_INET, socket.AF_INET6):
                seen.append((family, addr))
        return seen

    async def _listen_tcp(
        self,
        protocol_factory: Callable[[], polyloop.Protocol],
        host: str | None,
        port: int,
        *,
        ssl: _ssl.SSLContext | None,
        backlog: int,
    ) -> polyloop.Server:
        factory = _ServerFactory(self, protocol_factory)
        if host is None:
            # "::" is dual-stack on Linux (IPv4 too); a second socket on 0.0.0.0 would
            # then collide with it on the same port.
            hosts = ["::", ""] if socket.has_ipv6 else [""]
            first_error: BaseException | None = None
            for interface in hosts:
                try:
                    with map_errors():
                        p = self.reactor.listenTCP(port, factory, backlog, interface)
                    return self._keep(TwistedServer([p]))
                except OSError as exc:
                    first_error = first_error or exc
            assert first_error is not None
            raise first_error
        ports: list[Any] = []
        try:
            for _, addr in await self._resolve(host, port, socket.SOCK_STREAM, passive=True):
                # Every address shares the port the first one got (asyncio gives each
                # its own when port=0).
                chosen = ports[0].socket.getsockname()[1] if ports else port
                with map_errors():
                    ports.append(self.reactor.listenTCP(chosen, factory, backlog, addr[0]))
        except BaseException:
            for p in ports:
                p.stopListening()
            raise
        return self._keep(TwistedServer(ports))

    def _keep(self, server: TwistedServer) -> TwistedServer:
        self._servers.append(server)
        return server

    async def _connect_with(
        self,
        connect: Callable[[_ClientFactory], Any],
        protocol_factory: Callable[[], polyloop.Protocol],
    ) -> tuple[polyloop.Transport, polyloop.Protocol]:
        factory = _ClientFactory(self, protocol_factory)
        with map_errors():
            factory.connector = connect(factory)
            transport, proto = await Wait(factory.connected)
        return transport, proto

    async def _connect_tcp(
        self,
        protocol_factory: Callable[[], polyloop.Protocol],
        host: str,
        port: int,
        *,
        ssl: _ssl.SSLContext | None,
        server_hostname: str | None,
    ) -> tuple[polyloop.Transport, polyloop.Protocol]:
        # We resolve (IPv4 and IPv6) and try each address ourselves: connectTCP
        # resolves names with gethostbyname, IPv4 only.
        errors: list[OSError] = []
        with map_errors():
            addresses = await self._resolve(host, port, socket.SOCK_STREAM)
        for _, addr in addresses:
            try:
                return await self._connect_with(
                    # timeout=None: no connect timeout of Twisted's own (its default is
                    # 30 s); the OS decides, as with asyncio.
                    lambda f, a=addr: self.reactor.connectTCP(a[0], a[1], f, None),  # type: ignore[misc]
                    protocol_factory,
                )
            except OSError as exc:
                errors.append(exc)
        raise pick_connect_error(errors)

    async def _listen_unix(
        self,
        protocol_factory: Callable[[], polyloop.Protocol],
        path: str,
        *,
        ssl: _ssl.SSLContext | None,
        backlog: int,
    ) -> polyloop.Server:
        _remove_stale_socket(path)  # as asyncio's create_unix_server does
        with map_errors():
            factory = _ServerFactory(self, protocol_factory)
            p = _new(_UnixPort, path, factory, backlog, 0o666, self.reactor)
            p.startListening()  # what reactor.listenUNIX does, with our Port class
        return self._keep(TwistedServer([p], path))

    async def _connect_unix(
        self,
        protocol_factory: Callable[[], polyloop.Protocol],
        path: str,
        *,
        ssl: _ssl.SSLContext | None,
        server_hostname: str | None,
    ) -> tuple[polyloop.Transport, polyloop.Protocol]:
        return await self._connect_with(
            lambda f: self.reactor.connectUNIX(path, f, None), protocol_factory
        )

    async def _open_udp(
        self,
        protocol_factory: Callable[[], DP],
        local_addr: tuple[str, int] | None,
        remote_addr: tuple[str, int] | None,
    ) -> tuple[polyloop.DatagramTransport, DP]:
        remote: Any = None
        if remote_addr is not None:
            with map_errors():
                family, remote = (await self._resolve(*remote_addr, socket.SOCK_DGRAM))[0]
        if local_addr is not None:
            with map_errors():
                family, local = (await self._resolve(*local_addr, socket.SOCK_DGRAM, True))[0]
            interface, port = local[0], local[1]
        else:
            interface, port = ("::" if family == socket.AF_INET6 else ""), 0
        user = protocol_factory()
        bridge = DatagramBridge(user)
        with map_errors():
            # What reactor.listenUDP does, with our Port class.
            udp: Any = _new(UDPPort, port, bridge, interface, _MAX_DATAGRAM, self.reactor)
            udp.startListening()
            if remote is not None:
                try:
                    udp.connect(remote[0], remote[1])
                except BaseException:
                    udp.stopListening()
                    raise
        transport = TwistedDatagramTransport(udp, bridge, remote, self)
        bridge.tr = transport
        self._track(transport)
        user.connection_made(transport)
        return transport, user


_UnixPort = _unix_port_class()


def _new(cls: Any, *args: Any) -> Any:
    """An instance of one of Twisted's untyped port classes."""
    return cls(*args)


def _fire_none(d: Deferred[None]) -> None:
    if not d.called:
        d.callback(None)


def _remove_stale_socket(path: str) -> None:
    if path.startswith("\0"):
        return
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    except OSError:
        pass
