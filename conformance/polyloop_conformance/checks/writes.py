"""Writes: what ``Transport.write``/``writelines`` promise about the bytes.

Covers order across many small writes, a large write arriving whole, ``bytearray`` and
``memoryview`` data (copied before ``write`` returns), ``writelines``, empty writes,
both directions at once, and that ``get_write_buffer_size`` drains to 0.
"""

from __future__ import annotations

import polyloop

from .._registry import check
from ._util import Recorder, pair, transport_of


async def _finish(server: polyloop.Server, cli: Recorder, srv: Recorder) -> None:
    transport_of(cli).close()
    await srv.lost
    await server.aclose()


@check("writes")
async def check_order(session: polyloop.Session) -> None:
    """Many small writes arrive complete and in order."""
    server, srv, cli = await pair(session)
    expected = b"".join(b"%05d," % i for i in range(2000))
    for i in range(2000):
        transport_of(cli).write(b"%05d," % i)
    got = await srv.wait_bytes(len(expected))
    assert got == expected, f"{len(got)} bytes, first difference at {_diff(got, expected)}"
    await _finish(server, cli, srv)


def _diff(a: bytes, b: bytes) -> int:
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


@check("writes")
async def check_large_write(session: polyloop.Session) -> None:
    """One 8 MiB write arrives whole (the transport buffers what the kernel won't take)."""
    server, srv, cli = await pair(session)
    payload = bytes(range(256)) * (8 * 1024 * 4)
    transport_of(cli).write(payload)
    got = await srv.wait_bytes(len(payload))
    assert got == payload, f"8 MiB write: {len(got)} bytes, differs at {_diff(got, payload)}"
    await cli.until(lambda: transport_of(cli).get_write_buffer_size() == 0, "the buffer to drain")
    await _finish(server, cli, srv)


@check("writes")
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
        f" b={got.count(b'b')} c={got.count(b'c')}"
    )
    await _finish(server, cli, srv)


@check("writes")
async def check_memoryview(session: polyloop.Session) -> None:
    """write(memoryview) sends exactly the view's bytes (a slice of a larger buffer)."""
    server, srv, cli = await pair(session)
    base = bytearray(b"0123456789")
    transport_of(cli).write(memoryview(base)[2:7])
    base[:] = b"xxxxxxxxxx"
    transport_of(cli).write(memoryview(b"!"))
    assert await srv.wait_bytes(6) == b"23456!", bytes(srv.data)
    await _finish(server, cli, srv)


@check("writes")
async def check_writelines(session: polyloop.Session) -> None:
    """writelines([...]) writes each item in turn (bytes, bytearray and memoryview mixed)."""
    server, srv, cli = await pair(session)
    transport_of(cli).writelines([b"one ", bytearray(b"two "), memoryview(b"three")])
    transport_of(cli).writelines(iter([b"|", b"four"]))
    assert await srv.wait_bytes(18) == b"one two three|four", bytes(srv.data)
    await _finish(server, cli, srv)


@check("writes")
async def check_empty_write(session: polyloop.Session) -> None:
    """An empty write sends nothing and does no harm."""
    server, srv, cli = await pair(session)
    transport_of(cli).write(b"")
    transport_of(cli).write(bytearray())
    transport_of(cli).write(b"after")
    transport_of(cli).write_eof()
    await srv.eof
    assert bytes(srv.data) == b"after", bytes(srv.data)
    await _finish(server, cli, srv)


@check("writes")
async def check_both_directions(session: polyloop.Session) -> None:
    """Both ends write 1 MiB at once; each receives the other's bytes whole."""
    server, srv, cli = await pair(session)
    a, b = b"A" * (1 << 20), b"B" * (1 << 20)
    transport_of(cli).write(a)
    transport_of(srv).write(b)
    assert await srv.wait_bytes(len(a)) == a
    assert await cli.wait_bytes(len(b)) == b
    await _finish(server, cli, srv)


@check("writes")
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
    assert await cli.wait_bytes(len(expected)) == expected, bytes(cli.data)
    await _finish(server, cli, srv)
