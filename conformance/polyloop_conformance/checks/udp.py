"""UDP: ``open_udp`` and the ``DatagramTransport`` contract.

Covers a round trip with the sender's address, a connected endpoint (``remote_addr``),
datagrams of 60 KB and 65,507 bytes arriving whole, boundaries kept, ``str`` raising
``TypeError``, ``sendto`` after ``close()`` a silent no-op, ``connection_lost(None)``
once and never from inside ``close()``, the ``sockname`` extra info, and
``error_received`` for an ICMP port-unreachable on a connected endpoint.
"""

from __future__ import annotations

from typing import Any

import polyloop

from .._registry import check


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
        self.lost_inside_close = self.inside_close
        if not self.lost.done():
            self.lost.set_result(exc)
        self._notify()

    async def until(self, cond: Any) -> None:
        while not cond():
            fut: polyloop.Future[None] = self.session.create_future()
            self._waiters.append(fut)
            await fut


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
    assert isinstance(addr, tuple) and addr[0] == "127.0.0.1" and addr[1] > 0, addr
    return transport, proto, (addr[0], addr[1])


async def _close(*pairs: tuple[polyloop.DatagramTransport, DatagramRecorder]) -> None:
    for transport, proto in pairs:
        transport.close()
        await proto.lost


@check("udp")
async def check_round_trip(session: polyloop.Session) -> None:
    """sendto(data, addr) arrives as one datagram with the sender's address; replies work."""
    ta, a, addr_a = await _endpoint(session)
    tb, b, addr_b = await _endpoint(session)
    ta.sendto(b"ping", addr_b)
    await b.until(lambda: b.datagrams)
    data, src = b.datagrams[0]
    assert data == b"ping" and tuple(src[:2]) == addr_a, b.datagrams
    tb.sendto(b"pong", src)
    await a.until(lambda: a.datagrams)
    assert a.datagrams[0][0] == b"pong" and tuple(a.datagrams[0][1][:2]) == addr_b, a.datagrams
    assert ta.get_extra_info("backend") == session.name
    await _close((ta, a), (tb, b))


@check("udp")
async def check_connected(session: polyloop.Session) -> None:
    """open_udp(remote_addr=...): sendto(data) without an address goes to the remote."""
    tb, b, addr_b = await _endpoint(session)
    tc, c, addr_c = await _endpoint(session, remote=addr_b)
    tc.sendto(b"to the remote")
    await b.until(lambda: b.datagrams)
    assert b.datagrams[0][0] == b"to the remote" and tuple(b.datagrams[0][1][:2]) == addr_c
    peer = tc.get_extra_info("peername")
    assert peer is None or tuple(peer[:2]) == addr_b, f"peername of a connected endpoint {peer!r}"
    await _close((tb, b), (tc, c))


@check("udp")
async def check_large_datagrams(session: polyloop.Session) -> None:
    """Datagrams of 60 KB and 65,507 bytes (the IPv4 maximum) arrive whole."""
    ta, a, _ = await _endpoint(session)
    tb, b, addr_b = await _endpoint(session)
    big = bytes(range(256)) * 240  # 61,440 bytes
    biggest = b"M" * 65507
    ta.sendto(big, addr_b)
    ta.sendto(biggest, addr_b)
    await b.until(lambda: len(b.datagrams) >= 2)
    sizes = [len(d) for d, _ in b.datagrams]
    assert sizes == [len(big), 65507], f"datagram sizes received: {sizes}"
    assert b.datagrams[0][0] == big and b.datagrams[1][0] == biggest
    await _close((ta, a), (tb, b))


@check("udp")
async def check_boundaries(session: polyloop.Session) -> None:
    """Each sendto is one datagram_received: message boundaries are kept."""
    ta, a, _ = await _endpoint(session)
    tb, b, addr_b = await _endpoint(session)
    sent = [b"%d" % i * (i % 7 + 1) for i in range(20)]
    for d in sent:
        ta.sendto(d, addr_b)
    await b.until(lambda: len(b.datagrams) >= len(sent))
    assert sorted(d for d, _ in b.datagrams) == sorted(sent), [d for d, _ in b.datagrams]
    await _close((ta, a), (tb, b))


@check("udp")
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


@check("udp")
async def check_sendto_after_close(session: polyloop.Session) -> None:
    """sendto after close() is a silent no-op; nothing arrives."""
    ta, a, _ = await _endpoint(session)
    tb, b, addr_b = await _endpoint(session)
    ta.close()
    ta.sendto(b"ignored", addr_b)
    await a.lost
    ta.sendto(b"ignored", addr_b)
    tc, c, _ = await _endpoint(session)
    tc.sendto(b"marker", addr_b)  # datagrams on loopback arrive in order: wait for this one
    await b.until(lambda: b.datagrams)
    assert [d for d, _ in b.datagrams] == [b"marker"], b.datagrams
    await _close((tb, b), (tc, c))


@check("udp")
async def check_close(session: polyloop.Session) -> None:
    """close(): is_closing() at once, connection_lost(None) later and once; close twice is ok."""
    ta, a, _ = await _endpoint(session)
    assert not ta.is_closing()
    a.inside_close = True
    ta.close()
    a.inside_close = False
    ta.close()
    assert ta.is_closing(), "is_closing() is False right after close()"
    assert "lost" not in a.events, "connection_lost was called from inside close()"
    assert await a.lost is None, f"connection_lost({a.lost.result()!r})"
    assert a.events.count("lost") == 1 and a.events[0] == "made", a.events


@check("udp")
async def check_abort(session: polyloop.Session) -> None:
    """abort() on UDP: connection_lost later, once; a second abort is a no-op."""
    ta, a, _ = await _endpoint(session)
    ta.abort()
    ta.abort()
    assert ta.is_closing()
    assert "lost" not in a.events, "connection_lost was called from inside abort()"
    await a.lost
    assert a.events.count("lost") == 1, a.events


@check("udp")
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
    assert c.errors, "error_received never came for datagrams to a closed port"
    assert isinstance(c.errors[0], ConnectionRefusedError), f"error_received({c.errors[0]!r})"
    assert not tc.is_closing(), "an ICMP error closed the endpoint"
    await _close((tc, c))
