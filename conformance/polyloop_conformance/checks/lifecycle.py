"""The run, the session, readiness, protocol callbacks, addresses and listeners.

This file registers checks of several categories, each named for the layer it judges:
``run`` and ``session`` (tier 1: what ``Backend.run`` and the session promise),
``readiness`` (tier 1: ``add_reader``/``remove_reader``), ``timers.time_monotonic``,
``protocol`` (callback order, an unmodified asyncio protocol, set_protocol),
``addresses`` (extra info) and ``listen`` (servers and their addresses).

Covers ``Backend.run`` (result, exception, two runs), ``current_backend()`` in coroutines
and protocol callbacks, ``connection_made``/``connection_lost`` once each, an unmodified
``asyncio.Protocol``, ``Server.addresses``/``port``/``close``, IPv4/IPv6/all interfaces,
the extra-info keys every transport answers, and ``time()``.
"""

from __future__ import annotations

import inspect
import itertools
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

import polyloop

from .._registry import SkipCheck, check
from ..referee import Failed, expect_logged, waiting_for
from ._util import Accepted, Recorder, compact, pair, transport_of


@check("session", clauses=["session.current_everywhere"])
async def check_current_backend(session: polyloop.Session) -> None:
    """current_backend() is the running backend, in coroutines and spawned tasks."""
    found = polyloop.current_backend()
    assert found is session, f"current_backend() in the check is {found!r}, not {session!r}"

    async def inner() -> polyloop.Session:
        return polyloop.current_backend()

    found = await polyloop.spawn(inner())
    assert found is session, f"current_backend() in a spawned task is {found!r}, not {session!r}"


@check("protocol", clauses=["protocol.order"])
async def check_callback_order(session: polyloop.Session) -> None:
    """connection_made first, data, eof, connection_lost(None) last, once each."""
    server, srv, cli = await pair(session)
    assert cli.transport is not None
    cli.transport.write(b"hello")
    cli.transport.write_eof()
    await srv.wait_lost()
    order = compact(srv.events)
    assert srv.events[0] == "made" and srv.events[-1] == "lost", (
        f"the server side's callbacks ran as {order}: connection_made must come first and"
        " connection_lost last"
    )
    assert srv.events.count("made") == 1 and srv.events.count("lost") == 1, (
        f"the server side's callbacks ran as {order}: connection_made and connection_lost"
        " exactly once each"
    )
    assert bytes(srv.data) == b"hello", f"the server got {bytes(srv.data)!r}, not b'hello'"
    assert "eof" in srv.events, f"no eof_received after the peer's write_eof: {order}"
    assert srv.lost_exc is None, f"connection_lost({srv.lost_exc!r}) after EOF, not None"
    await server.aclose()


@check("addresses", name="extra_info", clauses=["transport.extra_info"])
async def check_addresses(session: polyloop.Session) -> None:
    """peername/sockname/socket/backend extra info agree on both ends."""
    server, srv, cli = await pair(session)
    ct, st = transport_of(cli), transport_of(srv)
    want = ("127.0.0.1", server.port)
    for what, got in (
        ("client peername", ct.get_extra_info("peername")),
        ("server sockname", st.get_extra_info("sockname")),
    ):
        assert isinstance(got, tuple) and got[:2] == want, f"{what} is {got!r}, not {want}"
    sp, cs = st.get_extra_info("peername"), ct.get_extra_info("sockname")
    assert isinstance(sp, tuple) and isinstance(cs, tuple) and sp[:2] == cs[:2], (
        f"the server's peername {sp!r} is not the client's sockname {cs!r}"
    )
    for side, t in (("client", ct), ("server", st)):
        name = t.get_extra_info("backend")
        assert name == session.name, (
            f"{side} extra info 'backend' is {name!r}, not {session.name!r}"
        )
        default = t.get_extra_info("no-such-key", 42)
        assert default == 42, f"{side} get_extra_info('no-such-key', 42) is {default!r}, not 42"
    cli.transport.close()
    await srv.wait_lost()
    await server.aclose()


@check("addresses", clauses=["transport.extra_info"])
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
    await srv.wait_lost()
    await server.aclose()


