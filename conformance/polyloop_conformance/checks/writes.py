"""Writes: what ``Transport.write``/``writelines`` promise about the bytes.

Covers order across many small writes, a large write arriving whole, ``bytearray`` and
``memoryview`` data (copied before ``write`` returns, also when the write had to be
buffered), ``writelines``, empty writes, both directions at once, that
``get_write_buffer_size`` drains to 0, and that the data path calls the protocol
directly (not through ``call_soon`` per chunk).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import polyloop

from .._registry import check
from ..referee import waiting_for
from ._reference import plain, reference_peer
from ._util import PausedReader, Recorder, fill_until_paused, pair, transport_of


async def _finish(server: polyloop.Server, cli: Recorder, srv: Recorder) -> None:
    transport_of(cli).close()
    await srv.wait_lost()
    await server.aclose()


@check("writes", clauses=["transport.write.in_order"])
async def check_order(session: polyloop.Session) -> None:
    """Many small writes arrive complete and in order."""
    server, srv, cli = await pair(session)
    expected = b"".join(b"%05d," % i for i in range(2000))
    for i in range(2000):
        transport_of(cli).write(b"%05d," % i)
    got = await srv.wait_bytes(len(expected))
    assert got == expected, (
        f"2000 small writes ({len(expected)} bytes) arrived as {len(got)} bytes, first"
        f" difference at byte {_diff(got, expected)} (rule: bytes arrive complete, in order)"
    )
    await _finish(server, cli, srv)


def _diff(a: bytes, b: bytes) -> int:
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


@check("writes", clauses=["transport.write.in_order"])
async def check_large_write(session: polyloop.Session) -> None:
    """One 8 MiB write arrives whole (the transport buffers what the kernel won't take)."""
    server, srv, cli = await pair(session)
    payload = bytes(range(256)) * (8 * 1024 * 4)
    transport_of(cli).write(payload)
    got = await srv.wait_bytes(len(payload))
    assert got == payload, (
        f"one 8 MiB write arrived as {len(got)} bytes, first difference at byte"
        f" {_diff(got, payload)}"
    )
    await cli.until(
        lambda: transport_of(cli).get_write_buffer_size() == 0,
        "get_write_buffer_size() to drain to 0 once the peer has every byte",
    )
    await _finish(server, cli, srv)


@check("writes", clauses=["transport.write.copies"])
async def check_bytearray_copied(session: polyloop.Session) -> None:
    """write(bytearray) copies or sends before returning: reusing the buffer at once is safe."""
    server, srv, cli = await pair(session)
    buf = bytearray(b"a" * 100_000)
    transport_of(cli).write(buf)
    buf[:] = b"b" * 100_000
    transport_of(cli).write(buf)
    buf[:] = b"c" * 100_000
    got = await srv.wait_bytes(200_000)
    assert got == b"a" * 100_000 + b"b" * 100_000, (
        f"the peer saw the reused buffer's later contents: counts a={got.count(b'a')}"
        f" b={got.count(b'b')} c={got.count(b'c')}, expected a=100000 b=100000 c=0 (rule:"
        " write() copies or sends the data before it returns)"
    )
    await _finish(server, cli, srv)


async def bytearray_copied_buffered(
    session: polyloop.Session, make_pair: Callable[..., Any]
) -> None:
    """The scenario of ``writes.bytearray_copied_buffered`` (also run over TLS)."""
    server, srv, cli = await make_pair(session, lambda: PausedReader(session))
    total = await fill_until_paused(session, cli)
    t = transport_of(cli)
    buffered = t.get_write_buffer_size()
    assert buffered > 0, (
        f"nothing was buffered after pause_writing (get_write_buffer_size() is {buffered})"
    )
    buf = bytearray(b"a" * 50_000)
    t.write(buf)
    buf[:] = b"b" * 50_000
    t.write(buf)
    buf[:] = b"c" * 50_000
    transport_of(srv).resume_reading()
    got = await srv.wait_bytes(total + 100_000)
    tail = got[total:]
    assert tail == b"a" * 50_000 + b"b" * 50_000, (
        f"two bytearray writes made while {buffered} bytes were buffered arrived with the"
        f" buffer's later contents: a={tail.count(b'a')} b={tail.count(b'b')}"
        f" c={tail.count(b'c')}, expected a=50000 b=50000 c=0 (rule: write() copies what it"
        " buffers, so the caller may reuse a bytearray at once)"
    )
    await _finish(server, cli, srv)


@check("writes", clauses=["transport.write.copies"])
async def check_bytearray_copied_buffered(session: polyloop.Session) -> None:
    """write(bytearray) while data is buffered (the peer stopped reading) copies it:
    mutating the bytearray after write() returns changes nothing on the wire."""
    await bytearray_copied_buffered(session, pair)


@check("writes", clauses=["transport.write.exact_bytes"])
async def check_memoryview(session: polyloop.Session) -> None:
    """write(memoryview) sends exactly the view's bytes (a slice of a larger buffer)."""
    server, srv, cli = await pair(session)
    base = bytearray(b"0123456789")
    transport_of(cli).write(memoryview(base)[2:7])
    base[:] = b"xxxxxxxxxx"
    transport_of(cli).write(memoryview(b"!"))
    got = await srv.wait_bytes(6)
    assert got == b"23456!", f"write(memoryview(b'0123456789')[2:7]) + b'!' arrived as {got!r}"
    await _finish(server, cli, srv)


@check("writes", clauses=["transport.write.exact_bytes"])
async def check_writelines(session: polyloop.Session) -> None:
    """writelines([...]) writes each item in turn (bytes, bytearray and memoryview mixed)."""
    server, srv, cli = await pair(session)
    transport_of(cli).writelines([b"one ", bytearray(b"two "), memoryview(b"three")])
    transport_of(cli).writelines(iter([b"|", b"four"]))
    got = await srv.wait_bytes(18)
    assert got == b"one two three|four", (
        f"writelines of bytes, bytearray, memoryview and an iterator arrived as {got!r}"
    )
    await _finish(server, cli, srv)


@check("writes", clauses=["transport.write.empty"])
async def check_empty_write(session: polyloop.Session) -> None:
    """An empty write sends nothing and does no harm."""
    server, srv, cli = await pair(session)
    transport_of(cli).write(b"")
    transport_of(cli).write(bytearray())
    transport_of(cli).write(b"after")
    transport_of(cli).write_eof()
    await srv.wait_eof()
    got = bytes(srv.data)
    assert got == b"after", f"empty writes, then b'after', arrived as {got!r}"
    await _finish(server, cli, srv)


@check("writes", clauses=["transport.write.in_order"])
async def check_both_directions(session: polyloop.Session) -> None:
    """Both ends write 1 MiB at once; each receives the other's bytes whole."""
    server, srv, cli = await pair(session)
    a, b = b"A" * (1 << 20), b"B" * (1 << 20)
    transport_of(cli).write(a)
    transport_of(srv).write(b)
    got_a = await srv.wait_bytes(len(a))
    assert got_a == a, f"the server got {len(got_a)} bytes, not the client's 1 MiB of b'A'"
    got_b = await cli.wait_bytes(len(b))
    assert got_b == b, f"the client got {len(got_b)} bytes, not the server's 1 MiB of b'B'"
    await _finish(server, cli, srv)


@check("writes", clauses=["transport.write.in_order"])
async def check_server_side_writes(session: polyloop.Session) -> None:
    """The accepted side writes too (written from inside data_received: an echo)."""

    class Echo(Recorder):
        def data_received(self, data: bytes) -> None:
            transport_of(self).write(data)
            super().data_received(data)

    server, srv, cli = await pair(session, lambda: Echo(session))
    for i in range(50):
        transport_of(cli).write(b"%03d" % i)
    expected = b"".join(b"%03d" % i for i in range(50))
    got = await cli.wait_bytes(len(expected))
    assert got == expected, f"the echo from inside data_received came back as {got!r}"
    await _finish(server, cli, srv)


#: Rounds of the data-path check: each one chunk (the last one EOF), judged on its own.
_ROUNDS = 12


@check("protocol", clauses=["protocol.data_path.direct"])
async def check_direct_data_path(session: polyloop.Session) -> None:
    """data_received and eof_received are called by the transport's read path as the
    bytes arrive, not scheduled to run a loop iteration later.

    Judged from outside, by what a plain socket delivered and when the protocol saw it.
    In each round, one loop callback makes two sockets readable before the loop polls
    again: a reference socketpair watched with ``add_reader`` (first), and the transport's
    socket (a chunk from the plain peer; EOF in the last round). The reference reader
    then schedules a marker with ``call_soon``. Both readiness callbacks run in the poll
    after that callback, so a transport that calls the protocol from its read path has
    done so before the marker, which runs an iteration later; one that queues each chunk
    for the next iteration -- through ``call_soon``, its own loop's queue or a future's
    done-callback -- runs it after the marker (the reference fd is made readable first,
    so a poll that reports fds in the order they became ready runs its reader first).
    """
    order: list[str] = []
    got = bytearray()

    class Probe(Recorder):
        def data_received(self, data: bytes) -> None:
            order.append("data")
            got.extend(data)
            super().data_received(data)

        def eof_received(self) -> bool:
            order.append("eof")
            return super().eof_received()

    proto = Probe(session)
    transport, peer = await reference_peer(session, lambda: proto)
    _, socketpair, plain_select = plain()
    ref_r, ref_w = socketpair()
    ref_r.setblocking(False)
    sock = transport.get_extra_info("socket")
    fd = sock.fileno() if sock is not None else None

    def on_ref() -> None:
        try:
            ref_r.recv(16)
        except BlockingIOError:
            return
        order.append("ref")
        session.call_soon(order.append, "marker")

    session.add_reader(ref_r, on_ref)
    late: list[str] = []
    try:
        for i in range(_ROUNDS):
            eof = i == _ROUNDS - 1
            order.clear()
            sent = b"" if eof else b"chunk %02d" % i

            def kick(sent: bytes = sent, eof: bool = eof) -> None:
                # Inside one callback: the loop cannot poll until both are readable.
                ref_w.send(b"r")
                if eof:
                    peer.shutdown(socket.SHUT_WR)
                else:
                    peer.sendall(sent)
                watched = [ref_r] + ([fd] if fd is not None else [])
                deadline = time.monotonic() + 2.0
                while time.monotonic() < deadline:
                    ready, _, _ = plain_select(watched, [], [], 0.1)
                    if len(ready) == len(watched):
                        break

            what = "eof" if eof else "data"
            session.call_soon(kick)
            with waiting_for(
                lambda i=i, what=what: f"round {i + 1}: {what} and the marker (so far {order})"
            ):
                while what not in order or "marker" not in order:
                    await session.sleep(0.001)
            if order.index(what) > order.index("marker"):
                late.append(f"round {i + 1}: {order}")
        if not late:
            assert bytes(got) == b"".join(b"chunk %02d" % i for i in range(_ROUNDS - 1)), (
                f"the protocol got {bytes(got)!r}, not the chunks the peer sent"
            )
    finally:
        session.remove_reader(ref_r)
        ref_r.close()
        ref_w.close()
        peer.close()
        transport.abort()
    assert not late, (
        f"in {len(late)} of {_ROUNDS} rounds the protocol saw the bytes one loop iteration"
        " after the transport's socket was readable: a marker the loop scheduled in the same"
        " poll (from a reference add_reader) ran first ("
        + "; ".join(late[:3])
        + "). The transport queues each chunk (call_soon, its own loop's queue, a future's"
        " done-callback) instead of calling the protocol from its read path"
    )
