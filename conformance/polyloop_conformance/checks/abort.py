"""Abort: ``Transport.abort`` drops the buffer, resets the peer, reports an error later.

Covers the peer seeing a reset and a reset reaching the protocol or the stream as
``ConnectionResetError`` -- each judged with the other end on a plain socket
(``_reference.py``), so that the verdict names the end that broke the rule -- the local
``connection_lost(ConnectionAbortedError)`` never from inside ``abort()``, buffered data
being dropped (also by an ``abort()`` after a ``close()`` that is still flushing),
``is_closing``, and ``abort()`` being a no-op twice or once the connection is lost.
"""

from __future__ import annotations

import socket

import polyloop

from .._registry import check
from ..referee import Failed, waiting_for
from ._reference import accept, plain, reference_peer, reset, written_then_aborted
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


@check("abort", clauses=["transport.abort.local_error"])
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
    assert isinstance(exc, ConnectionAbortedError), (
        f"after abort(), connection_lost({exc!r}); expected a ConnectionAbortedError"
    )
    assert not cli.lost_inside, "connection_lost was called from inside abort()"
    await srv.wait_lost()
    await server.aclose()


#: How the rules of two ends name them in a verdict.
RECEIVING_END = "the receiving end (the backend under test)"
REFERENCE = "a plain socket of the standard library"


@check("abort", clauses=["transport.abort.resets_peer"])
async def check_peer_reset(session: polyloop.Session) -> None:
    """The peer of an aborted connection sees a reset, not a clean EOF (the peer is a
    plain socket: only the aborting end, the backend under test, is judged)."""
    transport, peer = await reference_peer(session, lambda: Recorder(session))
    try:
        await written_then_aborted(session, transport, peer, b"some data")
    finally:
        peer.close()


@check("abort", clauses=["transport.reset.not_eof"])
async def check_reset_reported(session: polyloop.Session) -> None:
    """A reset from the peer reaches the protocol as connection_lost(ConnectionResetError),
    never as eof_received (the peer is a plain socket that resets: only the receiving end,
    the backend under test, is judged)."""
    proto = Recorder(session)
    _, peer = await reference_peer(session, lambda: proto)
    try:
        peer.sendall(b"some data")
        await proto.wait_bytes(9)
    finally:
        reset(peer)
    exc = await proto.wait_lost()
    if "eof" in proto.events or not isinstance(exc, ConnectionResetError):
        told = "eof_received, " if "eof" in proto.events else ""
        raise Failed(
            f"{RECEIVING_END} broke the rule: the peer, {REFERENCE}, reset the connection"
            f" (SO_LINGER 0, then close), and the protocol got {told}connection_lost({exc!r})"
            f" (events {compact(proto.events)}); a reset must reach it as"
            " connection_lost(ConnectionResetError), never as a clean EOF",
            clause="transport.reset.not_eof",
        )


