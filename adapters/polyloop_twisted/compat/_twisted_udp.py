"""``IReactorUDP`` and ``IReactorMulticast`` over a polyloop session's datagram endpoints.

Rule: the port here is Twisted's ``udp.Port`` as a Twisted ``DatagramProtocol`` sees it
(``twisted/internet/udp.py`` is the model, line for line where it can be), and the bytes
move through the session's own datagram transport (``Session.adopt_udp``: the backend's
``adopt_datagram``). Nothing here reads a socket itself.

Twisted's ``listenUDP`` is synchronous: the socket is bound, "<protocol> starting on N"
is logged and ``protocol.makeConnection(port)`` runs (so ``startProtocol``) before it
returns. polyloop's adoption is a coroutine, so the port binds at once and the session
starts reading one iteration later (the kernel queues what arrives in between); a
datagram written in between goes straight to the socket (UDP needs no ordering with the
transport's queue: the queue is empty then).

Where Twisted's behaviour is odd it is kept, because protocols depend on it: a datagram
longer than ``maxPacketSize`` is cut to it (Twisted's ``recvfrom(maxPacketSize)``); an
IPv6 peer is a ``(host, port)`` pair (Twisted drops flow info and scope id); a refused
datagram on a connected port is ``connectionRefused()``, on an unconnected one nothing.
"""

from __future__ import annotations

import errno
import logging
import socket
import struct
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

# Twisted at module level, on purpose: loaded only through polyloop_twisted.compat's
# reactor (see _twisted_transport.py); none of these installs a reactor.
from twisted.internet import abstract, defer, error, interfaces
from twisted.python import log as twisted_log
from zope.interface import implementer  # type: ignore[import-untyped]

import polyloop

from .._bridge import to_deferred
from ._twisted_transport import twisted_address

__all__ = [
    "DatagramPort",
    "MulticastPort",
    "adopt_datagram_port",
    "deferred_on_session",
    "listen_multicast",
    "listen_udp",
    "run_on_session",
]

log = logging.getLogger("polyloop")

T = TypeVar("T")


# The largest UDP payload: 65535 less the IP (20; none for IPv6's payload length) and UDP
# (8) headers. Checked here because a polyloop transport reports a send error later, to
# error_received, where Twisted's write raises MessageLengthError at once.
_LARGEST = {socket.AF_INET: 65507, socket.AF_INET6: 65527}


def run_on_session(reactor: Any, fn: Callable[[polyloop.Session], object]) -> None:
    """``fn(session)`` now if ``reactor`` runs on a session; else once it runs
    (``callWhenRunning``: a reactor that owns its loop, made by ``install()``, has no
    session before ``reactor.run()``)."""
    session = getattr(reactor, "session", None)
    if session is not None:
        fn(session)
    else:
        reactor.callWhenRunning(lambda: fn(reactor.session))


def deferred_on_session(
    reactor: Any, make: Callable[[polyloop.Session], Coroutine[Any, Any, T]]
) -> defer.Deferred[T]:
    """A ``Deferred`` of the coroutine ``make(session)``, run as a task of ``reactor``'s
    session (once there is one)."""
    d: defer.Deferred[T] = defer.Deferred()
    run_on_session(
        reactor, lambda session: to_deferred(session.spawn(make(session))).chainDeferred(d)
    )
    return d


def _family_of(interface: str) -> socket.AddressFamily:
    """Twisted's ``Port._setAddressFamily``: an IP literal or ``""`` (every IPv4
    interface); a name is ``InvalidAddressError``."""
    if abstract.isIPv6Address(interface):
        return socket.AF_INET6
    if abstract.isIPAddress(interface) or not interface:
        return socket.AF_INET
    raise error.InvalidAddressError(interface, "not an IPv4 or IPv6 address.")  # type: ignore[no-untyped-call]


