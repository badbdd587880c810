"""Half-close: ``write_eof`` and the return value of ``eof_received``.

Covers the peer's ``eof_received`` after ``write_eof`` (which flushes first), this side
still reading afterwards (and not ``is_closing()``), a true ``eof_received`` keeping the
connection half-open and a falsy one closing it, ``can_write_eof()`` on TCP, ``write``
after ``write_eof`` raising ``RuntimeError``, and ``abort()`` of a half-open connection.
"""

from __future__ import annotations

import socket

import polyloop

from .._registry import check
from ..referee import Failed
from ._reference import (
    buffered_then_ended,
    reference_peer,
    written_then_aborted,
)
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


@check("halfclose", clauses=["transport.can_write_eof"])
async def check_can_write_eof(session: polyloop.Session) -> None:
    """can_write_eof() is True for plain TCP on both ends."""
    server, srv, cli = await pair(session)
    for side, proto in (("client", cli), ("server side", srv)):
        got = transport_of(proto).can_write_eof()
        assert got is True, f"can_write_eof() is {got!r} on the {side} of plain TCP, not True"
    transport_of(cli).close()
    await srv.wait_lost()
    await server.aclose()


@check("halfclose", clauses=["transport.write_eof.half_close"])
async def check_peer_eof_and_reply(session: polyloop.Session) -> None:
    """After write_eof the peer gets eof_received, and this side still reads its reply."""

    class Replier(Recorder):
        def eof_received(self) -> bool:
            super().eof_received()
            transport_of(self).write(b"reply to " + bytes(self.data))
            transport_of(self).close()
            return True

    server, srv, cli = await pair(session, lambda: Replier(session))
    transport_of(cli).write(b"request")
    transport_of(cli).write_eof()
    assert "lost" not in cli.events and not cli.eof.done(), (
        f"write_eof() itself ended the connection: events {compact(cli.events)}"
    )
    t = transport_of(cli)
    assert not t.is_closing(), "is_closing() is True after write_eof() (it only half-closes)"
    assert t.is_reading(), "is_reading() is False after write_eof() (this side still reads)"
    exc = await cli.wait_lost()
    assert bytes(cli.data) == b"reply to request", (
        f"after write_eof() the client read {bytes(cli.data)!r}, not the peer's reply (rule:"
        " this side can still read)"
    )
    assert exc is None, f"connection_lost({exc!r}) after the peer's clean close, not None"
    assert srv.events.count("eof") == 1, (
        f"the peer saw eof_received {srv.events.count('eof')} times: {compact(srv.events)}"
    )
    await srv.wait_lost()
    await server.aclose()


@check("halfclose", clauses=["protocol.eof_received.return_value"])
async def check_true_keeps_open(session: polyloop.Session) -> None:
    """eof_received returning True keeps the connection half-open: it can still write."""
    server, srv, cli = await pair(session, lambda: Recorder(session, keep_open_on_eof=True))
    transport_of(cli).write_eof()
    await srv.wait_eof()
    await settle(session, 0.02)  # a wrong self-close would have started by now
    assert not transport_of(srv).is_closing(), (
        "the transport is closing although eof_received returned True (rule: a true value"
        " keeps the connection half-open)"
    )
    assert "lost" not in srv.events, (
        f"connection_lost although eof_received returned True: {compact(srv.events)}"
    )
    transport_of(srv).write(b"still talking")
    got = await cli.wait_bytes(13)
    assert got == b"still talking", f"the half-open side's write arrived as {got!r}"
    transport_of(srv).close()
    exc = await cli.wait_lost()
    assert exc is None, f"client connection_lost({exc!r}) after a clean close, not None"
    exc = await srv.wait_lost()
    assert exc is None, f"server connection_lost({exc!r}) after its close(), not None"
    await server.aclose()


@check("halfclose", clauses=["protocol.eof_received.return_value"])
async def check_falsy_closes(session: polyloop.Session) -> None:
    """eof_received returning None/False closes the transport: connection_lost(None) on both."""
    for result in (None, False):

        class Closer(Recorder):
            answer = result

            def eof_received(self) -> bool:
                super().eof_received()
                return self.answer  # type: ignore[return-value]

        server, srv, cli = await pair(session, lambda: Closer(session))
        transport_of(cli).write_eof()
        exc = await bounded(
            session,
            srv.wait_lost(),
            2,
            f"eof_received returned {result}, but the transport did not close itself (rule: a"
            " falsy eof_received closes the transport)",
        )
        assert exc is None, (
            f"eof_received -> {result}: the transport closed with connection_lost({exc!r}),"
            " not None"
        )
        exc = await cli.wait_lost()
        assert exc is None, f"eof_received -> {result}: the peer's connection_lost({exc!r})"
        assert cli.events[-2:] == ["eof", "lost"], (
            f"eof_received -> {result}: the peer saw {compact(cli.events)}, expected EOF then"
            " connection_lost (rule: a falsy eof_received closes the transport)"
        )
        await server.aclose()


