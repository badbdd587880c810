"""Errors: the same builtin exceptions on every backend, and bad arguments rejected early.

Covers ``ConnectionRefusedError`` (by address and by a name resolving to several
addresses), ``OSError(EADDRINUSE)``, wrong argument types and ranges (ports, hosts,
factories, ``ssl``), ``str`` passed to ``write``, and that a refused connect never calls
``connection_made``.
"""

from __future__ import annotations

import errno
from typing import Any

import polyloop

from .._registry import check
from ._util import Recorder, pair, refusing_port, transport_of


async def _raises(kind: type[BaseException] | tuple[type[BaseException], ...], coro: Any) -> Any:
    try:
        result = await coro
    except kind as exc:
        return exc
    except BaseException as exc:
        raise AssertionError(f"expected {kind}, got {type(exc).__name__}: {exc}") from exc
    if isinstance(result, tuple) and result and hasattr(result[0], "abort"):
        result[0].abort()
    if hasattr(result, "close"):
        result.close()
    raise AssertionError(f"expected {kind}, but the call returned {result!r}")


@check("errors")
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
    assert all("made" not in p.events for p in made), "a refused connect called connection_made"


@check("errors")
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


@check("errors")
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


@check("errors")
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


@check("errors")
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


@check("errors")
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
    assert await srv.wait_bytes(2) == b"ok", bytes(srv.data)
    assert not transport.is_closing(), "a rejected write closed the transport"
    transport.close()
    await srv.lost
    await server.aclose()
