"""A reactor-like object for Twisted code that takes a ``reactor`` or a ``clock``.

Rule: every method here is backed by the polyloop session it was made for, and only
interfaces that can be kept honestly are declared: ``IReactorTime`` (the session's clock
and timers), ``IReactorTCP`` and ``IReactorUNIX``'s connect/listen (the core's sockets,
accepted and read by the session's backend), ``IReactorFromThreads``. Everything else of
a real reactor (``run``/``stop``, ``IReactorFDSet``, SSL, processes, UDP) is not
pretended: Twisted code that needs it needs the Twisted backend.

Twisted's ``listenTCP`` is synchronous and returns a port that knows its number; polyloop's
``listen_tcp`` is a coroutine. So ``listenTCP`` binds the socket at once (an IP literal,
as Twisted requires; the kernel queues connections from then on) and the session starts
accepting on it one iteration later.
"""

from __future__ import annotations

import builtins
import logging
import socket
import weakref
from collections.abc import Callable
from typing import Any

from twisted.internet import address, base, defer, error, interfaces, protocol
from twisted.python.failure import Failure
from zope.interface import implementer  # type: ignore[import-untyped]

import polyloop
from polyloop import bridge

from .._bridge import to_deferred as _to_deferred
from . import _twisted_process, _twisted_udp
from ._twisted_transport import ProtocolAdapter, failure, twisted_address

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

log = logging.getLogger("polyloop")

_reactors: weakref.WeakKeyDictionary[polyloop.Session, Reactor] = weakref.WeakKeyDictionary()


def get_reactor(session: polyloop.Session | None = None) -> Reactor:
    """The reactor-like object of ``session`` (default: the session running the caller);
    one per session."""
    if session is None:
        session = polyloop.current_backend()
    found = _reactors.get(session)
    if found is None:
        found = _reactors[session] = Reactor(session)
    return found


def as_factory(factory: Any) -> Any:
    """An ``IProtocolFactory`` from a factory, or from a Twisted protocol class."""
    if interfaces.IProtocolFactory.providedBy(factory):
        return factory
    if isinstance(factory, type) and interfaces.IProtocol.implementedBy(factory):
        return protocol.Factory.forProtocol(factory)
    raise TypeError(f"expected a Twisted IProtocolFactory or Protocol class, not {factory!r}")


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


def connect_error(exc: BaseException) -> Exception:
    """A polyloop connect error as the Twisted ``ConnectError`` a connector reports."""
    made: Exception
    if isinstance(exc, ConnectionRefusedError):
        made = error.ConnectionRefusedError(str(exc))  # type: ignore[no-untyped-call]
    elif isinstance(exc, TimeoutError):
        made = error.TimeoutError(str(exc))  # type: ignore[no-untyped-call]
    elif isinstance(exc, socket.gaierror):
        made = error.DNSLookupError(str(exc))
    elif isinstance(exc, OSError):
        made = error.getConnectError(exc)  # type: ignore[no-untyped-call]
    else:
        made = error.ConnectError(string=repr(exc))  # type: ignore[no-untyped-call]
    return made


@implementer(interfaces.IHostResolution)
class _Resolution:
    def __init__(self, name: str, task: polyloop.Task[None] | None = None) -> None:
        self.name = name
        self.task = task

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()


@implementer(interfaces.IHostnameResolver)
class _NameResolver:
    """``IHostnameResolver`` on the session's ``getaddrinfo`` (Twisted's default resolver
    uses ``deferToThread``, which installs the global reactor)."""

    def __init__(self, session: polyloop.Session) -> None:
        self._session = session

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

        async def resolve() -> None:
            try:
                infos = await self._session.getaddrinfo(hostName, portNumber, type=kind)
            except OSError:
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

        resolution.task = self._session.spawn(resolve())
        return resolution


