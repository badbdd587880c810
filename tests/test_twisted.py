"""The Twisted backend: private reactors, clean disposal, and what the checks don't cover.

The conformance suite holds the backend to the Transport contract; these tests hold it
to the promises of issue 3: no global reactor, no leaked fd or thread, every reactor
kind, UDP datagrams whole, Unix sockets, builtin errors and polyloop's cancellation;
then to host mode: polyloop code in an application that runs a reactor itself (the
global one, in a subprocess each, since it runs once per process; or a private one),
and polyloop tasks awaiting Deferreds.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import os
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from _serve import Script

pytest.importorskip("twisted", reason="the Twisted backend needs Twisted (polyloop[twisted])")

import polyloop
from polyloop_twisted import TwistedBackend

REACTORS = ["epoll", "poll", "select", "asyncio"]


class Echo(polyloop.Protocol):
    def connection_made(self, transport: polyloop.Transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def eof_received(self) -> bool:
        self.transport.close()
        return True


@pytest.fixture
def no_global_reactor(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fails the test if it imports ``twisted.internet.reactor`` (installs the global one).

    Another test of the session may have imported it already (compat, mixed mode), so it
    is hidden for the test, then put back: an import during the test would be a fresh one,
    seen here."""
    import twisted.internet

    monkeypatch.delitem(sys.modules, "twisted.internet.reactor", raising=False)
    monkeypatch.delattr(twisted.internet, "reactor", raising=False)
    yield
    assert "twisted.internet.reactor" not in sys.modules, "the global reactor was imported"


async def echo_round_trip(payload: bytes = b"ping" * 1000) -> bytes:
    server = await polyloop.listen_tcp(Echo, "127.0.0.1", 0)
    stream = await polyloop.open_tcp_stream("127.0.0.1", server.port)
    await stream.send(payload)
    await stream.send_eof()
    got = b""
    while chunk := await stream.receive():
        got += chunk
    await stream.aclose()
    await server.aclose()
    return got


@pytest.mark.parametrize("reactor", REACTORS)
def test_each_reactor_kind_echoes(reactor: str) -> None:
    backend = TwistedBackend(reactor=reactor)
    assert backend.reactor_kind == reactor
    assert polyloop.run(echo_round_trip, backend=backend) == b"ping" * 1000


@pytest.mark.parametrize("reactor", REACTORS)
def test_reader_left_on_a_socket_the_library_closed(reactor: str) -> None:
    """A library closes a socket that still has a reader registered (asyncio's loops and
    selectors tolerate it): the run ends with its result, and the reactor's disposal
    neither raises (epoll's KeyError in removeAll) nor logs an error (its EBADF in
    unregister), nor leaves an fd open."""
    from twisted.logger import globalLogPublisher

    failures: list[Any] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_failure") is not None or event.get("isError"):
            failures.append(event)

    async def main() -> str:
        a, b = socket.socketpair()
        session = polyloop.current_backend()
        session.add_reader(a, lambda: None)
        session.add_writer(b, lambda: None)
        a.close()  # still watched
        b.close()
        await polyloop.sleep(0)
        return "ended"

    polyloop.run(main, backend=f"twisted:reactor={reactor}")  # warm up caches
    before = set(os.listdir("/proc/self/fd"))
    globalLogPublisher.addObserver(observe)
    try:
        assert polyloop.run(main, backend=f"twisted:reactor={reactor}") == "ended"
    finally:
        globalLogPublisher.removeObserver(observe)
    assert failures == [], [str(e.get("log_failure") or e) for e in failures]
    assert set(os.listdir("/proc/self/fd")) == before


def test_reactor_option_from_a_spec_and_bad_values() -> None:
    backend = polyloop.load_backend("twisted:reactor=select")
    assert isinstance(backend, TwistedBackend) and backend.reactor_kind == "select"
    with pytest.raises(ValueError, match="reactor must be one of"):
        TwistedBackend(reactor="kqueue-please")
    with pytest.raises(TypeError, match="unknown option"):
        polyloop.load_backend("twisted:loop=uvloop")


