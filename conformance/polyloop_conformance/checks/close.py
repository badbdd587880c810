"""Close: ``Transport.close`` flushes, reports ``connection_lost(None)`` once, later.

Covers flushing a large buffered write, ``connection_lost`` never called from inside
``close()``, idempotence, ``is_closing`` (also at once after a ``close()`` that still has
data to flush), writes after ``close()`` or after the connection was lost being silent
no-ops (buffered or not), and the peer's view (EOF, then ``None``). The buffered
scenarios take the connection maker, so that ``tls`` runs them over TLS too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import polyloop

from .._registry import check
from ._reference import buffered_then_ended, reference_peer
from ._util import (
    PausedReader,
    Recorder,
    ReentrancyProbe,
    compact,
    fill_until_paused,
    pair,
    settle,
    transport_of,
    write_quietly,
)

MakePair = Callable[..., Any]


async def flushes(session: polyloop.Session, make_pair: MakePair) -> None:
    """The scenario of ``close.flushes``."""
    server, srv, cli = await make_pair(session, lambda: PausedReader(session))
    cli_t = transport_of(cli)
    total = await fill_until_paused(session, cli)
    buffered = cli_t.get_write_buffer_size()
    assert buffered > 0, f"nothing was buffered after pause_writing ({total} bytes written)"
    cli_t.close()
    assert "lost" not in cli.events, (
        f"connection_lost ran inside close() with {buffered} bytes still buffered (rule: close"
        " flushes first, and never calls connection_lost from inside itself)"
    )
    transport_of(srv).resume_reading()
    await srv.wait_lost()
    got = len(srv.data)
    assert got == total, (
        f"the peer got {got} of {total} bytes before the connection ended ({buffered} were"
        f" buffered when close() was called; the peer's connection_lost({srv.lost_exc!r})):"
        " close() must flush"
    )
    exc = await cli.wait_lost()
    assert exc is None, f"connection_lost({exc!r}) after a clean close, expected None"
    await server.aclose()


@check("close", clauses=["transport.close.flushes"])
async def check_flushes(session: polyloop.Session) -> None:
    """close() with a large write buffered delivers every byte, then connection_lost(None)."""
    await flushes(session, pair)


@check("close", clauses=["transport.close.flushes"])
async def check_flushes_to_plain_peer(session: polyloop.Session) -> None:
    """close() with a large write buffered: a plain socket at the other end reads every
    byte, then a clean EOF (only the closing end, the backend under test, is judged)."""
    proto = Recorder(session)
    transport, peer = await reference_peer(session, lambda: proto)
    try:
        await buffered_then_ended(
            session, proto, transport, peer, "close", who="the closing end",
            rule="close() must send all that was buffered before it closes the socket",
            clause="transport.close.flushes",
        )  # fmt: skip
    finally:
        peer.close()
    exc = await proto.wait_lost()
    assert exc is None, f"connection_lost({exc!r}) after a clean close, expected None"


async def is_closing_buffered(session: polyloop.Session, make_pair: MakePair) -> None:
    """The scenario of ``close.is_closing_buffered``."""
    server, srv, cli = await make_pair(session, lambda: PausedReader(session))
    t = transport_of(cli)
    await fill_until_paused(session, cli)
    buffered = t.get_write_buffer_size()
    assert buffered > 0, f"nothing was buffered after pause_writing ({buffered})"
    t.close()
    assert t.is_closing(), (
        f"is_closing() is False right after close() while {buffered} bytes are still buffered"
        " (rule: True once close() was called, not once the buffer is flushed)"
    )
    assert not t.is_reading(), (
        "is_reading() is True right after close() (rule: False once closing)"
    )
    transport_of(srv).resume_reading()
    await cli.until(lambda: t.get_write_buffer_size() < buffered, "the buffer to drain")
    assert t.is_closing(), "is_closing() went back to False while close() flushes"
    await cli.wait_lost()
    assert t.is_closing(), "is_closing() is False after connection_lost"
    await srv.wait_lost()
    await server.aclose()


@check("close", clauses=["transport.is_closing"])
async def check_is_closing_buffered(session: polyloop.Session) -> None:
    """is_closing() is True at once after close(), also while buffered data is still
    being flushed, and stays True."""
    await is_closing_buffered(session, pair)


@check("close", clauses=["transport.close.not_reentrant"])
async def check_lost_not_reentrant(session: polyloop.Session) -> None:
    """close() never calls connection_lost from inside itself; it comes later, with None."""
    server, srv, cli = await pair(session, client_proto=lambda: ReentrancyProbe(session))
    assert isinstance(cli, ReentrancyProbe)
    cli.inside = True
    transport_of(cli).close()
    cli.inside = False
    assert "lost" not in cli.events, "connection_lost was called from inside close()"
    exc = await cli.wait_lost()
    assert exc is None, f"connection_lost({exc!r}) after close(), expected None"
    assert not cli.lost_inside, "connection_lost was called from inside close()"
    await srv.wait_lost()
    await server.aclose()


@check("close", clauses=["transport.close.idempotent"])
async def check_idempotent(session: polyloop.Session) -> None:
    """close() twice, and close() after the connection is lost: connection_lost runs once."""
    server, srv, cli = await pair(session)
    transport_of(cli).close()
    transport_of(cli).close()
    await cli.wait_lost()
    transport_of(cli).close()
    await srv.wait_lost()
    transport_of(srv).close()
    await settle(session, 0.02)  # a second connection_lost would be scheduled by now
    for name, proto in (("client", cli), ("server side", srv)):
        assert proto.events.count("lost") == 1, (
            f"{name}: connection_lost ran {proto.events.count('lost')} times after repeated"
            f" close() calls, events {compact(proto.events)} (rule: close() again is a no-op)"
        )
    await server.aclose()


@check("close", clauses=["transport.is_closing"])
async def check_is_closing(session: polyloop.Session) -> None:
    """is_closing() is False while open, True at once after close(), and on the peer once lost."""
    server, srv, cli = await pair(session)
    assert not transport_of(cli).is_closing(), "is_closing() is True on a fresh connection"
    assert not transport_of(srv).is_closing(), "is_closing() is True on a fresh accepted one"
    transport_of(cli).close()
    assert transport_of(cli).is_closing(), "is_closing() is False right after close()"
    await srv.wait_lost()
    assert transport_of(srv).is_closing(), (
        "is_closing() is False on the peer after its connection_lost (rule: True once the"
        " connection was lost)"
    )
    await cli.wait_lost()
    assert transport_of(cli).is_closing(), "is_closing() is False after connection_lost"
    await server.aclose()


@check("close", clauses=["transport.write.after_close_noop"])
async def check_write_after_close(session: polyloop.Session) -> None:
    """A write after close() is a silent no-op: the peer gets only what came before."""
    server, srv, cli = await pair(session)
    t = transport_of(cli)
    t.write(b"before")
    t.close()
    write_quietly(t, b"after", "after close()")
    await srv.wait_lost()
    assert bytes(srv.data) == b"before", (
        f"the peer received {bytes(srv.data)!r}; expected b'before' only (rule: a write after"
        " close() is a silent no-op)"
    )
    await cli.wait_lost()
    write_quietly(t, b"after lost", "after connection_lost")
    await server.aclose()


async def write_after_close_buffered(session: polyloop.Session, make_pair: MakePair) -> None:
    """The scenario of ``close.write_after_close_buffered``."""
    server, srv, cli = await make_pair(session, lambda: PausedReader(session))
    total = await fill_until_paused(session, cli)
    t = transport_of(cli)
    t.close()
    write_quietly(t, b"AFTER CLOSE", "after close()")
    transport_of(srv).resume_reading()
    await srv.wait_lost()
    extra = len(srv.data) - total
    assert b"AFTER CLOSE" not in srv.data and extra <= 0, (
        f"a write after close() was queued behind the buffered data and sent: the peer got"
        f" {len(srv.data)} bytes, {total} were written before close() (rule: a write after"
        " close() is a silent no-op, also while the buffer flushes)"
    )
    assert len(srv.data) == total, (
        f"the peer got {len(srv.data)} of the {total} bytes written before close()"
    )
    await cli.wait_lost()
    await server.aclose()


@check("close", clauses=["transport.write.after_close_noop"])
async def check_write_after_close_buffered(session: polyloop.Session) -> None:
    """A write after close() while earlier data is still buffered is dropped, not queued."""
    await write_after_close_buffered(session, pair)


@check("close", clauses=["transport.write.after_close_noop"])
async def check_write_after_peer_closed(session: polyloop.Session) -> None:
    """Writes after the connection was lost (the peer closed) are silent no-ops."""
    server, srv, cli = await pair(session)
    transport_of(srv).close()
    await cli.wait_lost()
    for _ in range(3):
        write_quietly(transport_of(cli), b"into the void", "after the connection was lost")
    await srv.wait_lost()
    await server.aclose()


@check("close", clauses=["transport.close.peer_sees_eof"])
async def check_peer_sees_eof(session: polyloop.Session) -> None:
    """The peer of a closed transport gets eof_received, then connection_lost(None)."""
    server, srv, cli = await pair(session)
    transport_of(srv).write(b"bye")
    transport_of(srv).close()
    exc = await cli.wait_lost()
    assert exc is None, f"the peer's connection_lost({exc!r}) after a clean close, not None"
    assert bytes(cli.data) == b"bye", f"the peer got {bytes(cli.data)!r}, not b'bye'"
    assert cli.events[-2:] == ["eof", "lost"], (
        f"the peer of a closed transport saw {compact(cli.events)}, expected it to end with"
        " eof_received, connection_lost"
    )
    await srv.wait_lost()
    await server.aclose()
