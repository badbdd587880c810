"""Unix sockets: ``listen_unix``/``connect_unix`` and the Unix stream helpers.

Covers a round trip (protocols and streams), ``Server.addresses`` being the path, the
socket file removed by ``Server.close()``, ``FileNotFoundError`` for a missing path,
``ConnectionRefusedError`` for a socket file nobody listens on, ``EADDRINUSE`` for a live
server's path (a stale file is replaced), half-close, abort, and TLS over a Unix socket.
"""

from __future__ import annotations

import errno
import os
import socket
import stat

import polyloop

from .._registry import SkipCheck, check
from ._util import Accepted, Recorder, temp_dir, transport_of


def _need_unix() -> None:
    if not hasattr(socket, "AF_UNIX"):
        raise SkipCheck("this platform has no Unix sockets")


async def _unix_pair(
    session: polyloop.Session, path: str
) -> tuple[polyloop.Server, Recorder, Recorder]:
    accepted = Accepted(session)
    server = await session.listen_unix(accepted, path)
    _, cli = await session.connect_unix(lambda: Recorder(session), path)
    return server, await accepted.get(), cli


@check("unix")
async def check_round_trip(session: polyloop.Session) -> None:
    """Data both ways over a Unix socket; Server.addresses is [path]; close cleans up."""
    _need_unix()
    with temp_dir() as d:
        path = os.path.join(d, "s.sock")
        server, srv, cli = await _unix_pair(session, path)
        assert server.addresses == [path], f"addresses {server.addresses!r}, expected [{path!r}]"
        transport_of(cli).write(b"over unix")
        assert await srv.wait_bytes(9) == b"over unix"
        transport_of(srv).write(b"and back")
        assert await cli.wait_bytes(8) == b"and back"
        assert transport_of(cli).get_extra_info("backend") == session.name
        transport_of(cli).close()
        assert await srv.wait_lost() is None, srv.lost_exc
        await server.aclose()


@check("unix")
async def check_socket_file_removed(session: polyloop.Session) -> None:
    """Server.close() removes the socket file; the path can be listened on again."""
    _need_unix()
    with temp_dir() as d:
        path = os.path.join(d, "s.sock")
        server = await session.listen_unix(lambda: Recorder(session), path)
        assert stat.S_ISSOCK(os.stat(path).st_mode), "no socket file while listening"
        await server.aclose()
        assert not os.path.exists(path), "the socket file is still there after close()"
        again = await session.listen_unix(lambda: Recorder(session), path)
        await again.aclose()


@check("unix")
async def check_missing_path(session: polyloop.Session) -> None:
    """connect_unix to a path that does not exist raises FileNotFoundError."""
    _need_unix()
    with temp_dir() as d:
        try:
            t, _ = await session.connect_unix(lambda: Recorder(session), os.path.join(d, "none"))
        except FileNotFoundError:
            pass
        else:
            t.abort()
            raise AssertionError("connect_unix to a missing path did not raise FileNotFoundError")


@check("unix")
async def check_refused(session: polyloop.Session) -> None:
    """connect_unix to a socket file nobody listens on raises ConnectionRefusedError."""
    _need_unix()
    with temp_dir() as d:
        path = os.path.join(d, "dead.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)  # bound, never listening: connecting is refused
            try:
                t, _ = await session.connect_unix(lambda: Recorder(session), path)
            except ConnectionRefusedError:
                pass
            else:
                t.abort()
                raise AssertionError("connect_unix to a non-listening socket succeeded")
        finally:
            sock.close()


@check("unix")
async def check_address_in_use(session: polyloop.Session) -> None:
    """listen_unix on a live server's path: EADDRINUSE; on a stale socket file: it listens."""
    _need_unix()
    with temp_dir() as d:
        path = os.path.join(d, "s.sock")
        server = await session.listen_unix(lambda: Recorder(session), path)
        try:
            try:
                other = await session.listen_unix(lambda: Recorder(session), path)
            except OSError as exc:
                assert exc.errno == errno.EADDRINUSE, f"{exc!r} is not EADDRINUSE"
            else:
                await other.aclose()
                raise AssertionError("a second listen_unix on a live server's path succeeded")
        finally:
            await server.aclose()
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(path)  # a socket file nobody accepts on, as a crashed server leaves
        stale.close()
        server = await session.listen_unix(lambda: Recorder(session), path)
        _, cli = await session.connect_unix(lambda: Recorder(session), path)
        transport_of(cli).close()
        await cli.lost
        await server.aclose()


@check("unix")
async def check_half_close_and_abort(session: polyloop.Session) -> None:
    """write_eof over a Unix socket reaches the peer as EOF; abort gives ConnectionAbortedError."""
    _need_unix()
    with temp_dir() as d:
        path = os.path.join(d, "s.sock")
        accepted = Accepted(session, lambda: Recorder(session, keep_open_on_eof=True))
        server = await session.listen_unix(accepted, path)
        _, cli = await session.connect_unix(lambda: Recorder(session), path)
        srv = await accepted.get()
        assert transport_of(cli).can_write_eof() is True
        transport_of(cli).write(b"req")
        transport_of(cli).write_eof()
        await srv.eof
        transport_of(srv).write(b"resp")
        transport_of(srv).close()
        assert await cli.wait_bytes(4) == b"resp", "no reply after write_eof"
        assert await cli.wait_lost() is None, cli.lost_exc
        await srv.lost
        accepted.make = lambda: Recorder(session)
        t2, cli2 = await session.connect_unix(lambda: Recorder(session), path)
        srv2 = await accepted.get(1)
        t2.abort()
        assert isinstance(await cli2.lost, ConnectionAbortedError), cli2.lost_exc
        await srv2.lost  # no RST on Unix sockets: the peer may see EOF or a reset
        await server.aclose()


@check("unix")
async def check_streams(session: polyloop.Session) -> None:
    """open_unix_listener/open_unix_stream: an exchange and EOF."""
    _need_unix()
    with temp_dir() as d:
        path = os.path.join(d, "s.sock")
        listener = await polyloop.open_unix_listener(path)
        client = await polyloop.open_unix_stream(path)
        server = await listener.accept()
        await client.send(b"line\n")
        assert await server.receive_until(b"\n") == b"line\n"
        await server.aclose()
        assert await client.receive() == b""
        await client.aclose()
        await listener.aclose()
        assert not os.path.exists(path), "the socket file is still there after aclose()"


@check("unix")
async def check_tls(session: polyloop.Session) -> None:
    """TLS over a Unix socket (server_hostname given) round-trips."""
    _need_unix()
    from ..tls import material

    tls = material()
    with temp_dir() as d:
        path = os.path.join(d, "s.sock")
        accepted = Accepted(session)
        server = await session.listen_unix(accepted, path, ssl=tls.server_context())
        t, _ = await session.connect_unix(
            lambda: Recorder(session), path, ssl=tls.client_context(), server_hostname="localhost"
        )
        srv = await accepted.get()
        t.write(b"sealed")
        assert await srv.wait_bytes(6) == b"sealed"
        assert t.get_extra_info("ssl_object") is not None
        t.close()
        await srv.lost
        await server.aclose()
