"""Ports and connectors: ``listenTCP``/``connectTCP``/``listenUNIX``/``connectUNIX`` (and
their TLS forms) of the compat ``Reactor``, on the session's sockets.

Rule: this file binds, accepts and connects sockets the way Twisted's own ``tcp.Port``
and ``tcp.Client`` do (the same ``bind`` address, Twisted's accept loop with its EMFILE
recovery, the same errors, raised at the same moment, the same log lines), on the
session's readiness callbacks, then hands each connected socket to the polyloop session
(``adopt_connection``), which reads and writes it with its backend. Each connection's
protocol runs on ``ProtocolAdapter`` (``_twisted_transport.py``).
"""

from __future__ import annotations

import errno
import os
import socket
import ssl as _ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet import abstract, address, defer, error, interfaces
from twisted.internet.tcp import _accept as _twisted_accept
from twisted.internet.tcp import _reservedFD as _reserved_fd
from twisted.internet.tcp import _resolveIPv6 as _twisted_resolve_ipv6
from twisted.logger import Logger
from twisted.python import log as twisted_log
from twisted.python.failure import Failure
from zope.interface import implementer  # type: ignore[import-untyped]

import polyloop
from polyloop import bridge
from polyloop.lowlevel import ACCEPTS_PER_EVENT

from ._twisted_transport import ProtocolAdapter, failure, twisted_address

if TYPE_CHECKING:
    from ._twisted_reactor import Reactor

__all__ = [
    "Connector",
    "Port",
    "as_factory",
    "as_ssl_context",
    "connect_error",
    "log_prefix",
    "tcp_bind_address",
]

_accept_log = Logger(namespace="polyloop_twisted.compat")

_IN_PROGRESS = (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN, errno.EINTR)


def _resolve_ipv6(ip: str, port: Any) -> tuple[Any, ...]:
    """Twisted's own IPv6 literal resolution (the 4-tuple with the scope id)."""
    return tuple(_twisted_resolve_ipv6(ip, port))  # type: ignore[no-untyped-call]


def as_factory(factory: Any) -> Any:
    """An ``IProtocolFactory`` from a factory, or from a Twisted protocol class."""
    if interfaces.IProtocolFactory.providedBy(factory):
        return factory
    if isinstance(factory, type) and interfaces.IProtocol.implementedBy(factory):
        from twisted.internet import protocol

        return protocol.Factory.forProtocol(factory)
    raise TypeError(f"expected a Twisted IProtocolFactory or Protocol class, not {factory!r}")


def as_ssl_context(context_factory: Any) -> _ssl.SSLContext:
    """The stdlib ``ssl.SSLContext`` behind a TLS argument: a context itself, or a
    context factory whose ``getContext()`` returns one. Twisted's own context factories
    make pyOpenSSL contexts, which polyloop cannot back (its TLS layer is the stdlib
    ``ssl`` module): they are refused with ``TypeError``, never run half-way."""
    if isinstance(context_factory, _ssl.SSLContext):
        return context_factory
    get = getattr(context_factory, "getContext", None)
    made = get() if callable(get) else None
    if isinstance(made, _ssl.SSLContext):
        return made
    raise TypeError(
        "the polyloop reactor's TLS takes a stdlib ssl.SSLContext (or a context factory"
        f" whose getContext() returns one), not {context_factory!r}: pyOpenSSL contexts"
        " (twisted.internet.ssl.CertificateOptions, optionsForClientTLS ...) cannot be"
        " backed by polyloop's TLS layer, which is the stdlib ssl module"
    )


def log_prefix(factory: Any) -> str:
    """What Twisted's ports put in front of their log lines (``_getLogPrefix``)."""
    if interfaces.ILoggingContext.providedBy(factory):
        return str(factory.logPrefix())
    return type(factory).__name__


