"""Writes: what ``Transport.write``/``writelines`` promise about the bytes.

Covers order across many small writes, a large write arriving whole, ``bytearray`` and
``memoryview`` data (copied before ``write`` returns, also when the write had to be
buffered), ``writelines``, empty writes, both directions at once, that
``get_write_buffer_size`` drains to 0, and that the data path calls the protocol
directly (not through ``call_soon`` per chunk).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import polyloop

from .._registry import check
from ..referee import waiting_for
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


class _CallSoonSpy:
    """Notes whether code runs inside a callback scheduled with ``session.call_soon``."""

    def __init__(self) -> None:
        self.depth = 0
        self.scheduled = 0

    @contextmanager
    def installed(self, session: polyloop.Session) -> Iterator[None]:
        original = session.call_soon

        def call_soon(fn: Callable[..., object], *args: Any) -> polyloop.Handle:
            self.scheduled += 1

            def run(*a: Any) -> None:
                self.depth += 1
                try:
                    fn(*a)
                finally:
                    self.depth -= 1

            return original(run, *args)

        session.call_soon = call_soon  # type: ignore[method-assign]
        try:
            yield
        finally:
            del session.call_soon


@check("protocol", clauses=["protocol.data_path.direct"])
async def check_direct_data_path(session: polyloop.Session) -> None:
    """data_received and eof_received are called by the transport's read path itself,
    not scheduled through call_soon once per chunk."""
    spy = _CallSoonSpy()
    inside: list[str] = []

    class Probe(Recorder):
        def data_received(self, data: bytes) -> None:
            inside.append("data_received" if spy.depth else "direct")
            super().data_received(data)

        def eof_received(self) -> bool:
            inside.append("eof_received" if spy.depth else "direct")
            return super().eof_received()

    server, srv, cli = await pair(session, lambda: Probe(session))
    with spy.installed(session):
        for i in range(20):
            transport_of(cli).write(b"chunk %02d;" % i)
            with waiting_for(f"chunk #{i + 1} on the server side"):
                await srv.wait_bytes(9 * (i + 1))
        transport_of(cli).write_eof()
        await srv.wait_eof()
    scheduled = [name for name in inside if name != "direct"]
    assert not scheduled, (
        f"{len(scheduled)} of {len(inside)} protocol calls on the data path ran inside a"
        f" session.call_soon callback ({sorted(set(scheduled))}): the transport schedules"
        " each chunk through call_soon instead of calling the protocol from its read path"
        " (rule: the protocol's methods are called directly on the data path)"
    )
    await _finish(server, cli, srv)