def test_transports_option_from_a_spec_and_bad_values() -> None:
    backend = polyloop.load_backend("twisted:transports=twisted")
    assert isinstance(backend, TwistedBackend) and backend.transports == "twisted"
    assert polyloop.load_backend("twisted").transports == "core"  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="transports must be 'core' or 'twisted'"):
        TwistedBackend(transports="iocp")


@pytest.mark.parametrize("transports", ["core", "twisted"])
def test_which_transport_carries_the_bytes(transports: str) -> None:
    """The default serves sockets with the core's SocketTransport on the reactor's
    readiness; transports="twisted" with Twisted's tcp.Connection under our bridge."""
    from polyloop.lowlevel import SocketTransport
    from polyloop_twisted._transport import TwistedTransport

    async def main() -> tuple[type, type]:
        accepted: list[polyloop.Transport] = []

        class Keep(polyloop.Protocol):
            def connection_made(self, transport: polyloop.Transport) -> None:  # type: ignore[override]
                accepted.append(transport)

        server = await polyloop.listen_tcp(Keep, "127.0.0.1", 0)
        client, _ = await polyloop.connect_tcp(polyloop.Protocol, "127.0.0.1", server.port)
        while not accepted:
            await polyloop.sleep(0.001)
        kinds = (type(client), type(accepted[0]))
        client.close()
        accepted[0].close()
        await server.aclose()
        return kinds

    want = SocketTransport if transports == "core" else TwistedTransport
    kinds = polyloop.run(main, backend=f"twisted:transports={transports}")
    assert all(issubclass(k, want) for k in kinds), kinds


@pytest.mark.parametrize("reactor", ["epoll", "select"])
def test_replies_after_the_first_of_an_iteration_wait_for_its_reads(reactor: str) -> None:
    """Two connections whose requests one poll returns: the first reply is sent from
    ``write`` (the peer can read it before ``data_received`` returns), the second is held
    until the reactor has dispatched the reads (SendAfterReads); ``close`` right after
    the write sends what is held first, so both peers read their reply, then EOF."""
    peers: dict[int, socket.socket] = {}
    at_once: list[bool] = []

    class Reply(polyloop.Protocol):
        def connection_made(self, transport: polyloop.Transport) -> None:  # type: ignore[override]
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.transport.write(b"reply-" + data)
            peer = peers[self.transport.get_extra_info("peername")[1]]
            try:
                at_once.append(peer.recv(100, socket.MSG_DONTWAIT) == b"reply-" + data)
            except BlockingIOError:
                at_once.append(False)
            self.transport.close()

    async def main() -> list[bytes]:
        server = await polyloop.listen_tcp(Reply, "127.0.0.1", 0)
        for _ in range(2):
            sock = socket.create_connection(("127.0.0.1", server.port))
            peers[sock.getsockname()[1]] = sock
        for sock in peers.values():  # both before the reactor polls again
            sock.sendall(b"x")
        got = {port: b"" for port in peers}
        for sock in peers.values():
            sock.setblocking(False)
        for _ in range(2000):
            for port, sock in peers.items():
                if not got[port].endswith(b"<EOF>"):
                    with contextlib.suppress(BlockingIOError):
                        got[port] += sock.recv(100) or b"<EOF>"
            if all(v.endswith(b"<EOF>") for v in got.values()):
                break
            await polyloop.sleep(0.005)
        for sock in peers.values():
            sock.close()
        await server.aclose()
        return sorted(got.values())

    got = polyloop.run(main, backend=f"twisted:reactor={reactor}")
    assert sorted(at_once) == [False, True], at_once
    # The peer of the first read its reply inside data_received; the other reads it now.
    assert got == [b"<EOF>", b"reply-x<EOF>"], got


