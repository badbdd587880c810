"""The Tornado backend: what the conformance suite cannot see from the outside.

That the IOLoop does the work (its scheduling, and its readiness under every socket the
core's transports serve, TCP, TLS and UDP), half-close (the unflushed tail of a reply
survives the peer's EOF), that the fd stops being polled after EOF, whole 60 KB
datagrams, builtin errors, cancellation, nothing
left behind after ``run`` (also with runs in many threads at once), and host mode: a
Tornado web application whose handlers await polyloop code, under ``asyncio.run`` and
under ``IOLoop.run_sync``.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import ssl
import subprocess
import sys
import threading
from typing import Any

import pytest

tornado = pytest.importorskip("tornado", reason="the Tornado backend needs polyloop[tornado]")

from tornado.ioloop import IOLoop  # noqa: E402

import polyloop  # noqa: E402
from polyloop.lowlevel import SocketDatagramTransport  # noqa: E402
from polyloop_conformance.checks._util import Recorder  # noqa: E402
from polyloop_conformance.tls import material  # noqa: E402

BACKEND = "tornado"


def run(main: Any, *args: Any) -> Any:
    return polyloop.run(main, *args, backend=BACKEND)


def _bounded(seconds: float) -> Any:
    """Decorator: the coroutine fails (TimeoutError) instead of hanging the test."""

    def wrap(fn: Any) -> Any:
        async def bounded(*args: Any) -> Any:
            return await polyloop.wait_for(fn(*args), seconds)

        return bounded

    return wrap


def test_loaded_through_the_entry_point() -> None:
    backend = polyloop.load_backend(BACKEND)
    assert type(backend).__module__ == "polyloop_tornado"
    assert backend.native_tls is False  # the core's TLS layer (docs/backends/tornado.md)
    assert backend.framework_version().startswith("Tornado 6.")
    with pytest.raises(TypeError, match="unknown option"):
        polyloop.load_backend(BACKEND, loop="uvloop")


def test_every_conformance_check_passes() -> None:
    import polyloop_conformance as pc

    make = lambda: polyloop.load_backend(BACKEND)  # noqa: E731
    checks = [c for c in pc.CHECKS.values() if not c.mixed_only]  # bridges: test_mixed.py
    results = [pc.run_check(c, make, BACKEND) for c in checks]
    assert len(results) > 50, "the catalogue looks empty"
    bad = [f"{r.check}: {r.status} {r.detail}" for r in results if r.status != "pass"]
    assert not bad, "\n".join(bad)


def test_the_ioloop_carries_every_socket() -> None:
    """Listening, connected (plain and TLS) and UDP sockets all wait on IOLoop handlers:
    the core's transports run on the IOLoop's readiness, not on a loop of their own."""

    @_bounded(10)
    async def main() -> None:
        session = polyloop.current_backend()
        ioloop = session.ioloop  # type: ignore[attr-defined]
        assert session.native is ioloop and IOLoop.current() is ioloop
        accepted: list[Recorder] = []

        def make() -> Recorder:
            accepted.append(Recorder(session))
            return accepted[-1]

        tls = material()
        for ssl_ctx in (None, tls.server_context()):
            accepted.clear()
            server = await session.listen_tcp(make, ssl=ssl_ctx)
            (acceptor,) = server._acceptors  # type: ignore[attr-defined]
            assert acceptor._sock.fileno() in ioloop.readers  # the core's SocketAcceptor
            client_ctx = tls.client_context() if ssl_ctx else None
            transport, client = await session.connect_tcp(
                lambda: Recorder(session), "127.0.0.1", server.port,
                ssl=client_ctx, server_hostname="localhost" if ssl_ctx else None,
            )  # fmt: skip
            assert (transport.get_extra_info("ssl_object") is not None) == bool(ssl_ctx)
            transport.write(b"through the IOLoop")
            while not accepted or bytes(accepted[0].data) != b"through the IOLoop":
                await polyloop.sleep(0.001)
            srv_transport = accepted[0].transport
            assert srv_transport is not None
            for t in (transport, srv_transport):
                assert t.get_extra_info("socket").fileno() in ioloop.readers
            transport.close()
            await client.lost
            await server.aclose()

        udp, _ = await session.open_udp(polyloop.DatagramProtocol, local_addr=("127.0.0.1", 0))
        assert isinstance(udp, SocketDatagramTransport)
        assert udp.get_extra_info("socket").fileno() in ioloop.handlers
        udp.close()

    run(main)


def test_readiness_shares_one_ioloop_handler_per_fd() -> None:
    @_bounded(10)
    async def main() -> None:
        session = polyloop.current_backend()
        ioloop = session.ioloop  # type: ignore[attr-defined]
        a, b = socket.socketpair()
        try:
            assert session.remove_reader(a) is False  # never added: tolerated
            readable, writable = session.create_future(), session.create_future()
            session.add_writer(a, lambda: writable.done() or writable.set_result(None))
            session.add_reader(a, lambda: readable.done() or readable.set_result(None))
            assert a.fileno() in ioloop.readers and a.fileno() in ioloop.writers
            await writable
            assert session.remove_writer(a) is True
            assert a.fileno() in ioloop.handlers and a.fileno() not in ioloop.writers
            b.send(b"x")
            await readable
            assert session.remove_reader(a) is True
            assert a.fileno() not in ioloop.handlers
            assert session.remove_writer(a) is False
        finally:
            a.close()
            b.close()

    run(main)


def test_peer_eof_keeps_the_stream_open_and_unpolled() -> None:
    """eof_received() -> True: the server writes after EOF; the fd is not read meanwhile.

    Were READ interest kept after EOF, the EOF socket (always readable) would spin the
    loop, so we look at the fd in the IOLoop's reader set.
    """

    @_bounded(10)
    async def main() -> None:
        session = polyloop.current_backend()
        ioloop = session.ioloop  # type: ignore[attr-defined]
        accepted: list[Recorder] = []

        def make() -> Recorder:
            accepted.append(Recorder(session, keep_open_on_eof=True))
            return accepted[-1]

        server = await polyloop.listen_tcp(make)
        transport, client = await polyloop.connect_tcp(
            lambda: Recorder(session), "127.0.0.1", server.port
        )
        transport.write(b"question")
        transport.write_eof()
        while not accepted:
            await polyloop.sleep(0.001)
        srv = accepted[0]
        await srv.eof
        for _ in range(3):
            await polyloop.sleep(0)
        srv_transport = srv.transport
        assert srv_transport is not None and not srv_transport.is_closing()
        fd = srv_transport.get_extra_info("socket").fileno()
        assert fd not in ioloop.readers, "the EOF socket is still polled for reading"
        await polyloop.sleep(0.02)  # a late answer, from a half-open connection
        srv_transport.write(b"answer" * 10000)
        srv_transport.close()
        assert await client.wait_bytes(60000) == b"answer" * 10000
        assert await client.lost is None
        assert await srv.lost is None
        assert bytes(srv.data) == b"question"
        await server.aclose()

    run(main)


class _Firehose(polyloop.Protocol):
    """Writes ``size`` bytes on connect; closes on EOF (close() must flush them)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def connection_made(self, transport: polyloop.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        transport.write(os.urandom(self.size))

    def eof_received(self) -> None:
        self.transport.close()


def test_unflushed_writes_survive_the_peers_eof() -> None:
    """A close() on the peer's EOF flushes the 8 MiB still buffered (Tornado's IOStream
    dropped its write buffer the moment it read the peer's EOF)."""
    size = 8 * 1024 * 1024

    @_bounded(20)
    async def main() -> None:
        session = polyloop.current_backend()
        server = await polyloop.listen_tcp(lambda: _Firehose(size))
        transport, client = await polyloop.connect_tcp(
            lambda: Recorder(session), "127.0.0.1", server.port
        )
        transport.write_eof()  # at once: the server reads EOF with most of 8 MiB unsent
        assert len(await client.wait_bytes(size)) == size
        assert await client.lost is None
        assert client.events.count("eof") == 1
        await server.aclose()

    run(main)


def test_errors_are_builtin(tmp_path: Any) -> None:
    @_bounded(10)
    async def main() -> None:
        session = polyloop.current_backend()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # bound, not listening: refused
            with pytest.raises(ConnectionRefusedError):
                await polyloop.connect_tcp(polyloop.Protocol, "127.0.0.1", port)
        with pytest.raises(FileNotFoundError):
            await polyloop.connect_unix(polyloop.Protocol, str(tmp_path / "nothing"))
        server = await polyloop.listen_tcp(polyloop.Protocol)
        with pytest.raises(OSError) as info:
            await polyloop.listen_tcp(polyloop.Protocol, "127.0.0.1", server.port)
        assert info.value.errno == errno.EADDRINUSE
        await server.aclose()
        tls = material()
        server = await polyloop.listen_tcp(lambda: Recorder(session), ssl=tls.server_context())
        with pytest.raises(ssl.SSLCertVerificationError):
            await polyloop.connect_tcp(
                polyloop.Protocol, "127.0.0.1", server.port,
                ssl=ssl.create_default_context(), server_hostname="localhost",
            )  # fmt: skip
        await server.aclose()

    run(main)


class _RaisesOnConnect(polyloop.Protocol):
    def __init__(self, session: polyloop.Session) -> None:
        self.lost = session.create_future()

    def connection_made(self, transport: polyloop.Transport) -> None:  # type: ignore[override]
        raise ValueError("refused by the protocol")

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.set_result(exc)


def test_connection_made_raising(caplog: pytest.LogCaptureFixture) -> None:
    """Client side: the connect raises the error, the connection is aborted. Server side:
    logged, the connection aborted (the client sees it end), the server goes on."""

    @_bounded(10)
    async def main() -> None:
        session = polyloop.current_backend()
        tls = material()

        async def both_sides(server_ctx: ssl.SSLContext | None) -> None:
            client_ctx = tls.client_context() if server_ctx else None
            hostname = "localhost" if server_ctx else None
            peers: list[Recorder] = []
            server = await session.listen_tcp(
                lambda: peers.append(Recorder(session)) or peers[-1], ssl=server_ctx
            )
            made: list[_RaisesOnConnect] = []
            with pytest.raises(ValueError, match="refused by the protocol"):
                await session.connect_tcp(
                    lambda: made.append(_RaisesOnConnect(session)) or made[-1],
                    "127.0.0.1", server.port, ssl=client_ctx, server_hostname=hostname,
                )  # fmt: skip
            assert isinstance(await made[0].lost, ConnectionAbortedError)
            while not peers:
                await polyloop.sleep(0.001)
            await peers[0].lost  # the server saw the aborted connection end
            await server.aclose()

            server = await session.listen_tcp(lambda: _RaisesOnConnect(session), ssl=server_ctx)
            for _ in range(2):  # the server goes on after the first failure
                try:
                    _, client = await session.connect_tcp(
                        lambda: Recorder(session), "127.0.0.1", server.port,
                        ssl=client_ctx, server_hostname=hostname,
                    )  # fmt: skip
                except (ConnectionResetError, ssl.SSLError):
                    continue  # the reset came before the connect (or handshake) ended
                await client.lost
            await server.aclose()

        await both_sides(None)
        await both_sides(tls.server_context())

    with caplog.at_level(logging.ERROR, logger="polyloop"):
        run(main)
    logged = [r for r in caplog.records if "connection_made raised" in r.getMessage()]
    assert len(logged) == 4


def test_udp_60k_datagram_arrives_whole() -> None:
    class Receiver(polyloop.DatagramProtocol):
        def __init__(self) -> None:
            self.got = polyloop.create_future()

        def datagram_received(self, data: bytes, addr: Any) -> None:
            if not self.got.done():
                self.got.set_result((data, addr))

    @_bounded(10)
    async def main() -> None:
        receiver_t, receiver = await polyloop.open_udp(Receiver, local_addr=("127.0.0.1", 0))
        address = receiver_t.get_extra_info("sockname")
        sender_t, _ = await polyloop.open_udp(polyloop.DatagramProtocol, remote_addr=address)
        payload = os.urandom(60_000)
        sender_t.sendto(payload)
        data, addr = await receiver.got
        assert data == payload
        assert addr == sender_t.get_extra_info("sockname")
        sender_t.close()
        receiver_t.close()

    run(main)


def test_cancel_reaches_a_coroutine_parked_on_a_tornado_future() -> None:
    from tornado import gen

    @_bounded(10)
    async def main() -> str:
        parked = polyloop.create_future()

        async def sleeper() -> str:
            parked.set_result(None)
            try:
                await gen.sleep(60)  # a Tornado future, not a polyloop one
            except polyloop.Cancelled:
                return "cancelled"
            return "woke"

        task = polyloop.spawn(sleeper())
        await parked
        task.cancel()
        assert await task == "cancelled"

        # Not caught: awaiting the task raises it.
        async def park() -> None:
            await gen.sleep(60)

        task = polyloop.spawn(park())
        await polyloop.sleep(0)
        task.cancel()
        with pytest.raises(polyloop.Cancelled):
            await task
        return "ok"

    assert run(main) == "ok"


def test_call_soon_threadsafe_runs_in_the_session() -> None:
    @_bounded(10)
    async def main() -> None:
        session = polyloop.current_backend()
        done = polyloop.create_future()

        def in_loop() -> None:
            done.set_result(polyloop.current_backend())

        threading.Thread(target=session.call_soon_threadsafe, args=(in_loop,)).start()
        assert await done is session
        # A worker of run_in_thread runs in a copy of the caller's context.
        assert await polyloop.run_in_thread(polyloop.current_backend) is session

    run(main)


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to count fds")
def test_run_leaves_no_fd_loop_or_thread_behind() -> None:
    @_bounded(10)
    async def main() -> Any:
        session = polyloop.current_backend()
        server = await polyloop.listen_tcp(lambda: Recorder(session))  # left open
        await polyloop.connect_tcp(lambda: Recorder(session), "127.0.0.1", server.port)
        await polyloop.open_udp(polyloop.DatagramProtocol, local_addr=("127.0.0.1", 0))
        await polyloop.run_in_thread(sum, [1, 2])
        polyloop.spawn(polyloop.sleep(60))  # a task left pending
        return asyncio.get_running_loop()

    run(main)  # warm up imports and lazily made objects
    fds, threads = _open_fds(), threading.active_count()
    maps = dict(IOLoop._ioloop_for_asyncio)
    loop = run(main)
    assert loop.is_closed()
    assert _open_fds() == fds
    assert threading.active_count() == threads
    assert dict(IOLoop._ioloop_for_asyncio) == maps, "Tornado still maps the closed loop"
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()


def test_two_runs_in_two_threads_at_once() -> None:
    results: list[Any] = []

    async def main(n: int) -> int:
        session = polyloop.current_backend()
        server = await polyloop.listen_tcp(lambda: Recorder(session))
        transport, client = await polyloop.connect_tcp(
            lambda: Recorder(session), "127.0.0.1", server.port
        )
        transport.close()
        await client.lost
        await server.aclose()
        return n

    threads = [threading.Thread(target=lambda n=n: results.append(run(main, n))) for n in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == [1, 2]


def test_runs_in_many_threads_at_once_keep_their_results() -> None:
    """IOLoop.close() comes before the asyncio loop is closed, as Tornado's own comment
    in ``BaseAsyncIOLoop.close`` asks. In the other order (asyncio.Runner's close, then
    IOLoop.close) an IOLoop made meanwhile in another thread drops the closed loop's
    entry first, and the run fails with KeyError after main has returned: measured here
    3 to 12 runs of these 320."""
    results: list[int] = []
    errors: list[BaseException] = []

    async def main(n: int) -> int:
        await polyloop.sleep(0)
        return n

    def runs() -> None:
        for n in range(40):
            try:
                results.append(run(main, n))
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=runs) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, f"{len(errors)} runs failed, the first with {errors[0]!r}"
    assert len(results) == 320


# --- host mode: a Tornado application that awaits polyloop code ---


async def _echo_round_trip(payload: bytes) -> bytes:
    async def echo(stream: polyloop.Stream) -> None:
        while data := await stream.receive():
            await stream.send(data)

    async with await polyloop.open_tcp_listener("127.0.0.1", 0) as listener:
        serving = polyloop.spawn(listener.serve(echo))
        async with await polyloop.open_tcp_stream("127.0.0.1", listener.port) as stream:
            await stream.send(payload)
            got = await stream.receive_exactly(len(payload))
        serving.cancel()
    return got


async def _web_app(*, aclose_between: bool) -> dict[str, Any]:
    """Serve a tornado.web app whose handler awaits polyloop code; fetch it 20 times at
    once with AsyncHTTPClient (twice with ``aclose_between``). Returns what was seen."""
    from tornado.httpclient import AsyncHTTPClient
    from tornado.httpserver import HTTPServer
    from tornado.netutil import bind_sockets
    from tornado.web import Application, RequestHandler

    seen: dict[str, Any] = {"sessions": []}

    class Handler(RequestHandler):
        async def get(self, n: str) -> None:
            session = polyloop.current_backend()
            seen["sessions"].append(session)
            echoed = await _echo_round_trip(b"request %s" % n.encode())

            async def later() -> str:
                await polyloop.sleep(0.001)
                return "spawned"

            spawned = await polyloop.spawn(later())
            self.write(b"%s %s" % (echoed, spawned.encode()))

    sockets = bind_sockets(0, "127.0.0.1")
    port = sockets[0].getsockname()[1]
    server = HTTPServer(Application([(r"/(\d+)", Handler)]))
    server.add_sockets(sockets)
    client = AsyncHTTPClient(force_instance=True)

    async def fetch_all() -> list[bytes]:
        responses = await asyncio.gather(
            *(client.fetch(f"http://127.0.0.1:{port}/{i}") for i in range(20))
        )
        return [r.body for r in responses]

    try:
        seen["bodies"] = await polyloop.wait_for(fetch_all(), 20)
        if aclose_between:
            first = seen["sessions"][-1]
            await first.aclose()
            seen["after_aclose"] = await polyloop.wait_for(fetch_all(), 20)
            await seen["sessions"][-1].aclose()
    finally:
        client.close()
        server.stop()
        await server.close_all_connections()
    return seen


def _check_web_app(seen: dict[str, Any], batches: int) -> list[polyloop.Session]:
    from polyloop_tornado import TornadoSession

    expected = [b"request %d spawned" % i for i in range(20)]
    assert seen["bodies"] == expected
    sessions = seen["sessions"]
    assert len(sessions) == 20 * batches
    ids = [{id(s) for s in sessions[i * 20 : (i + 1) * 20]} for i in range(batches)]
    assert all(len(one) == 1 for one in ids), "handlers on one IOLoop got different sessions"
    firsts = [sessions[i * 20] for i in range(batches)]
    for session in firsts:
        assert isinstance(session, TornadoSession) and not session.owned
        assert session.ioloop is not None
    return firsts


def test_host_mode_web_app_under_asyncio_run() -> None:
    hook: dict[str, Any] = {}
    left_open: list[int] = []

    def on_close(session: polyloop.Session) -> None:
        hook["session"] = session
        hook["loop running"] = asyncio._get_running_loop() is not None

    async def main() -> dict[str, Any]:
        seen = await _web_app(aclose_between=False)
        session = seen["sessions"][0]
        session.on_close(on_close)
        assert polyloop.current_backend() is session  # the app's own task finds it too
        listener = await polyloop.open_tcp_listener("127.0.0.1", 0)  # left open
        left_open.append(listener.port)
        return seen

    seen = asyncio.run(main())
    (session,) = _check_web_app(seen, 1)
    assert hook["session"] is session, "on_close did not run when asyncio.run shut down"
    assert hook["loop running"], "on_close ran after the loop had stopped"
    assert session.closed
    with pytest.raises(ConnectionRefusedError):  # the session closed what polyloop opened
        socket.create_connection(("127.0.0.1", left_open[0]), timeout=5).close()


def test_host_mode_web_app_aclose_keeps_the_app_serving() -> None:
    seen = asyncio.run(_web_app(aclose_between=True))
    first, second = _check_web_app(seen, 2)
    assert seen["after_aclose"] == seen["bodies"], "the app stopped serving after aclose()"
    assert first is not second and first.closed and second.closed


_RUN_SYNC = """
import sys
sys.path.insert(0, sys.argv[1])
from tornado.ioloop import IOLoop
import test_tornado
seen = IOLoop.current().run_sync(
    lambda: test_tornado._web_app(aclose_between=True), timeout=60
)
first, second = test_tornado._check_web_app(seen, 2)
assert seen["after_aclose"] == seen["bodies"]
assert first is not second and first.closed and second.closed
assert first.ioloop is IOLoop.current()
print("ok")
"""


def test_host_mode_web_app_under_ioloop_run_sync() -> None:
    # In a process of its own: IOLoop.current() outside a running loop installs an
    # asyncio loop (and an IOLoop for it) as this thread's, for every later test.
    here = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.run(
        [sys.executable, "-c", _RUN_SYNC, here], capture_output=True, text=True, timeout=90
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_attach_never_makes_an_ioloop() -> None:
    """In a plain asyncio application no IOLoop wraps the loop: polyloop finds asyncio,
    and attaching the Tornado backend refuses instead of making one."""
    from polyloop_tornado import TornadoBackend

    async def main() -> str:
        loop = asyncio.get_running_loop()
        with pytest.raises(RuntimeError, match="finds no running loop"):
            TornadoBackend().attach()
        assert loop not in IOLoop._ioloop_for_asyncio
        return polyloop.current_backend().name

    assert asyncio.run(main()) == "asyncio"