@implementer(
    interfaces.IReactorTime,
    interfaces.IReactorTCP,
    interfaces.IReactorUNIX,
    interfaces.IReactorFromThreads,
    interfaces.IReactorPluggableNameResolver,
    interfaces.IReactorUDP,
    interfaces.IReactorMulticast,
    interfaces.IReactorProcess,
)
class Reactor:
    """Twisted's reactor interfaces, backed by one polyloop session.

    ``IReactorTime`` (``callLater`` returns Twisted's own ``DelayedCall``, on the
    session's timers; ``seconds`` is the session's clock; ``getDelayedCalls``),
    ``IReactorTCP`` and ``IReactorUNIX`` (``listenTCP``/``connectTCP``,
    ``listenUNIX``/``connectUNIX``, with ``IListeningPort`` and ``IConnector`` results)
    ``IReactorFromThreads`` (``callFromThread``) and ``IReactorPluggableNameResolver``
    (``nameResolver`` resolves with the session's ``getaddrinfo``, so Twisted's
    ``HostnameEndpoint`` and ``Agent`` work). Use ``get_reactor()`` for the one of
    the running session; pass it where Twisted code takes a ``reactor`` or ``clock``.
    """

    def __init__(self, session: polyloop.Session) -> None:
        #: The polyloop session everything here runs on.
        self.session = session
        self._calls: dict[base.DelayedCall, polyloop.Handle] = {}
        #: True: Twisted code that checks ``reactor.running`` sees a running reactor.
        self.running = True
        self._resolver: Any = _NameResolver(session)

    @property
    def nameResolver(self) -> Any:
        """The ``IHostnameResolver`` in use (the session's ``getaddrinfo``)."""
        return self._resolver

    def installNameResolver(self, resolver: Any) -> Any:
        """Use ``resolver`` from now on; returns the previous one."""
        previous, self._resolver = self._resolver, resolver
        return previous

    def __repr__(self) -> str:
        return f"<polyloop_twisted.compat.Reactor on {self.session!r}>"

    # --- IReactorTime ---

    def seconds(self) -> float:
        """The session's monotonic clock."""
        return self.session.time()

    def callLater(
        self, delay: float, callable: Callable[..., Any], *args: object, **kw: object
    ) -> base.DelayedCall:
        """Call ``callable(*args, **kw)`` after ``delay`` seconds; the ``DelayedCall``
        can be cancelled, reset and delayed. An exception it raises is logged."""
        if not builtins.callable(callable):
            raise TypeError(f"{callable!r} is not callable")
        call = base.DelayedCall(
            self.seconds() + max(delay, 0),
            callable,
            args,
            kw,
            self._cancel,
            self._reschedule,
            seconds=self.seconds,
        )
        self._schedule(call)
        return call

    def getDelayedCalls(self) -> list[base.DelayedCall]:
        """The calls scheduled with ``callLater`` that have not run or been cancelled."""
        return [call for call in self._calls if call.active()]

    def _schedule(self, call: base.DelayedCall) -> None:
        self._calls[call] = self.session.call_later(
            max(call.getTime() - self.seconds(), 0), self._fire, call
        )

    def _cancel(self, call: base.DelayedCall) -> None:
        handle = self._calls.pop(call, None)
        if handle is not None:
            handle.cancel()

    def _reschedule(self, call: base.DelayedCall) -> None:
        self._cancel(call)
        self._schedule(call)

    def _fire(self, call: base.DelayedCall) -> None:
        self._calls.pop(call, None)
        if not call.active():
            return
        if call.delayed_time > 0:  # reset() or delay() moved it later
            call.activate_delay()
            self._schedule(call)
            return
        call.called = 1
        try:
            call.func(*call.args, **call.kw)
        except Exception:
            log.exception("polyloop_twisted.compat: delayed call %r raised", call)

    # --- IReactorFromThreads, and what Twisted code asks of a running reactor ---

    def callFromThread(self, callable: Callable[..., Any], *args: object, **kw: object) -> None:
        """Call ``callable(*args, **kw)`` in the session's loop, from any thread."""
        self.session.call_soon_threadsafe(lambda: callable(*args, **kw))

    def callWhenRunning(self, callable: Callable[..., Any], *args: object, **kw: object) -> None:
        """The session's loop runs already: on its next iteration."""
        self.session.call_soon(lambda: callable(*args, **kw))

    # --- IReactorTCP ---

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Port:
        """Listen on ``interface:port`` (an IP literal; ``""`` is every IPv4 interface);
        ``CannotListenError`` if the address is taken. Connections are accepted by the
        session's backend, each with a protocol from ``factory.buildProtocol(addr)``."""
        family = socket.AF_INET6 if ":" in interface else socket.AF_INET
        host = interface or ("::" if family == socket.AF_INET6 else "0.0.0.0")
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(backlog)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise error.CannotListenError(interface, port, exc) from exc  # type: ignore[no-untyped-call]
        return Port(
            self, as_factory(factory), twisted_address(sock.getsockname()), sock=sock,
            backlog=backlog,
        )  # fmt: skip

    def connectTCP(
        self,
        host: str,
        port: int,
        factory: Any,
        timeout: float = 30,
        bindAddress: tuple[str, int] | None = None,
    ) -> Connector:
        """Connect to ``host:port`` (any name; the session resolves it) with a
        ``ClientFactory``: ``startedConnecting``, ``buildProtocol``, then
        ``clientConnectionFailed`` or, later, ``clientConnectionLost``."""
        if bindAddress is not None:
            raise NotImplementedError("bindAddress: polyloop connects from any local address")
        connector = Connector(self, factory, (host, port), timeout)
        connector.connect()
        return connector

    # --- IReactorUNIX ---

    def listenUNIX(
        self, address: str, factory: Any, backlog: int = 50, mode: int = 0o666, wantPID: int = 0
    ) -> Port:
        """Listen on the Unix socket at ``address`` (``mode`` and ``wantPID`` are not
        supported beyond their defaults); the file is removed when the port stops."""
        if wantPID:
            raise NotImplementedError("wantPID: polyloop keeps no lock file")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise error.CannotListenError(None, address, exc) from exc  # type: ignore[no-untyped-call]
        return Port(
            self, as_factory(factory), twisted_address(address, "UNIX"), sock=sock,
            backlog=backlog, path=address,
        )  # fmt: skip

    def connectUNIX(
        self, address: str, factory: Any, timeout: float = 30, checkPID: int = 0
    ) -> Connector:
        """Connect to the Unix socket at ``address``, as ``connectTCP`` does."""
        connector = Connector(self, factory, address, timeout)
        connector.connect()
        return connector

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

    def _adopt_datagram(
        self, fileDescriptor: int, addressFamily: int, protocol: Any, maxPacketSize: int = 8192
    ) -> Any:
        """``IReactorSocket.adoptDatagramPort``'s work (the fd is duplicated)."""
        return _twisted_udp.adopt_datagram_port(
            self, fileDescriptor, addressFamily, protocol, maxPacketSize
        )

    # --- IReactorProcess (_twisted_process.py) ---

    def spawnProcess(self, processProtocol: Any, executable: Any, *args: Any, **kw: Any) -> Any:
        """Run a child with a Twisted ``ProcessProtocol``; see
        ``_twisted_process.spawn_process``."""
        return _twisted_process.spawn_process(self, processProtocol, executable, *args, **kw)


