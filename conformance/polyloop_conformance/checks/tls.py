"""TLS: stdlib ``ssl.SSLContext`` on every backend, native or through the core TLS layer.

Covers a verified round trip (protocols and streams), ``SSLCertVerificationError`` from
``connect_tcp`` for an unknown CA and for a wrong host name, a failed handshake never
reaching the protocol, the ``ssl_object``/``peercert`` extra info, close_notify read as
EOF, ``can_write_eof()`` being False and a true ``eof_received`` ignored, a large
transfer, abort, and the plain-TCP scenarios that have a buffered path run over TLS:
close flushing, ``is_closing`` while flushing, writes after close, a reused
``bytearray``, pause/resume writing and reading.
"""

from __future__ import annotations

import ssl
from typing import Any

import polyloop

from .._registry import check
from ..tls import material
from . import close, flow, writes
from ._util import Accepted, Recorder, bounded, compact, pair, transport_of, write_quietly


def _contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    tls = material()
    return tls.server_context(), tls.client_context()


async def _tls_pair(
    session: polyloop.Session, server_proto: Any = None, client_proto: Any = None
) -> tuple[polyloop.Server, Recorder, Recorder]:
    """A TLS connection whose client has read everything the handshake sent.

    Why the greeting: a TLS 1.3 server sends its session tickets after the handshake. A
    client that closes before it has read them closes a socket with unread data, and
    the kernel then sends a reset instead of a FIN, which can destroy data still on its
    way to the server. The scenarios here are about the transport's own promises, so
    the server sends one byte first, and the client waits for it (it comes after the
    tickets) before the scenario starts; the byte is then forgotten.
    """
    server_ssl, client_ssl = _contexts()
    server, srv, cli = await pair(
        session, server_proto, client_proto, server_ssl=server_ssl, client_ssl=client_ssl
    )
    transport_of(srv).write(b"!")
    await cli.wait_bytes(1)
    del cli.data[:1]
    return server, srv, cli


@check("tls", clauses=["transport.close.flushes"])
async def check_close_flushes(session: polyloop.Session) -> None:
    """close() over TLS with a large write buffered delivers every byte, then
    connection_lost(None), never from inside close()."""
    await close.flushes(session, _tls_pair)


@check("tls", clauses=["transport.is_closing"])
async def check_is_closing_buffered(session: polyloop.Session) -> None:
    """Over TLS, is_closing() is True at once after close(), while the buffer flushes."""
    await close.is_closing_buffered(session, _tls_pair)


@check("tls", clauses=["transport.write.after_close_noop"])
async def check_write_after_close_buffered(session: polyloop.Session) -> None:
    """Over TLS, a write after close() while data is still buffered is dropped."""
    await close.write_after_close_buffered(session, _tls_pair)


@check("tls", clauses=["transport.write.copies"])
async def check_bytearray_copied_buffered(session: polyloop.Session) -> None:
    """Over TLS, a bytearray written while data is buffered is copied by write()."""
    await writes.bytearray_copied_buffered(session, _tls_pair)


@check("tls", clauses=["transport.flow.pause_writing"])
async def check_pause_resume_writing(session: polyloop.Session) -> None:
    """Over TLS, a peer that stops reading pauses the writer; reading again resumes it."""
    await flow.pause_resume_writing(session, _tls_pair)


@check("tls", clauses=["transport.pause_reading"])
async def check_pause_reading(session: polyloop.Session) -> None:
    """Over TLS, pause_reading stops data_received until resume_reading."""
    await flow.pause_reading(session, _tls_pair)


@check("tls", clauses=["protocol.eof_received.return_value"])
async def check_eof_received_true_ignored(session: polyloop.Session) -> None:
    """A TLS protocol whose eof_received returns True is closed anyway when the peer
    closes (TLS cannot be half-open): connection_lost(None)."""
    server, srv, cli = await _tls_pair(session, lambda: Recorder(session, keep_open_on_eof=True))
    transport_of(cli).close()
    exc = await srv.wait_lost()
    assert exc is None, f"connection_lost({exc!r}) after the peer's close_notify, not None"
    assert "eof" in srv.events, (
        f"no eof_received before connection_lost after the peer's close_notify ({srv.describe()})"
    )
    await cli.wait_lost()
    await server.aclose()