@check("listen", clauses=["listen.port_zero"])
async def check_server_addresses(session: polyloop.Session) -> None:
    """listen_tcp on port 0 picks a port; Server.addresses and .port report it."""
    server = await session.listen_tcp(lambda: Recorder(session), "127.0.0.1", 0)
    addrs = server.addresses
    assert isinstance(addrs, list) and addrs, f"Server.addresses is {addrs!r}, not a list"
    assert all(isinstance(a, tuple) for a in addrs), f"addresses are not tuples: {addrs!r}"
    assert addrs[0][0] == "127.0.0.1", f"listen_tcp('127.0.0.1', 0) reports {addrs!r}"
    port = server.port
    assert isinstance(port, int) and 0 < port < 65536, f"Server.port is {port!r} after port 0"
    assert addrs[0][1] == port, f"Server.port {port} is not the port of {addrs!r}"
    assert server.is_serving(), "is_serving() is False on a new server"
    await server.aclose()
    assert not server.is_serving(), "is_serving() is True after close()"
    assert server.addresses == addrs, f"addresses changed after close: {server.addresses!r}"


@check("listen", name="all_interfaces", clauses=["listen.all_interfaces"])
async def check_listen_all_interfaces(session: polyloop.Session) -> None:
    """listen_tcp(host=None) listens on all interfaces: 127.0.0.1 can connect."""
    accepted = Accepted(session)
    server = await session.listen_tcp(accepted, None, 0)
    hosts = {a[0] for a in server.addresses}
    assert hosts & {"0.0.0.0", "::"}, (
        f"listen_tcp(host=None) bound only {server.addresses!r} (rule: all interfaces)"
    )
    transport, cli = await session.connect_tcp(lambda: Recorder(session), "127.0.0.1", server.port)
    srv = await accepted.get()
    transport.write(b"ping")
    got = await srv.wait_bytes(4)
    assert got == b"ping", f"a connection to 127.0.0.1 on host=None got {got!r}"
    transport.close()
    await cli.wait_lost()
    await server.aclose()


@check("listen", clauses=["listen.ipv6"])
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
    assert server.addresses[0][0] == "::1", f"listen_tcp('::1') reports {server.addresses!r}"
    transport, cli = await session.connect_tcp(lambda: Recorder(session), "::1", server.port)
    srv = await accepted.get()
    peer = transport.get_extra_info("peername")
    assert peer[:2] == ("::1", server.port), f"peername over IPv6 is {peer!r}"
    transport.write(b"six")
    got = await srv.wait_bytes(3)
    assert got == b"six", f"data over IPv6 arrived as {got!r}"
    transport.close()
    await cli.wait_lost()
    await server.aclose()


@check("listen", clauses=["listen.close_keeps_connections"])
async def check_server_close_keeps_connections(session: polyloop.Session) -> None:
    """Server.close() stops accepting (connect refused) and leaves open connections alone."""
    server, srv, cli = await pair(session)
    port = server.port
    await server.aclose()
    transport_of(cli).write(b"still here")
    got = await srv.wait_bytes(10)
    assert got == b"still here", f"after Server.close() the server side got {got!r}"
    transport_of(srv).write(b"me too")
    got = await cli.wait_bytes(6)
    assert got == b"me too", f"after Server.close() the client got {got!r}"
    try:
        t, _ = await session.connect_tcp(lambda: Recorder(session), "127.0.0.1", port)
    except ConnectionRefusedError:
        pass
    else:
        t.abort()
        raise AssertionError("connect succeeded after Server.close()")
    await server.aclose()  # a second close is harmless
    transport_of(cli).close()
    await srv.wait_lost()


@check("protocol", clauses=["protocol.order"])
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
        await proto.wait_lost()
    for i, proto in enumerate(clients + accepted.protocols):
        ev = proto.events
        side = f"client #{i + 1}" if i < 10 else f"server side #{i - 9}"
        assert ev[0] == "made" and ev.count("made") == 1, (
            f"{side}: callbacks {compact(ev)} (rule: connection_made exactly once, first)"
        )
        assert ev[-1] == "lost" and ev.count("lost") == 1, (
            f"{side}: callbacks {compact(ev)} (rule: connection_lost exactly once, last)"
        )
    await server.aclose()


def _current() -> object:
    try:
        return polyloop.current_backend()
    except RuntimeError as exc:
        return exc


