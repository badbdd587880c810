"""A Twisted reactor on a polyloop session: the object Twisted code takes as ``reactor``.

Rule: the reactor's *bookkeeping* is Twisted's own (``twisted.internet.base.ReactorBase``:
system event triggers, ``run``/``stop``/``crash`` state, ``DelayedCall`` heap,
``callFromThread`` queue, thread pool, resolvers), so every Twisted rule about them
holds unchanged; everything that *waits* is the polyloop session's: one session timer
for the earliest ``DelayedCall``, ``call_soon_threadsafe`` as the waker,
``add_reader``/``add_writer`` for ``IReactorFDSet``, and the session's sockets for
TCP/Unix/TLS (``_twisted_tcp.py``). Methods that delegate elsewhere (``listenUDP``,
``spawnProcess``) are one-liners at the end of the class.

Two ways to have one:

- *borrowed*: ``get_reactor()`` inside ``polyloop.run`` (or host mode) gives the
  session's reactor, running already; ``run()`` is refused (the loop is the session's),
  ``stop()`` fires the shutdown triggers and leaves the loop alone.
- *owned*: ``Reactor.for_backend("gevent")`` (or ``install(backend=...)``, which also
  makes it ``twisted.internet.reactor``): nothing runs until ``run()``, which runs a
  polyloop session on that backend until ``stop()``/``crash()``. What is done before
  ``run`` (``listenTCP`` binds at once, ``connectTCP`` and ``addReader`` wait, timers
  count from when they were set) starts with the loop. A ``crash()`` ends the session:
  connections made in that run are closed (Twisted would keep them for the next run).
"""

from __future__ import annotations

import builtins
import functools
import os
import signal
import socket
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from twisted.internet import address, base, defer, error, interfaces
from twisted.internet.posixbase import _NO_FILEDESC, _DisconnectSelectableMixin
from twisted.python import log as twisted_log
from zope.interface import implementer  # type: ignore[import-untyped]

import polyloop
from polyloop import bridge

from .._bridge import to_deferred as _to_deferred
from . import _twisted_process, _twisted_udp
from ._twisted_tcp import (
    Connector,
    Port,
    as_factory,
    as_ssl_context,
    connect_error,
    protocol_factory,
    tcp_bind_address,
)
from ._twisted_transport import ProtocolAdapter, TwistedTransport, twisted_address

__all__ = [
    "Connector",
    "Port",
    "Reactor",
    "as_factory",
    "connect_error",
    "from_deferred",
    "get_reactor",
    "point_clock",
    "protocol_factory",
    "to_deferred",
]

_reactors: weakref.WeakKeyDictionary[polyloop.Session, Reactor] = weakref.WeakKeyDictionary()


def get_reactor(session: polyloop.Session | None = None) -> Reactor:
    """The reactor of ``session`` (default: the session running the caller), running
    already; one per session."""
    if session is None:
        session = polyloop.current_backend()
    found = _reactors.get(session)
    if found is None:
        found = _reactors[session] = Reactor(session)
    return found


def point_clock(obj: Any, reactor: Reactor) -> None:
    """Point the ``callLater`` of Twisted's timeout and throttling helpers at ``reactor``.

    ``TimeoutMixin``, ``TimeoutFactory`` and ``ThrottlingFactory`` schedule through a
    ``callLater`` method that imports the global reactor (installing one). Where the class
    left it as Twisted wrote it, the instance gets ``reactor.callLater`` instead; a
    ``callLater`` the application set itself is kept. Wrapping factories are followed.
    """
    from twisted.protocols import policies

    defaults = (
        (policies.TimeoutMixin, policies.TimeoutMixin.callLater),
        (policies.TimeoutFactory, policies.TimeoutFactory.callLater),
        (policies.ThrottlingFactory, policies.ThrottlingFactory.callLater),
    )
    seen = 0
    while obj is not None and seen < 8:
        seen += 1
        for cls, default in defaults:
            if (
                isinstance(obj, cls)
                and "callLater" not in vars(obj)
                and getattr(type(obj), "callLater", None) is default
            ):
                obj.callLater = reactor.callLater  # type: ignore[method-assign,assignment]
        obj = getattr(obj, "wrappedFactory", None)


