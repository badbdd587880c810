"""Flow control: pause/resume writing and reading, and the write-buffer marks.

The scenarios that take a connection maker are run over TLS too (``tls``).

Covers ``pause_writing`` once a non-reading peer lets the buffer pass the high-water mark
(64 KiB by default) and ``resume_writing`` once it drains to the low one, their strict
alternation, ``get_write_buffer_size`` growing and draining, ``set_write_buffer_limits``
(validation and a custom mark), and ``pause_reading``/``resume_reading``/``is_reading``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import polyloop

from .._registry import check
from ._util import (
    PausedReader,
    Recorder,
    bounded,
    compact,
    fill_until_paused,
    pair,
    settle,
    transport_of,
)

HIGH = 64 * 1024


def _alternate(events: list[str]) -> bool:
    flow = [e for e in events if e in ("pause", "resume")]
    return all(e == ("pause" if i % 2 == 0 else "resume") for i, e in enumerate(flow))


async def pause_resume_writing(session: polyloop.Session, make_pair: Callable[..., Any]) -> None:
    """The scenario of ``flow.pause_resume_writing`` (also run over TLS)."""
    server, srv, cli = await make_pair(session, lambda: PausedReader(session))
    total = await fill_until_paused(session, cli)
    size = transport_of(cli).get_write_buffer_size()
    assert cli.size_at_pause[0] > HIGH, (
        f"pause_writing came with {cli.size_at_pause[0]} bytes buffered, at or below the"
        f" high-water mark {HIGH} (rule: pause_writing once the buffer grows past it)"
    )
    assert size > HIGH, (
        f"get_write_buffer_size() is {size} right after pause_writing (high-water mark {HIGH})"
    )
    transport_of(srv).resume_reading()
    await cli.until(lambda: "resume" in cli.events, "resume_writing once the peer reads again")
    assert cli.size_at_resume[-1] <= HIGH // 4, (
        f"resume_writing came with {cli.size_at_resume[-1]} bytes buffered, above the low mark"
        f" {HIGH // 4} (rule: resume_writing once it drains to the low mark or below)"
    )
    got = await srv.wait_bytes(total)
    assert len(got) == total, f"the peer got {len(got)} of {total} bytes"
    await cli.until(
        lambda: transport_of(cli).get_write_buffer_size() == 0,
        "get_write_buffer_size() to drain to 0",
    )
    assert _alternate(cli.events), (
        f"pause_writing/resume_writing do not alternate: {compact(cli.events)}"
    )
    assert cli.events[-1] == "resume", (
        f"the flow-control events end with {compact(cli.events)}, not resume_writing"
    )
    transport_of(cli).close()
    await srv.wait_lost()
    await server.aclose()


@check("flow", clauses=["transport.flow.pause_writing"])
async def check_pause_resume_writing(session: polyloop.Session) -> None:
    """A peer that stops reading makes the writer pause; when it reads again, resume."""
    await pause_resume_writing(session, pair)


@check("flow", clauses=["transport.flow.buffer_size"])
async def check_buffer_size_grows(session: polyloop.Session) -> None:
    """get_write_buffer_size() is 0 when idle and grows with writes a stalled peer can't take."""
    server, srv, cli = await pair(session, lambda: PausedReader(session))
    t = transport_of(cli)
    assert t.get_write_buffer_size() == 0, t.get_write_buffer_size()
    await fill_until_paused(session, cli)
    before = t.get_write_buffer_size()
    t.write(b"y" * 10_000)
    after = t.get_write_buffer_size()
    assert after >= before + 10_000, (
        f"get_write_buffer_size() went from {before} to {after} after a 10,000-byte write to a"
        " stalled peer (rule: it counts the bytes not yet handed to the kernel)"
    )
    assert cli.events.count("pause") == 1, (
        f"pause_writing came again while paused: {compact(cli.events)} (rule: pause and"
        " resume alternate)"
    )
    t.abort()
    transport_of(srv).resume_reading()  # a paused reader would not notice the reset
    await srv.wait_lost()
    await cli.wait_lost()
    await settle(session, 0.01)
    assert cli.events[-1] == "lost", (
        f"a flow-control callback came after connection_lost: {compact(cli.events)} (rule:"
        " pause_writing/resume_writing only between connection_made and connection_lost)"
    )
    await server.aclose()


@check("flow", clauses=["transport.flow.limits_validated"])
async def check_set_write_buffer_limits_validation(session: polyloop.Session) -> None:
    """set_write_buffer_limits: ValueError unless 0 <= low <= high; valid marks accepted."""
    server, srv, cli = await pair(session)
    t = transport_of(cli)
    for high, low in ((10, 20), (-1, None), (None, -1), (100, -1), (0, 1)):
        try:
            t.set_write_buffer_limits(high, low)
        except ValueError:
            pass
        else:
            raise AssertionError(f"set_write_buffer_limits(high={high}, low={low}) was accepted")
    for high, low in ((None, None), (0, 0), (1024, None), (None, 1024), (100, 100)):
        t.set_write_buffer_limits(high, low)
    t.write(b"still fine")
    got = await srv.wait_bytes(10)
    assert got == b"still fine", f"a write after valid set_write_buffer_limits arrived as {got!r}"
    t.close()
    await srv.wait_lost()
    await server.aclose()


