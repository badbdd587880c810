"""Errors: the same builtin exceptions on every backend, and bad arguments rejected early.

Covers ``ConnectionRefusedError`` (by address and by a name resolving to several
addresses), ``OSError(EADDRINUSE)``, wrong argument types and ranges (ports, hosts,
factories, ``ssl``), ``str`` passed to ``write``, that a refused connect never calls
``connection_made``, and the one policy for a protocol that fails at the start: a
client's protocol factory or ``connection_made`` raising makes ``connect_tcp`` raise it
(the connection aborted, ``connection_lost`` once); a server's protocol factory or
``connection_made`` raising is logged once, that connection dropped (``connection_lost``
once), and the server goes on.
"""

from __future__ import annotations

import errno
import ssl
from typing import Any

import polyloop

from .._registry import check
from ..referee import expect_logged
from ..tls import material
from ._util import Accepted, Recorder, pair, refusing_port, transport_of


async def _raises(kind: type[BaseException] | tuple[type[BaseException], ...], coro: Any) -> Any:
    try:
        result = await coro
    except kind as exc:
        return exc
    except BaseException as exc:
        raise AssertionError(f"expected {_names(kind)}, got {type(exc).__name__}: {exc}") from exc
    if isinstance(result, tuple) and result and hasattr(result[0], "abort"):
        result[0].abort()
    if hasattr(result, "close"):
        result.close()
    raise AssertionError(f"expected {_names(kind)}, but the call returned {result!r}")


