"""Lifecycle and addresses: run, the current backend, callback order, extra info, servers.

Covers ``Backend.run`` (result, exception, two runs), ``current_backend()`` in coroutines
and protocol callbacks, ``connection_made``/``connection_lost`` once each, an unmodified
``asyncio.Protocol``, ``Server.addresses``/``port``/``close``, IPv4/IPv6/all interfaces,
the extra-info keys every transport answers, and ``time()``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import polyloop

from .._registry import SkipCheck, check
from ._util import Accepted, Recorder, compact, pair, transport_of


@check("lifecycle")
async def check_current_backend(session: polyloop.Session) -> None:
    """current_backend() is the running backend, in coroutines and spawned tasks."""
    assert polyloop.current_backend() is session

    async def inner() -> polyloop.Session:
        return polyloop.current_backend()

    assert await polyloop.spawn(inner()) is session


@check("lifecycle")
async def check_callback_order(session: polyloop.Session) -> None:
    """connection_made first, data, eof, connection_lost(None) last, once each."""
    server, srv, cli = await pair(session)
    assert cli.transport is not None
    cli.transport.write(b"hello")
    cli.transport.write_eof()
    await srv.lost
    assert srv.events[0] == "made" and srv.events[-1] == "lost", srv.events
    assert srv.events.count("made") == 1 and srv.events.count("lost") == 1, srv.events
    assert bytes(srv.data) == b"hello", bytes(srv.data)
    assert "eof" in srv.events and srv.lost_exc is None, (srv.events, srv.lost_exc)
    await server.aclose()


@check("lifecycle")
async def check_addresses(session: polyloop.Session) -> None:
    """peername/sockname/socket/backend extra info agree on both ends."""
    server, srv, cli = await pair(session)
    assert srv.transport is not None and cli.transport is not None
    assert cli.transport.get_extra_info("peername")[:2] == ("127.0.0.1", server.port)
    assert srv.transport.get_extra_info("sockname")[:2] == ("127.0.0.1", server.port)
    assert (
        srv.transport.get_extra_info("peername")[:2]
        == cli.transport.get_extra_info("sockname")[:2]
    )
    assert cli.transport.get_extra_info("backend") == session.name
    assert cli.transport.get_extra_info("no-such-key", 42) == 42
    cli.transport.close()
    await srv.lost
    await server.aclose()


@check("lifecycle")
async def check_extra_info_socket(session: polyloop.Session) -> None:
    """get_extra_info("socket") is the connection's socket (or None), on both ends."""
    server, srv, cli = await pair(session)
    for side, proto in (("client", cli), ("server", srv)):
        sock = transport_of(proto).get_extra_info("socket")
        if sock is not None:
            name = sock.getsockname()
            assert name[:2] == transport_of(proto).get_extra_info("sockname")[:2], (
                f"{side}: socket.getsockname() {name!r} != sockname extra info"
            )
    transport_of(cli).close()
    await srv.lost
    await server.aclose()


@check("lifecycle")
async def check_server_addresses(session: polyloop.Session) -> None:
    """listen_tcp on port 0 picks a port; Server.addresses and .port report it."""
    server = await session.listen_tcp(lambda: Recorder(session), "127.0.0.1", 0)
    addrs = server.addresses
    assert isinstance(addrs, list) and addrs, f"addresses is {addrs!r}"
    assert all(isinstance(a, tuple) for a in addrs), f"addresses are not tuples: {addrs!r}"
    assert addrs[0][0] == "127.0.0.1", addrs
    assert isinstance(server.port, int) and 0 < server.port < 65536, server.port
    assert addrs[0][1] == server.port, (addrs, server.port)
    await server.aclose()
    assert server.addresses == addrs, f"addresses changed after close: {server.addresses!r}"


@check("lifecycle")
async def check_listen_all_interfaces(session: polyloop.Session) -> None:
    """listen_tcp(host=None) listens on all interfaces: 127.0.0.1 can connect."""
    accepted = Accepted(session)
    server = await session.listen_tcp(accepted, None, 0)
    hosts = {a[0] for a in server.addresses}
    assert hosts & {"0.0.0.0", "::"}, f"host=None bound to {server.addresses!r}"
    transport, cli = await session.connect_tcp(lambda: Recorder(session), "127.0.0.1", server.port)
    srv = await accepted.get()
    transport.write(b"ping")
    assert await srv.wait_bytes(4) == b"ping"
    transport.close()
    await cli.lost
    await server.aclose()