@implementer(interfaces.IHostResolution)
class _Resolution:
    def __init__(self, name: str) -> None:
        self.name = name
        self.task: polyloop.Task[None] | None = None
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        if self.task is not None:
            self.task.cancel()


@implementer(interfaces.IHostnameResolver)
class _NameResolver:
    """``IHostnameResolver`` on the session's ``getaddrinfo`` (Twisted's default resolver
    uses ``deferToThread``, which installs the global reactor)."""

    def __init__(self, reactor: Reactor) -> None:
        self._reactor = reactor

    def resolveHostName(
        self,
        resolutionReceiver: Any,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Any = None,
        transportSemantics: str = "TCP",
    ) -> Any:
        resolution = _Resolution(hostName)
        resolutionReceiver.resolutionBegan(resolution)
        kind = socket.SOCK_STREAM if transportSemantics == "TCP" else socket.SOCK_DGRAM
        accepted = None if addressTypes is None else tuple(addressTypes)

        async def resolve(session: polyloop.Session) -> None:
            try:
                infos = await session.getaddrinfo(hostName, portNumber, type=kind)
            except (OSError, ValueError):
                infos = []
            try:
                for family, *_, addr in infos:
                    cls: Any = (
                        address.IPv6Address if family == socket.AF_INET6 else address.IPv4Address
                    )
                    if family in (socket.AF_INET, socket.AF_INET6) and (
                        accepted is None or cls in accepted
                    ):
                        resolutionReceiver.addressResolved(cls(transportSemantics, *addr[:2]))
            finally:
                resolutionReceiver.resolutionComplete()

        def start() -> None:
            if not resolution.cancelled:
                resolution.task = self._reactor.session.spawn(resolve(self._reactor.session))

        self._reactor._when_running(start)
        return resolution