@check("halfclose", clauses=["transport.write_eof.half_close"])
async def check_write_eof_flushes(session: polyloop.Session) -> None:
    """write_eof with a large write buffered: the peer reads every byte, then EOF."""
    server, srv, cli = await pair(session, lambda: PausedReader(session))
    total = await fill_until_paused(session, cli)
    transport_of(cli).write_eof()
    transport_of(srv).resume_reading()
    await srv.wait_eof()
    assert len(srv.data) == total, (
        f"the peer saw EOF after {len(srv.data)} of {total} bytes (rule: write_eof flushes first)"
    )
    await srv.wait_lost()
    await cli.wait_lost()
    await server.aclose()


@check("halfclose", clauses=["transport.write_eof.then_write_raises"])
async def check_write_after_eof(session: polyloop.Session) -> None:
    """write() after write_eof() raises RuntimeError."""
    server, srv, cli = await pair(session, lambda: Recorder(session, keep_open_on_eof=True))
    transport_of(cli).write_eof()
    try:
        transport_of(cli).write(b"too late")
    except RuntimeError:
        pass
    else:
        raise AssertionError("write() after write_eof() did not raise RuntimeError")
    await srv.wait_eof()
    transport_of(srv).close()
    await cli.wait_lost()
    assert bytes(srv.data) == b"", f"the peer received {bytes(srv.data)!r} after write_eof()"
    await server.aclose()


@check("halfclose", clauses=["transport.abort.resets_peer"])
async def check_abort_half_open(session: polyloop.Session) -> None:
    """abort() of a connection half-open after the peer's EOF: the peer sees a reset,
    this side's connection_lost gets ConnectionAbortedError."""
    server, srv, cli = await pair(session, lambda: Recorder(session, keep_open_on_eof=True))
    transport_of(cli).write_eof()
    await srv.wait_eof()
    transport_of(srv).abort()
    exc = await srv.wait_lost()
    assert isinstance(exc, ConnectionAbortedError), (
        f"abort() after EOF: connection_lost({exc!r}), not ConnectionAbortedError"
    )
    peer = await cli.wait_lost()
    assert isinstance(peer, ConnectionResetError), (
        f"the peer of a half-open connection aborted after its EOF got connection_lost({peer!r}),"
        " not a ConnectionResetError"
    )
    await server.aclose()


@check("halfclose", clauses=["transport.abort.resets_peer"])
async def check_abort_half_open_to_plain_peer(session: polyloop.Session) -> None:
    """abort() of a connection the peer half-closed: the peer, a plain socket, reads a
    reset, not a clean end, and this side's connection_lost gets ConnectionAbortedError
    (only the aborting end, the backend under test, is judged)."""
    proto = Recorder(session, keep_open_on_eof=True)
    transport, peer = await reference_peer(session, lambda: proto)
    try:
        peer.sendall(b"last words")
        peer.shutdown(socket.SHUT_WR)
        await proto.wait_eof()
        await written_then_aborted(
            session, transport, peer, b"still here", before="the peer had half-closed, and "
        )
    finally:
        peer.close()
    exc = await proto.wait_lost()
    assert isinstance(exc, ConnectionAbortedError), (
        f"abort() after the peer's EOF: connection_lost({exc!r}), not ConnectionAbortedError"
    )


@check("halfclose", clauses=["transport.write_eof.half_close"])
async def check_write_eof_to_plain_peer(session: polyloop.Session) -> None:
    """write_eof() with a large write buffered: a plain socket at the other end reads
    every byte, then EOF, and its reply still reaches this side (only the half-closing
    end, the backend under test, is judged)."""
    proto = Recorder(session)
    transport, peer = await reference_peer(session, lambda: proto)
    try:
        await buffered_then_ended(
            session, proto, transport, peer, "write_eof", who="the half-closing end",
            rule="write_eof() must send everything written before it, then the EOF",
            clause="transport.write_eof.half_close",
        )  # fmt: skip
        peer.sendall(b"reply after your EOF")
        peer.shutdown(socket.SHUT_WR)
        await proto.wait_eof()
        got = bytes(proto.data)
        if got != b"reply after your EOF":
            raise Failed(
                f"the half-closing end (the backend under test) broke the rule: after its"
                f" write_eof() it read {got!r} of the peer's b'reply after your EOF' (rule:"
                " this side still reads after write_eof)",
                clause="transport.write_eof.half_close",
            )
    finally:
        peer.close()
        transport.close()


@check("halfclose", clauses=["transport.close.peer_sees_eof"])
async def check_eof_from_plain_peer(session: polyloop.Session) -> None:
    """A plain socket that sends data, then closes cleanly: the protocol gets the data,
    eof_received, then connection_lost(None) (only the receiving end, the backend under
    test, is judged)."""
    proto = Recorder(session)
    _, peer = await reference_peer(session, lambda: proto)
    try:
        peer.sendall(b"last words")
    finally:
        peer.close()  # a FIN after the data: a clean close
    exc = await proto.wait_lost()
    events = compact(proto.events)
    if bytes(proto.data) != b"last words" or "eof" not in proto.events or exc is not None:
        raise Failed(
            f"the receiving end (the backend under test) broke the rule: the peer, a plain"
            f" socket of the standard library, sent b'last words' and closed cleanly (FIN);"
            f" the protocol got {bytes(proto.data)!r}, events {events}, connection_lost"
            f"({exc!r}); a clean close must reach it as the data, eof_received, then"
            " connection_lost(None)",
            clause="transport.close.peer_sees_eof",
        )
