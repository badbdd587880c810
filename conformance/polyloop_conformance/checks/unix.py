"""Unix sockets: ``listen_unix``/``connect_unix`` and the Unix stream helpers.

Covers a round trip (protocols and streams), ``Server.addresses`` being the path, the
socket file removed by ``Server.close()``, ``FileNotFoundError`` for a missing path,
``ConnectionRefusedError`` for a socket file nobody listens on, ``EADDRINUSE`` for a live
server's path (a stale file is replaced), half-close, abort, TLS over a Unix socket, and
the Transport rules on a Unix socket: ``connection_made`` before ``connect_unix``
returns, the extra info, ``is_closing`` and writes after ``close()``.
"""

from __future__ import annotations

import errno
import os
import socket
import stat

import polyloop

from .._registry import SkipCheck, check
from ._util import Accepted, Recorder, made_before_return, temp_dir, transport_of


def _need_unix() -> None:
    if not hasattr(socket, "AF_UNIX"):
        raise SkipCheck("this platform has no Unix sockets")


async def _unix_pair(
    session: polyloop.Session, path: str
) -> tuple[polyloop.Server, Recorder, Recorder]:
    accepted = Accepted(session)
    server = await session.listen_unix(accepted, path)
    _, cli = await session.connect_unix(lambda: Recorder(session), path)
    cli.side = "client"
    await made_before_return(session, cli, "connect_unix")
    return server, await accepted.get(), cli


@check("unix", clauses=["unix.round_trip"])
async def check_round_trip(session: polyloop.Session) -> None:
    """Data both ways over a Unix socket; Server.addresses is [path]; close cleans up."""
    _need_unix()
    with temp_dir() as d:
        path = os.path.join(d, "s.sock")
        server, srv, cli = await _unix_pair(session, path)
        assert server.addresses == [path], f"addresses {server.addresses!r}, expected [{path!r}]"
        try:
            port = server.port
        except ValueError:
            pass
        else:
            raise AssertionError(f"Server.port of a Unix server is {port!r}, not ValueError")
        transport_of(cli).write(b"over unix")
        got = await srv.wait_bytes(9)
        assert got == b"over unix", f"the Unix server got {got!r}"
        transport_of(srv).write(b"and back")
        got = await cli.wait_bytes(8)
        assert got == b"and back", f"the Unix client got {got!r}"
        transport_of(cli).close()
        exc = await srv.wait_lost()
        assert exc is None, f"the peer's connection_lost({exc!r}) after close(), not None"
        await server.aclose()


@check("unix", clauses=["transport.extra_info"])
async def check_transport_rules(session: polyloop.Session) -> None:
    """On a Unix socket: the extra info (sockname/peername, socket, backend), is_closing
    at once after close(), a write after close() a silent no-op."""
    _need_unix()
    with temp_dir() as d:
        path = os.path.join(d, "s.sock")
        server, srv, cli = await _unix_pair(session, path)
        ct, st = transport_of(cli), transport_of(srv)
        for side, t in (("client", ct), ("server side", st)):
            name = t.get_extra_info("backend")
            assert name == session.name, f"{side}: 'backend' is {name!r}, not {session.name!r}"
            sock = t.get_extra_info("socket")
            assert sock is None or sock.family == socket.AF_UNIX, f"{side}: socket is {sock!r}"
        assert st.get_extra_info("sockname") == path, (
            f"the server side's sockname is {st.get_extra_info('sockname')!r}, not {path!r}"
        )
        assert ct.get_extra_info("peername") == path, (
            f"the client's peername is {ct.get_extra_info('peername')!r}, not {path!r}"
        )
        ct.write(b"before")
        ct.close()
        assert ct.is_closing(), "is_closing() is False right after close() on a Unix socket"
        ct.write(b"after")
        await srv.wait_lost()
        assert bytes(srv.data) == b"before", (
            f"the peer got {bytes(srv.data)!r}, not b'before' (a write after close() is a no-op)"
        )
        await cli.wait_lost()
        await server.aclose()


@check("unix", clauses=["listen.unix_file_removed"])
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