@check("tls", clauses=["transport.close.peer_sees_eof", "tls.round_trip"])
async def check_round_trip(session: polyloop.Session) -> None:
    """A verified TLS connection carries data both ways and closes cleanly."""
    server, srv, cli = await _tls_pair(session)
    transport_of(cli).write(b"secret ping")
    got = await srv.wait_bytes(11)
    assert got == b"secret ping", f"the TLS server got {got!r}, not b'secret ping'"
    transport_of(srv).write(b"secret pong")
    got = await cli.wait_bytes(11)
    assert got == b"secret pong", f"the TLS client got {got!r}, not b'secret pong'"
    transport_of(cli).close()
    exc = await cli.wait_lost()
    assert exc is None, f"connection_lost({exc!r}) after close() over TLS, not None"
    await srv.wait_lost()
    await server.aclose()


@check("tls", clauses=["tls.round_trip"])
async def check_streams(session: polyloop.Session) -> None:
    """open_tcp_stream/open_tcp_listener with ssl: an echo over verified TLS."""
    server_ssl, client_ssl = _contexts()
    listener = await polyloop.open_tcp_listener("127.0.0.1", 0, ssl=server_ssl)

    async def echo(stream: polyloop.Stream) -> None:
        while data := await stream.receive():
            await stream.send(data)

    serving = session.spawn(listener.serve(echo))
    stream = await polyloop.open_tcp_stream(
        "127.0.0.1", listener.port, ssl=client_ssl, server_hostname="localhost"
    )
    await stream.send(b"over tls")
    got = await stream.receive_exactly(8)
    assert got == b"over tls", f"the TLS stream echo gave {got!r}"
    await stream.aclose()
    await listener.aclose()
    await serving


@check("tls", clauses=["tls.verification"])
async def check_wrong_ca(session: polyloop.Session) -> None:
    """A server certificate from an unknown CA: connect_tcp raises SSLCertVerificationError."""
    import trustme

    server_ssl, _ = _contexts()
    other = ssl.create_default_context()
    trustme.CA().configure_trust(other)
    accepted = Accepted(session)
    server = await session.listen_tcp(accepted, "127.0.0.1", 0, ssl=server_ssl)
    made: list[Recorder] = []

    def factory() -> Recorder:
        made.append(Recorder(session))
        return made[-1]

    try:
        t, _ = await session.connect_tcp(
            factory, "127.0.0.1", server.port, ssl=other, server_hostname="localhost"
        )
    except ssl.SSLCertVerificationError:
        pass
    else:
        t.abort()
        raise AssertionError("connect_tcp verified a certificate from an unknown CA")
    assert all("made" not in p.events for p in made), (
        "the client protocol's connection_made ran although the certificate did not verify"
        " (rule: connect_tcp raises before the protocol sees an unverified peer)"
    )
    await server.aclose()


@check("tls", clauses=["tls.verification"])
async def check_wrong_hostname(session: polyloop.Session) -> None:
    """A certificate for localhost, checked against another name: SSLCertVerificationError."""
    server_ssl, client_ssl = _contexts()
    server = await session.listen_tcp(lambda: Recorder(session), "127.0.0.1", 0, ssl=server_ssl)
    try:
        t, _ = await session.connect_tcp(
            lambda: Recorder(session), "127.0.0.1", server.port,
            ssl=client_ssl, server_hostname="not-localhost.example",
        )  # fmt: skip
    except ssl.SSLCertVerificationError:
        pass
    else:
        t.abort()
        raise AssertionError("connect_tcp accepted a certificate for another host name")
    await server.aclose()


@check("tls", clauses=["tls.failed_handshake_hidden"])
async def check_failed_handshake_hidden(session: polyloop.Session) -> None:
    """A server whose client fails verification never calls its protocol's connection_made."""
    import trustme

    server_ssl, client_ssl = _contexts()
    other = ssl.create_default_context()
    trustme.CA().configure_trust(other)
    good = session.create_future()

    class Server(Recorder):
        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if not good.done():
                good.set_result(self)

    accepted = Accepted(session, lambda: Server(session))
    server = await session.listen_tcp(accepted, "127.0.0.1", 0, ssl=server_ssl)
    try:
        t, _ = await session.connect_tcp(
            lambda: Recorder(session), "127.0.0.1", server.port,
            ssl=other, server_hostname="localhost",
        )  # fmt: skip
        t.abort()
    except ssl.SSLError:
        pass
    # Then a good client: the server still works, and connected only that one.
    t2, cli = await session.connect_tcp(
        lambda: Recorder(session), "127.0.0.1", server.port,
        ssl=client_ssl, server_hostname="localhost",
    )  # fmt: skip
    t2.write(b"good")
    await good
    made = [p for p in accepted.protocols if "made" in p.events]
    assert len(made) == 1, (
        f"{len(made)} server protocols got connection_made, expected 1 (only the client that"
        " verified): a failed handshake must never reach the protocol"
    )
    t2.close()
    await cli.wait_lost()
    await server.aclose()