@check("lifecycle")
async def check_ipv6(session: polyloop.Session) -> None:
    """listen_tcp/connect_tcp on ::1: addresses are IPv6 tuples, data flows."""
    import socket

    if not socket.has_ipv6:
        raise SkipCheck("Python was built without IPv6")
    try:
        probe = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        try:
            probe.bind(("::1", 0))
        finally:
            probe.close()
    except OSError as exc:
        raise SkipCheck(f"this machine has no ::1 ({exc})") from None
    accepted = Accepted(session)
    server = await session.listen_tcp(accepted, "::1", 0)
    assert server.addresses[0][0] == "::1", server.addresses
    transport, cli = await session.connect_tcp(lambda: Recorder(session), "::1", server.port)
    srv = await accepted.get()
    assert transport.get_extra_info("peername")[:2] == ("::1", server.port)
    transport.write(b"six")
    assert await srv.wait_bytes(3) == b"six"
    transport.close()
    await cli.lost
    await server.aclose()


@check("lifecycle")
async def check_server_close_keeps_connections(session: polyloop.Session) -> None:
    """Server.close() stops accepting (connect refused) and leaves open connections alone."""
    server, srv, cli = await pair(session)
    port = server.port
    await server.aclose()
    transport_of(cli).write(b"still here")
    assert await srv.wait_bytes(10) == b"still here"
    transport_of(srv).write(b"me too")
    assert await cli.wait_bytes(6) == b"me too"
    try:
        t, _ = await session.connect_tcp(lambda: Recorder(session), "127.0.0.1", port)
    except ConnectionRefusedError:
        pass
    else:
        t.abort()
        raise AssertionError("connect succeeded after Server.close()")
    await server.aclose()  # a second close is harmless
    transport_of(cli).close()
    await srv.lost


@check("lifecycle")
async def check_made_once_lost_once(session: polyloop.Session) -> None:
    """Each of many connections: connection_made exactly once first, connection_lost once last."""
    accepted = Accepted(session)
    server = await session.listen_tcp(accepted, "127.0.0.1", 0)
    clients = []
    for _ in range(10):
        _, cli = await session.connect_tcp(lambda: Recorder(session), "127.0.0.1", server.port)
        clients.append(cli)
    for i in range(10):
        await accepted.get(i)
    for i, cli in enumerate(clients):
        (transport_of(cli).close if i % 2 else transport_of(cli).abort)()
    for proto in clients + accepted.protocols:
        await proto.lost
    for proto in clients + accepted.protocols:
        ev = proto.events
        assert ev[0] == "made" and ev.count("made") == 1, compact(ev)
        assert ev[-1] == "lost" and ev.count("lost") == 1, compact(ev)
    await server.aclose()


@check("lifecycle")
async def check_current_backend_in_callbacks(session: polyloop.Session) -> None:
    """polyloop.current_backend() is this backend inside every protocol callback."""
    seen: list[tuple[str, object]] = []

    class Probe(Recorder):
        def connection_made(self, transport: polyloop.Transport) -> None:  # type: ignore[override]
            seen.append(("connection_made", polyloop.current_backend()))
            super().connection_made(transport)

        def data_received(self, data: bytes) -> None:
            seen.append(("data_received", polyloop.current_backend()))
            super().data_received(data)

        def eof_received(self) -> bool:
            seen.append(("eof_received", polyloop.current_backend()))
            return super().eof_received()

        def connection_lost(self, exc: BaseException | None) -> None:
            seen.append(("connection_lost", polyloop.current_backend()))
            super().connection_lost(exc)

    server, srv, cli = await pair(session, lambda: Probe(session))
    transport_of(cli).write(b"hi")
    transport_of(cli).write_eof()
    await srv.lost
    names = [name for name, _ in seen]
    for name in ("connection_made", "data_received", "eof_received", "connection_lost"):
        assert name in names, f"{name} never ran: {names}"
    wrong = [(name, b) for name, b in seen if b is not session]
    assert not wrong, f"current_backend() was wrong in {wrong}"
    await server.aclose()


@check("lifecycle")
async def check_asyncio_protocol(session: polyloop.Session) -> None:
    """An unmodified asyncio.Protocol subclass works as a polyloop protocol, both ends."""
    import asyncio

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.transport.write(data)  # type: ignore[attr-defined]

    class Client(asyncio.Protocol):
        def __init__(self) -> None:
            self.got = bytearray()
            self.done = session.create_future()

        def data_received(self, data: bytes) -> None:
            self.got += data
            if len(self.got) >= 5 and not self.done.done():
                self.done.set_result(None)

        def connection_lost(self, exc: Exception | None) -> None:
            if not self.done.done():
                self.done.set_result(None)

    # The annotations know only polyloop.Protocol; at run time any object with the
    # callbacks is accepted, which is exactly what this check proves.
    server = await session.listen_tcp(Echo, "127.0.0.1", 0)  # type: ignore[arg-type]
    transport, client = await session.connect_tcp(Client, "127.0.0.1", server.port)  # type: ignore[type-var]
    transport.write(b"hello")
    await client.done
    assert bytes(client.got) == b"hello", bytes(client.got)
    transport.close()
    await server.aclose()