@check("session", clauses=["session.current_everywhere"])
async def check_current_backend_in_callbacks(session: polyloop.Session) -> None:
    """polyloop.current_backend() is this backend inside every protocol callback."""
    seen: list[tuple[str, object]] = []

    class Probe(Recorder):
        def connection_made(self, transport: polyloop.Transport) -> None:  # type: ignore[override]
            seen.append(("connection_made", _current()))
            super().connection_made(transport)

        def data_received(self, data: bytes) -> None:
            seen.append(("data_received", _current()))
            super().data_received(data)

        def eof_received(self) -> bool:
            seen.append(("eof_received", _current()))
            return super().eof_received()

        def connection_lost(self, exc: BaseException | None) -> None:
            seen.append(("connection_lost", _current()))
            super().connection_lost(exc)

    server, srv, cli = await pair(session, lambda: Probe(session))
    transport_of(cli).write(b"hi")
    transport_of(cli).write_eof()
    await srv.wait_lost()
    names = [name for name, _ in seen]
    for name in ("connection_made", "data_received", "eof_received", "connection_lost"):
        assert name in names, f"{name} never ran: {names}"
    wrong = [(name, b) for name, b in seen if b is not session]
    assert not wrong, (
        f"current_backend() was wrong in {wrong} (rule: an owned loop runs in session.context,"
        " so every callback, readiness ones included, finds its session)"
    )
    await server.aclose()


@check("protocol", clauses=["protocol.asyncio_compatible"])
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
    with waiting_for("the echo of an asyncio.Protocol server"):
        await client.done
    assert bytes(client.got) == b"hello", (
        f"an asyncio.Protocol echo gave {bytes(client.got)!r}, not b'hello'"
    )
    transport.close()
    await server.aclose()


@check("timers", clauses=["loop.time.monotonic"])
async def check_time_monotonic(session: polyloop.Session) -> None:
    """backend.time() never goes back, and advances across a sleep."""
    samples = [session.time()]
    for _ in range(20):
        await session.sleep(0)
        samples.append(session.time())
    await session.sleep(0.01)
    samples.append(session.time())
    back = [(a, b) for a, b in itertools.pairwise(samples) if b < a]
    assert not back, f"time() went back: {back[:3]} (rule: a monotonic clock)"
    assert samples[-1] > samples[0], f"time() did not advance across sleep(0.01): {samples}"


def _main_returning(value: object) -> Any:
    async def main(*args: object) -> object:
        return (value, args, polyloop.current_backend().name)

    return main


@check("run", name="returns_result", clauses=["run.returns_main_result"], sync=True)
def check_run_returns_result(make_backend: Callable[[], polyloop.Backend]) -> None:
    """run(main, *args) passes the args and returns main's result."""
    backend = make_backend()
    marker = object()
    result = backend.run(_main_returning(marker), 1, "two")
    want = (marker, (1, "two"), backend.session_name)
    assert result == want, f"run(main, 1, 'two') returned {result!r}, expected {want!r}"


@check("run", name="propagates_exception", clauses=["run.propagates_main_exception"], sync=True)
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
    except AssertionError:
        raise  # the referee's own verdict on that run (it lost main's exception ...)
    except BaseException as exc:
        raise AssertionError(f"run raised {exc!r} instead of the Boom from main") from exc
    else:
        raise AssertionError("run returned although main raised")


@check("run", name="twice", clauses=["run.fresh_each_time"], sync=True)
def check_run_twice(make_backend: Callable[[], polyloop.Backend]) -> None:
    """Two runs in a row (fresh backend each) both work, with networking in each."""

    async def main() -> bytes:
        server, srv, cli = await pair(polyloop.current_backend())
        transport_of(cli).write(b"again")
        data = await srv.wait_bytes(5)
        transport_of(cli).close()
        await srv.wait_lost()
        await server.aclose()
        return data

    for i in range(2):
        assert make_backend().run(main) == b"again", f"run #{i + 1}"


@check("run", clauses=["run.nothing_global_stays"], sync=True)
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


@check("session", name="ends_with_run", clauses=["session.ends_with_run"], sync=True)
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
    assert seen == [session], (
        f"on_close hooks ran {len(seen)} times ({seen}), expected once with the session"
    )
    assert session.closed, f"{session!r} is not closed after its run"
    late: list[polyloop.Session] = []
    session.on_close(late.append)
    assert late == [session], "on_close on an ended session did not run at once"