def connect_error(exc: BaseException) -> BaseException:
    """A polyloop (or socket) connect error as the reason Twisted's connectors report:
    Twisted's own errors as they are; ``OSError``s through ``error.getConnectError``;
    anything else (``OverflowError`` for a port out of range) as raised, as Twisted does."""
    if isinstance(exc, error.ConnectError):
        return exc
    if isinstance(exc, ConnectionRefusedError):
        return error.ConnectionRefusedError(exc.strerror or str(exc))  # type: ignore[no-untyped-call]
    if isinstance(exc, TimeoutError):
        return error.TimeoutError(str(exc))  # type: ignore[no-untyped-call]
    if isinstance(exc, socket.gaierror):
        return exc  # an address Twisted's _resolveIPv6 or connect_ex refused, as raised
    if isinstance(exc, OSError) and exc.errno is not None:
        made: BaseException = error.getConnectError((exc.errno, exc.strerror))  # type: ignore[no-untyped-call]
        return made
    return exc


def tcp_bind_address(interface: str, port: int) -> tuple[int, tuple[Any, ...]]:
    """``(family, address)`` to bind for ``interface``/``port``, as Twisted's ``tcp.Port``
    does: an IPv6 literal is resolved to its 4-tuple (so a scope id, ``fe80::1%lo``,
    becomes ``sin6_scope_id``), anything else is bound as ``(interface, port)``."""
    if abstract.isIPv6Address(interface):
        return socket.AF_INET6, tuple(_resolve_ipv6(interface, port))
    return socket.AF_INET, (interface, port)