@check("tls", clauses=["tls.extra_info"])
async def check_extra_info(session: polyloop.Session) -> None:
    """TLS transports give ssl_object (SSLObject/SSLSocket) and the peer's peercert."""
    server, srv, cli = await _tls_pair(session)
    obj = transport_of(cli).get_extra_info("ssl_object")
    assert isinstance(obj, (ssl.SSLObject, ssl.SSLSocket)), f"ssl_object is {obj!r}"
    assert obj.version() is not None, "ssl_object has no negotiated version"
    cert = transport_of(cli).get_extra_info("peercert")
    assert isinstance(cert, dict), f"peercert is {cert!r}"
    names = [v for k, v in cert.get("subjectAltName", ()) if k == "DNS"]
    assert "localhost" in names, f"peercert subjectAltName {cert.get('subjectAltName')!r}"
    sobj = transport_of(srv).get_extra_info("ssl_object")
    assert isinstance(sobj, (ssl.SSLObject, ssl.SSLSocket)), f"server ssl_object is {sobj!r}"
    peer = transport_of(cli).get_extra_info("peername")
    assert peer[:2] == ("127.0.0.1", server.port), f"peername over TLS is {peer!r}"
    assert transport_of(cli).get_extra_info("backend") == session.name
    transport_of(cli).close()
    await srv.wait_lost()
    await server.aclose()


@check("tls", clauses=["transport.close.peer_sees_eof"])
async def check_close_notify_eof(session: polyloop.Session) -> None:
    """close() on one side: the other reads the data, then EOF and connection_lost(None)."""
    server, srv, cli = await _tls_pair(session)
    transport_of(srv).write(b"last words")
    transport_of(srv).close()
    exc = await cli.wait_lost()
    assert bytes(cli.data) == b"last words", bytes(cli.data)
    assert "eof" in cli.events, (
        f"no eof_received for the peer's close_notify: {compact(cli.events)}"
    )
    assert exc is None, f"connection_lost({exc!r}) after close_notify, not None"
    await srv.wait_lost()
    await server.aclose()


@check("tls", clauses=["stream.receive.eof_iff_empty"])
async def check_stream_eof(session: polyloop.Session) -> None:
    """Over TLS, Stream.receive() returns b"" once the peer closes."""
    server_ssl, client_ssl = _contexts()
    listener = await polyloop.open_tcp_listener("127.0.0.1", 0, ssl=server_ssl)
    stream = await polyloop.open_tcp_stream(
        "127.0.0.1", listener.port, ssl=client_ssl, server_hostname="localhost"
    )
    peer = await listener.accept()
    await peer.send(b"bye")
    await peer.aclose()
    got = await stream.receive_exactly(3)
    assert got == b"bye", f"receive_exactly(3) over TLS gave {got!r}"
    last = await stream.receive()
    assert last == b"", f"receive() after the TLS peer closed gave {last!r}, not b''"
    await stream.aclose()
    await listener.aclose()


@check("tls", clauses=["transport.can_write_eof"])
async def check_cannot_write_eof(session: polyloop.Session) -> None:
    """can_write_eof() is False for TLS, on both ends."""
    server, srv, cli = await _tls_pair(session)
    for side, proto in (("client", cli), ("server side", srv)):
        got = transport_of(proto).can_write_eof()
        assert got is False, f"can_write_eof() is {got!r} on the {side} of TLS, not False"
    transport_of(cli).close()
    await srv.wait_lost()
    await server.aclose()


