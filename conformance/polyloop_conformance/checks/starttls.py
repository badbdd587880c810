"""STARTTLS: upgrading a live plain connection to TLS (``Stream.start_tls``,
``polyloop.start_tls``), server and client side, the same on every backend.

Covers a plain exchange then TLS on the same connection (streams and the Protocol API),
a client that starts its handshake without waiting for the server's reply (the server's
buffer then holds the ClientHello already), a certificate that does not verify, and the
handshake timeout.
"""

from __future__ import annotations

import ssl
import time

import polyloop

from .._registry import check
from ..tls import material
from ._util import Recorder, bounded

#: Seconds a check waits for a handshake on the loopback (it takes milliseconds).
WAIT = 5.0


async def _plain_pair(
    session: polyloop.Session,
) -> tuple[polyloop.Listener, polyloop.Stream, polyloop.Stream]:
    listener = await polyloop.open_tcp_listener("127.0.0.1", 0)
    client = await polyloop.open_tcp_stream("127.0.0.1", listener.port)
    server = await bounded(
        session, listener.accept(), 10,
        f"listener.accept() never returned the connection open_tcp_stream made to port"
        f" {listener.port} (rule: accept() returns each connection the listener takes)",
    )  # fmt: skip
    return listener, server, client


@check("starttls", clauses=["tls.start_tls"])
async def check_stream_upgrade(session: polyloop.Session) -> None:
    """A plain command, then both ends upgrade; the bytes after go over TLS and the
    peer's certificate is there."""
    tls = material()
    listener, server, client = await _plain_pair(session)
    await client.send(b"STARTTLS\r\n")
    assert await server.receive_until(b"\r\n") == b"STARTTLS\r\n"
    await server.send(b"220 go ahead\r\n")
    assert await client.receive_until(b"\r\n") == b"220 go ahead\r\n"
    server_up = session.spawn(server.start_tls(tls.server_context(), server_side=True))
    await client.start_tls(tls.client_context(), server_hostname="localhost")
    await server_up
    assert client.get_extra_info("ssl_object") is not None, "no ssl_object after start_tls"
    assert client.get_extra_info("peercert"), "no server certificate after start_tls"
    await client.send(b"secret")
    assert await server.receive_exactly(6) == b"secret"
    await server.send(b"reply")
    assert await client.receive_exactly(5) == b"reply"
    await client.aclose()
    assert await server.receive() == b"", "no EOF after the TLS client closed"
    await server.aclose()
    await listener.aclose()


@check("starttls", clauses=["tls.start_tls"])
async def check_handshake_right_after_the_command(session: polyloop.Session) -> None:
    """A client that starts TLS right after its command: the server, reading only the
    command line, finds the ClientHello buffered behind it and must feed it on."""
    tls = material()
    listener, server, client = await _plain_pair(session)
    await client.send(b"STARTTLS\r\n")
    client_up = session.spawn(client.start_tls(tls.client_context(), server_hostname="localhost"))
    for _ in range(50):  # let the ClientHello arrive behind the command
        await session.sleep(0.002)
    assert await server.receive_until(b"\r\n") == b"STARTTLS\r\n"
    rule = (
        "rule: start_tls feeds the TLS layer the bytes already received behind the plain"
        " part, here the ClientHello"
    )
    await bounded(
        session, server.start_tls(tls.server_context(), server_side=True), WAIT,
        f"the server's start_tls did not finish the handshake with a client that sent its"
        f" ClientHello right after the command ({rule})",
    )  # fmt: skip
    await bounded(
        session, client_up, WAIT,
        f"the client's start_tls did not finish after the server's did ({rule})",
    )  # fmt: skip
    await client.send(b"after")
    assert await server.receive_exactly(5) == b"after"
    await client.aclose()
    await server.aclose()
    await listener.aclose()