class _Receiver(polyloop.DatagramProtocol):
    """The polyloop side of one port: hands datagrams to the Twisted protocol."""

    def __init__(self, port: DatagramPort) -> None:
        self.port = port
        self.transport: polyloop.DatagramTransport | None = None
        self.closed = False
        self.waiters: list[polyloop.Future[None]] = []

    def connection_made(self, transport: polyloop.DatagramTransport) -> None:  # type: ignore[override]
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        port = self.port
        if not port.connected:
            return
        if len(data) > port.maxPacketSize:
            data = data[: port.maxPacketSize]
        if port.addressFamily == socket.AF_INET6:
            addr = tuple(addr[:2])
        # callWithLogger: the log context's "system" is "<logPrefix> (UDP)" inside
        # datagramReceived, and an exception it raises is logged, as Twisted's reactor
        # does around doRead.
        twisted_log.callWithLogger(port, port.protocol.datagramReceived, data, addr)  # type: ignore[no-untyped-call]

    def error_received(self, exc: OSError) -> None:
        port = self.port
        if isinstance(exc, ConnectionRefusedError):
            if port._connectedAddr is not None and port.connected:
                twisted_log.callWithLogger(port, port.protocol.connectionRefused)  # type: ignore[no-untyped-call]
            return
        log.debug("polyloop_twisted.compat: UDP port %r: %s", port, exc)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