@check("tls", clauses=["transport.write.in_order"])
async def check_large_transfer(session: polyloop.Session) -> None:
    """4 MiB each way over TLS, written at once: everything arrives, intact and in order."""
    server, srv, cli = await _tls_pair(session)
    a = bytes(range(256)) * (4 * 4096)
    b = a[::-1]
    transport_of(cli).write(a)
    transport_of(srv).write(b)
    got = await srv.wait_bytes(len(a))
    assert got == a, f"the TLS server got {len(got)} bytes that differ from the 4 MiB sent"
    got = await cli.wait_bytes(len(b))
    assert got == b, f"the TLS client got {len(got)} bytes that differ from the 4 MiB sent"
    transport_of(cli).close()
    await srv.wait_lost()
    await server.aclose()


@check("tls", clauses=["transport.abort.local_error"])
async def check_abort(session: polyloop.Session) -> None:
    """abort() on TLS: local connection_lost gets an exception; the peer's connection ends."""
    server, srv, cli = await _tls_pair(session)
    transport_of(cli).abort()
    assert "lost" not in cli.events, "connection_lost was called from inside abort()"
    exc = await cli.wait_lost()
    assert isinstance(exc, ConnectionAbortedError), (
        f"connection_lost({exc!r}) after abort() over TLS, not ConnectionAbortedError"
    )
    peer_exc = await srv.wait_lost()
    assert isinstance(peer_exc, ConnectionResetError), (
        f"the peer's connection_lost({peer_exc!r}) after an abort() over TLS, not a reset"
    )
    await server.aclose()


@check("tls", clauses=["transport.write.bytes_only", "transport.write.after_close_noop"])
async def check_write_after_close(session: polyloop.Session) -> None:
    """A write after close() on TLS is a silent no-op; write(str) raises TypeError."""
    server, srv, cli = await _tls_pair(session)
    t = transport_of(cli)
    try:
        t.write("text")  # type: ignore[arg-type]
    except TypeError:
        pass
    else:
        raise AssertionError("TLS write(str) did not raise TypeError")
    t.write(b"before")
    t.close()
    write_quietly(t, b"after", "after close()")
    await srv.wait_lost()
    assert bytes(srv.data) == b"before", (
        f"the TLS peer got {bytes(srv.data)!r}, expected b'before' (a write after close() is a"
        " silent no-op)"
    )
    await cli.wait_lost()
    await server.aclose()