@check("lifecycle")
async def check_time_monotonic(session: polyloop.Session) -> None:
    """backend.time() never goes back, and advances across a sleep."""
    samples = [session.time()]
    for _ in range(20):
        await session.sleep(0)
        samples.append(session.time())
    await session.sleep(0.01)
    samples.append(session.time())
    assert all(b >= a for a, b in itertools.pairwise(samples)), samples
    assert samples[-1] > samples[0], f"time() did not advance across sleep(0.01): {samples}"


def _main_returning(value: object) -> Any:
    async def main(*args: object) -> object:
        return (value, args, polyloop.current_backend().name)

    return main


@check("lifecycle", sync=True)
def check_run_returns_result(make_backend: Callable[[], polyloop.Backend]) -> None:
    """run(main, *args) passes the args and returns main's result."""
    backend = make_backend()
    marker = object()
    result = backend.run(_main_returning(marker), 1, "two")
    assert result == (marker, (1, "two"), backend.name), result


@check("lifecycle", sync=True)
def check_run_propagates_exception(make_backend: Callable[[], polyloop.Backend]) -> None:
    """An exception raised by main propagates out of run unchanged (the same object)."""

    class Boom(Exception):
        pass

    boom = Boom("from main")

    async def main() -> None:
        await polyloop.sleep(0)
        raise boom

    try:
        make_backend().run(main)
    except Boom as exc:
        assert exc is boom, f"run raised a copy: {exc!r}"
    except BaseException as exc:
        raise AssertionError(f"run raised {exc!r} instead of the Boom from main") from exc
    else:
        raise AssertionError("run returned although main raised")


@check("lifecycle", sync=True)
def check_run_twice(make_backend: Callable[[], polyloop.Backend]) -> None:
    """Two runs in a row (fresh backend each) both work, with networking in each."""

    async def main() -> bytes:
        server, srv, cli = await pair(polyloop.current_backend())
        transport_of(cli).write(b"again")
        data = await srv.wait_bytes(5)
        transport_of(cli).close()
        await srv.lost
        await server.aclose()
        return data

    for i in range(2):
        assert make_backend().run(main) == b"again", f"run #{i + 1}"


@check("lifecycle", sync=True)
def check_no_backend_outside_run(make_backend: Callable[[], polyloop.Backend]) -> None:
    """After run returns, its session is never current again (nothing global stays)."""

    def current() -> polyloop.Session | None:
        try:
            return polyloop.current_backend()
        except RuntimeError:
            return None

    async def main() -> polyloop.Session:
        return polyloop.current_backend()

    before = current()
    session = make_backend().run(main)
    after = current()
    # Outside any loop: the RuntimeError again. Where an application's loop runs the
    # caller (the main greenlet in gevent host mode), that loop's next session.
    assert after is not session, f"current_backend() after run is the ended {session!r}"
    assert (after is None) == (before is None), f"before the run {before!r}, after {after!r}"


@check("lifecycle", sync=True)
def check_session_ends_with_run(make_backend: Callable[[], polyloop.Backend]) -> None:
    """The session's on_close hooks run once, when its run ends (also what it left open)."""
    seen: list[polyloop.Session] = []

    async def main() -> polyloop.Session:
        session = polyloop.current_backend()
        session.on_close(seen.append)
        assert not session.closed, f"{session!r} is closed while main runs"
        await session.listen_tcp(polyloop.Protocol, "127.0.0.1", 0)  # left open on purpose
        return session

    session = make_backend().run(main)
    assert seen == [session], f"on_close hooks ran {len(seen)} times: {seen}"
    assert session.closed, f"{session!r} is not closed after its run"
    late: list[polyloop.Session] = []
    session.on_close(late.append)
    assert late == [session], "on_close on an ended session did not run at once"


@check("lifecycle", sync=True)
def check_new_session_per_run(make_backend: Callable[[], polyloop.Backend]) -> None:
    """Each run gets a session of its own, also with one backend instance run twice."""
    backend = make_backend()

    async def main() -> polyloop.Session:
        session = polyloop.current_backend()
        assert session.backend is backend or session.name == backend.name, session
        return session

    first = backend.run(main)
    second = backend.run(main)
    assert first is not second, f"two runs shared {first!r}"
    assert first.id != second.id, f"two sessions have the id {first.id}"
    assert first.closed and second.closed, (first, second)


@check("lifecycle")
async def check_one_session_everywhere(session: polyloop.Session) -> None:
    """Every task and callback of a run sees the same session, which says what it is."""
    found: list[polyloop.Session] = []

    async def child() -> None:
        found.append(polyloop.current_backend())
        await session.sleep(0)
        found.append(polyloop.current_backend())

    tasks = [session.spawn(child()) for _ in range(5)]
    for task in tasks:
        await task
    done = session.create_future()
    session.call_soon(lambda: (found.append(polyloop.current_backend()), done.set_result(None)))
    await done
    assert all(s is session for s in found), f"sessions seen: {set(found)}, not {session!r}"
    assert session.name in repr(session) and str(session.id) in repr(session), repr(session)
    assert isinstance(session, polyloop.Session), type(session)
