"""UDP: ``open_udp`` and the ``DatagramTransport`` contract.

Covers a round trip with the sender's address, a connected endpoint (``remote_addr``),
datagrams of 60 KB and 65,507 bytes arriving whole, boundaries kept, ``str`` raising
``TypeError``, ``sendto`` after ``close()`` a silent no-op, the address rules of
``sendto`` (required unless connected, the remote's or none if connected),
``connection_lost(None)`` once and never from inside ``close()``, ``abort()`` giving
``connection_lost(ConnectionAbortedError)`` as on streams, the extra info, and
``error_received`` for an ICMP port-unreachable on a connected endpoint.
"""

from __future__ import annotations

from typing import Any

import polyloop

from .._registry import check
from ..referee import settle, waiting_for


class DatagramRecorder(polyloop.DatagramProtocol):
    """Records datagrams and callbacks; ``until`` waits for a condition on them."""

    def __init__(self, session: polyloop.Session) -> None:
        self.session = session
        self.transport: polyloop.DatagramTransport | None = None
        self.datagrams: list[tuple[bytes, Any]] = []
        self.errors: list[OSError] = []
        self.events: list[str] = []
        self.lost = session.create_future()
        self.inside_close = False
        self.lost_inside_close = False
        self._waiters: list[polyloop.Future[None]] = []

    def _notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def connection_made(self, transport: polyloop.DatagramTransport) -> None:  # type: ignore[override]
        self.events.append("made")
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.events.append("datagram")
        self.datagrams.append((data, addr))
        self._notify()

    def error_received(self, exc: OSError) -> None:
        self.events.append("error")
        self.errors.append(exc)
        self._notify()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.events.append("lost")
        self.lost_inside_close = self.lost_inside_close or self.inside_close
        if not self.lost.done():
            self.lost.set_result(exc)
        self._notify()

    async def until(self, cond: Any, what: str = "datagrams") -> None:
        with waiting_for(lambda: f"{what} (events {self.events})"):
            while not cond():
                fut: polyloop.Future[None] = self.session.create_future()
                self._waiters.append(fut)
                await fut

    async def wait_lost(self) -> BaseException | None:
        with waiting_for(f"connection_lost of a UDP endpoint (events {self.events})"):
            exc: BaseException | None = await self.lost
        return exc


async def _endpoint(
    session: polyloop.Session, remote: tuple[str, int] | None = None
) -> tuple[polyloop.DatagramTransport, DatagramRecorder, tuple[str, int]]:
    if remote is None:
        transport, proto = await session.open_udp(
            lambda: DatagramRecorder(session), local_addr=("127.0.0.1", 0)
        )
    else:
        transport, proto = await session.open_udp(
            lambda: DatagramRecorder(session), remote_addr=remote
        )
    addr = transport.get_extra_info("sockname")
    assert isinstance(addr, tuple) and addr[0] == "127.0.0.1" and addr[1] > 0, (
        f"the sockname extra info of a UDP endpoint on 127.0.0.1 is {addr!r}"
    )
    assert "made" in proto.events, "open_udp returned before calling connection_made"
    return transport, proto, (addr[0], addr[1])


async def _close(*pairs: tuple[polyloop.DatagramTransport, DatagramRecorder]) -> None:
    for transport, proto in pairs:
        transport.close()
        await proto.wait_lost()


@check("udp", clauses=["datagram.sendto"])
async def check_round_trip(session: polyloop.Session) -> None:
    """sendto(data, addr) arrives as one datagram with the sender's address; replies work."""
    ta, a, addr_a = await _endpoint(session)
    tb, b, addr_b = await _endpoint(session)
    ta.sendto(b"ping", addr_b)
    await b.until(lambda: b.datagrams, "a datagram from sendto(b'ping', addr)")
    data, src = b.datagrams[0]
    assert data == b"ping" and tuple(src[:2]) == addr_a, (
        f"datagram_received({data!r}, {src!r}); expected (b'ping', {addr_a})"
    )
    tb.sendto(b"pong", src)
    await a.until(lambda: a.datagrams, "the reply to the sender's address")
    got = a.datagrams[0]
    assert got[0] == b"pong" and tuple(got[1][:2]) == addr_b, (
        f"the reply arrived as {got!r}; expected (b'pong', {addr_b})"
    )
    name = ta.get_extra_info("backend")
    assert name == session.name, f"UDP extra info 'backend' is {name!r}, not {session.name!r}"
    default = ta.get_extra_info("no-such-key", 42)
    assert default == 42, f"get_extra_info('no-such-key', 42) of UDP is {default!r}"
    await _close((ta, a), (tb, b))