class _Greeter(Recorder):
    """A server protocol that sends one byte at once: the client reads it after the TLS
    1.3 session tickets, so that closing its socket then sends a FIN, not a reset."""

    def connection_made(self, transport: polyloop.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        transport.write(b"!")


def _cut_client(port: int, client_ssl: ssl.SSLContext, mid_record: bool) -> None:
    """A blocking TLS client, by hand (``ssl.MemoryBIO`` over a plain socket), in a
    thread: handshake, read the server's greeting, send one 1,000-byte record -- whole,
    or all but its last 10 bytes -- and shut its socket down (a FIN) without
    close_notify; then read until the server closes."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = client_ssl.wrap_bio(incoming, outgoing, server_hostname="localhost")

        def more() -> None:
            sock.sendall(outgoing.read())
            data = sock.recv(65536)
            assert data, "the TLS server closed during the hand-made client's handshake"
            incoming.write(data)

        for _ in range(50):
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                more()
        greeting = b""
        for _ in range(50):  # the server's byte comes after its session tickets
            try:
                greeting = tls.read(10)
                break
            except ssl.SSLWantReadError:
                more()
        assert greeting == b"!", f"the hand-made TLS client read {greeting!r}, not b'!'"
        sock.sendall(outgoing.read())
        tls.write(b"x" * 1000)
        record = outgoing.read()
        sock.sendall(record[:-10] if mid_record else record)
        sock.shutdown(socket.SHUT_WR)  # a FIN, and no close_notify
        try:
            while sock.recv(65536):
                pass
        except OSError:
            pass  # the server may reset: the check looks at what the server saw


def _cut_server(listening: Any, server_ssl: ssl.SSLContext, mid_record: bool) -> None:
    """The same by a server: accept one client, handshake, send one 1,000-byte record --
    whole, or all but its last 10 bytes -- and shut the socket down (a FIN) without
    close_notify; then read until the client closes."""
    import socket

    conn, _ = listening.accept()
    with conn:
        conn.settimeout(10)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = server_ssl.wrap_bio(incoming, outgoing, server_side=True)
        for _ in range(50):
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                conn.sendall(outgoing.read())
                data = conn.recv(65536)
                assert data, "the TLS client closed during the hand-made server's handshake"
                incoming.write(data)
        conn.sendall(outgoing.read())  # the last flight, and TLS 1.3's session tickets
        tls.write(b"x" * 1000)
        record = outgoing.read()
        conn.sendall(record[:-10] if mid_record else record)
        conn.shutdown(socket.SHUT_WR)  # a FIN, and no close_notify
        try:
            while conn.recv(65536):
                pass
        except OSError:
            pass  # the client may reset: the check looks at what the client saw


async def _cut_by_server(session: polyloop.Session, mid_record: bool) -> Recorder:
    """A polyloop TLS client of a ``_cut_server``; its protocol once the connection is
    lost."""
    import socket

    server_ssl, client_ssl = _contexts()
    with socket.create_server(("127.0.0.1", 0)) as listening:
        listening.settimeout(10)
        port = listening.getsockname()[1]
        peer = session.spawn(session.run_in_thread(_cut_server, listening, server_ssl, mid_record))
        try:
            _, cli = await session.connect_tcp(
                lambda: Recorder(session), "127.0.0.1", port,
                ssl=client_ssl, server_hostname="localhost",
            )  # fmt: skip
            await bounded(session, cli.lost, 10, "the client's connection_lost after the cut")
        finally:
            await peer
    return cli


async def _cut(session: polyloop.Session, mid_record: bool) -> Recorder:
    """A TLS server and a ``_cut_client``; the server's protocol once its connection is
    lost."""
    server_ssl, client_ssl = _contexts()
    accepted = Accepted(session, lambda: _Greeter(session))
    server = await session.listen_tcp(accepted, "127.0.0.1", 0, ssl=server_ssl)
    try:
        await session.run_in_thread(_cut_client, server.port, client_ssl, mid_record)
        srv = await accepted.get(0)
        await bounded(session, srv.lost, 10, "the server's connection_lost after the cut")
        return srv
    finally:
        await server.aclose()


@check("tls", clauses=["tls.close_between_records"])
async def check_close_without_close_notify_is_eof(session: polyloop.Session) -> None:
    """A peer that closes its socket without close_notify, after a whole record: the
    reader gets every byte, then a clean end, connection_lost(None), as asyncio reports it --
    a protocol that delimits its own messages (HTTP/1.1, RESP, WebSocket) sees a cut
    message itself, and many servers close this way (docs/tls.md)."""
    for side, proto in (
        ("server", await _cut(session, mid_record=False)),
        ("client", await _cut_by_server(session, mid_record=False)),
    ):
        assert bytes(proto.data) == b"x" * 1000, f"the {side} read {len(proto.data)} of 1000 bytes"
        # eof_received first on every backend but uvloop, whose TLS goes straight to
        # connection_lost(None): a clean end all the same (a Stream reads b"").
        assert proto.lost_exc is None, (
            f"a close without close_notify at a record boundary gave the {side}"
            f" {proto.events} and connection_lost({proto.lost_exc!r}): rule: a clean end,"
            " connection_lost(None)"
        )


@check("tls", clauses=["tls.truncated_record"])
async def check_truncated_record_is_an_error(session: polyloop.Session) -> None:
    """A peer that closes its socket in the middle of a TLS record (without
    close_notify): the data was truncated, and the reader is told --
    connection_lost(ssl.SSLEOFError), no EOF, and no byte of the cut record -- on every
    backend, whoever runs the TLS (polyloop's layer, or asyncio's or uvloop's own;
    docs/tls.md)."""
    for side, proto in (
        ("server", await _cut(session, mid_record=True)),
        ("client", await _cut_by_server(session, mid_record=True)),
    ):
        assert not proto.data, (
            f"{len(proto.data)} bytes of a TLS record cut short reached the {side} (rule: a"
            " record is delivered whole or not at all)"
        )
        assert isinstance(proto.lost_exc, ssl.SSLEOFError) and "eof" not in proto.events, (
            f"a close in the middle of a TLS record gave the {side} {proto.events} and"
            f" connection_lost({proto.lost_exc!r}): rule: connection_lost(ssl.SSLEOFError),"
            " no EOF -- a truncation must not read as a clean close"
        )
