"""Close: ``Transport.close`` flushes, reports ``connection_lost(None)`` once, later.

Covers flushing a large buffered write, ``connection_lost`` never called from inside
``close()``, idempotence, ``is_closing``, writes after ``close()`` or after the
connection was lost being silent no-ops, and the peer's view (EOF, then ``None``).
"""

from __future__ import annotations

import polyloop

from .._registry import check
from ._util import (
    PausedReader,
    ReentrancyProbe,
    compact,
    fill_until_paused,
    pair,
    transport_of,
)


@check("close")
async def check_flushes(session: polyloop.Session) -> None:
    """close() with a large write buffered delivers every byte, then connection_lost(None)."""
    server, srv, cli = await pair(session, lambda: PausedReader(session))
    total = await fill_until_paused(session, cli)
    buffered = transport_of(cli).get_write_buffer_size()
    assert buffered > 0, "nothing was buffered after pause_writing"
    transport_of(cli).close()
    assert "lost" not in cli.events, "connection_lost ran before the buffer was flushed"
    transport_of(srv).resume_reading()
    got = await srv.wait_bytes(total)
    assert len(got) == total, f"peer got {len(got)} of {total} bytes ({buffered} were buffered)"
    await srv.eof
    exc = await cli.wait_lost()
    assert exc is None, f"connection_lost({exc!r}) after a clean close"
    await srv.lost
    await server.aclose()


@check("close")
async def check_lost_not_reentrant(session: polyloop.Session) -> None:
    """close() never calls connection_lost from inside itself; it comes later, with None."""
    server, srv, cli = await pair(session, client_proto=lambda: ReentrancyProbe(session))
    assert isinstance(cli, ReentrancyProbe)
    cli.inside = True
    transport_of(cli).close()
    cli.inside = False
    assert "lost" not in cli.events, "connection_lost was called from inside close()"
    assert await cli.wait_lost() is None, cli.lost_exc
    assert not cli.lost_inside
    await srv.lost
    await server.aclose()


@check("close")
async def check_idempotent(session: polyloop.Session) -> None:
    """close() twice, and close() after the connection is lost: connection_lost runs once."""
    server, srv, cli = await pair(session)
    transport_of(cli).close()
    transport_of(cli).close()
    await cli.lost
    transport_of(cli).close()
    await srv.lost
    transport_of(srv).close()
    await session.sleep(0.02)  # a second connection_lost would be scheduled by now
    assert cli.events.count("lost") == 1, compact(cli.events)
    assert srv.events.count("lost") == 1, compact(srv.events)
    await server.aclose()


@check("close")
async def check_is_closing(session: polyloop.Session) -> None:
    """is_closing() is False while open, True at once after close(), and on the peer once lost."""
    server, srv, cli = await pair(session)
    assert not transport_of(cli).is_closing() and not transport_of(srv).is_closing()
    transport_of(cli).close()
    assert transport_of(cli).is_closing(), "is_closing() is False right after close()"
    await srv.lost
    assert transport_of(srv).is_closing(), "is_closing() is False after connection_lost"
    await cli.lost
    assert transport_of(cli).is_closing()
    await server.aclose()


@check("close")
async def check_write_after_close(session: polyloop.Session) -> None:
    """A write after close() is a silent no-op: the peer gets only what came before."""
    server, srv, cli = await pair(session)
    t = transport_of(cli)
    t.write(b"before")
    t.close()
    t.write(b"after")
    t.writelines([b"after", b"lines"])
    await srv.eof
    await srv.lost
    assert bytes(srv.data) == b"before", f"the peer received {bytes(srv.data)!r}"
    await cli.lost
    t.write(b"after lost")  # and after connection_lost
    await server.aclose()


@check("close")
async def check_write_after_close_buffered(session: polyloop.Session) -> None:
    """A write after close() while earlier data is still buffered is dropped, not queued."""
    server, srv, cli = await pair(session, lambda: PausedReader(session))
    total = await fill_until_paused(session, cli)
    t = transport_of(cli)
    t.close()
    t.write(b"AFTER CLOSE")
    t.writelines([b"AFTER CLOSE"])
    transport_of(srv).resume_reading()
    await srv.eof
    assert b"AFTER CLOSE" not in srv.data, "a write after close() was sent"
    assert len(srv.data) == total, f"peer got {len(srv.data)} bytes, {total} were written"
    await srv.lost
    await cli.lost
    await server.aclose()


@check("close")
async def check_write_after_peer_closed(session: polyloop.Session) -> None:
    """Writes after the connection was lost (the peer closed) are silent no-ops."""
    server, srv, cli = await pair(session)
    transport_of(srv).close()
    await cli.lost
    for _ in range(3):
        transport_of(cli).write(b"into the void")
    await srv.lost
    await server.aclose()


@check("close")
async def check_peer_sees_eof(session: polyloop.Session) -> None:
    """The peer of a closed transport gets eof_received, then connection_lost(None)."""
    server, srv, cli = await pair(session)
    transport_of(srv).write(b"bye")
    transport_of(srv).close()
    exc = await cli.wait_lost()
    assert exc is None, f"peer's connection_lost({exc!r}) after a clean close"
    assert bytes(cli.data) == b"bye", bytes(cli.data)
    assert cli.events[-2:] == ["eof", "lost"], compact(cli.events)
    await srv.lost
    await server.aclose()
