"""Sockets made by the caller: ``adopt_connection``, ``listen_sockets``, ``adopt_udp``.

Rule: an adopted socket gets the very transports, protocol calls, TLS and errors that
``connect_tcp``/``listen_tcp``/``open_udp`` give (asyncio's ``create_connection(sock=)``,
``create_server(sock=)``, ``connect_accepted_socket``; Twisted's ``adoptStreamConnection``,
``adoptStreamPort``, ``adoptDatagramPort``). A library that keeps its own socket code (an
AMQP client dialling through a proxy) hands polyloop the connected socket.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

import polyloop

from .._registry import check
from ..referee import waiting_for
from ..tls import material
from ._util import Accepted, Recorder, made_before_return, transport_of


async def _polled(session: polyloop.Session, what: str, call: Any) -> Any:
    """``call()`` on a non-blocking socket until it stops saying "not yet" (5 s at most).
    No worker thread and no blocking call: after gevent's ``patch_all()`` a socket is
    gevent's, which must not be used from another thread nor block a loop."""
    with waiting_for(what):
        for _ in range(500):
            try:
                return call()
            except (BlockingIOError, InterruptedError, OSError) as exc:
                if isinstance(exc, OSError) and exc.errno not in _NOT_YET:
                    raise
            await session.sleep(0.01)
    raise AssertionError(f"timed out: {what}")


_NOT_YET = {errno.EAGAIN, errno.EWOULDBLOCK, errno.EINPROGRESS, errno.ENOTCONN, errno.EALREADY}