@implementer(interfaces.IListeningPort)
class Port:
    """An ``IListeningPort``, from ``Reactor.listenTCP``/``listenUNIX`` or ``listen_tcp``:
    ``getHost``, ``startListening``, ``stopListening`` (a ``Deferred`` fired once the
    socket is closed; ``factory.doStop()`` is called); ``port`` and ``aclose()`` for
    polyloop code."""

    def __init__(
        self,
        reactor: Reactor,
        factory: Any,
        host: Any,
        *,
        server: polyloop.Server | None = None,
        sock: socket.socket | None = None,
        backlog: int = 50,
        path: str | None = None,
    ) -> None:
        self.reactor = reactor
        self.factory = factory
        self._host = host
        self._sock = sock
        self._backlog = backlog
        self._path = path
        self._server = server
        self._started: polyloop.Task[None] | None = None
        self._listening = False
        self._stopped: defer.Deferred[None] | None = None
        self.startListening()

    def __repr__(self) -> str:
        return f"<polyloop_twisted.compat.Port {self._host}>"

    @property
    def port(self) -> int:
        """The TCP port number."""
        return int(self._host.port)

    @property
    def server(self) -> polyloop.Server | None:
        """The polyloop ``Server`` underneath (``None`` until the session accepts)."""
        return self._server

    def getHost(self) -> Any:
        """The bound address (``IPv4Address``, ``IPv6Address`` or ``UNIXAddress``)."""
        return self._host

    def startListening(self) -> None:
        """Start accepting (done when the port is made; again, a no-op)."""
        if self._listening:
            return
        self._listening = True
        self.factory.doStart()
        if self._server is None:
            self._started = self.reactor.session.spawn(self._serve())

    async def _serve(self) -> None:
        sock, self._sock = self._sock, None
        assert sock is not None
        make = protocol_factory(self.factory, self.reactor)
        # Workaround: the core has no public "serve on this bound socket" yet (asyncio's
        # create_server(sock=...)); Session.listen_sockets is that.
        session: Any = self.reactor.session
        self._server = await session.listen_sockets(
            make, [sock], path=self._path, backlog=self._backlog
        )

    def stopListening(self) -> defer.Deferred[None]:
        """Stop accepting; the ``Deferred`` fires once the socket is closed. Connections
        already made stay open."""
        if self._stopped is None:
            self._stopped = defer.Deferred()
            self.reactor.session.spawn(self._stop(self._stopped))
        return self._stopped

    loseConnection = stopListening

    async def _stop(self, done: defer.Deferred[None]) -> None:
        started = self._started
        if started is not None:
            try:
                await started
            except BaseException:
                pass
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._server is not None:
            await self._server.aclose()
        self.factory.doStop()
        done.callback(None)

    async def aclose(self) -> None:
        """``stopListening()``, awaited."""
        await from_deferred(self.stopListening())