@check("udp", clauses=["datagram.connected"])
async def check_connected(session: polyloop.Session) -> None:
    """open_udp(remote_addr=...): sendto(data) without an address goes to the remote."""
    tb, b, addr_b = await _endpoint(session)
    tc, c, addr_c = await _endpoint(session, remote=addr_b)
    tc.sendto(b"to the remote")
    await b.until(lambda: b.datagrams, "a datagram from a connected endpoint's sendto(data)")
    got = b.datagrams[0]
    assert got[0] == b"to the remote" and tuple(got[1][:2]) == addr_c, (
        f"sendto(data) on a connected endpoint arrived as {got!r}"
    )
    peer = tc.get_extra_info("peername")
    assert peer is None or tuple(peer[:2]) == addr_b, f"peername of a connected endpoint {peer!r}"
    await _close((tb, b), (tc, c))


@check("udp", clauses=["datagram.sendto"])
async def check_large_datagrams(session: polyloop.Session) -> None:
    """Datagrams of 60 KB and 65,507 bytes (the IPv4 maximum) arrive whole."""
    ta, a, _ = await _endpoint(session)
    tb, b, addr_b = await _endpoint(session)
    big = bytes(range(256)) * 240  # 61,440 bytes
    biggest = b"M" * 65507
    ta.sendto(big, addr_b)
    ta.sendto(biggest, addr_b)
    await b.until(lambda: len(b.datagrams) >= 2, "a 61,440-byte and a 65,507-byte datagram")
    sizes = [len(d) for d, _ in b.datagrams]
    assert sizes == [len(big), 65507], (
        f"datagrams of 61440 and 65507 bytes arrived as {sizes} bytes (rule: a datagram of up"
        " to 65,507 bytes is sent and received whole)"
    )
    assert b.datagrams[0][0] == big and b.datagrams[1][0] == biggest, "datagram contents differ"
    await _close((ta, a), (tb, b))


@check("udp", clauses=["datagram.sendto"])
async def check_boundaries(session: polyloop.Session) -> None:
    """Each sendto is one datagram_received: message boundaries are kept."""
    ta, a, _ = await _endpoint(session)
    tb, b, addr_b = await _endpoint(session)
    sent = [b"%d" % i * (i % 7 + 1) for i in range(20)]
    for d in sent:
        ta.sendto(d, addr_b)
    await b.until(lambda: len(b.datagrams) >= len(sent), "20 datagrams")
    got = sorted(d for d, _ in b.datagrams)
    assert got == sorted(sent), (
        f"20 datagrams arrived as {len(got)}: {got[:5]}... (rule: each sendto is one"
        " datagram_received)"
    )
    await _close((ta, a), (tb, b))


@check("udp", clauses=["datagram.sendto.bytes_only"])
async def check_sendto_str(session: polyloop.Session) -> None:
    """sendto(str) raises TypeError (also after close)."""
    ta, a, addr_a = await _endpoint(session)
    for bad in ("text", 1, None):
        try:
            ta.sendto(bad, addr_a)  # type: ignore[arg-type]
        except TypeError:
            pass
        else:
            raise AssertionError(f"sendto({bad!r}) did not raise TypeError")
    await _close((ta, a))


@check("udp", clauses=["datagram.close"])
async def check_sendto_after_close(session: polyloop.Session) -> None:
    """sendto after close() is a silent no-op; nothing arrives."""
    ta, a, _ = await _endpoint(session)
    tb, b, addr_b = await _endpoint(session)
    ta.close()
    ta.sendto(b"ignored", addr_b)
    await a.wait_lost()
    ta.sendto(b"ignored", addr_b)
    tc, c, _ = await _endpoint(session)
    tc.sendto(b"marker", addr_b)  # datagrams on loopback arrive in order: wait for this one
    await b.until(lambda: b.datagrams, "a marker datagram")
    got = [d for d, _ in b.datagrams]
    assert got == [b"marker"], (
        f"datagrams received: {got}; sendto after close() sent something (rule: a no-op)"
    )
    await _close((tb, b), (tc, c))