@check("session", name="new_per_run", clauses=["run.fresh_each_time"], sync=True)
def check_new_session_per_run(make_backend: Callable[[], polyloop.Backend]) -> None:
    """Each run gets a session of its own, also with one backend instance run twice."""
    backend = make_backend()

    async def main() -> polyloop.Session:
        session = polyloop.current_backend()
        assert session.backend is backend or session.name == backend.session_name, (
            f"{backend!r}.run() runs main in {session!r}, of another backend"
        )
        return session

    first = backend.run(main)
    second = backend.run(main)
    assert first is not second, f"two runs shared {first!r}"
    assert first.id != second.id, f"two sessions have the id {first.id}"
    assert first.closed and second.closed, (first, second)


@check("session", clauses=["session.current_everywhere"])
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
    assert session.name in repr(session) and str(session.id) in repr(session), (
        f"repr(session) is {session!r}: it should name the backend and the session id"
    )
    assert isinstance(session, polyloop.Session), f"the session is a {type(session)}"


@check("run", name="nested_refused", clauses=["run.nested_refused"])
async def check_run_nested_refused(session: polyloop.Session) -> None:
    """run() called inside a running loop raises RuntimeError (it would block that loop)."""
    ran: list[str] = []

    async def main() -> None:
        ran.append("main")

    for what, call in (
        ("session.backend.run(main)", lambda: session.backend.run(main)),
        ("polyloop.run(main)", lambda: polyloop.run(main, backend=session.backend)),
    ):
        try:
            call()
        except RuntimeError:
            continue
        except BaseException as exc:
            raise AssertionError(f"{what} inside a running loop raised {exc!r}") from exc
        raise AssertionError(f"{what} inside a running loop returned instead of RuntimeError")
    assert ran == [], "a nested run() ran main inside the running loop"


@check("run", name="needs_a_function", clauses=["run.needs_a_function"], sync=True)
def check_run_needs_a_function(make_backend: Callable[[], polyloop.Backend]) -> None:
    """run(main(arg)) -- a coroutine object instead of a function -- is a TypeError."""

    async def main() -> None:
        pass

    coro = main()
    try:
        make_backend().run(coro)  # type: ignore[arg-type]
    except TypeError:
        pass
    else:
        raise AssertionError("run(coroutine object) was accepted instead of TypeError")
    finally:
        coro.close()


@check("session", clauses=["session.aclose_owned_refused"])
async def check_aclose_owned_refused(session: polyloop.Session) -> None:
    """aclose() of a session that run() owns raises RuntimeError (it ends with run)."""
    if not session.owned:
        return  # a borrowed session may be closed; the host harness ends it that way
    try:
        await session.aclose()
    except RuntimeError:
        pass
    else:
        raise AssertionError("aclose() of an owned session returned instead of RuntimeError")
    assert not session.closed, f"a refused aclose() closed {session!r}"


