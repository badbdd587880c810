"""``listenUDP`` and ``listenMulticast`` of ``polyloop_twisted.compat``'s reactor: a
Twisted ``DatagramProtocol`` on every backend, with the port Twisted's ``udp.Port`` is
(the rules are Twisted's own ``twisted/internet/test/test_udp.py`` and
``twisted/test/test_udp.py``, asked here of the compat reactor)."""

from __future__ import annotations

import socket
from typing import Any

import pytest

import polyloop

pytest.importorskip("twisted", reason="polyloop_twisted.compat needs polyloop[twisted]")

from twisted.internet import error, interfaces, protocol
from twisted.python import log as twisted_log
from zope.interface.verify import verifyObject

from polyloop_twisted import compat as ctw

BACKENDS = ["asyncio", "twisted", "gevent", "tornado"]


class Collect(protocol.DatagramProtocol):
    """Keeps what arrives; ``got`` fires at the first datagram."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, Any]] = []
        self.got: polyloop.Future[None] = polyloop.create_future()
        self.events: list[str] = []
        self.refused: polyloop.Future[None] = polyloop.create_future()

    def startProtocol(self) -> None:
        self.events.append("start")

    def stopProtocol(self) -> None:
        self.events.append("stop")

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.received.append((datagram, addr))
        if not self.got.done():
            self.got.set_result(None)

    def connectionRefused(self) -> None:
        if not self.refused.done():
            self.refused.set_result(None)


class Upper(protocol.DatagramProtocol):
    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.transport.write(datagram.upper(), addr)  # type: ignore[union-attr]


async def stopped(port: Any) -> None:
    await ctw.from_deferred(port.stopListening())


@pytest.mark.parametrize("backend", BACKENDS)
def test_listen_udp_is_twisteds_port(backend: str) -> None:
    async def main() -> None:
        r = ctw.get_reactor()
        for iface in (interfaces.IReactorUDP, interfaces.IReactorMulticast):
            assert verifyObject(iface, r)
        server = r.listenUDP(0, Upper(), interface="127.0.0.1")
        # Known at once, as Twisted's listenUDP binds before it returns:
        number = server.getHost().port
        assert server.getHost() == ctw_address("127.0.0.1", number)
        assert str(number) in str(server) and str(number) in repr(server)
        verifyObject(interfaces.IListeningPort, server)
        verifyObject(interfaces.IUDPTransport, server)
        assert isinstance(server.getHandle(), socket.socket)
        with pytest.raises(error.CannotListenError):
            r.listenUDP(number, protocol.DatagramProtocol(), interface="127.0.0.1")
        with pytest.raises(error.InvalidAddressError):
            r.listenUDP(0, protocol.DatagramProtocol(), interface="example.com")

        client = Collect()
        port = r.listenUDP(0, client, interface="127.0.0.1")
        assert client.events == ["start"]  # makeConnection ran inside listenUDP
        # write before the session adopted the socket, then once it reads it:
        port.write(b"first", ("127.0.0.1", number))
        await polyloop.wait_for(client.got, 5)
        port.writeSequence([b"se", b"quen", b"ce"], ("127.0.0.1", number))
        while len(client.received) < 2:
            await polyloop.sleep(0.01)
        assert client.received == [
            (b"FIRST", ("127.0.0.1", number)),
            (b"SEQUENCE", ("127.0.0.1", number)),
        ]
        # Twisted's address rules for write and connect:
        with pytest.raises(error.InvalidAddressError):
            port.write(b"x", ("localhost", number))
        with pytest.raises(error.InvalidAddressError):
            port.write(b"x", ("::1", number))
        with pytest.raises(error.InvalidAddressError):
            port.connect("localhost", number)
        with pytest.raises(error.MessageLengthError):
            port.write(b"x" * 70_000, ("127.0.0.1", number))
        with pytest.raises(TypeError):
            port.write("text", ("127.0.0.1", number))  # type: ignore[arg-type]

        # stopListening: a Deferred, stopProtocol later (never inside the call):
        d = port.stopListening()
        assert client.events == ["start"]
        await ctw.from_deferred(d)
        assert client.events == ["start", "stop"]
        assert port.stopListening() is None
        await stopped(server)

    polyloop.run(main, backend=backend)


def ctw_address(host: str, port: int) -> Any:
    from twisted.internet import address

    return address.IPv4Address("UDP", host, port)


@pytest.mark.parametrize("backend", BACKENDS)
def test_connected_port_and_refusal(backend: str) -> None:
    async def main() -> None:
        r = ctw.get_reactor()
        server = r.listenUDP(0, Upper(), interface="127.0.0.1")
        number = server.getHost().port
        client = Collect()
        port = r.listenUDP(0, client, interface="127.0.0.1")
        port.connect("127.0.0.1", number)
        with pytest.raises(RuntimeError):
            port.connect("127.0.0.1", number)
        port.write(b"connected")
        await polyloop.wait_for(client.got, 5)
        assert client.received == [(b"CONNECTED", ("127.0.0.1", number))]
        await stopped(server)
        # Nothing listens now: the kernel's ICMP "port unreachable" is connectionRefused()
        for _ in range(50):
            port.write(b"anyone?")
            await polyloop.sleep(0.05)
            if client.refused.done():
                break
        assert client.refused.done()
        await stopped(port)

    polyloop.run(main, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_packet_size_and_log_context(backend: str) -> None:
    """A datagram longer than ``maxPacketSize`` is cut to it (Twisted's recvfrom); the
    log context inside ``datagramReceived`` is "<logPrefix> (UDP)"; "starting on" and
    "Closed" are logged as Twisted logs them."""

    class Small(Collect):
        def logPrefix(self) -> str:
            return "Small Datagrams"

        def datagramReceived(self, datagram: bytes, addr: Any) -> None:
            from twisted.python import context

            self.events.append(context.get(twisted_log.ILogContext)["system"])
            super().datagramReceived(datagram, addr)

    messages: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        messages.append(" ".join(str(m) for m in event.get("message", ())))

    async def main() -> None:
        r = ctw.get_reactor()
        small = Small()
        port = r.listenUDP(0, small, interface="127.0.0.1", maxPacketSize=100)
        number = port.getHost().port
        port.write(b"y" * 1000, ("127.0.0.1", number))
        await polyloop.wait_for(small.got, 5)
        assert small.received[0][0] == b"y" * 100
        assert small.events == ["start", "Small Datagrams (UDP)"]
        await stopped(port)
        assert f"Small Datagrams starting on {number}" in messages
        assert f"(UDP Port {number} Closed)" in messages

    twisted_log.addObserver(observe)
    try:
        polyloop.run(main, backend=backend)
    finally:
        twisted_log.removeObserver(observe)


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6(), reason="this machine has no IPv6 loopback (::1)")
@pytest.mark.parametrize("backend", ["asyncio", "gevent", "tornado"])
def test_ipv6(backend: str) -> None:
    async def main() -> None:
        r = ctw.get_reactor()
        server = r.listenUDP(0, Upper(), interface="::1")
        number = server.getHost().port
        assert server.getHost().type == "UDP" and server.getHost().host == "::1"
        client = Collect()
        port = r.listenUDP(0, client, interface="::1")
        with pytest.raises(error.InvalidAddressError):
            port.write(b"x", ("127.0.0.1", number))
        port.write(b"six", ("::1", number))
        await polyloop.wait_for(client.got, 5)
        # a (host, port) pair, as Twisted gives it (flow info and scope id dropped):
        assert client.received == [(b"SIX", ("::1", number))]
        await stopped(port)
        await stopped(server)

    polyloop.run(main, backend=backend)


def _loopback_multicast() -> str | None:
    """Why this machine cannot do multicast on its loopback interface (None if it can)."""
    import struct

    group = "225.0.0.250"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("", 0))
            s.setsockopt(
                socket.IPPROTO_IP,
                socket.IP_ADD_MEMBERSHIP,
                socket.inet_aton(group) + socket.inet_aton("127.0.0.1"),
            )
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
            s.settimeout(2)
            s.sendto(b"probe", (group, s.getsockname()[1]))
            s.recvfrom(100)
            del struct
    except OSError as exc:
        return f"the OS does not deliver multicast on 127.0.0.1 here: {exc}"
    return None


@pytest.mark.skipif(_loopback_multicast() is not None, reason=str(_loopback_multicast()))
@pytest.mark.parametrize("backend", BACKENDS)
def test_multicast(backend: str) -> None:
    group = "225.0.0.250"

    async def main() -> None:
        r = ctw.get_reactor()
        member = Collect()
        port = r.listenMulticast(0, member, listenMultiple=True)
        verifyObject(interfaces.IMulticastTransport, port)
        port.setTTL(3)
        assert port.getTTL() == 3
        port.setLoopbackMode(0)
        assert not port.getLoopbackMode()
        port.setLoopbackMode(1)
        assert port.getLoopbackMode()
        assert await ctw.from_deferred(port.setOutgoingInterface("127.0.0.1")) == 1
        assert port.getOutgoingInterface() == "127.0.0.1"
        await ctw.from_deferred(port.joinGroup(group, "127.0.0.1"))
        # A second port on the same group and port (listenMultiple):
        other = Collect()
        second = r.listenMulticast(port.getHost().port, other, listenMultiple=True)
        await ctw.from_deferred(second.joinGroup(group, "127.0.0.1"))
        sender = r.listenMulticast(0, protocol.DatagramProtocol())
        await ctw.from_deferred(sender.setOutgoingInterface("127.0.0.1"))
        sender.write(b"to the group", (group, port.getHost().port))
        await polyloop.wait_for(member.got, 5)
        await polyloop.wait_for(other.got, 5)
        assert member.received[0][0] == other.received[0][0] == b"to the group"
        await ctw.from_deferred(port.leaveGroup(group, "127.0.0.1"))
        # Not a multicast group: the OS refuses, as MulticastJoinError.
        with pytest.raises(error.MulticastJoinError):
            await ctw.from_deferred(port.joinGroup("127.0.0.1"))
        for p in (port, second, sender):
            await stopped(p)

    polyloop.run(main, backend=backend)


@pytest.mark.parametrize("backend", ["asyncio", "gevent", "tornado"])
def test_adopted_datagram_port(backend: str) -> None:
    """``adoptDatagramPort``: a port on a bound socket's fd (duplicated: the
    caller closes its own)."""

    async def main() -> None:
        own = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        own.bind(("127.0.0.1", 0))
        own.setblocking(False)
        number = own.getsockname()[1]
        port = ctw.get_reactor().adoptDatagramPort(own.fileno(), socket.AF_INET, Upper())
        own.close()
        assert port.getHost().port == number
        client = Collect()
        sender = ctw.get_reactor().listenUDP(0, client, interface="127.0.0.1")
        sender.write(b"adopted", ("127.0.0.1", number))
        await polyloop.wait_for(client.got, 5)
        assert client.received == [(b"ADOPTED", ("127.0.0.1", number))]
        with pytest.raises(error.UnsupportedAddressFamily):
            ctw.get_reactor().adoptDatagramPort(0, socket.AF_UNIX, Upper())
        await stopped(port)
        await stopped(sender)

    polyloop.run(main, backend=backend)


@pytest.mark.parametrize("backend", ["asyncio", "gevent", "tornado"])
def test_ports_are_closed_with_the_session(backend: str) -> None:
    """A port left listening is closed when the session ends (nothing leaks)."""
    socks: list[socket.socket] = []

    async def main() -> None:
        port = ctw.get_reactor().listenUDP(0, protocol.DatagramProtocol(), interface="127.0.0.1")
        await polyloop.sleep(0.01)
        socks.append(port.getHandle())

    polyloop.run(main, backend=backend)
    assert socks[0].fileno() == -1