@check("abort", clauses=["transport.reset.not_eof", "stream.receive.error_after_data"])
async def check_peer_stream_reset(session: polyloop.Session) -> None:
    """A Stream whose peer resets gets the data sent before, then ConnectionResetError
    from receive() (the peer is a plain socket that resets)."""
    listener = plain()[0](socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        stream = await polyloop.open_tcp_stream("127.0.0.1", port)
        listener.settimeout(5.0)
        peer = accept(listener)
    finally:
        listener.close()
    try:
        peer.sendall(b"x")
        with waiting_for("the byte the peer sent before its reset"):
            first = await stream.receive()
        assert first == b"x", f"receive() gave {first!r}, not the b'x' the peer sent"
        reset(peer)
        try:
            with waiting_for("receive() after the peer's reset"):
                data = await stream.receive()
        except ConnectionResetError:
            pass
        else:
            raise Failed(
                f"{RECEIVING_END} broke the rule: the peer, {REFERENCE}, reset the"
                f" connection, and receive() returned {data!r} instead of raising"
                " ConnectionResetError (b'' means a clean EOF, which a reset is not)",
                clause="transport.reset.not_eof",
            )
    finally:
        peer.close()
        await stream.aclose()


@check("abort", clauses=["transport.abort.drops_buffer"])
async def check_drops_buffer(session: polyloop.Session) -> None:
    """abort() with data buffered drops it: the peer gets fewer bytes, then a reset."""
    server, srv, cli = await pair(session, lambda: PausedReader(session))
    total = await fill_until_paused(session, cli)
    buffered = transport_of(cli).get_write_buffer_size()
    assert buffered > 0, "nothing buffered after pause_writing"
    transport_of(cli).abort()
    transport_of(srv).resume_reading()
    exc = await srv.wait_lost()
    assert len(srv.data) < total, (
        f"all {total} bytes arrived although abort() was called with {buffered} still buffered"
        " (rule: abort() drops buffered data)"
    )
    assert isinstance(exc, ConnectionResetError), (
        f"the peer's connection_lost({exc!r}) after abort(), not a ConnectionResetError"
    )
    lost = await cli.wait_lost()
    assert isinstance(lost, ConnectionAbortedError), (
        f"connection_lost({lost!r}) after abort(), not a ConnectionAbortedError"
    )
    await server.aclose()


@check("abort", clauses=["transport.abort.drops_buffer"])
async def check_after_close_buffered(session: polyloop.Session) -> None:
    """abort() after a close() that is still flushing drops the rest: the peer sees a
    reset, connection_lost gets ConnectionAbortedError, once."""
    server, srv, cli = await pair(session, lambda: PausedReader(session))
    total = await fill_until_paused(session, cli)
    t = transport_of(cli)
    t.close()
    t.abort()
    transport_of(srv).resume_reading()
    exc = await srv.wait_lost()
    assert len(srv.data) < total, (
        f"all {total} bytes arrived: abort() after close() did not drop the buffer (rule:"
        " abort() drops buffered data; it is a no-op only once the connection is lost)"
    )
    assert isinstance(exc, ConnectionResetError), (
        f"the peer's connection_lost({exc!r}) after close() then abort(), not a reset"
    )
    lost = await cli.wait_lost()
    assert isinstance(lost, ConnectionAbortedError), (
        f"connection_lost({lost!r}) after close() then abort(), not ConnectionAbortedError"
    )
    await settle(session, 0.02)
    assert cli.events.count("lost") == 1, f"events {compact(cli.events)}: lost more than once"
    await server.aclose()


@check("abort", clauses=["transport.abort.idempotent"])
async def check_idempotent(session: polyloop.Session) -> None:
    """abort() twice, abort() after close(), abort() after loss: one connection_lost each."""
    server, srv, cli = await pair(session)
    transport_of(cli).abort()
    transport_of(cli).abort()
    await cli.wait_lost()
    transport_of(cli).abort()
    await srv.wait_lost()
    transport_of(srv).abort()  # after the connection was lost: a no-op
    server2, srv2, cli2 = await pair(session)
    transport_of(cli2).close()
    transport_of(cli2).abort()  # once closed: a no-op, or at most turns close into abort
    await cli2.wait_lost()
    await srv2.wait_lost()
    await settle(session, 0.02)  # a second connection_lost would be scheduled by now
    for name, proto in (("client", cli), ("server", srv), ("closed client", cli2)):
        assert proto.events.count("lost") == 1, (
            f"{name}: connection_lost ran {proto.events.count('lost')} times, events"
            f" {compact(proto.events)} (rule: abort() again, or once lost, is a no-op)"
        )
    await server.aclose()
    await server2.aclose()


@check("abort", clauses=["transport.write.after_close_noop"])
async def check_write_after_abort(session: polyloop.Session) -> None:
    """A write after abort() is a silent no-op."""
    server, srv, cli = await pair(session)
    transport_of(cli).abort()
    write_quietly(transport_of(cli), b"ignored", "after abort()")
    await cli.wait_lost()
    write_quietly(transport_of(cli), b"ignored", "after connection_lost")
    await srv.wait_lost()
    assert bytes(srv.data) == b"", (
        f"the peer received {bytes(srv.data)!r} written after abort() (rule: a silent no-op)"
    )
    await server.aclose()