def protocol_factory(factory: Any, reactor: Reactor | None = None) -> Callable[[], Any]:
    """A polyloop protocol factory that runs the Twisted ``factory`` (an
    ``IProtocolFactory`` or a Twisted ``Protocol`` class): hand it to
    ``polyloop.listen_tcp``, ``connect_tcp``, ``listen_unix``... Each connection gets
    ``factory.buildProtocol(peer)`` and a ``TwistedTransport``. ``reactor`` is what its
    transport and timeout helpers use (default: the session's, at the first
    connection). The factory's ``doStart``/``doStop`` are left to the caller."""
    twisted_factory = as_factory(factory)

    def make() -> ProtocolAdapter:
        return ProtocolAdapter(twisted_factory.buildProtocol, reactor or get_reactor())

    return make


@implementer(interfaces.IConnector)
class Connector:
    """The ``IConnector`` of ``connectTCP``/``connectUNIX``: ``connect()`` (again, for
    reconnecting factories), ``disconnect()``, ``stopConnecting()``,
    ``getDestination()``."""

    def __init__(self, reactor: Reactor, factory: Any, dest: Any, timeout: float) -> None:
        self.reactor = reactor
        self.factory = factory
        self._dest = dest
        self.timeout = timeout
        self.state = "disconnected"
        self._task: polyloop.Task[None] | None = None
        self._adapter: ProtocolAdapter | None = None

    def __repr__(self) -> str:
        return f"<polyloop_twisted.compat.Connector to {self._dest!r} {self.state}>"

    def getDestination(self) -> Any:
        """Where it connects: ``IPv4Address``/``IPv6Address`` or ``UNIXAddress``."""
        if isinstance(self._dest, tuple):
            return twisted_address(self._dest)
        return twisted_address(self._dest, "UNIX")

    def connect(self) -> None:
        """Start connecting (``factory.startedConnecting(self)`` first)."""
        if self.state != "disconnected":
            raise RuntimeError(f"can't connect in this state: {self.state}")
        self.state = "connecting"
        self.factory.doStart()
        self.factory.startedConnecting(self)
        self._task = self.reactor.session.spawn(self._connect())

    async def _connect(self) -> None:
        session = self.reactor.session
        adapter = self._adapter = ProtocolAdapter(
            self.factory.buildProtocol, self.reactor, self._connection_lost
        )
        try:
            if isinstance(self._dest, tuple):
                opening = session.connect_tcp(lambda: adapter, *self._dest)
            else:
                opening = session.connect_unix(lambda: adapter, self._dest)
            await polyloop.wait_for(opening, self.timeout)
        except polyloop.Cancelled:
            self._failed(error.UserError(string="stopConnecting() was called"))  # type: ignore[no-untyped-call]
            raise
        except Exception as exc:
            self._failed(connect_error(exc))
            return
        if adapter.protocol is None:  # buildProtocol returned None
            self.state = "disconnected"
            self.factory.doStop()
        else:
            self.state = "connected"

    def _failed(self, reason: Exception) -> None:
        self.state = "disconnected"
        self.factory.clientConnectionFailed(self, failure(reason))
        self.factory.doStop()

    def _connection_lost(self, proto: Any, reason: Failure) -> None:
        self.state = "disconnected"
        self.factory.clientConnectionLost(self, reason)
        self.factory.doStop()

    def stopConnecting(self) -> None:
        """Give up a connection attempt (``clientConnectionFailed`` with
        ``UserError``); ``NotConnectingError`` if it is not connecting."""
        if self.state != "connecting" or self._task is None:
            raise error.NotConnectingError("we're not trying to connect")
        self._task.cancel()

    def disconnect(self) -> None:
        """Stop connecting, or close the connection."""
        if self.state == "connecting":
            self.stopConnecting()
        elif self.state == "connected" and self._adapter is not None:
            transport = self._adapter.transport
            if transport is not None:
                transport.loseConnection()


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