@check("starttls", clauses=["tls.start_tls"])
async def check_protocol_api_upgrade(session: polyloop.Session) -> None:
    """polyloop.start_tls on a Transport: the same protocol object goes on receiving,
    now over TLS, and connection_made is not called a second time."""
    tls = material()
    accepted: list[Recorder] = []

    def factory() -> Recorder:
        accepted.append(Recorder(session))
        return accepted[-1]

    server = await session.listen_tcp(factory, "127.0.0.1", 0)
    raw, client = await session.connect_tcp(lambda: Recorder(session), "127.0.0.1", server.port)
    while not accepted or accepted[0].transport is None:
        await session.sleep(0.001)
    srv = accepted[0]
    assert srv.transport is not None
    server_up = session.spawn(
        polyloop.start_tls(srv.transport, srv, tls.server_context(), server_side=True)
    )
    # As with asyncio's loop.start_tls, the server must have switched before the
    # ClientHello arrives (STARTTLS protocols make the client wait for a reply).
    while srv.transport.get_protocol() is srv:
        await session.sleep(0)
    secure = await polyloop.start_tls(
        raw, client, tls.client_context(), server_hostname="localhost"
    )
    srv_secure = await server_up
    secure.write(b"over tls")
    await srv.wait_bytes(8)
    assert bytes(srv.data) == b"over tls", bytes(srv.data)
    assert srv.events.count("made") == 1, f"connection_made called again: {srv.events}"
    assert srv_secure.get_extra_info("ssl_object") is not None
    secure.close()
    await srv.wait_lost()
    await server.aclose()


@check("starttls", clauses=["tls.verification"])
async def check_bad_certificate(session: polyloop.Session) -> None:
    """start_tls against a certificate that does not verify raises
    ssl.SSLCertVerificationError, and the connection is aborted."""
    tls = material()
    listener, server, client = await _plain_pair(session)
    server_up = session.spawn(server.start_tls(tls.server_context(), server_side=True))
    untrusting = ssl.create_default_context()  # the test CA is not in it
    try:
        await client.start_tls(untrusting, server_hostname="localhost")
    except ssl.SSLCertVerificationError:
        pass
    else:
        raise AssertionError("start_tls with an untrusted certificate succeeded")
    try:
        await server_up
    except (ssl.SSLError, ConnectionError):
        pass
    else:
        raise AssertionError("the server's start_tls succeeded against a client that rejected it")
    assert client.is_closing(), "the failed connection was left open"
    assert server.transport.is_closing(), "the server's failed connection was left open"
    # Both streams heard of the aborted connection: aclose() returns (it hung for ever
    # after a failed start_tls, on every backend, before the TLS layer told them).
    await bounded(session, client.aclose(), 5, "aclose() of a stream whose start_tls failed")
    await bounded(session, server.aclose(), 5, "aclose() of a stream whose start_tls failed")
    await listener.aclose()


@check("starttls", clauses=["tls.handshake_timeout"])
async def check_handshake_timeout(session: polyloop.Session) -> None:
    """A start_tls whose peer never answers fails with TimeoutError after
    ssl_handshake_timeout, and the connection is aborted."""
    tls = material()
    listener, server, client = await _plain_pair(session)
    start = time.monotonic()
    try:
        await server.start_tls(tls.server_context(), server_side=True, ssl_handshake_timeout=0.2)
    except TimeoutError:
        pass
    else:
        raise AssertionError("a handshake the peer never began did not time out")
    took = time.monotonic() - start
    assert took >= 0.15, f"the 0.2 s handshake timeout fired after {took:.3f} s"
    assert took < 5, f"the 0.2 s handshake timeout fired only after {took:.1f} s"
    try:
        got = await client.receive()
    except ConnectionResetError:
        pass
    else:
        raise AssertionError(
            f"the client got {got!r} after the server's handshake timed out, not a reset"
            " (rule: a handshake that times out aborts the connection)"
        )
    await client.aclose()
    await listener.aclose()