@implementer(interfaces.IListeningPort, interfaces.IUDPTransport, interfaces.ISystemHandle)
class DatagramPort:
    """What ``listenUDP`` returns and a ``DatagramProtocol``'s ``transport`` is:
    ``write((data, addr))``/``write(data, addr)``, ``writeSequence``, ``connect(host,
    port)`` (IP literals only, once), ``getHost``, ``stopListening`` (a ``Deferred``, or
    ``None`` if it was not listening), ``loseConnection`` (the same),
    ``setBroadcastAllowed``/``getBroadcastAllowed``, ``getHandle``, and ``socket``."""

    addressFamily: socket.AddressFamily = socket.AF_INET
    socketType = socket.SOCK_DGRAM

    def __init__(
        self,
        reactor: Any,
        port: int,
        protocol: Any,
        interface: str = "",
        maxPacketSize: int = 8192,
        *,
        sock: socket.socket | None = None,
    ) -> None:
        #: The compat ``Reactor`` this port runs on.
        self.reactor = reactor
        self.port = port
        #: The Twisted ``DatagramProtocol``.
        self.protocol = protocol
        self.interface = interface
        self.maxPacketSize = maxPacketSize
        self.connected = 0
        self._connectedAddr: tuple[str, int] | None = None
        self._realPortNumber: int | None = None
        self._receiver: _Receiver | None = None
        self._adopting: polyloop.Task[Any] | None = None
        self._stopped: defer.Deferred[None] | None = None
        self._preexisting = sock
        if sock is not None:
            self.addressFamily = socket.AddressFamily(sock.family)
            self.interface = sock.getsockname()[0]
        else:
            self.addressFamily = _family_of(interface)
        #: The bound socket (``None`` once the port stopped).
        self.socket: socket.socket | None = None
        prefix = self._protocol_prefix()
        self.logstr = f"{prefix} (UDP)"

    def _protocol_prefix(self) -> str:
        protocol: Any = self.protocol
        if interfaces.ILoggingContext.providedBy(protocol):
            return str(protocol.logPrefix())
        return type(protocol).__name__

    def __repr__(self) -> str:
        if self._realPortNumber is not None:
            return f"<{self.protocol.__class__} on {self._realPortNumber}>"
        return f"<{self.protocol.__class__} not connected>"

    def logPrefix(self) -> str:
        """``"<protocol's logPrefix> (UDP)"``, the log context of its callbacks."""
        return self.logstr

    # --- IListeningPort ---

    def _make_socket(self) -> socket.socket:
        return socket.socket(self.addressFamily, self.socketType)

    def startListening(self) -> None:
        """Bind (``CannotListenError`` if that fails), log "<protocol> starting on N",
        call ``protocol.makeConnection(self)``, and have the session read the socket."""
        sock, self._preexisting = self._preexisting, None
        if sock is None:
            try:
                sock = self._make_socket()
            except OSError as exc:
                raise error.CannotListenError(self.interface, self.port, exc) from exc  # type: ignore[no-untyped-call]
            try:
                sock.bind((self.interface, self.port))
            except OSError as exc:
                sock.close()
                raise error.CannotListenError(self.interface, self.port, exc) from exc  # type: ignore[no-untyped-call]
            except BaseException:
                sock.close()
                raise
        sock.setblocking(False)
        self._realPortNumber = sock.getsockname()[1]
        twisted_log.msg(f"{self._protocol_prefix()} starting on {self._realPortNumber}")
        self.connected = 1
        self.socket = sock
        receiver = self._receiver = _Receiver(self)

        def start_reading(session: polyloop.Session) -> None:
            if self.connected:  # not stopped in between
                self._adopting = session.spawn(session.adopt_udp(lambda: receiver, sock))

        run_on_session(self.reactor, start_reading)
        self.protocol.makeConnection(self)

    def stopListening(self) -> defer.Deferred[None] | None:
        """Stop reading, close the socket, then (on a later iteration, never inside this
        call) ``protocol.doStop()`` (``stopProtocol``); the ``Deferred`` fires after it.
        ``None`` if the port is not listening."""
        if not self.connected:
            return None
        if self._stopped is None:
            done = self._stopped = defer.Deferred()
            run_on_session(self.reactor, lambda session: session.spawn(self._stop(session, done)))
        return self._stopped

    def loseConnection(self) -> defer.Deferred[None] | None:
        """``stopListening()`` (Twisted's name for it before 2.x; no warning here)."""
        return self.stopListening()

    async def _stop(self, session: polyloop.Session, done: defer.Deferred[None]) -> None:
        receiver, adopting = self._receiver, self._adopting
        if adopting is not None:
            try:
                await adopting
            except BaseException as exc:  # the session may be closing: the socket goes too
                log.debug("polyloop_twisted.compat: UDP adoption ended with %r", exc)
        if receiver is not None and receiver.transport is not None:
            if not receiver.closed:
                waiter: polyloop.Future[None] = session.create_future()
                receiver.waiters.append(waiter)
                receiver.transport.close()
                await waiter
        elif self.socket is not None:
            self.socket.close()
        twisted_log.msg(f"(UDP Port {self._realPortNumber} Closed)")
        self._realPortNumber = None
        self.connected = 0
        self.socket = None
        try:
            self.protocol.doStop()
        finally:
            done.callback(None)

    def getHost(self) -> Any:
        """The bound address: ``IPv4Address("UDP", ...)`` or ``IPv6Address``."""
        if self.socket is None:
            raise error.NotListeningError("the port is not listening")
        return twisted_address(tuple(self.socket.getsockname()[:2]), "UDP")

    def getHandle(self) -> Any:
        """The socket."""
        return self.socket

    # --- IUDPTransport ---

    def write(self, datagram: bytes, addr: tuple[str, int] | None = None) -> None:
        """Send one datagram to ``addr`` (an IP literal and a port), or to the connected
        peer (``addr`` ``None`` or that peer). ``InvalidAddressError`` for a host name or
        an address of the other family; ``MessageLengthError`` for a datagram too long."""
        if self._connectedAddr is not None:
            if addr is not None and tuple(addr) != self._connectedAddr:
                raise ValueError(
                    f"this port is connected to {self._connectedAddr!r}, not {addr!r}"
                )
            addr = self._connectedAddr
        else:
            self._check_address(addr)
        assert addr is not None
        # After the address checks, as Twisted's (its tests write a str to a bad address
        # and expect InvalidAddressError).
        if not isinstance(datagram, (bytes, bytearray, memoryview)):
            raise TypeError(f"Data must be bytes, not {type(datagram).__name__}")
        if self.socket is None:
            return
        if len(datagram) > _LARGEST[self.addressFamily]:
            raise error.MessageLengthError("message too long")
        receiver = self._receiver
        transport = receiver.transport if receiver is not None else None
        if transport is not None:
            transport.sendto(datagram, addr)
            return
        # Not adopted yet: straight to the socket, as Twisted's write does every time.
        try:
            self.socket.sendto(datagram, addr)
        except OSError as exc:
            if exc.errno == errno.EMSGSIZE:
                raise error.MessageLengthError("message too long") from exc
            if exc.errno == errno.ECONNREFUSED:
                if self._connectedAddr is not None:
                    self.protocol.connectionRefused()
                return
            if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                return  # UDP may drop a datagram; Twisted raises here, polyloop queues
            raise

    def _check_address(self, addr: Any) -> None:
        if not isinstance(addr, tuple) or len(addr) < 2:
            raise error.InvalidAddressError(addr, "write() needs an (address, port) pair")  # type: ignore[no-untyped-call]
        host = addr[0]
        if not abstract.isIPAddress(host) and not abstract.isIPv6Address(host):
            raise error.InvalidAddressError(  # type: ignore[no-untyped-call]
                host, "write() only accepts IP addresses, not hostnames"
            )
        if abstract.isIPAddress(host) and self.addressFamily == socket.AF_INET6:
            raise error.InvalidAddressError(  # type: ignore[no-untyped-call]
                host, "IPv6 port write() called with IPv4 or broadcast address"
            )
        if abstract.isIPv6Address(host) and self.addressFamily == socket.AF_INET:
            raise error.InvalidAddressError(host, "IPv4 port write() called with IPv6 address")  # type: ignore[no-untyped-call]

    def writeSequence(self, seq: Iterable[bytes], addr: tuple[str, int] | None = None) -> None:
        """One datagram made of the items of ``seq``."""
        self.write(b"".join(seq), addr)

    def connect(self, host: str, port: int) -> None:
        """From now on, send only to and receive only from ``host:port`` (an IP
        literal); ``RuntimeError`` if connected already."""
        if self._connectedAddr is not None:
            raise RuntimeError("already connected, reconnecting is not currently supported")
        if not abstract.isIPAddress(host) and not abstract.isIPv6Address(host):
            raise error.InvalidAddressError(host, "not an IPv4 or IPv6 address.")  # type: ignore[no-untyped-call]
        if self.socket is None:
            raise error.NotListeningError("the port is not listening")
        self._connectedAddr = (host, port)
        self.socket.connect((host, port))

    def setBroadcastAllowed(self, enabled: bool) -> None:
        """Allow (or not) sending to a broadcast address (``SO_BROADCAST``)."""
        assert self.socket is not None
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, enabled)

    def getBroadcastAllowed(self) -> bool:
        """Whether ``SO_BROADCAST`` is set."""
        assert self.socket is not None
        return bool(self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST))