@implementer(interfaces.IListeningPort)
class Port:
    """An ``IListeningPort``: from ``Reactor.listenTCP``/``listenUNIX``/``listenSSL``/
    ``adoptStreamPort`` (over a bound socket, ``socket``) or from ``listen_tcp`` (over a
    polyloop ``Server``). ``getHost``, ``startListening``, ``stopListening`` (a
    ``Deferred`` fired once the socket is closed and ``factory.doStop()`` ran);
    ``port``, ``sessionno`` (connections accepted so far) and ``aclose()`` for polyloop
    code. It logs Twisted's ``"<Factory> starting on N"`` and ``"(TCP Port N Closed)"``."""

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
        ssl: _ssl.SSLContext | None = None,
        unix: bool = False,
    ) -> None:
        self.reactor = reactor
        self.factory = factory
        #: The listening socket (``None`` for a port made over a polyloop ``Server``).
        self.socket = sock
        #: How many connections this port has accepted (each transport's ``sessionno``).
        self.sessionno = 0
        self.connected = False
        self.disconnecting = False
        self._host = host
        self._backlog = backlog
        self._path = path
        self._unix = unix or path is not None or isinstance(host, address.UNIXAddress)
        self._ssl = ssl
        self._server = server
        self._watched: int | None = None  # the fd given to session.add_reader
        self._stopped: defer.Deferred[None] | None = None
        self.startListening()

    def __repr__(self) -> str:
        return f"<polyloop_twisted.compat.Port {self._host}>"

    @property
    def _label(self) -> str:
        if self._unix:
            return os.fsdecode(getattr(self._host, "name", None) or "")
        return str(self.port)

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
        """Start accepting (done when the port is made; again, a no-op). Connections
        wait in the kernel's backlog until the reactor runs."""
        if self.connected:
            return
        label = repr(self._label) if self._unix else self._label  # Twisted's %r and %s
        twisted_log.msg(f"{log_prefix(self.factory)} starting on {label}")
        self.factory.doStart()
        self.connected = True
        self.reactor._ports.add(self)
        if self._server is None:
            self.reactor._when_running(self._serve_soon)

    def _serve_soon(self) -> None:
        sock = self.socket
        if not self.connected or self.disconnecting or sock is None or sock.fileno() == -1:
            return
        # Twisted's accept loop (tcp._accept, with its EMFILE recovery: a reserved
        # descriptor is released to accept and close the clients that cannot be served,
        # rather than leave them hanging), on the session's readiness callback; each
        # connection is then the session's, adopted with the backend's own transport.
        _reserved_fd.reserve()  # type: ignore[no-untyped-call]
        self._watched = sock.fileno()
        self.reactor.session.add_reader(self._watched, self._accept)

    def _accept(self) -> None:
        sock = self.socket
        if sock is None or not self.connected or self.disconnecting:
            return
        accepted = _twisted_accept(  # type: ignore[no-untyped-call]
            _accept_log, range(ACCEPTS_PER_EVENT), sock, _reserved_fd
        )
        session = self.reactor.session
        for client, _ in accepted:
            client.setblocking(False)
            session.spawn(self._adopt(session, client))

    async def _adopt(self, session: Any, client: socket.socket) -> None:
        adapter = self._connection()
        try:
            await session.adopt_connection(
                lambda: adapter, client, ssl=self._ssl, server_side=True
            )
        except BaseException as exc:
            client.close()
            if not isinstance(exc, (OSError, polyloop.Cancelled)):
                raise  # else: the client left (or the handshake failed) before it began

    def _connection(self) -> ProtocolAdapter:
        self.sessionno += 1
        return ProtocolAdapter(
            self.factory.buildProtocol, self.reactor, sessionno=self.sessionno, role="server"
        )

    def stopListening(self) -> defer.Deferred[None]:
        """Stop accepting; the ``Deferred`` fires once the socket is closed (on a later
        iteration, as Twisted's does). Connections already made stay open."""
        if self._stopped is None:
            self._stopped = defer.Deferred()
            self.disconnecting = True
            if self.reactor.session is not None:
                self.reactor.session.spawn(self._stop(self._stopped))
            else:  # the reactor does not run: as Twisted's, closed on its next iteration
                self.reactor.callLater(0, self._close_now)
                self.reactor.callLater(0, self._lost, self._stopped)
        return self._stopped

    loseConnection = stopListening

    def _close_now(self) -> None:
        if self._watched is not None:
            session = self.reactor.session
            if session is not None:
                session.remove_reader(self._watched)
            self._watched = None
        if self._server is None and self.socket is not None:
            self.socket.close()
            if self._path is not None and self.connected:
                try:
                    os.unlink(self._path)
                except OSError:
                    pass

    async def _stop(self, done: defer.Deferred[None]) -> None:
        await self._shut()
        self._lost(done)

    async def _shut(self) -> None:
        self._close_now()
        if self._server is not None:
            await self._server.aclose()

    def _lost(self, done: defer.Deferred[None] | None = None) -> None:
        """The port is closed: Twisted's ``connectionLost`` of a port."""
        if self.connected:
            self.connected = False
            self.reactor._ports.discard(self)
            kind = "UNIX" if self._unix else "TCP"
            twisted_log.msg(f"({kind} Port {self._label} Closed)")
            try:
                self.factory.doStop()
            finally:
                self.disconnecting = False
        if done is not None and not done.called:
            done.callback(None)

    async def aclose(self) -> None:
        """``stopListening()``, awaited."""
        await bridge.future(self.stopListening())


def _set_once(fut: polyloop.Future[Any]) -> None:
    if not fut.done():
        fut.set_result(None)


class _Unconnected:
    """A connector's ``transport`` while it connects: the socket, made and bound."""

    def __init__(self, sock: socket.socket, bind_error: BaseException | None) -> None:
        self.socket = sock
        self.error = bind_error

    def getHost(self) -> Any:
        return twisted_address(self.socket.getsockname())