@check("listen", name="every_address", clauses=["listen.every_address"])
async def check_listen_every_address(session: polyloop.Session) -> None:
    """listen_tcp("localhost", 0) binds every address localhost resolves to, on one port."""
    import socket

    infos = socket.getaddrinfo("localhost", 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    wanted = {info[4][0] for info in infos}
    server = await session.listen_tcp(lambda: Recorder(session), "localhost", 0)
    try:
        hosts = [a[0] for a in server.addresses]
        ports = {a[1] for a in server.addresses}
        assert len(ports) == 1, (
            f"the addresses of one server have several ports: {server.addresses}"
        )
        missing = wanted - set(hosts)
        bindable = {h for h in missing if _bindable(h)}
        assert not bindable, (
            f"listen_tcp('localhost') bound {hosts}, not {sorted(bindable)} (rule: every"
            " address the host resolves to is bound, all on one port)"
        )
    finally:
        await server.aclose()


def _bindable(host: str) -> bool:
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        probe = socket.socket(family, socket.SOCK_STREAM)
    except OSError:
        return False
    try:
        probe.bind((host, 0))
    except OSError:
        return False
    finally:
        probe.close()
    return True


@check("protocol", name="accessors", clauses=["transport.set_protocol"])
async def check_protocol_accessors(session: polyloop.Session) -> None:
    """get_protocol() is the protocol; after set_protocol(new) the data goes to new,
    whose connection_made is not called."""
    server, srv, cli = await pair(session)
    ts = transport_of(srv)
    assert ts.get_protocol() is srv, f"get_protocol() is {ts.get_protocol()!r}, not the protocol"
    new = Recorder(session)
    new.side = "new protocol"
    new.transport = ts
    ts.set_protocol(new)
    assert ts.get_protocol() is new, "get_protocol() after set_protocol(new) is not new"
    transport_of(cli).write(b"to the new one")
    got = await new.wait_bytes(14)
    assert got == b"to the new one", f"after set_protocol, the new protocol got {got!r}"
    assert "made" not in new.events, "set_protocol() called the new protocol's connection_made"
    assert bytes(srv.data) == b"", f"the old protocol still got {bytes(srv.data)!r}"
    transport_of(cli).close()
    await new.wait_lost()
    assert "lost" not in srv.events, "the old protocol got connection_lost after set_protocol"
    await server.aclose()


def _removal(held: bool, message: str) -> None:
    """A failure of ``remove_reader``/``remove_writer``, by its clause (the check also
    enforces ``loop.add_reader.while_ready``, which a timeout in it names)."""
    if not held:
        raise Failed(message, clause="loop.remove_reader.never_after")


@check(
    "readiness",
    name="callbacks",
    clauses=["loop.add_reader.while_ready", "loop.remove_reader.never_after"],
)
async def check_readiness_callbacks(session: polyloop.Session) -> None:
    """add_reader/add_writer call fn while the fd is ready, until removed;
    remove_reader/remove_writer return whether it was watched."""
    import socket

    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    try:
        readable = session.create_future()
        writable = session.create_future()
        session.add_writer(a, lambda: writable.done() or writable.set_result(None))
        with waiting_for("add_writer's callback for a writable socket"):
            await writable
        _removal(session.remove_writer(a) is True, "remove_writer() of a watched fd is not True")
        _removal(
            session.remove_writer(a) is False, "remove_writer() of an unwatched fd is not False"
        )
        calls = [0]

        def on_readable() -> None:
            calls[0] += 1
            if not readable.done():
                readable.set_result(None)

        session.add_reader(a, on_readable)
        b.send(b"x")
        with waiting_for("add_reader's callback for a readable socket"):
            await readable
        _removal(session.remove_reader(a) is True, "remove_reader() of a watched fd is not True")
        _removal(
            session.remove_reader(a) is False, "remove_reader() of an unwatched fd is not False"
        )
        seen = calls[0]
        b.send(b"y")
        for _ in range(5):
            await session.sleep(0)
        _removal(calls[0] == seen, "the reader callback ran after remove_reader()")
        c, d = socket.socketpair()
        try:
            never = session.remove_reader(c)
            _removal(never is False, f"remove_reader() of an fd never added returned {never!r}")
        finally:
            c.close()
            d.close()
    finally:
        session.remove_reader(a)
        session.remove_writer(a)
        a.close()
        b.close()


@check("readiness", name="bad_fd", clauses=["loop.add_reader.bad_fd"])
async def check_readiness_bad_fd(session: polyloop.Session) -> None:
    """add_reader/add_writer/remove_reader/remove_writer refuse what is not an fd (a str,
    None, a float, a negative int, a closed socket) with ValueError, as asyncio's
    selectors do."""
    import socket

    closed = socket.socket()
    closed.close()
    bad: list[Any] = ["x", None, 3.5, -1, closed]
    methods: list[tuple[str, Callable[..., object]]] = [
        ("add_reader", lambda fd: session.add_reader(fd, lambda: None)),
        ("add_writer", lambda fd: session.add_writer(fd, lambda: None)),
        ("remove_reader", session.remove_reader),
        ("remove_writer", session.remove_writer),
    ]
    for name, method in methods:
        for fd in bad:
            try:
                method(fd)
            except ValueError:
                continue
            except Exception as exc:
                raise AssertionError(
                    f"{name}({fd!r}) raised {type(exc).__name__}: {exc} "
                    "(rule: ValueError for what is not a valid fd, as on asyncio)"
                ) from None
            raise AssertionError(f"{name}({fd!r}) was accepted (rule: ValueError)")


@check("run", name="ctrl_c_cleans_up", clauses=["run.ctrl_c"], sync=True)
def check_ctrl_c_cleans_up(make_backend: Callable[[], polyloop.Backend]) -> None:
    """Ctrl-C (SIGINT) while main waits cancels main: its finally runs, the session ends,
    and run() raises KeyboardInterrupt. In host mode Ctrl-C is the application's: polyloop
    leaves its SIGINT handler as it is."""
    backend = make_backend()
    if getattr(backend, "hosted", False):

        async def handler() -> Any:
            await polyloop.sleep(0)
            return signal.getsignal(signal.SIGINT)

        inside = backend.run(handler)  # the application's runner may install its own
        module = getattr(getattr(inside, "func", inside), "__module__", "") or ""
        assert not module.startswith("polyloop"), (
            f"in host mode polyloop installed a SIGINT handler ({inside!r}): rule: a"
            " borrowed loop's Ctrl-C is the application's"
        )
        return
    if threading.current_thread() is not threading.main_thread():
        raise SkipCheck("SIGINT reaches the main thread only, and this check runs in another")
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        raise SkipCheck("SIGINT has a handler of the application's: run() leaves it alone")
    seen: list[str] = []

    async def main() -> None:
        polyloop.current_backend().on_close(lambda _: seen.append("session ended"))
        try:
            await polyloop.sleep(0.01)
            os.kill(os.getpid(), signal.SIGINT)  # what a user's Ctrl-C does
            await polyloop.sleep(10)
            seen.append("sleep(10) returned")
        finally:
            seen.append("finally")

    try:
        backend.run(main)
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError(
            f"run() returned after Ctrl-C (saw {seen}): rule: SIGINT cancels main, and run()"
            " raises KeyboardInterrupt"
        )
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    assert seen[:1] == ["finally"], (
        f"after Ctrl-C, main's finally did not run first (saw {seen}): rule: SIGINT cancels"
        " main, which cleans up before run() returns (a backend that installs its own SIGINT"
        " handler, or blocks Python's, breaks it; see docs/writing-a-backend.md, Ctrl-C)"
    )
    assert "session ended" in seen, (
        f"after Ctrl-C, the session did not end (saw {seen}): rule: run() disposes of"
        " everything before it raises"
    )


def _interrupt(make_backend: Callable[[], polyloop.Backend], how: str) -> str | None:
    """Run a main whose callback, scheduled the way ``how`` names, raises
    KeyboardInterrupt; None if run() raised it after main's clean-up and the session's
    end, else what went wrong.

    KeyboardInterrupt, not SystemExit: the referee judges every run() of a check, and
    lets through only a KeyboardInterrupt that ends a cancelled main (Ctrl-C's shape);
    the backends treat both alike (one ``except (SystemExit, KeyboardInterrupt)`` each),
    and ``tests/test_reliability.py::test_sys_exit_in_a_callback_is_the_exit_code`` runs
    ``sys.exit(3)`` in a timer in a real process on every backend."""
    backend = make_backend()
    seen: list[str] = []

    def interrupt() -> None:
        raise KeyboardInterrupt

    async def main() -> None:
        polyloop.current_backend().on_close(lambda _: seen.append("session ended"))
        try:
            scheduled = _SCHEDULERS[how](interrupt)
            if inspect.isawaitable(scheduled):
                await scheduled
            await polyloop.sleep(5)
            seen.append("sleep(5) returned")
        finally:
            seen.append("finally")

    try:
        backend.run(main)
    except KeyboardInterrupt:
        pass
    except BaseException as exc:
        return f"run() raised {type(exc).__name__}: {exc!r} (saw {seen}), not KeyboardInterrupt"
    else:
        return f"run() returned (saw {seen})"
    if seen != ["finally", "session ended"]:
        return (
            f"saw {seen}, where main is cancelled at once (its finally runs, sleep(5) never"
            " returns) and the session ends before run() raises"
        )
    return None


def _mixed_native(name: str) -> Any:
    import polyloop_mixed

    return polyloop_mixed.session(name).native


def _gevent_later(fn: Callable[[], None]) -> None:
    import gevent

    gevent.spawn_later(0.01, fn)


async def _in_data_received(fn: Callable[[], None]) -> None:
    """A TCP connection whose server protocol calls ``fn`` in ``data_received``."""

    class Raiser(polyloop.Protocol):
        def data_received(self, data: bytes) -> None:
            fn()

    server = await polyloop.listen_tcp(Raiser, "127.0.0.1", 0)
    transport, _ = await polyloop.connect_tcp(polyloop.Protocol, "127.0.0.1", server.port)
    transport.write(b"x")  # the session's end closes both, and the server


_SCHEDULERS: dict[str, Callable[[Callable[[], None]], object]] = {
    "polyloop.call_later": lambda fn: polyloop.call_later(0.01, fn),
    "a protocol's data_received": _in_data_received,
    "asyncio's loop.call_later": lambda fn: _mixed_native("asyncio").call_later(0.01, fn),
    "Tornado's IOLoop.call_later": lambda fn: _mixed_native("tornado").call_later(0.01, fn),
    "Twisted's reactor.callLater": lambda fn: _mixed_native("twisted").callLater(0.01, fn),
    "gevent.spawn_later": _gevent_later,
}


def _interrupt_hosted(backend: polyloop.Backend, how: str = "polyloop.call_later") -> None:
    """Host mode: the loop is the application's, and so is what a KeyboardInterrupt
    raised in one of its callbacks does (``asyncio.run`` raises it, Twisted's reactor
    logs it and goes on). polyloop's part: never to swallow it -- it reaches the
    application's runner, which raises or logs it."""

    def interrupt() -> None:
        raise KeyboardInterrupt

    async def main() -> None:
        session = polyloop.current_backend()
        try:
            scheduled = _SCHEDULERS[how](interrupt)
            if inspect.isawaitable(scheduled):
                await scheduled
            await polyloop.sleep(0.5)
        finally:
            await session.aclose()

    # The framework's own runner, directly (``Backend.run_hosted``): the referee judges a
    # run by polyloop's rules, and an application's runner need not cancel main first.
    raised = False
    with expect_logged() as logged:
        try:
            backend.backend.run_hosted(main)  # type: ignore[attr-defined]
        except KeyboardInterrupt:
            raised = True
    assert raised or any("KeyboardInterrupt" in m for m in logged), (
        f"in host mode, a KeyboardInterrupt raised in {how} was neither raised by the"
        f" application's runner nor logged by it ({logged}): polyloop swallowed it (rule:"
        " it reaches the application's runner)"
    )


@check("run", name="system_exit_in_callback", clauses=["run.callback_exit"], sync=True)
def check_system_exit_in_callback(make_backend: Callable[[], polyloop.Backend]) -> None:
    """A call_later callback that raises KeyboardInterrupt (or SystemExit) while main
    waits: main is cancelled and cleans up, the session ends, and run() raises it -- as
    asyncio does, not logged and swallowed by the framework's loop."""
    backend = make_backend()
    if getattr(backend, "hosted", False):
        _interrupt_hosted(backend)
        return
    wrong = _interrupt(lambda: backend, "polyloop.call_later")
    assert wrong is None, (
        f"a call_later callback raised KeyboardInterrupt: {wrong}. Rule: it leaves run() as"
        " itself, after main's clean-up and the session's end"
    )


@check("run", name="system_exit_in_data_received", clauses=["run.callback_exit"], sync=True)
def check_system_exit_in_data_received(make_backend: Callable[[], polyloop.Backend]) -> None:
    """A protocol's data_received that raises KeyboardInterrupt (or SystemExit): main is
    cancelled and cleans up, the session ends, and run() raises it -- not logged and
    dropped with the connection by the framework's I/O code (Twisted's doRead callers)."""
    backend = make_backend()
    if getattr(backend, "hosted", False):
        _interrupt_hosted(backend, "a protocol's data_received")
        return
    wrong = _interrupt(lambda: backend, "a protocol's data_received")
    assert wrong is None, (
        f"a protocol's data_received raised KeyboardInterrupt: {wrong}. Rule: it leaves"
        " run() as itself, after main's clean-up and the session's end"
    )


@check(
    "run",
    name="system_exit_in_native_callback",
    clauses=["run.callback_exit"],
    sync=True,
    mixed_only=True,
)
def check_system_exit_in_native_callback(make_backend: Callable[[], polyloop.Backend]) -> None:
    """In mixed mode, a KeyboardInterrupt raised in a timer of each framework's own API
    (asyncio's call_later, Tornado's IOLoop.call_later, Twisted's reactor.callLater,
    gevent.spawn_later) leaves run() as itself, after main's clean-up, whichever session
    main runs on."""
    wrong = []
    for how in list(_SCHEDULERS)[2:]:
        why = _interrupt(make_backend, how)
        if why is not None:
            wrong.append(f"{how}: {why}")
    assert not wrong, (
        "a KeyboardInterrupt raised in a native timer in mixed mode: "
        + "; ".join(wrong)
        + ". Rule: it leaves run() as itself, after main's clean-up and the session's end"
    )