def _ipproto(family: int) -> int:
    return socket.IPPROTO_IP if family == socket.AF_INET else socket.IPPROTO_IPV6


@implementer(interfaces.IMulticastTransport)
class MulticastPort(DatagramPort):
    """What ``listenMulticast`` returns: a ``DatagramPort`` with
    ``joinGroup``/``leaveGroup`` (``Deferred``s; ``MulticastJoinError`` if the OS
    refuses), ``setTTL``/``getTTL``, ``setLoopbackMode``/``getLoopbackMode`` and
    ``setOutgoingInterface``/``getOutgoingInterface``, as Twisted's ``MulticastMixin``
    does them. ``listenMultiple``: ``SO_REUSEADDR`` and ``SO_REUSEPORT``, so several
    ports share one group and port."""

    def __init__(
        self,
        reactor: Any,
        port: int,
        protocol: Any,
        interface: str = "",
        maxPacketSize: int = 8192,
        listenMultiple: bool = False,
    ) -> None:
        super().__init__(reactor, port, protocol, interface, maxPacketSize)
        self.listenMultiple = listenMultiple

    def _make_socket(self) -> socket.socket:
        sock = super()._make_socket()
        if self.listenMultiple:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if hasattr(socket, "SO_REUSEPORT"):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                except OSError as exc:  # defined but refused on some kernels (RHEL 6)
                    if exc.errno != errno.ENOPROTOOPT:
                        sock.close()
                        raise
        return sock

    def _sock(self) -> socket.socket:
        if self.socket is None:
            raise error.NotListeningError("the port is not listening")
        return self.socket

    def _pack(self, addr: str) -> bytes:
        try:
            return socket.inet_pton(self.addressFamily, addr)
        except OSError:
            raise error.MulticastJoinError(
                f"invalid address literal for {self.addressFamily.name}: {addr!r}"
            ) from None

    async def _resolve(self, name: str) -> str:
        if abstract.isIPAddress(name) or abstract.isIPv6Address(name):
            return name
        session: polyloop.Session = self.reactor.session
        infos = await session.getaddrinfo(
            name, 0, family=self.addressFamily, type=socket.SOCK_DGRAM
        )
        if not infos:
            raise error.DNSLookupError(name)
        return str(infos[0][4][0])

    def getOutgoingInterface(self) -> str | int:
        """The interface multicast datagrams leave by: an IPv4 address, or an IPv6
        interface index."""
        if self.addressFamily == socket.AF_INET6:
            raw = self._sock().getsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, 16)
            return int.from_bytes(raw[:4], "little")
        raw = self._sock().getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, 4)
        return socket.inet_ntop(socket.AF_INET, raw)

    def setOutgoingInterface(self, addr: str | int) -> defer.Deferred[int]:
        """Send multicast by the interface ``addr`` (IPv4: an address or a name; IPv6:
        an interface index). A ``Deferred`` firing with 1."""

        async def set_it() -> int:
            value: bytes | int
            if self.addressFamily == socket.AF_INET:
                if not isinstance(addr, str):
                    raise TypeError("IPv4 interfaces are specified as addresses")
                value = self._pack(await self._resolve(addr))
            else:
                if not isinstance(addr, int):
                    raise TypeError("IPv6 interfaces are specified as integers")
                value = addr
            self._sock().setsockopt(_ipproto(self.addressFamily), _multicast_if(self), value)
            return 1

        return deferred_on_session(self.reactor, lambda session: set_it())

    def getLoopbackMode(self) -> bool:
        """Whether this host's own multicast datagrams come back to it."""
        return bool(self._sock().getsockopt(_ipproto(self.addressFamily), _multicast_loop(self)))

    def setLoopbackMode(self, mode: int) -> None:
        """Have this host's own multicast datagrams come back (true) or not."""
        self._sock().setsockopt(
            _ipproto(self.addressFamily), _multicast_loop(self), int(bool(mode))
        )

    def getTTL(self) -> int:
        """The time-to-live of outgoing multicast datagrams."""
        return int(self._sock().getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL))

    def setTTL(self, ttl: int) -> None:
        """Set the time-to-live of outgoing multicast datagrams (0-255)."""
        self._sock().setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, struct.pack("B", ttl))

    def joinGroup(self, addr: str, interface: str = "") -> defer.Deferred[None]:
        """Join the multicast group ``addr`` on ``interface`` (default: any). The
        ``Deferred`` fails with ``MulticastJoinError`` if the OS refuses."""
        return self._join_or_leave(addr, interface, True)

    def leaveGroup(self, addr: str, interface: str = "") -> defer.Deferred[None]:
        """Leave the multicast group ``addr``, as ``joinGroup``."""
        return self._join_or_leave(addr, interface, False)

    def _join_or_leave(self, addr: str, interface: str, join: bool) -> defer.Deferred[None]:
        if self.addressFamily == socket.AF_INET:
            cmd = socket.IP_ADD_MEMBERSHIP if join else socket.IP_DROP_MEMBERSHIP
        else:
            cmd = socket.IPV6_JOIN_GROUP if join else socket.IPV6_LEAVE_GROUP
        if not interface:
            interface = "0.0.0.0" if self.addressFamily == socket.AF_INET else "::"

        async def apply() -> None:
            group = self._pack(await self._resolve(addr))
            where = self._pack(await self._resolve(interface))
            try:
                self._sock().setsockopt(_ipproto(self.addressFamily), cmd, group + where)
            except OSError as exc:
                raise error.MulticastJoinError(addr, interface, *exc.args) from exc

        return deferred_on_session(self.reactor, lambda session: apply())