@check("udp", clauses=["datagram.close"])
async def check_close(session: polyloop.Session) -> None:
    """close(): is_closing() at once, connection_lost(None) later and once; close twice is ok."""
    ta, a, _ = await _endpoint(session)
    assert not ta.is_closing()
    a.inside_close = True
    ta.close()
    ta.close()
    a.inside_close = False
    assert ta.is_closing(), "is_closing() is False right after close()"
    assert not a.lost_inside_close, "connection_lost was called from inside close()"
    exc = await a.wait_lost()
    assert exc is None, f"connection_lost({exc!r}) after close() of a UDP endpoint, not None"
    await settle(session, 0.01)
    assert a.events.count("lost") == 1 and a.events[0] == "made", (
        f"UDP callbacks ran as {a.events} (rule: connection_made first, connection_lost once)"
    )


@check("udp", clauses=["transport.abort.local_error"])
async def check_abort(session: polyloop.Session) -> None:
    """abort() on UDP: connection_lost(ConnectionAbortedError) later, once, never from
    inside abort(); a second abort is a no-op."""
    ta, a, _ = await _endpoint(session)
    a.inside_close = True
    ta.abort()
    ta.abort()
    a.inside_close = False
    assert ta.is_closing(), "is_closing() is False right after abort() of a UDP endpoint"
    assert not a.lost_inside_close, "connection_lost was called from inside abort()"
    exc = await a.wait_lost()
    assert isinstance(exc, ConnectionAbortedError), (
        f"abort() of a UDP endpoint gave connection_lost({exc!r}), not ConnectionAbortedError"
        " (rule: the same as a stream's abort)"
    )
    await settle(session, 0.01)
    assert a.events.count("lost") == 1, f"UDP callbacks after two abort() calls: {a.events}"


@check("udp", clauses=["datagram.connected"])
async def check_sendto_address_rules(session: polyloop.Session) -> None:
    """sendto without an address on an unconnected endpoint, or to another address on a
    connected one, raises ValueError; the connected remote's own address is accepted."""
    ta, a, addr_a = await _endpoint(session)
    tb, b, addr_b = await _endpoint(session)
    tc, c, addr_c = await _endpoint(session, remote=addr_b)
    for what, call in (
        ("sendto(data) without an address on an unconnected endpoint", lambda: ta.sendto(b"x")),
        ("sendto(data, other) on a connected endpoint", lambda: tc.sendto(b"x", addr_a)),
    ):
        try:
            call()
        except ValueError:
            continue
        raise AssertionError(f"{what} was accepted instead of ValueError")
    tc.sendto(b"explicit remote", addr_b)
    await b.until(lambda: b.datagrams, "sendto(data, remote) on a connected endpoint")
    got = b.datagrams[0]
    assert got[0] == b"explicit remote" and tuple(got[1][:2]) == addr_c, f"it arrived as {got!r}"
    await _close((ta, a), (tb, b), (tc, c))


@check("udp", clauses=["datagram.error_received"])
async def check_error_received(session: polyloop.Session) -> None:
    """A connected endpoint sending to a closed port gets error_received (port unreachable)."""
    import socket

    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now: the kernel answers with ICMP unreachable
    tc, c, _ = await _endpoint(session, remote=("127.0.0.1", port))
    for _ in range(50):
        tc.sendto(b"anyone?")
        if c.errors:
            break
        fut = session.create_future()
        handle = session.call_later(0.01, lambda f=fut: f.done() or f.set_result(None))
        c._waiters.append(fut)
        await fut
        handle.cancel()
    assert c.errors, "error_received never came for 50 datagrams sent to a closed port"
    assert isinstance(c.errors[0], ConnectionRefusedError), (
        f"error_received({c.errors[0]!r}) for a closed port, not ConnectionRefusedError"
    )
    assert not tc.is_closing(), "an ICMP error closed the endpoint"
    await _close((tc, c))