async def _connected_socket(session: polyloop.Session, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.connect_ex(("127.0.0.1", port))
    await _polled(session, f"a plain socket to connect to 127.0.0.1:{port}", sock.getpeername)
    return sock


@check("adoption", clauses=["adopt.connection"])
async def check_connected_socket(session: polyloop.Session) -> None:
    """adopt_connection(factory, sock): a connected client socket becomes a transport,
    connection_made before it returns, data both ways."""
    accepted = Accepted(session)
    server = await session.listen_tcp(accepted, "127.0.0.1", 0)
    sock = await _connected_socket(session, server.port)
    transport, client = await session.adopt_connection(lambda: Recorder(session), sock)
    await made_before_return(session, client, "adopt_connection")
    assert transport is client.transport, "adopt_connection returned another transport"
    srv = await accepted.get(0)
    transport.write(b"ping")
    got = await srv.wait_bytes(4)
    assert got == b"ping", f"the peer of an adopted socket got {got!r}"
    transport_of(srv).write(b"pong")
    got = await client.wait_bytes(4)
    assert got == b"pong", f"an adopted socket received {got!r}"
    peer = transport.get_extra_info("peername")
    assert peer is not None and peer[1] == server.port, f"peername of an adopted socket: {peer}"
    transport.close()
    await client.wait_lost()
    assert sock.fileno() == -1, "the transport did not close the adopted socket"
    await server.aclose()


@check("adoption", clauses=["adopt.connection"])
async def check_tls_both_sides(session: polyloop.Session) -> None:
    """adopt_connection with ssl: an accepted socket (server_side=True) and a connected
    one (server_hostname) handshake, then talk."""
    tls = material()
    listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listening.bind(("127.0.0.1", 0))
    listening.listen(1)
    listening.setblocking(False)
    port = listening.getsockname()[1]
    try:
        client_sock = await _connected_socket(session, port)
        accepted_sock, _ = await _polled(session, "a plain accept()", listening.accept)
    finally:
        listening.close()
    server_side = session.spawn(
        session.adopt_connection(
            lambda: Recorder(session), accepted_sock, ssl=tls.server_context(), server_side=True
        )
    )
    with waiting_for("the client's TLS handshake on an adopted socket"):
        transport, client = await session.adopt_connection(
            lambda: Recorder(session), client_sock, ssl=tls.client_context(),
            server_hostname="localhost",
        )  # fmt: skip
    with waiting_for("the server's TLS handshake on an accepted, adopted socket"):
        server_transport, srv = await server_side
    assert transport.get_extra_info("ssl_object") is not None, "no ssl_object after adoption"
    transport.write(b"hello")
    got = await srv.wait_bytes(5)
    assert got == b"hello", f"the server side of an adopted TLS pair got {got!r}"
    server_transport.close()
    transport.close()
    await client.wait_lost()


@check("adoption", clauses=["adopt.listening"])
async def check_listening_sockets(session: polyloop.Session) -> None:
    """listen_sockets(factory, [sock]): a socket the caller bound is served like
    listen_tcp's; close() closes it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    accepted = Accepted(session)
    server = await session.listen_sockets(accepted, [sock])
    assert server.port == port, f"listen_sockets reports port {server.port}, bound {port}"
    _, client = await session.connect_tcp(lambda: Recorder(session), "127.0.0.1", port)
    srv = await accepted.get(0)
    client.transport.write(b"x")  # type: ignore[union-attr]
    assert await srv.wait_bytes(1) == b"x", "a server on an adopted socket got other bytes"
    await server.aclose()
    assert sock.fileno() == -1, "Server.close() left the adopted listening socket open"
    client.transport.close()  # type: ignore[union-attr]
    await client.wait_lost()


class _Datagrams(polyloop.DatagramProtocol):
    def __init__(self, session: polyloop.Session) -> None:
        self.got = session.create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not self.got.done():
            self.got.set_result((data, addr))


@check("adoption", clauses=["adopt.udp"])
async def check_udp_socket(session: polyloop.Session) -> None:
    """adopt_udp(factory, sock): a bound UDP socket receives and sends like open_udp's."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.setblocking(False)
    try:
        transport, proto = await session.adopt_udp(lambda: _Datagrams(session), sock)
        peer.sendto(b"up", sock.getsockname())
        with waiting_for("a datagram on an adopted UDP socket"):
            data, addr = await proto.got
        assert (data, addr[1]) == (b"up", peer.getsockname()[1]), f"received {data!r} from {addr}"
        transport.sendto(b"down", peer.getsockname())
        got, _ = await _polled(session, "a datagram on the plain peer", lambda: peer.recvfrom(100))
        assert got == b"down", f"the peer of an adopted UDP socket got {got!r}"
        transport.close()
        await session.sleep(0.01)
        assert sock.fileno() == -1, "close() left the adopted UDP socket open"
    finally:
        peer.close()


@check("adoption", clauses=["adopt.bad_sockets"])
async def check_bad_sockets(session: polyloop.Session) -> None:
    """What is not a socket (TypeError), a closed or wrong-type socket (ValueError), an
    unconnected stream socket (OSError) are refused the same way on every backend."""
    closed = socket.socket()
    closed.close()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    unconnected = socket.socket()
    adopt, listen = session.adopt_connection, session.listen_sockets
    cases = [
        ("adopt_connection(fd 0)", lambda: adopt(Recorder, 0), TypeError),
        ("adopt_connection(closed)", lambda: adopt(Recorder, closed), ValueError),
        ("adopt_connection(udp)", lambda: adopt(Recorder, udp), ValueError),
        ("adopt_connection(unconnected)", lambda: adopt(Recorder, unconnected), OSError),
        ("adopt_udp(stream)", lambda: session.adopt_udp(_Datagrams, unconnected), ValueError),
        ("listen_sockets(sock)", lambda: listen(Recorder, unconnected), TypeError),
        ("listen_sockets([udp])", lambda: listen(Recorder, [udp]), ValueError),
    ]  # fmt: skip
    try:
        for what, call, want in cases:
            try:
                await call()
            except want:
                continue
            except BaseException as exc:
                raise AssertionError(f"{what} raised {exc!r}, not {want.__name__}") from exc
            raise AssertionError(f"{what} did not raise {want.__name__}")
    finally:
        udp.close()
        unconnected.close()