def _multicast_if(port: DatagramPort) -> int:
    if port.addressFamily == socket.AF_INET:
        return socket.IP_MULTICAST_IF
    return socket.IPV6_MULTICAST_IF


def _multicast_loop(port: DatagramPort) -> int:
    if port.addressFamily == socket.AF_INET:
        return socket.IP_MULTICAST_LOOP
    return socket.IPV6_MULTICAST_LOOP


def listen_udp(
    reactor: Any, port: int, protocol: Any, interface: str = "", maxPacketSize: int = 8192
) -> DatagramPort:
    """``IReactorUDP.listenUDP`` on ``reactor`` (a compat ``Reactor``)."""
    udp_port = DatagramPort(reactor, port, protocol, interface, maxPacketSize)
    udp_port.startListening()
    return udp_port


def listen_multicast(
    reactor: Any,
    port: int,
    protocol: Any,
    interface: str = "",
    maxPacketSize: int = 8192,
    listenMultiple: bool = False,
) -> MulticastPort:
    """``IReactorMulticast.listenMulticast`` on ``reactor``."""
    udp_port = MulticastPort(reactor, port, protocol, interface, maxPacketSize, listenMultiple)
    udp_port.startListening()
    return udp_port


def adopt_datagram_port(
    reactor: Any, fileDescriptor: int, addressFamily: int, protocol: Any, maxPacketSize: int = 8192
) -> DatagramPort:
    """``IReactorSocket.adoptDatagramPort``: a port on a bound UDP socket's fd. The fd
    is duplicated (Twisted does so too): the caller still owns and closes its own."""
    if addressFamily not in (socket.AF_INET, socket.AF_INET6):
        raise error.UnsupportedAddressFamily(addressFamily)
    sock = socket.fromfd(fileDescriptor, addressFamily, socket.SOCK_DGRAM)
    udp_port = DatagramPort(reactor, 0, protocol, maxPacketSize=maxPacketSize, sock=sock)
    udp_port.startListening()
    return udp_port
