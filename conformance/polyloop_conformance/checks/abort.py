"""Abort: ``Transport.abort`` drops the buffer, resets the peer, reports an error later.

Covers the peer seeing ``ConnectionResetError`` (protocol and stream), the local
``connection_lost(ConnectionAbortedError)`` never from inside ``abort()``, buffered data
being dropped, ``is_closing``, and ``abort()`` being a no-op twice or after ``close()``.
"""

from __future__ import annotations

import polyloop

from .._registry import check
from ._util import (
    PausedReader,
    Recorder,
    ReentrancyProbe,
    compact,
    fill_until_paused,
    pair,
    transport_of,
)


@check("abort")
async def check_local_aborted_error(session: polyloop.Session) -> None:
    """abort(): connection_lost(ConnectionAbortedError) later, never from inside abort()."""
    server, srv, cli = await pair(session, client_proto=lambda: ReentrancyProbe(session))
    assert isinstance(cli, ReentrancyProbe)
    cli.inside = True
    transport_of(cli).abort()
    cli.inside = False
    assert "lost" not in cli.events, "connection_lost was called from inside abort()"
    assert transport_of(cli).is_closing(), "is_closing() is False right after abort()"
    exc = await cli.wait_lost()
    assert isinstance(exc, ConnectionAbortedError), f"connection_lost({exc!r})"
    await srv.lost
    await server.aclose()


@check("abort")
async def check_peer_reset(session: polyloop.Session) -> None:
    """The peer of an aborted connection sees a reset, not a clean EOF."""
    server, srv, cli = await pair(session)
    transport_of(cli).write(b"some data")
    await srv.wait_bytes(9)
    transport_of(cli).abort()
    exc = await srv.wait_lost()
    assert isinstance(exc, ConnectionResetError), (
        f"peer's connection_lost({exc!r}), events {compact(srv.events)}"
    )
    assert "eof" not in srv.events, f"the peer saw a clean EOF: {compact(srv.events)}"
    await server.aclose()


@check("abort")
async def check_peer_stream_reset(session: polyloop.Session) -> None:
    """A peer reading with a Stream gets ConnectionResetError from receive()."""
    listener = await polyloop.open_tcp_listener("127.0.0.1", 0)
    t, _ = await session.connect_tcp(lambda: Recorder(session), "127.0.0.1", listener.port)
    stream = await listener.accept()
    t.write(b"x")
    assert await stream.receive() == b"x"
    t.abort()
    try:
        data = await stream.receive()
    except ConnectionResetError:
        pass
    else:
        raise AssertionError(f"receive() after the peer's abort returned {data!r}")
    await stream.aclose()
    await listener.aclose()


@check("abort")
async def check_drops_buffer(session: polyloop.Session) -> None:
    """abort() with data buffered drops it: the peer gets fewer bytes, then a reset."""
    server, srv, cli = await pair(session, lambda: PausedReader(session))
    total = await fill_until_paused(session, cli)
    assert transport_of(cli).get_write_buffer_size() > 0, "nothing buffered after pause_writing"
    transport_of(cli).abort()
    transport_of(srv).resume_reading()
    exc = await srv.wait_lost()
    assert len(srv.data) < total, f"all {total} bytes arrived although abort() should drop some"
    assert isinstance(exc, ConnectionResetError), f"peer's connection_lost({exc!r})"
    assert isinstance(await cli.lost, ConnectionAbortedError), cli.lost_exc
    await server.aclose()


@check("abort")
async def check_idempotent(session: polyloop.Session) -> None:
    """abort() twice, abort() after close(), abort() after loss: one connection_lost each."""
    server, srv, cli = await pair(session)
    transport_of(cli).abort()
    transport_of(cli).abort()
    await cli.lost
    transport_of(cli).abort()
    await srv.lost
    transport_of(srv).abort()  # after the connection was lost: a no-op
    server2, srv2, cli2 = await pair(session)
    transport_of(cli2).close()
    transport_of(cli2).abort()  # once closed: a no-op, or at most turns close into abort
    await cli2.lost
    await srv2.lost
    await session.sleep(0.02)  # a second connection_lost would be scheduled by now
    for name, proto in (("client", cli), ("server", srv), ("closed client", cli2)):
        assert proto.events.count("lost") == 1, f"{name}: {compact(proto.events)}"
    await server.aclose()
    await server2.aclose()


@check("abort")
async def check_write_after_abort(session: polyloop.Session) -> None:
    """A write after abort() is a silent no-op."""
    server, srv, cli = await pair(session)
    transport_of(cli).abort()
    transport_of(cli).write(b"ignored")
    await cli.lost
    transport_of(cli).write(b"ignored")
    await srv.lost
    assert bytes(srv.data) == b"", f"the peer received {bytes(srv.data)!r} after abort"
    await server.aclose()