def test_every_conformance_check_passes_on_twisteds_own_transports() -> None:
    """The catalogue, on Twisted's tcp.Port and tcp.Connection (transports="twisted"):
    the bridge the compatibility layer's PolyloopFactory runs a polyloop protocol on."""
    import polyloop_conformance as pc

    make = lambda: polyloop.load_backend("twisted:transports=twisted")  # noqa: E731
    checks = [c for c in pc.CHECKS.values() if not c.mixed_only]  # bridges: test_mixed.py
    results = [pc.run_check(c, make, "twisted") for c in checks]
    assert len(results) > 250, "the catalogue looks empty"
    bad = [f"{r.check}: {r.status} {r.detail}" for r in results if r.status != "pass"]
    assert not bad, "\n".join(bad)


def test_asyncio_reactor_runs_on_a_fresh_loop_that_is_closed_after() -> None:
    seen: list[Any] = []

    async def main() -> None:
        reactor = polyloop.current_backend().reactor  # type: ignore[attr-defined]
        loop = reactor._asyncioEventloop
        seen.append(loop)
        assert asyncio.get_running_loop() is loop  # run_forever() is what drives it
        await polyloop.sleep(0.01)

    polyloop.run(main, backend="twisted", reactor="asyncio")
    assert seen[0].is_closed()


def test_two_runs_in_a_row() -> None:
    for _ in range(2):
        assert polyloop.run(echo_round_trip, backend="twisted") == b"ping" * 1000