def _names(kind: type[BaseException] | tuple[type[BaseException], ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


@check("errors", clauses=["connect.refused"])
async def check_connect_refused(session: polyloop.Session) -> None:
    """connect_tcp to a port nobody listens on raises ConnectionRefusedError."""
    made: list[Recorder] = []

    def factory() -> Recorder:
        made.append(Recorder(session))
        return made[-1]

    sock, port = refusing_port()
    try:
        await _raises(ConnectionRefusedError, session.connect_tcp(factory, "127.0.0.1", port))
    finally:
        sock.close()
    assert all("made" not in p.events for p in made), (
        "a refused connect_tcp called the protocol's connection_made"
    )


@check("errors", clauses=["connect.refused"])
async def check_connect_refused_by_name(session: polyloop.Session) -> None:
    """connect_tcp("localhost", port) refused on every address raises ConnectionRefusedError."""
    sock, port = refusing_port()
    try:
        await _raises(
            ConnectionRefusedError,
            session.connect_tcp(lambda: Recorder(session), "localhost", port),
        )
    finally:
        sock.close()


@check("errors", clauses=["listen.address_in_use"])
async def check_address_in_use(session: polyloop.Session) -> None:
    """listen_tcp on a taken address raises OSError with errno EADDRINUSE."""
    server = await session.listen_tcp(lambda: Recorder(session), "127.0.0.1", 0)
    try:
        exc = await _raises(
            OSError, session.listen_tcp(lambda: Recorder(session), "127.0.0.1", server.port)
        )
        assert exc.errno == errno.EADDRINUSE, f"errno {exc.errno!r} ({exc!r}), not EADDRINUSE"
    finally:
        await server.aclose()


@check("errors", clauses=["arguments.validated"])
async def check_bad_port(session: polyloop.Session) -> None:
    """A port out of range is ValueError; a port of the wrong type is TypeError."""
    rec = lambda: Recorder(session)  # noqa: E731
    await _raises(ValueError, session.listen_tcp(rec, "127.0.0.1", 65536))
    await _raises(ValueError, session.listen_tcp(rec, "127.0.0.1", -1))
    await _raises(ValueError, session.connect_tcp(rec, "127.0.0.1", 0))
    await _raises(ValueError, session.connect_tcp(rec, "127.0.0.1", 70000))
    await _raises(TypeError, session.listen_tcp(rec, "127.0.0.1", "80"))  # type: ignore[arg-type]
    await _raises(TypeError, session.connect_tcp(rec, "127.0.0.1", 80.0))  # type: ignore[arg-type]
    await _raises(TypeError, session.connect_tcp(rec, "127.0.0.1", True))


@check("errors", clauses=["arguments.validated"])
async def check_bad_host_and_factory(session: polyloop.Session) -> None:
    """A non-str host, an empty host, a non-callable factory or a non-SSLContext ssl fail."""
    rec = lambda: Recorder(session)  # noqa: E731
    await _raises(TypeError, session.connect_tcp(rec, b"127.0.0.1", 80))  # type: ignore[arg-type]
    await _raises(TypeError, session.listen_tcp(rec, 127, 0))  # type: ignore[arg-type]
    await _raises(ValueError, session.connect_tcp(rec, "", 80))
    await _raises(TypeError, session.listen_tcp(Recorder(session), "127.0.0.1", 0))  # type: ignore[arg-type]
    await _raises(TypeError, session.connect_tcp(None, "127.0.0.1", 80))  # type: ignore[arg-type]
    await _raises(TypeError, session.connect_tcp(rec, "127.0.0.1", 80, ssl=True))  # type: ignore[arg-type]
    await _raises(
        ValueError, session.connect_tcp(rec, "127.0.0.1", 80, server_hostname="localhost")
    )
    await _raises(TypeError, session.listen_unix(rec, 42))  # type: ignore[arg-type]
    await _raises(ValueError, session.open_udp(polyloop.DatagramProtocol))
    await _raises(TypeError, session.open_udp(polyloop.DatagramProtocol, ["127.0.0.1", 0]))  # type: ignore[arg-type]


@check("errors", clauses=["transport.write.bytes_only"])
async def check_write_str(session: polyloop.Session) -> None:
    """transport.write(str) (or int, or a list) raises TypeError; the connection stays usable."""
    server, srv, cli = await pair(session)
    transport = transport_of(cli)
    for bad in ("text", 42, [b"a"], None):
        try:
            transport.write(bad)  # type: ignore[arg-type]
        except TypeError:
            pass
        else:
            raise AssertionError(f"write({bad!r}) did not raise TypeError")
    transport.write(b"ok")
    got = await srv.wait_bytes(2)
    assert got == b"ok", f"after rejected writes, write(b'ok') arrived as {got!r}"
    assert not transport.is_closing(), "a rejected write closed the transport"
    transport.close()
    await srv.wait_lost()
    await server.aclose()


class _Failing(Exception):
    pass


async def _dropped(
    session: polyloop.Session, port: int, connect: dict[str, Any] | None = None
) -> None:
    """Connect to a server that drops the connection at once: the connect itself may
    fail with the reset (it raced with it; over TLS, during the handshake), or succeed
    and then see the connection end."""
    try:
        _, client = await session.connect_tcp(
            lambda: Recorder(session), "127.0.0.1", port, **(connect or {})
        )
    except (ConnectionError, ssl.SSLError):
        return
    client.side = "client of the dropped connection"
    await client.wait_lost()


def _tls_args(tls: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(listen_tcp's, connect_tcp's)`` keyword arguments, for TLS or not."""
    if not tls:
        return {}, {}
    m = material()
    return {"ssl": m.server_context()}, {"ssl": m.client_context(), "server_hostname": "localhost"}


@check("errors", clauses=["connect.connection_made_error"])
async def check_client_connection_made_raises(session: polyloop.Session) -> None:
    """A client protocol whose connection_made raises: connect_tcp raises that same
    exception, the connection is aborted (the server side sees it end) and its
    connection_lost runs once; a client protocol factory that raises makes connect_tcp
    raise that exception too."""
    await _client_connection_made_raises(session, tls=False)


@check("errors", clauses=["connect.connection_made_error"])
async def check_client_connection_made_raises_tls(session: polyloop.Session) -> None:
    """The same over TLS: connection_made runs after the handshake, and connect_tcp
    raises what it raised, the connection aborted, connection_lost once."""
    await _client_connection_made_raises(session, tls=True)


async def _client_connection_made_raises(session: polyloop.Session, *, tls: bool) -> None:
    listen, connect = _tls_args(tls)
    boom = _Failing("deliberate connection_made failure (expected by this check)")

    class Raises(Recorder):
        def connection_made(self, transport: polyloop.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            raise boom

    accepted = Accepted(session)
    server = await session.listen_tcp(accepted, "127.0.0.1", 0, **listen)
    made: list[Raises] = []

    def factory() -> Raises:
        made.append(Raises(session))
        return made[-1]

    with expect_logged():
        exc = await _raises(
            _Failing, session.connect_tcp(factory, "127.0.0.1", server.port, **connect)
        )
        assert exc is boom, f"connect_tcp raised another exception object: {exc!r}"
        if not tls:  # over TLS the client may abort before the server's handshake is
            # done (its last flight dropped with the abort), and a failed handshake never
            # reaches the server's protocol (docs/tls.md)
            srv = await accepted.get()
            await srv.wait_lost()
        for _ in range(20):
            if made and "lost" in made[0].events:
                break
            await session.sleep(0)
    assert made and "lost" in made[0].events, (
        f"the client's connection was left open after its connection_made raised: events"
        f" {made[0].events if made else None} (rule: the connection is aborted)"
    )
    assert made[0].events.count("lost") == 1, (
        f"the client protocol whose connection_made raised saw events {made[0].events}"
        " (rule: connection_lost is called once)"
    )
    factory_boom = _Failing("deliberate client protocol factory failure (expected)")

    def bad_factory() -> Recorder:
        raise factory_boom

    exc = await _raises(
        _Failing, session.connect_tcp(bad_factory, "127.0.0.1", server.port, **connect)
    )
    assert exc is factory_boom, (
        f"connect_tcp with a protocol factory that raised raised {exc!r}, not that exception"
        " (rule: connect_tcp raises what the protocol factory raised)"
    )
    await server.aclose()


@check("errors", clauses=["listen.factory_error_dropped"])
async def check_server_factory_raises(session: polyloop.Session) -> None:
    """A server protocol factory that raises: the error is logged, that connection is
    dropped (the client sees it end), and the server accepts the next one."""
    calls = [0]

    def factory() -> Recorder:
        calls[0] += 1
        if calls[0] == 1:
            raise _Failing("deliberate protocol factory failure (expected by this check)")
        return Recorder(session)

    with expect_logged() as logged:
        server = await session.listen_tcp(factory, "127.0.0.1", 0)
        await _dropped(session, server.port)
        try:
            _, second = await session.connect_tcp(
                lambda: Recorder(session), "127.0.0.1", server.port
            )
        except OSError as exc:
            raise AssertionError(
                f"after the protocol factory raised once, the next connect failed with"
                f" {exc!r}: the server stopped accepting (rule: the server goes on)"
            ) from exc
        transport_of(second).write(b"x")
        await session.sleep(0.01)
    mine = [t for t in logged if "deliberate protocol factory failure" in t]
    assert mine, f"the protocol factory's error was not logged; records: {logged}"
    assert len(mine) == 1, (
        f"the protocol factory's error was logged {len(mine)} times (rule: logged once);"
        f" records: {logged}"
    )
    assert calls[0] == 2, f"the factory was called {calls[0]} times for 2 connections"
    assert "lost" not in second.events, (
        f"the connection after a failed one was dropped too: {second.describe()} (rule: the"
        " server goes on)"
    )
    transport_of(second).close()
    await second.wait_lost()
    await server.aclose()


@check("errors", clauses=["listen.factory_error_dropped"])
async def check_server_connection_made_raises(session: polyloop.Session) -> None:
    """A server protocol whose connection_made raises: logged, that connection
    aborted (the client sees it end, its connection_lost runs once), the server goes on."""
    await _server_connection_made_raises(session, tls=False)


@check("errors", clauses=["listen.factory_error_dropped"])
async def check_server_connection_made_raises_tls(session: polyloop.Session) -> None:
    """The same over TLS: connection_made runs after the handshake; logged, that
    connection aborted, connection_lost once, the server goes on."""
    await _server_connection_made_raises(session, tls=True)


async def _server_connection_made_raises(session: polyloop.Session, *, tls: bool) -> None:
    listen, connect = _tls_args(tls)
    calls = [0]

    class Raises(Recorder):
        def connection_made(self, transport: polyloop.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            calls[0] += 1
            if calls[0] == 1:
                raise _Failing("deliberate connection_made failure (expected by this check)")

    with expect_logged() as logged:
        accepted = Accepted(session, lambda: Raises(session))
        server = await session.listen_tcp(accepted, "127.0.0.1", 0, **listen)
        await _dropped(session, server.port, connect)
        first = await accepted.get(0)
        await first.wait_lost()
        try:
            _, second = await session.connect_tcp(
                lambda: Recorder(session), "127.0.0.1", server.port, **connect
            )
        except OSError as exc:
            raise AssertionError(
                f"after one protocol's connection_made raised, the next connect failed with"
                f" {exc!r}: the server stopped accepting (rule: the server goes on)"
            ) from exc
        srv = await accepted.get(1)
        transport_of(second).write(b"still serving")
        got = await srv.wait_bytes(13)
    assert got == b"still serving", f"the next connection's data arrived as {got!r}"
    assert first.events.count("lost") == 1, (
        f"the server protocol whose connection_made raised saw events {first.events}"
        " (rule: connection_lost is called once)"
    )
    mine = [t for t in logged if "deliberate connection_made failure" in t]
    assert mine, f"the server protocol's connection_made error was not logged; records: {logged}"
    transport_of(second).close()
    await srv.wait_lost()
    await server.aclose()