@check("unix", clauses=["connect.missing_path"])
async def check_missing_path(session: polyloop.Session) -> None:
    """connect_unix to a path that does not exist raises FileNotFoundError."""
    _need_unix()
    with temp_dir() as d:
        try:
            t, _ = await session.connect_unix(lambda: Recorder(session), os.path.join(d, "none"))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise AssertionError(
                f"connect_unix to a missing path raised {exc!r}: it did not raise"
                " FileNotFoundError"
            ) from exc
        else:
            t.abort()
            raise AssertionError("connect_unix to a missing path did not raise FileNotFoundError")


@check("unix", clauses=["connect.refused"])
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
            except OSError as exc:
                raise AssertionError(
                    f"connect_unix to a socket file nobody listens on raised {exc!r}, not"
                    " ConnectionRefusedError"
                ) from exc
            else:
                t.abort()
                raise AssertionError("connect_unix to a non-listening socket succeeded")
        finally:
            sock.close()


@check("unix", clauses=["listen.address_in_use"])
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
        await cli.wait_lost()
        await server.aclose()


@check("unix", clauses=["transport.abort.local_error", "transport.write_eof.half_close"])
async def check_half_close_and_abort(session: polyloop.Session) -> None:
    """write_eof over a Unix socket reaches the peer as EOF; abort gives ConnectionAbortedError."""
    _need_unix()
    with temp_dir() as d:
        path = os.path.join(d, "s.sock")
        accepted = Accepted(session, lambda: Recorder(session, keep_open_on_eof=True))
        server = await session.listen_unix(accepted, path)
        _, cli = await session.connect_unix(lambda: Recorder(session), path)
        srv = await accepted.get()
        got = transport_of(cli).can_write_eof()
        assert got is True, f"can_write_eof() on a Unix socket is {got!r}, not True"
        transport_of(cli).write(b"req")
        transport_of(cli).write_eof()
        await srv.wait_eof()
        transport_of(srv).write(b"resp")
        transport_of(srv).close()
        got = await cli.wait_bytes(4)
        assert got == b"resp", f"after write_eof the Unix client got {got!r}, not b'resp'"
        exc = await cli.wait_lost()
        assert exc is None, f"connection_lost({exc!r}) after the peer's close, not None"
        await srv.wait_lost()
        accepted.make = lambda: Recorder(session)
        t2, cli2 = await session.connect_unix(lambda: Recorder(session), path)
        srv2 = await accepted.get(1)
        t2.abort()
        exc = await cli2.wait_lost()
        assert isinstance(exc, ConnectionAbortedError), (
            f"abort() on a Unix socket gave connection_lost({exc!r}), not ConnectionAbortedError"
        )
        await srv2.wait_lost()  # no RST on Unix sockets: the peer may see EOF or a reset
        await server.aclose()


@check("unix", clauses=["unix.round_trip", "stream.receive.eof_iff_empty"])
async def check_streams(session: polyloop.Session) -> None:
    """open_unix_listener/open_unix_stream: an exchange and EOF."""
    _need_unix()
    with temp_dir() as d:
        path = os.path.join(d, "s.sock")
        listener = await polyloop.open_unix_listener(path)
        client = await polyloop.open_unix_stream(path)
        server = await listener.accept()
        await client.send(b"line\n")
        got = await server.receive_until(b"\n")
        assert got == b"line\n", f"receive_until over a Unix socket gave {got!r}"
        await server.aclose()
        last = await client.receive()
        assert last == b"", f"receive() after the Unix peer closed gave {last!r}, not b''"
        await client.aclose()
        await listener.aclose()
        assert not os.path.exists(path), "the socket file is still there after aclose()"


@check("unix", clauses=["unix.round_trip"])
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
        got = await srv.wait_bytes(6)
        assert got == b"sealed", f"TLS over a Unix socket delivered {got!r}"
        assert t.get_extra_info("ssl_object") is not None, "no ssl_object over TLS on Unix"
        t.close()
        await srv.wait_lost()
        await server.aclose()