def test_runs_in_two_threads_at_once() -> None:
    results: dict[str, Any] = {}
    barrier = threading.Barrier(2)

    async def main(name: str) -> bytes:
        await polyloop.run_in_thread(barrier.wait, 10)  # both reactors run at this point
        return await echo_round_trip(name.encode() * 5000)

    def worker(name: str, reactor: str) -> None:
        try:
            results[name] = polyloop.run(main, name, backend="twisted", reactor=reactor)
        except BaseException as exc:  # reported by the assertion below
            results[name] = exc

    threads = [
        threading.Thread(target=worker, args=(name, kind))
        for name, kind in (("a", "epoll"), ("b", "asyncio"))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == {"a": b"a" * 5000, "b": b"b" * 5000}


@pytest.mark.usefixtures("no_global_reactor")
def test_run_in_thread_uses_the_private_reactors_pool() -> None:
    async def main() -> str:
        return await polyloop.run_in_thread(lambda: threading.current_thread().name)

    name = polyloop.run(main, backend="twisted")
    assert "twisted.internet.reactor" in name and name != threading.current_thread().name


def test_cancellation_is_polyloops_type() -> None:
    from twisted.internet import defer

    async def main() -> tuple[str, str]:
        inner_saw: list[BaseException] = []

        async def sleeper() -> None:
            try:
                await polyloop.sleep(10)
            except BaseException as exc:
                inner_saw.append(exc)
                raise

        task = polyloop.spawn(sleeper())
        await polyloop.sleep(0.01)
        task.cancel()
        try:
            await task
        except BaseException as exc:
            outer = exc
        assert not isinstance(inner_saw[0], defer.CancelledError)
        return type(inner_saw[0]).__name__, type(outer).__name__

    assert polyloop.run(main, backend="twisted") == ("CancelledError", "CancelledError")

    async def cancelled_run_in_thread() -> None:
        event = threading.Event()
        task = polyloop.spawn(polyloop.run_in_thread(event.wait, 10))
        await polyloop.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        event.set()

    polyloop.run(cancelled_run_in_thread, backend="twisted")


def test_errors_are_builtin() -> None:
    async def main() -> None:
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        try:
            with pytest.raises(ConnectionRefusedError) as refused:
                await polyloop.connect_tcp(polyloop.Protocol, "127.0.0.1", port)
            assert type(refused.value) is ConnectionRefusedError
        finally:
            probe.close()
        server = await polyloop.listen_tcp(polyloop.Protocol, "127.0.0.1", 0)
        with pytest.raises(OSError) as taken:
            await polyloop.listen_tcp(polyloop.Protocol, "127.0.0.1", server.port)
        assert taken.value.errno == errno.EADDRINUSE
        assert type(taken.value) is OSError
        await server.aclose()

    polyloop.run(main, backend="twisted")


class Datagrams(polyloop.DatagramProtocol):
    def __init__(self) -> None:
        self.got: list[tuple[bytes, Any]] = []
        self.arrived = polyloop.create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.got.append((data, addr))
        if not self.arrived.done():
            self.arrived.set_result(None)

    async def wait(self) -> None:
        await polyloop.wait_for(self._arrived(), 10)

    async def _arrived(self) -> None:
        await self.arrived


def test_udp_60k_datagram_arrives_whole_and_connected_endpoints() -> None:
    async def main() -> None:
        server_t, server = await polyloop.open_udp(Datagrams, local_addr=("127.0.0.1", 0))
        port = server_t.get_extra_info("sockname")[1]
        client_t, client = await polyloop.open_udp(Datagrams, remote_addr=("127.0.0.1", port))
        big = os.urandom(60_000)
        client_t.sendto(big)
        await server.wait()
        data, addr = server.got[0]
        assert data == big, f"got {len(data)} of {len(big)} bytes"
        server_t.sendto(b"back", addr)
        await client.wait()
        assert client.got[0][0] == b"back"
        with pytest.raises(TypeError):
            client_t.sendto("text")  # type: ignore[arg-type]
        client_t.close()
        server_t.close()
        client_t.sendto(b"after close is a no-op")

    polyloop.run(main, backend="twisted")


def test_unix_sockets(tmp_path: Any) -> None:
    path = os.path.join(str(tmp_path), "s")

    async def main() -> None:
        with pytest.raises(FileNotFoundError):
            await polyloop.connect_unix(polyloop.Protocol, path)
        listener = await polyloop.open_unix_listener(path)
        assert listener.addresses == [path]
        stream = await polyloop.open_unix_stream(path)
        server_side = await listener.accept()
        await stream.send(b"over unix")
        assert await server_side.receive_exactly(9) == b"over unix"
        await stream.aclose()
        await server_side.aclose()
        await listener.aclose()
        assert not os.path.exists(path), "the socket file outlived the server"

    polyloop.run(main, backend="twisted")


def test_main_exception_propagates_with_its_own_type() -> None:
    class Boom(Exception):
        pass

    async def main() -> None:
        await polyloop.sleep(0)
        raise Boom("from main")

    with pytest.raises(Boom, match="from main"):
        polyloop.run(main, backend="twisted")


# The whole conformance suite, then the leak promises of the issue. In a subprocess so
# that nothing the rest of the test session imported or opened blurs the counts.
LEAK_SCRIPT = textwrap.dedent(
    """
    import gc, os, sys, threading
    import polyloop, polyloop_conformance as pc
    from polyloop_conformance._registry import run_app

    def fds():
        return len(os.listdir("/proc/self/fd"))

    make = lambda: polyloop.load_backend(sys.argv[1])
    # Warm-up: Twisted's tcp module reserves one fd (/dev/null) per *process*, on first
    # use, to survive EMFILE; that is not per run, so it is counted out.
    pc.run_check(pc.CHECKS["protocol.callback_order"], make, "twisted")
    gc.collect()
    before, threads = fds(), threading.active_count()
    checks = [c for c in pc.CHECKS.values() if not c.mixed_only]  # bridges: --mixed
    results = [pc.run_check(c, make, "twisted") for c in checks]
    results += [run_app(a, make, "twisted") for a in pc.APPS.values()]
    gc.collect()
    bad = [f"{r.check}: {r.status} {r.detail}" for r in results if r.status != "pass"]
    print("cases", len(results))
    print("bad", bad)
    print("reactor", "twisted.internet.reactor" in sys.modules)
    print("fds", before, fds())
    print("threads", threads, threading.active_count())
    """
)


@pytest.mark.parametrize("reactor", ["epoll", "asyncio"])
def test_conformance_run_leaves_no_reactor_fd_or_thread(reactor: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", LEAK_SCRIPT, f"twisted:reactor={reactor}"],
        capture_output=True, text=True, timeout=110,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    assert int(lines["cases"]) > 50, out.stdout
    assert lines["bad"] == "[]", lines["bad"]
    assert lines["reactor"] == "False", "twisted.internet.reactor was imported"
    before, after = lines["fds"].split()
    assert before == after, f"fd count {before} -> {after}"
    threads_before, threads_after = lines["threads"].split()
    assert threads_before == threads_after, f"threads {threads_before} -> {threads_after}"
    # Failures nobody awaited must not surface as Twisted's garbage-collection report.
    assert "Unhandled error in Deferred" not in out.stderr, out.stderr


CTRL_C_SCRIPT = textwrap.dedent(
    """
    import signal, sys, threading, polyloop

    # A child of a background job inherits SIGINT ignored; Python then installs no
    # KeyboardInterrupt handler. Install it, as an interactive python has it.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    async def main():
        polyloop.spawn(polyloop.run_in_thread(threading.Event().wait, 0.5))
        try:
            print("ready", flush=True)
            await polyloop.sleep(30)
        finally:
            print("main unwound", flush=True)

    try:
        polyloop.run(main, backend="twisted", reactor=sys.argv[1])
    except KeyboardInterrupt:
        print("interrupted", threading.active_count(), flush=True)
    """
)


@pytest.mark.parametrize("reactor", ["epoll", "asyncio"])
def test_ctrl_c_interrupts_the_run_and_main_unwinds(reactor: str) -> None:
    # Twisted's mainLoop would swallow the KeyboardInterrupt and run on.
    import signal

    with Script(CTRL_C_SCRIPT, reactor) as proc:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert out.splitlines() == ["main unwound", "interrupted 1"], (out, err)
    assert "Traceback" not in err and "Exception ignored" not in err, err


# --- polyloop tasks and Deferreds ---


@contextlib.contextmanager
def unhandled_deferred_reports() -> Iterator[list[dict[str, Any]]]:
    """Twisted's "Unhandled error in Deferred" log events while the block runs."""
    from twisted.logger import globalLogPublisher

    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)  # type: ignore[arg-type]
    try:
        yield events
        gc.collect()  # the report comes when a failed Deferred is garbage
    finally:
        globalLogPublisher.removeObserver(events.append)  # type: ignore[arg-type]
    events[:] = [e for e in events if "Unhandled error" in str(e.get("log_format"))]


def test_tasks_await_deferreds() -> None:
    from twisted.internet import defer, error
    from twisted.internet.task import deferLater

    async def main() -> list[Any]:
        reactor = polyloop.current_backend().reactor  # type: ignore[attr-defined]
        seen: list[Any] = []

        async def wait(d: defer.Deferred[Any]) -> Any:
            try:
                return await d
            except BaseException as exc:
                seen.append(type(exc))
                raise

        seen.append(await polyloop.spawn(wait(deferLater(reactor, 0.01, lambda: 5))))
        failing: defer.Deferred[None] = defer.Deferred()
        refusal = error.ConnectionRefusedError("no")  # type: ignore[no-untyped-call]
        reactor.callLater(0.01, failing.errback, refusal)
        with pytest.raises(ConnectionRefusedError) as refused:
            await polyloop.spawn(wait(failing))
        assert type(refused.value) is ConnectionRefusedError  # translated at the task's end
        never = polyloop.spawn(wait(defer.Deferred()))
        await polyloop.sleep(0.01)
        never.cancel()
        with pytest.raises(polyloop.Cancelled):
            await never

        async def cancels_itself() -> None:
            task = polyloop.current_task()
            assert task is not None
            task.cancel()
            await wait(defer.Deferred())

        with pytest.raises(polyloop.Cancelled):
            await polyloop.spawn(cancels_itself())
        return seen

    with unhandled_deferred_reports() as reports:
        seen = polyloop.run(main, backend="twisted")
    # The coroutine sees a failed Deferred's own exception; cancellation is polyloop's.
    from twisted.internet import error as twisted_error

    cancelled = asyncio.CancelledError
    assert seen == [5, twisted_error.ConnectionRefusedError, cancelled, cancelled], seen
    assert reports == [], "a cancelled Deferred's failure was left unconsumed"


@pytest.mark.usefixtures("no_global_reactor")
def test_a_borrowed_private_reactor() -> None:
    # attach() and as_deferred() take any reactor: here one the test runs itself, which
    # is not the global one. Its callbacks run in the application's context, so the
    # session has to be made current in each (protocol callbacks included).
    from twisted.internet.selectreactor import SelectReactor
    from twisted.internet.task import deferLater

    from polyloop_twisted import as_deferred, attach
    from polyloop_twisted._reactor import unbuild_reactor

    reactor = SelectReactor()
    seen: list[polyloop.Session] = []

    class Probe(Echo):
        def connection_made(self, transport: polyloop.Transport) -> None:  # type: ignore[override]
            seen.append(polyloop.current_backend())
            super().connection_made(transport)

        def data_received(self, data: bytes) -> None:
            seen.append(polyloop.current_backend())
            super().data_received(data)

        def connection_lost(self, exc: BaseException | None) -> None:
            seen.append(polyloop.current_backend())

    async def main() -> tuple[polyloop.Session, bytes, int, int]:
        session = polyloop.current_backend()
        server = await polyloop.listen_tcp(Probe, "127.0.0.1", 0)
        stream = await polyloop.open_tcp_stream("127.0.0.1", server.port)
        await stream.send(b"borrowed")
        got = await stream.receive_exactly(8)
        await stream.aclose()
        in_thread = await polyloop.run_in_thread(lambda: 6)
        native = await deferLater(reactor, 0.01, lambda: 7)  # Twisted's runner: native
        await server.aclose()
        return session, got, in_thread, native

    out: list[Any] = []

    def go() -> None:
        d = as_deferred(main(), reactor)
        d.addBoth(out.append)
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(go)
    guard = reactor.callLater(20, reactor.stop)  # bounded, whatever happens
    reactor.run(installSignalHandlers=False)
    if guard.active():
        guard.cancel()
    unbuild_reactor(reactor)  # the test's own reactor: its waker pipe, its fds
    session, got, in_thread, native = out[0]
    assert (got, in_thread, native) == (b"borrowed", 6, 7)
    assert not session.owned and session.reactor is reactor
    assert session.closed, "the session did not end with the reactor"
    assert len(seen) >= 3 and all(s is session for s in seen), seen
    with pytest.raises(TypeError, match="attaches to a reactor"):
        attach(object())


# --- host mode on the global reactor, each app in its own process ---


def run_app(script: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Traceback" not in out.stderr and "Unhandled error" not in out.stderr, out.stderr
    return out.stdout.splitlines()


HOST_SCRIPT = textwrap.dedent(
    """
    from twisted.internet import defer, task

    import polyloop
    from polyloop_twisted import as_deferred, attach

    def report(*words):
        print(*words, flush=True)

    async def echo_once(i):
        session = polyloop.current_backend()
        listener = await polyloop.open_tcp_listener("127.0.0.1", 0)

        async def handler(stream):
            await stream.send(await stream.receive_exactly(8))
            await stream.aclose()

        serving = polyloop.spawn(listener.serve(handler))
        stream = await polyloop.open_tcp_stream("127.0.0.1", listener.port)
        await stream.send(b"hello %02d" % i)
        ok = await stream.receive_exactly(8) == b"hello %02d" % i
        await stream.aclose()
        ok = ok and await polyloop.spawn(polyloop.sleep(0.01)) is None
        serving.cancel()
        await listener.aclose()
        await polyloop.sleep(0.01)
        return session, ok and polyloop.current_backend() is session

    async def sleeper(saw):
        try:
            await polyloop.sleep(30)
        except polyloop.Cancelled:
            saw.append("Cancelled")
            raise

    async def cancelled(make, reactor):
        saw = []
        d = make(sleeper(saw))
        await task.deferLater(reactor, 0.05, lambda: None)
        d.cancel()
        try:
            await d
        except BaseException as exc:
            return saw, f"{type(exc).__module__}.{type(exc).__name__}"
        return saw, "returned"

    class Lost(polyloop.Protocol):
        def __init__(self, reactor):
            self.reactor = reactor

        def connection_lost(self, exc):
            report("lost", self.reactor.running, type(exc).__name__)

    async def main(reactor):
        # react() calls main before reactor.run(): the explicit entry works already ...
        report("early", reactor.running, await as_deferred(polyloop.sleep(0.01)) is None)
        # ... and detection, in plain Deferred.fromCoroutine coroutines, once it runs.
        await task.deferLater(reactor, 0, lambda: None)
        calls = [defer.Deferred.fromCoroutine(echo_once(i)) for i in range(20)]
        results = await defer.gatherResults(calls)
        first = results[0][0]
        report("sessions", len({id(s) for s, _ in results}), all(ok for _, ok in results))
        report("attach", attach() is first, attach(reactor) is first, first.reactor is reactor)
        report("plain", *await cancelled(defer.Deferred.fromCoroutine, reactor))
        report("as_deferred", *await cancelled(as_deferred, reactor))
        first.on_close(lambda s: report("first closed", reactor.running))
        await first.aclose()
        second = polyloop.current_backend()
        report("second", second is not first, second.closed, reactor.running)
        # Left open: the end of the session, at the reactor's shutdown, closes them.
        server = await polyloop.listen_tcp(lambda: Lost(reactor), "127.0.0.1", 0)
        await second.connect_tcp(lambda: Lost(reactor), "127.0.0.1", server.port)
        await polyloop.sleep(0.05)  # accepted
        second.on_close(lambda s: report("second closed", reactor.running))

    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor)))
    """
)


def test_host_mode_on_the_global_reactor() -> None:
    lines = run_app(HOST_SCRIPT)
    assert lines == [
        "early False True",
        "sessions 1 True",  # 20 concurrent coroutines, one session
        "attach True True True",
        "plain ['Cancelled'] asyncio.exceptions.CancelledError",
        "as_deferred ['Cancelled'] twisted.internet.defer.CancelledError",
        "first closed True",  # aclose(): the reactor runs on
        "second True False True",  # ... and the next call gets a new session
        "lost True ConnectionAbortedError",  # closed at shutdown, the reactor still running
        "lost True ConnectionAbortedError",
        "second closed True",
    ], lines


ASYNCIO_HOST_SCRIPT = textwrap.dedent(
    """
    import asyncio

    import polyloop

    async def echo():
        session = polyloop.current_backend()
        listener = await polyloop.open_tcp_listener("127.0.0.1", 0)

        async def handler(stream):
            await stream.send(await stream.receive_exactly(5))
            await stream.aclose()

        serving = polyloop.spawn(listener.serve(handler))
        stream = await polyloop.open_tcp_stream("127.0.0.1", listener.port)
        await stream.send(b"hello")
        got = await stream.receive_exactly(5)
        await stream.aclose()
        await polyloop.sleep(0.01)
        serving.cancel()
        await listener.aclose()
        return session, got

    async def main():
        from twisted.internet import asyncioreactor

        loop = asyncio.get_running_loop()
        asyncioreactor.install(loop)
        from twisted.internet import defer, reactor

        from polyloop_twisted import attach

        from_asyncio = asyncio.create_task(echo())
        from_twisted = loop.create_future()
        # Twisted code: a coroutine on Twisted's runner, started by a reactor callback.
        reactor.callLater(0, lambda: defer.Deferred.fromCoroutine(echo()).addBoth(
            from_twisted.set_result))
        (a, got_a), (t, got_t) = await asyncio.gather(from_asyncio, from_twisted)
        print(a.name, got_a.decode(), t.name, got_t.decode(), flush=True)
        print("attach", attach(reactor) is t, t.reactor is reactor, not t.owned, flush=True)
        t.on_close(lambda s: print("twisted session ended", flush=True))
        a.on_close(lambda s: print("asyncio session ended", flush=True))

    asyncio.run(main())  # the reactor is never stopped: the sessions end with the loop
    print("after asyncio.run", flush=True)
    """
)


def test_host_mode_on_an_asyncio_reactor_in_asyncio_run() -> None:
    lines = run_app(ASYNCIO_HOST_SCRIPT)
    assert lines[:2] == ["asyncio hello twisted hello", "attach True True True"], lines
    assert sorted(lines[2:4]) == ["asyncio session ended", "twisted session ended"], lines
    assert lines[4:] == ["after asyncio.run"], lines


FROM_COROUTINE_IN_TASK = textwrap.dedent(
    """
    import asyncio

    import polyloop

    async def main():
        from twisted.internet import asyncioreactor

        asyncioreactor.install(asyncio.get_running_loop())
        from twisted.internet import defer

        await polyloop.sleep(0)  # this asyncio task now names the asyncio session
        d = defer.Deferred.fromCoroutine(polyloop.sleep(0.01))
        await d.asFuture(asyncio.get_running_loop())
        print("ok", flush=True)

    asyncio.run(main())
    """
)


def test_from_coroutine_started_inside_an_asyncio_task() -> None:
    """Twisted's runner sends a polyloop future back; the context names the asyncio
    session (cached in this task): the Twisted session must suspend it all the same."""
    assert run_app(FROM_COROUTINE_IN_TASK) == ["ok"]


# --- cancel scopes on Twisted's own runner (issue 20: fan-out) ---


def _on_private_reactor(main: Any) -> Any:
    """Run ``main()`` on Twisted's runner (``as_deferred``) on a private reactor."""
    from twisted.internet.selectreactor import SelectReactor

    from polyloop_twisted import as_deferred
    from polyloop_twisted._reactor import unbuild_reactor

    reactor = SelectReactor()
    out: list[Any] = []

    def go() -> None:
        d = as_deferred(main(reactor), reactor)
        d.addBoth(out.append)
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(go)
    guard = reactor.callLater(20, reactor.stop)
    reactor.run(installSignalHandlers=False)
    if guard.active():
        guard.cancel()
    unbuild_reactor(reactor)
    return out[0]


def test_children_of_a_coroutine_that_used_a_timeout_have_their_own_scopes() -> None:
    """Twisted's runner copies the parent's context into each child it starts: a parent
    that used ``fail_after`` must not hand its scope bookkeeping to its children. Two
    children, each with its own ``fail_after``: the one that times out raises
    ``TimeoutError``, its sibling finishes."""
    from twisted.internet.defer import Deferred, gatherResults

    async def child(timeout: float, naps: float) -> str:
        try:
            with polyloop.fail_after(timeout):
                await polyloop.sleep(naps)
        except TimeoutError:
            return "timed out"
        return "finished"

    async def main(reactor: Any) -> list[str]:
        with polyloop.fail_after(5):  # the parent's own scope, before the fan-out
            await polyloop.sleep(0)
        slow = Deferred.fromCoroutine(child(0.05, 2))
        quick = Deferred.fromCoroutine(child(2, 0.2))
        return await gatherResults([slow, quick])  # type: ignore[no-any-return]

    assert _on_private_reactor(main) == ["timed out", "finished"]