@implementer(
    interfaces.IReactorCore,
    interfaces.IReactorTime,
    interfaces.IReactorFDSet,
    interfaces.IReactorTCP,
    interfaces.IReactorUNIX,
    interfaces.IReactorSSL,
    interfaces.IReactorSocket,
    interfaces.IReactorThreads,
    interfaces.IReactorFromThreads,
    interfaces.IReactorPluggableNameResolver,
    interfaces.IReactorPluggableResolver,
    interfaces.IReactorUDP,
    interfaces.IReactorMulticast,
    interfaces.IReactorProcess,
)
class Reactor(_DisconnectSelectableMixin, base.ReactorBase):
    """A Twisted reactor over a polyloop session, on any backend.

    ``IReactorCore`` (``run``, ``stop``, ``crash``, ``callWhenRunning``, system event
    triggers with before/during/after phases, ``resolve``, ``running``),
    ``IReactorTime``, ``IReactorFDSet`` (on the session's ``add_reader``/``add_writer``),
    ``IReactorTCP``, ``IReactorUNIX``, ``IReactorSSL`` (stdlib ``ssl.SSLContext`` only),
    ``IReactorSocket`` (``adoptStreamPort``, ``adoptStreamConnection``),
    ``IReactorThreads`` (Twisted's thread pool; ``callFromThread`` wakes the session),
    ``IReactorPluggableNameResolver`` (the session's ``getaddrinfo``).

    ``get_reactor()`` gives a running session's; ``Reactor.for_backend(spec)`` makes one
    that owns its loop, run by ``run()``; ``install(backend=...)`` installs such a one as
    ``twisted.internet.reactor``.
    """

    def __init__(self, session: polyloop.Session | None = None, *, backend: Any = None) -> None:
        if (session is None) == (backend is None):
            raise TypeError("Reactor(session) borrows a session; Reactor(backend=...) owns one")
        #: The polyloop session everything runs on (``None`` while an owned reactor is
        #: not running).
        self.session: Any = session
        self._backend = backend
        self._owned = session is None
        # An owned reactor is the application's: Twisted's threadable.isInIOThread()
        # names its thread; a borrowed one leaves that global alone.
        self._registerAsIOThread = self._owned
        self._readers: dict[Any, int] = {}
        self._writers: dict[Any, int] = {}
        self._ports: set[Port] = set()
        self._transports: set[Any] = set()  # the connections' TwistedTransports
        self._pending: list[Callable[[], object]] = []
        self._timer: Any = None
        self._timer_at = 0.0
        self._wake_pending = False
        self._done: polyloop.Future[None] | None = None
        super().__init__()
        self.installNameResolver(_NameResolver(self))  # type: ignore[arg-type]
        if session is not None:
            session.on_close(self._session_ended)
            self.startRunning(installSignalHandlers=False)

    @classmethod
    def for_backend(cls, backend: Any = "asyncio", **options: Any) -> Reactor:
        """A reactor that owns its loop: ``run()`` runs a polyloop session of ``backend``
        (a name, spec, Backend class or instance, with ``options``) until ``stop()``."""
        return cls(backend=polyloop.load_backend(backend, **options))

    def __repr__(self) -> str:
        where = self.session if self.session is not None else self._backend
        return f"<polyloop_twisted.compat.Reactor on {where!r}>"

    # --- the parts of ReactorBase a reactor supplies ---

    def _initThreads(self) -> None:
        # ReactorBase would install a getaddrinfo-in-a-thread resolver here; ours is the
        # session's (installed in __init__).
        self.usingThreads = True

    def installWaker(self) -> None:
        """No waker of our own: ``wakeUp`` is the session's ``call_soon_threadsafe``."""

    def wakeUp(self) -> None:
        """Run an iteration soon (from any thread): ``callFromThread`` calls it."""
        session = self.session
        if session is None or self._wake_pending:
            return
        self._wake_pending = True
        try:
            session.call_soon_threadsafe(self._tick)
        except RuntimeError:  # the session has ended
            self._wake_pending = False

    def doIteration(self, delay: float | None) -> None:
        raise NotImplementedError("the polyloop session runs the iterations: use run()")

    def iterate(self, delay: float = 0.0) -> None:
        """Run one iteration: the due calls, then what gets ready within ``delay``
        seconds. Outside ``run()`` an owned reactor runs a session of its backend for
        it (connections made in it end with it)."""
        if self.session is not None:
            self.runUntilCurrent()
            return
        if not self._owned:
            raise RuntimeError(f"{self!r}'s session has ended")
        self._backend.run(self._iterate, delay)

    async def _iterate(self, delay: float) -> None:
        session = self.session = polyloop.current_backend()
        try:
            self._attach(session)
            self.runUntilCurrent()
            timeout = self.timeout()
            await session.sleep(min(delay, timeout) if timeout is not None else delay)
            self.runUntilCurrent()
        finally:
            await self._detach(session)

    def seconds(self) -> float:
        """The clock of ``callLater``: the session's for a borrowed reactor; for an owned
        one ``time.time()``, as Twisted's reactors have (``twisted.web`` logs dates with
        it)."""
        if self._owned:
            return time.time()  # Twisted's runtimeSeconds
        return float(self.session.time())

    # --- IReactorCore ---

    def run(self, installSignalHandlers: bool = True) -> None:
        """Run the loop (a polyloop session of the backend) until ``stop()`` or
        ``crash()``; ``ReactorAlreadyRunning``/``ReactorNotRestartable`` as Twisted's."""
        if not self._owned:
            raise RuntimeError(
                f"{self!r} borrows its session's loop, which runs already: use"
                " Reactor.for_backend() or install() for a reactor that runs its own"
            )
        if self._started:
            raise error.ReactorAlreadyRunning()
        if self._startedBefore:
            raise error.ReactorNotRestartable()
        self._backend.run(self._main, installSignalHandlers)

    async def _main(self, install_signal_handlers: bool) -> None:
        session = self.session = polyloop.current_backend()
        self._done = done = session.create_future()
        restore = self._take_signals() if install_signal_handlers else {}
        try:
            self._attach(session)
            self.startRunning(installSignalHandlers=install_signal_handlers)
            self._tick()
            await done
        finally:
            await self._detach(session)
            for signum, handler in restore.items():
                signal.signal(signum, handler)

    def _take_signals(self) -> dict[int, Any]:
        """SIGINT and SIGTERM stop the reactor, as Twisted's do. Twisted installs its
        SIGINT handler only over Python's default one, and here polyloop's run (and
        asyncio's runner) have put theirs already, which would cancel the run instead
        of firing the shutdown triggers: take them for the run, give them back after."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {
            signal.SIGINT: signal.signal(signal.SIGINT, self.sigInt),
            signal.SIGTERM: signal.signal(signal.SIGTERM, self.sigTerm),
        }

    def _attach(self, session: polyloop.Session) -> None:
        for reader, fd in list(self._readers.items()):
            session.add_reader(fd, functools.partial(self._io, reader, True))
        for writer, fd in list(self._writers.items()):
            session.add_writer(fd, functools.partial(self._io, writer, False))
        self._run_pending()

    async def _detach(self, session: polyloop.Session) -> None:
        """The run is over: close the ports (Twisted's ``disconnectAll``), leave the FD
        set, the timers and the thread queue for a next run."""
        for port in list(self._ports):
            try:
                await port._shut()
            finally:
                port._lost()
        # Connections are closed cleanly (flushed, the peer reads EOF), as Twisted's
        # disconnectAll does, not aborted as the session's end would (a reset).
        for transport in list(self._transports):
            transport._t.close()
        for _ in range(100):
            if not self._transports:
                break
            await session.sleep(0.01)
        self._cancel_timer()
        for fd in self._readers.values():
            self._forget(session.remove_reader, fd)
        for fd in self._writers.values():
            self._forget(session.remove_writer, fd)
        self.session = None
        self._done = None
        self._wake_pending = False
        self._signals.uninstall()

    def _session_ended(self, session: polyloop.Session) -> None:
        """A borrowed session ended: so does this reactor (its thread pool, its timer)."""
        self._cancel_timer()
        if self.threadpool is not None:
            self._stopThreadPool()
        self.running = False

    def stop(self) -> None:
        """Fire the shutdown triggers (before, during, after) on the next iteration, then
        end the run; ``ReactorNotRunning`` if it does not run."""
        super().stop()
        self.wakeUp()

    def crash(self) -> None:
        """End the run at once, without the shutdown triggers."""
        super().crash()
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    def _when_running(self, fn: Callable[[], object]) -> None:
        """``fn()`` now if the session runs, else when ``run()`` starts it."""
        if self.session is not None:
            fn()
        else:
            self._pending.append(fn)

    def _run_pending(self) -> None:
        pending, self._pending = self._pending, []
        for fn in pending:
            fn()

    def _tick(self) -> None:
        """One reactor iteration: thread calls, due timers, a pending shutdown."""
        self._wake_pending = False
        if self.session is None:
            return
        self.runUntilCurrent()
        self._reschedule()

    # --- IReactorTime: Twisted's heap, one session timer for its head ---

    def callLater(
        self, delay: float, callable: Callable[..., Any], *args: object, **kw: object
    ) -> base.DelayedCall:
        """Call ``callable(*args, **kw)`` after ``delay`` seconds (Twisted's
        ``DelayedCall``: cancel, reset, delay); an exception it raises is logged."""
        if not builtins.callable(callable):
            raise TypeError(f"{callable!r} is not callable")
        call = super().callLater(delay, callable, *args, **kw)
        self._reschedule()
        return call

    def _moveCallLaterSooner(self, delayedCall: base.DelayedCall) -> None:
        super()._moveCallLaterSooner(delayedCall)
        self._reschedule()

    def _reschedule(self) -> None:
        session = self.session
        if session is None:
            return
        delay = self.timeout()
        if delay is None:
            self._cancel_timer()
            return
        at = self.seconds() + delay
        if self._timer is not None and self._timer_at <= at:
            return  # an earlier timer is set; it reschedules when it fires
        self._cancel_timer()
        self._timer_at = at
        self._timer = session.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._tick()

    def _cancel_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    # --- IReactorFDSet, on the session's readiness callbacks ---

    def addReader(self, reader: Any) -> None:
        """Call ``reader.doRead()`` whenever its ``fileno()`` is readable."""
        if reader not in self._readers:
            fd = self._readers[reader] = reader.fileno()
            if self.session is not None:
                self.session.add_reader(fd, functools.partial(self._io, reader, True))

    def addWriter(self, writer: Any) -> None:
        """Call ``writer.doWrite()`` whenever its ``fileno()`` is writable."""
        if writer not in self._writers:
            fd = self._writers[writer] = writer.fileno()
            if self.session is not None:
                self.session.add_writer(fd, functools.partial(self._io, writer, False))

    def removeReader(self, reader: Any) -> None:
        """Stop watching ``reader``."""
        fd = self._readers.pop(reader, None)
        if fd is not None and self.session is not None:
            self._forget(self.session.remove_reader, fd)
        elif fd is None and isinstance(reader, TwistedTransport) and not reader.disconnected:
            # One of our connections (read by the session, not in this FD set): Twisted
            # code that hands its socket on (adoptStreamConnection) first stops the
            # reactor reading it.
            reader.handed_on = True
            reader.polyloop_transport.pause_reading()

    def removeWriter(self, writer: Any) -> None:
        """Stop watching ``writer``."""
        fd = self._writers.pop(writer, None)
        if fd is not None and self.session is not None:
            self._forget(self.session.remove_writer, fd)

    @staticmethod
    def _forget(remove: Callable[[int], object], fd: int) -> None:
        try:
            remove(fd)
        except (OSError, ValueError):
            pass  # the fd was closed already: the backend has let it go

    def removeAll(self) -> list[Any]:
        """Remove every reader and writer (but the reactor's own); return them."""
        gone = [r for r in self._readers if r not in self._internalReaders]
        gone += [w for w in self._writers if w not in gone]
        for selectable in gone:
            self.removeReader(selectable)
            self.removeWriter(selectable)
        return gone

    def getReaders(self) -> list[Any]:
        """The readers being watched."""
        return list(self._readers)

    def getWriters(self) -> list[Any]:
        """The writers being watched."""
        return list(self._writers)

    def _io(self, selectable: Any, read: bool) -> None:
        # Twisted's _doReadOrWrite, as asyncioreactor has it: a false result is fine, a
        # reason (or an exception) disconnects the selectable.
        if selectable.fileno() == -1:
            self._disconnectSelectable(selectable, _NO_FILEDESC, read)  # type: ignore[no-untyped-call]
            return
        try:
            why = selectable.doRead() if read else selectable.doWrite()
        except Exception as exc:
            why = exc
            twisted_log.err(None, "Unhandled error in a reader or writer")  # type: ignore[no-untyped-call]
        if why:
            self._disconnectSelectable(selectable, why, read)  # type: ignore[no-untyped-call]

    # --- IReactorTCP ---

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Port:
        """Listen on ``interface:port`` (an IP literal; ``""`` is every IPv4 interface;
        an IPv6 literal may carry a scope id), bound at once as Twisted's ``tcp.Port``
        is: ``CannotListenError`` if the address is taken; the session accepts from when
        the reactor runs, each connection with ``factory.buildProtocol(addr)``."""
        return self._listen_tcp(port, factory, backlog, interface, None)

    def _listen_tcp(self, port: Any, factory: Any, backlog: int, interface: str, ssl: Any) -> Port:
        twisted_factory = as_factory(factory)
        sock = None
        reuse_port, reuse_address = False, True  # Twisted's defaults for an int port
        if port is not None and not isinstance(port, int):  # Twisted's Binding (makeBinding)
            binding: Any = port
            if interface != "" and binding._address != interface:
                raise ValueError("Inconsistent interface vs Binding specifiers")
            port, interface = binding._port, binding._address or ""
            reuse_port, reuse_address = binding._reusePort, binding._reuseAddress
        try:
            family, addr = tcp_bind_address(interface, port)
            sock = socket.socket(family, socket.SOCK_STREAM)
            if reuse_address:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(addr)
            sock.listen(backlog)
            sock.setblocking(False)
        except OSError as exc:
            if sock is not None:
                sock.close()
            raise error.CannotListenError(interface, port, exc) from exc  # type: ignore[no-untyped-call]
        except BaseException:
            if sock is not None:
                sock.close()
            raise
        return Port(
            self, twisted_factory, twisted_address(sock.getsockname()), sock=sock,
            backlog=backlog, ssl=ssl,
        )  # fmt: skip

    def connectTCP(
        self,
        host: str,
        port: int,
        factory: Any,
        timeout: float = 30,
        bindAddress: tuple[str, int] | None = None,
    ) -> Connector:
        """Connect to ``host:port`` (any name; the session resolves it; a service name
        as port) from ``bindAddress`` with a ``ClientFactory``: ``startedConnecting``,
        ``buildProtocol``, then ``clientConnectionFailed`` (Twisted's errors) or, later,
        ``clientConnectionLost``."""
        connector = Connector(self, factory, (host, port), timeout, bindAddress)
        connector.connect()
        return connector

    # --- IReactorSSL: stdlib contexts, on the core's TLS layer ---

    def listenSSL(
        self,
        port: int,
        factory: Any,
        contextFactory: Any,
        backlog: int = 50,
        interface: str = "",
    ) -> Port:
        """``listenTCP`` with TLS. ``contextFactory`` is a stdlib ``ssl.SSLContext`` (or a
        factory whose ``getContext()`` returns one); pyOpenSSL ones raise ``TypeError``."""
        return self._listen_tcp(port, factory, backlog, interface, as_ssl_context(contextFactory))

    def connectSSL(
        self,
        host: str,
        port: int,
        factory: Any,
        contextFactory: Any,
        timeout: float = 30,
        bindAddress: tuple[str, int] | None = None,
    ) -> Connector:
        """``connectTCP`` with TLS (``host`` is the name the certificate is checked
        against, where the context checks names), as ``listenSSL`` takes contexts."""
        ctx = as_ssl_context(contextFactory)
        connector = Connector(self, factory, (host, port), timeout, bindAddress, ssl=ctx)
        connector.connect()
        return connector

    # --- IReactorUNIX ---

    def listenUNIX(
        self, address: str, factory: Any, backlog: int = 50, mode: int = 0o666, wantPID: int = 0
    ) -> Port:
        """Listen on the Unix socket at ``address``, the file made with ``mode`` (as
        Twisted does, with ``chmod``); it is removed when the port stops. ``wantPID``
        (a lock file) is refused with ``NotImplementedError``."""
        if wantPID:
            raise NotImplementedError("wantPID: the polyloop reactor keeps no lock file")
        twisted_factory = as_factory(factory)
        path = os.fsdecode(address)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            if not path.startswith("\0"):
                os.chmod(path, mode)
            sock.listen(backlog)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise error.CannotListenError(None, address, exc) from exc  # type: ignore[no-untyped-call]
        return Port(
            self, twisted_factory, twisted_address(path, "UNIX"), sock=sock,
            backlog=backlog, path=path,
        )  # fmt: skip

    def connectUNIX(
        self, address: str, factory: Any, timeout: float = 30, checkPID: int = 0
    ) -> Connector:
        """Connect to the Unix socket at ``address``, as ``connectTCP`` does."""
        connector = Connector(self, factory, os.fsdecode(address), timeout)
        connector.connect()
        return connector

    # --- IReactorSocket ---

    def adoptStreamPort(self, fileDescriptor: int, addressFamily: int, factory: Any) -> Port:
        """Listen on a listening socket the application made (its fd is duplicated:
        the caller still owns and closes its own)."""
        self._check_family(addressFamily)
        sock = socket.socket(addressFamily, socket.SOCK_STREAM, fileno=os.dup(fileDescriptor))
        sock.setblocking(False)
        unix = addressFamily == socket.AF_UNIX
        host = twisted_address(sock.getsockname(), "UNIX" if unix else "TCP")
        return Port(self, as_factory(factory), host, sock=sock, unix=unix)

    def adoptStreamConnection(self, fileDescriptor: int, addressFamily: int, factory: Any) -> None:
        """Run ``factory``'s protocol on a connected socket the application made (the fd
        is duplicated), from when the reactor runs."""
        self._check_family(addressFamily)
        sock = socket.socket(addressFamily, socket.SOCK_STREAM, fileno=os.dup(fileDescriptor))
        sock.setblocking(False)
        twisted_factory = as_factory(factory)

        def start() -> None:
            adapter = ProtocolAdapter(twisted_factory.buildProtocol, self, role="adopted")
            self.session.spawn(self.session.adopt_connection(lambda: adapter, sock))

        self._when_running(start)

    def adoptDatagramPort(
        self, fileDescriptor: int, addressFamily: int, protocol: Any, maxPacketSize: int = 8192
    ) -> Any:
        """Adopt a bound UDP socket (the fd is duplicated, as Twisted does: the caller
        still owns and closes its own); see ``_twisted_udp.adopt_datagram_port``."""
        return _twisted_udp.adopt_datagram_port(
            self, fileDescriptor, addressFamily, protocol, maxPacketSize
        )

    # --- IReactorUDP, IReactorMulticast (_twisted_udp.py) ---

    def listenUDP(
        self, port: int, protocol: Any, interface: str = "", maxPacketSize: int = 8192
    ) -> Any:
        """A Twisted ``DatagramProtocol`` on UDP ``interface:port``; see
        ``_twisted_udp.DatagramPort``."""
        return _twisted_udp.listen_udp(self, port, protocol, interface, maxPacketSize)

    def listenMulticast(
        self,
        port: int,
        protocol: Any,
        interface: str = "",
        maxPacketSize: int = 8192,
        listenMultiple: bool = False,
    ) -> Any:
        """``listenUDP`` with multicast (``joinGroup``, ``setTTL``...); see
        ``_twisted_udp.MulticastPort``."""
        return _twisted_udp.listen_multicast(
            self, port, protocol, interface, maxPacketSize, listenMultiple
        )

    # --- IReactorProcess (_twisted_process.py) ---

    def spawnProcess(self, processProtocol: Any, executable: Any, *args: Any, **kw: Any) -> Any:
        """Run a child with a Twisted ``ProcessProtocol``; see
        ``_twisted_process.spawn_process``."""
        return _twisted_process.spawn_process(self, processProtocol, executable, *args, **kw)

    @staticmethod
    def _check_family(family: int) -> None:
        if family not in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX):
            raise error.UnsupportedAddressFamily(family)


def from_deferred(d: defer.Deferred[Any]) -> polyloop.Future[Any]:
    """A polyloop ``Future`` that completes with ``d``'s result, or fails with its
    failure's exception, awaitable on any backend; a cancelled ``d`` cancels it
    (``polyloop.Cancelled``, as on every bridge). Cancelling the future cancels ``d``.
    The same as ``polyloop.bridge.future(d)``."""
    return bridge.future(d)


def to_deferred(aw: Any) -> defer.Deferred[Any]:
    """A ``Deferred`` for polyloop code, on any backend: ``aw`` (a coroutine, future or
    task) runs as a task of the running session and the ``Deferred`` fires with its
    result or fails with its exception. Cancelling the ``Deferred`` cancels the task
    (``polyloop.Cancelled`` in the coroutine; ``defer.CancelledError`` for the
    ``Deferred``). The same as ``polyloop_twisted.to_deferred(aw)``."""
    return _to_deferred(aw)