@implementer(interfaces.IConnector)
class Connector:
    """The ``IConnector`` of ``connectTCP``/``connectUNIX``/``connectSSL``: ``connect()``
    (again, for reconnecting factories), ``disconnect()``, ``stopConnecting()``,
    ``getDestination()``. It binds ``bindAddress``, connects and reports errors as
    Twisted's ``tcp.Client`` does, then adopts the socket into the session."""

    def __init__(
        self,
        reactor: Reactor,
        factory: Any,
        dest: Any,
        timeout: float,
        bind_address: Any = None,
        *,
        ssl: _ssl.SSLContext | None = None,
    ) -> None:
        if isinstance(dest, tuple) and isinstance(dest[1], str):
            try:
                dest = (dest[0], socket.getservbyname(dest[1], "tcp"))
            except OSError as exc:
                raise error.ServiceNameUnknownError(  # type: ignore[no-untyped-call]
                    string=f"{exc} ({dest[1]!r})"
                ) from None
        self.reactor = reactor
        self.factory = factory
        self._dest = dest
        self.timeout = timeout
        self.bindAddress = bind_address
        self._ssl = ssl
        self.state = "disconnected"
        self._factory_started = False
        self._task: polyloop.Task[None] | None = None
        self._adapter: ProtocolAdapter | None = None
        self._unconnected: _Unconnected | None = None

    def __repr__(self) -> str:
        return f"<polyloop_twisted.compat.Connector to {self._dest!r} {self.state}>"

    def getDestination(self) -> Any:
        """Where it connects: ``IPv4Address``/``IPv6Address`` or ``UNIXAddress``."""
        if isinstance(self._dest, tuple):
            return twisted_address(self._dest)
        return twisted_address(self._dest, "UNIX")

    def connect(self) -> None:
        """Start connecting (``factory.startedConnecting(self)`` first). The socket is
        made and bound at once, as Twisted's ``tcp.Client`` does (``transport.socket``
        is there before the reactor runs); a bind error is reported through
        ``clientConnectionFailed`` (``ConnectBindError``)."""
        if self.state != "disconnected":
            raise RuntimeError(f"can't connect in this state: {self.state}")
        self.state = "connecting"
        if not self._factory_started:
            self.factory.doStart()
            self._factory_started = True
        self._task = None
        self._unconnected = _Unconnected(*self._make_socket())
        self.factory.startedConnecting(self)
        self.reactor._when_running(self._start)

    def _make_socket(self) -> tuple[socket.socket, BaseException | None]:
        if not isinstance(self._dest, tuple):
            family = socket.AF_UNIX
        elif abstract.isIPv6Address(self._dest[0]):
            family = socket.AF_INET6
        else:
            family = socket.AF_INET  # a name is resolved to IPv4, as Twisted's reactors do
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        bind = self.bindAddress
        if bind is None:
            return sock, None
        try:
            if not isinstance(bind, (tuple, str, bytes)):  # Twisted's Binding
                if bind._reuseAddress:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if bind._reusePort:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(self._bind_address(family))
        except OSError as exc:
            return sock, error.ConnectBindError(exc.errno, exc.strerror)  # type: ignore[no-untyped-call]
        return sock, None

    def _start(self) -> None:
        if self.state == "connecting" and self._task is None:
            self._task = self.reactor.session.spawn(self._connect())

    async def _connect(self) -> None:
        session = self.reactor.session
        adapter = self._adapter = ProtocolAdapter(
            self.factory.buildProtocol, self.reactor, self._connection_lost
        )
        unconnected = self._unconnected
        assert unconnected is not None
        sock: socket.socket | None = unconnected.socket
        try:
            if unconnected.error is not None:
                raise unconnected.error
            await polyloop.wait_for(self._open(session, unconnected.socket), self.timeout)
            hostname = None
            if self._ssl is not None and isinstance(self._dest, tuple):
                hostname = str(self._dest[0])
            opened, sock = unconnected.socket, None
            await session.adopt_connection(
                lambda: adapter, opened, ssl=self._ssl, server_hostname=hostname
            )
        except polyloop.Cancelled:
            if sock is not None:
                sock.close()
            if self.state == "connecting":
                self._failed(error.UserError(string="stopConnecting() was called"))  # type: ignore[no-untyped-call]
            raise
        except Exception as exc:
            if sock is not None:
                sock.close()
            if adapter.protocol is None:
                self._failed(connect_error(exc))
            return
        finally:
            self._unconnected = None
        if adapter.protocol is None:  # buildProtocol returned None
            self.state = "disconnected"
            self._stop_factory()
        elif self.state == "connecting":
            self.state = "connected"

    async def _open(self, session: polyloop.Session, sock: socket.socket) -> None:
        if isinstance(self._dest, tuple):
            host, port = self._dest
            if abstract.isIPAddress(host):
                addr: Any = (host, port)
            elif abstract.isIPv6Address(host):
                if isinstance(port, int) and port < 0:
                    # Twisted's connect of an IPv6 literal resolves it with the port
                    # (getaddrinfo's -8, "Servname not supported"), not connect_ex's
                    # OverflowError that IPv4 gets.
                    socket.getaddrinfo(host, port, socket.AF_INET6, socket.SOCK_STREAM)
                addr = tuple(_resolve_ipv6(host, port))
            else:
                # Twisted's tcp.Client resolves with reactor.resolve (IPv4, through the
                # installed resolver: installResolver/installNameResolver count).
                try:
                    ip = await bridge.future(self.reactor.resolve(host))
                except Exception as exc:
                    raise error.DNSLookupError(f"{host}: {exc}") from None
                addr = (ip, port)
        else:
            addr = self._dest
        code = sock.connect_ex(addr)
        if code in _IN_PROGRESS:
            writable = session.create_future()
            fd = sock.fileno()
            session.add_writer(fd, lambda: _set_once(writable))
            try:
                await writable
            finally:
                session.remove_writer(fd)
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code and code != errno.EISCONN:
            raise error.getConnectError((code, os.strerror(code)))  # type: ignore[no-untyped-call]

    def _bind_address(self, family: int) -> Any:
        bind = self.bindAddress
        if family == socket.AF_UNIX:
            return bind
        if isinstance(bind, tuple):
            host, port = bind[0], bind[1]
        else:  # Twisted's Binding (makeBinding): options too
            host, port = bind._address or "", bind._port
        if abstract.isIPv6Address(host):
            return tuple(_resolve_ipv6(host, port))
        return (host, port)

    @property
    def transport(self) -> Any:
        """The connection's transport, as Twisted's connector has it: while connecting,
        an object with the bound ``socket``; then the ``TwistedTransport``."""
        if self._adapter is not None and self._adapter.transport is not None:
            return self._adapter.transport
        return self._unconnected

    def _stop_factory(self) -> None:
        if self.state == "disconnected" and self._factory_started:
            self._factory_started = False
            self.factory.doStop()

    def _failed(self, reason: BaseException) -> None:
        self.state = "disconnected"
        self.factory.clientConnectionFailed(self, failure(reason))
        self._stop_factory()

    def _connection_lost(self, proto: Any, reason: Failure) -> None:
        self.state = "disconnected"
        self.factory.clientConnectionLost(self, reason)
        self._stop_factory()

    def stopConnecting(self) -> None:
        """Give up a connection attempt (``clientConnectionFailed`` with
        ``UserError``); ``NotConnectingError`` if it is not connecting."""
        if self.state != "connecting":
            raise error.NotConnectingError("we're not trying to connect")
        if self._task is None:  # the reactor has not run it yet
            if self._unconnected is not None:
                self._unconnected.socket.close()
                self._unconnected = None
            self._failed(error.UserError(string="stopConnecting() was called"))  # type: ignore[no-untyped-call]
        else:
            self._task.cancel()

    def disconnect(self) -> None:
        """Stop connecting, or close the connection."""
        if self.state == "connecting":
            self.stopConnecting()
        elif self.state == "connected" and self._adapter is not None:
            transport = self._adapter.transport
            if transport is not None:
                transport.loseConnection()


def protocol_factory(factory: Any, reactor: Reactor | None = None) -> Callable[[], Any]:
    """A polyloop protocol factory that runs the Twisted ``factory`` (an
    ``IProtocolFactory`` or a Twisted ``Protocol`` class): hand it to
    ``polyloop.listen_tcp``, ``connect_tcp``, ``listen_unix``... Each connection gets
    ``factory.buildProtocol(peer)`` and a ``TwistedTransport``. ``reactor`` is what its
    transport and timeout helpers use (default: the session's, at the first
    connection). The factory's ``doStart``/``doStop`` are left to the caller."""
    from ._twisted_reactor import get_reactor

    twisted_factory = as_factory(factory)

    def make() -> ProtocolAdapter:
        return ProtocolAdapter(twisted_factory.buildProtocol, reactor or get_reactor())

    return make