@check("flow", clauses=["transport.flow.pause_writing"])
async def check_custom_high_mark(session: polyloop.Session) -> None:
    """With set_write_buffer_limits(high=1 MiB) pause_writing comes only past 1 MiB buffered."""
    server, srv, cli = await pair(session, lambda: PausedReader(session))
    transport_of(cli).set_write_buffer_limits(high=1 << 20)
    await fill_until_paused(session, cli)
    assert cli.size_at_pause[0] > 1 << 20, (
        f"with set_write_buffer_limits(high=1 MiB), pause_writing came at"
        f" {cli.size_at_pause[0]} bytes buffered (rule: only past the high mark)"
    )
    transport_of(srv).resume_reading()
    await cli.until(lambda: "resume" in cli.events, "resume_writing")
    assert cli.size_at_resume[0] <= 1 << 18, (
        f"with high=1 MiB (low defaults to high // 4 = 256 KiB), resume_writing came at"
        f" {cli.size_at_resume[0]} bytes buffered"
    )
    transport_of(cli).close()
    await srv.wait_lost()
    await server.aclose()


@check("flow", clauses=["transport.pause_reading"])
async def check_pause_reading(session: polyloop.Session) -> None:
    """pause_reading stops data_received until resume_reading; is_reading() follows."""
    await pause_reading(session, pair)


async def pause_reading(session: polyloop.Session, make_pair: Callable[..., Any]) -> None:
    """The scenario of ``flow.pause_reading`` (also run over TLS)."""
    server, srv, cli = await make_pair(session)
    ts = transport_of(srv)
    assert ts.is_reading() is True, "is_reading() is False on a fresh connection"
    transport_of(cli).write(b"one")
    await srv.wait_bytes(3)
    ts.pause_reading()
    ts.pause_reading()  # idempotent
    assert ts.is_reading() is False, "is_reading() is True after pause_reading()"
    transport_of(cli).write(b"two")
    await settle(session, 0.05)  # "nothing happens" needs a bounded wait: loopback is faster
    assert bytes(srv.data) == b"one", (
        f"data_received while reading was paused: the server got {bytes(srv.data)!r}, expected"
        " b'one' (rule: pause_reading stops data_received until resume_reading)"
    )
    ts.resume_reading()
    ts.resume_reading()  # idempotent
    assert ts.is_reading() is True, "is_reading() is False after resume_reading()"
    got = await bounded(
        session,
        srv.wait_bytes(6),
        2,
        f"after resume_reading() no more data came ({bytes(srv.data)!r} so far; rule:"
        " resume_reading undoes pause_reading)",
    )
    assert got == b"onetwo", f"after resume_reading() the server got {got!r}, not b'onetwo'"
    transport_of(cli).close()
    await srv.wait_lost()
    assert ts.is_reading() is False, "is_reading() is True once the transport is closed"
    await server.aclose()


@check("flow", clauses=["transport.pause_reading"])
async def check_is_reading_closing(session: polyloop.Session) -> None:
    """is_reading() is False once close() was called; resume_reading() then changes nothing."""
    server, srv, cli = await pair(session)
    t = transport_of(cli)
    t.close()
    assert t.is_reading() is False, (
        "is_reading() is True right after close() (rule: False once closing)"
    )
    t.resume_reading()
    assert t.is_reading() is False, "resume_reading() after close() made is_reading() True"
    await cli.wait_lost()
    t.pause_reading()
    t.resume_reading()
    await srv.wait_lost()
    await server.aclose()


@check("flow", clauses=["transport.pause_reading.pushes_back"])
async def check_paused_reading_pushes_back(session: polyloop.Session) -> None:
    """pause_reading in the middle of a transfer: the kernel pushes back, the writer pauses."""
    server, srv, cli = await pair(session)
    transport_of(cli).write(b"z" * 1000)
    await srv.wait_bytes(1000)
    transport_of(srv).pause_reading()
    never = (
        "the reader paused reading, so the kernel should have pushed back: rule:"
        " pause_reading stops reading the socket, not only data_received"
    )
    total = 1000 + await fill_until_paused(session, cli, never)
    transport_of(srv).resume_reading()
    got = await srv.wait_bytes(total)
    assert len(got) == total, f"after resume_reading() the server got {len(got)} of {total} bytes"
    transport_of(cli).close()
    await srv.wait_lost()
    await server.aclose()


@check("flow", clauses=["transport.pause_reading"])
async def check_read_pause_survives_data(session: polyloop.Session) -> None:
    """pause_reading called inside data_received holds: no further data_received calls."""

    class PauseOnFirst(Recorder):
        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.events.count("data") == 1:
                transport_of(self).pause_reading()

    server, srv, cli = await pair(session, lambda: PauseOnFirst(session))
    transport_of(cli).write(b"a")
    await srv.wait_bytes(1)
    transport_of(cli).write(b"b" * 100_000)
    await settle(session, 0.05)  # "nothing happens" needs a bounded wait: loopback is faster
    assert srv.events.count("data") == 1, (
        f"data_received came again after pause_reading() inside data_received:"
        f" {compact(srv.events)}, {len(srv.data)} bytes (rule: no data_received while paused)"
    )
    transport_of(srv).resume_reading()
    await srv.wait_bytes(100_001)
    transport_of(cli).close()
    await srv.wait_lost()
    await server.aclose()
