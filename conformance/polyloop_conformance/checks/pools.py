"""What a connection pool needs from a stream: ``abort``, ``is_closing``, ``at_eof``,
socket options, ``TCP_NODELAY`` on by default, and ``getaddrinfo`` -- on every backend.

Filed as ``streams.abort``, ``streams.idle_sees_eof`` and ``sockets.*``.
"""

from __future__ import annotations

import socket

import polyloop

from .._registry import check
from ..tls import material
from ._util import bounded


async def _pair(
    session: polyloop.Session, tls: bool = False
) -> tuple[polyloop.Listener, polyloop.Stream, polyloop.Stream]:
    server_ssl = client_ssl = None
    if tls:
        server_ssl, client_ssl = material().server_context(), material().client_context()
    listener = await polyloop.open_tcp_listener("127.0.0.1", 0, ssl=server_ssl)
    client = await polyloop.open_tcp_stream(
        "127.0.0.1", listener.port, ssl=client_ssl,
        server_hostname="localhost" if tls else None,
    )  # fmt: skip
    server = await bounded(
        session, listener.accept(), 10,
        f"listener.accept() never returned the connection open_tcp_stream made to port"
        f" {listener.port} (rule: accept() returns each connection the listener takes)",
    )  # fmt: skip
    return listener, server, client


@check("streams", name="abort", clauses=["stream.abort"])
async def check_stream_abort(session: polyloop.Session) -> None:
    """Stream.abort(): the peer reads ConnectionResetError; is_closing() is True at once."""
    listener, server, client = await _pair(session)
    client.abort()
    assert client.is_closing(), "is_closing() is False right after abort()"
    try:
        data = await bounded(
            session, server.receive(), 10,
            "the peer of an aborted stream never heard of it (rule: abort() resets the"
            " connection: the peer's receive() raises ConnectionResetError)",
        )  # fmt: skip
    except ConnectionResetError:
        pass
    else:
        raise AssertionError(f"the peer of an aborted stream read {data!r}, not a reset")
    await server.aclose()
    await listener.aclose()


@check("streams", name="idle_sees_eof", clauses=["stream.at_eof"])
async def check_idle_stream_sees_eof(session: polyloop.Session) -> None:
    """A pooled stream whose peer closed tells so without a read: at_eof() becomes True
    (is_closing() stays False until this side closes)."""
    listener, server, client = await _pair(session)
    assert not client.at_eof() and not client.is_closing()
    await server.aclose()
    for _ in range(200):
        if client.at_eof():
            break
        await session.sleep(0.005)
    assert client.at_eof(), (
        "at_eof() stayed False after the peer closed, polled 200 times 5 ms apart (rule: a"
        " stream whose peer closed says so by at_eof() without a read)"
    )
    assert not client.is_closing(), "is_closing() is True before this side closed"
    await client.aclose()
    assert client.is_closing()
    await listener.aclose()


@check("sockets", clauses=["sockets.nodelay"])
async def check_nodelay_by_default(session: polyloop.Session) -> None:
    """TCP_NODELAY is on for connected and accepted TCP sockets, as asyncio sets it."""
    listener, server, client = await _pair(session)
    for name, stream in (("client", client), ("server", server)):
        value = polyloop.getsockopt(stream, socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert value, f"TCP_NODELAY is off on the {name} side"
    await client.aclose()
    await server.aclose()
    await listener.aclose()


@check("sockets", name="options", clauses=["sockets.options"])
async def check_socket_options(session: polyloop.Session) -> None:
    """polyloop.setsockopt/getsockopt reach the socket of a stream, plain and TLS."""
    for tls in (False, True):
        listener, server, client = await _pair(session, tls)
        polyloop.setsockopt(client, socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        got = polyloop.getsockopt(client, socket.SOL_SOCKET, socket.SO_KEEPALIVE)
        assert got, f"SO_KEEPALIVE did not stick (tls={tls})"
        await client.aclose()
        await server.aclose()
        await listener.aclose()


@check("sockets", clauses=["sockets.getaddrinfo"])
async def check_getaddrinfo(session: polyloop.Session) -> None:
    """polyloop.getaddrinfo resolves a numeric host at once and a name without blocking
    the loop, with the socket module's tuples."""
    infos = await polyloop.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM)
    assert infos and infos[0][4][:2] == ("127.0.0.1", 80), infos
    named = await polyloop.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)
    hosts = {info[4][0] for info in named}
    assert hosts & {"127.0.0.1", "::1"}, f"localhost resolved to {hosts}"
