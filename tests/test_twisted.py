"""The Twisted backend: private reactors, clean disposal, and what the checks don't cover.

The conformance suite holds the backend to the Transport contract; these tests hold it
to the promises of issue 3: no global reactor, no leaked fd or thread, every reactor
kind, UDP datagrams whole, Unix sockets, builtin errors and polyloop's cancellation.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import subprocess
import sys
import textwrap
import threading
from typing import Any

import pytest

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


def test_reactor_option_from_a_spec_and_bad_values() -> None:
    backend = polyloop.load_backend("twisted:reactor=select")
    assert isinstance(backend, TwistedBackend) and backend.reactor_kind == "select"
    with pytest.raises(ValueError, match="reactor must be one of"):
        TwistedBackend(reactor="kqueue-please")
    with pytest.raises(TypeError, match="unknown option"):
        polyloop.load_backend("twisted:loop=uvloop")


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


def test_run_in_thread_uses_the_private_reactors_pool() -> None:
    async def main() -> str:
        return await polyloop.run_in_thread(lambda: threading.current_thread().name)

    name = polyloop.run(main, backend="twisted")
    assert "twisted.internet.reactor" in name and name != threading.current_thread().name
    assert "twisted.internet.reactor" not in sys.modules


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
    pc.run_check(pc.CHECKS["lifecycle.callback_order"], make, "twisted")
    gc.collect()
    before, threads = fds(), threading.active_count()
    results = [pc.run_check(c, make, "twisted") for c in pc.CHECKS.values()]
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

    proc = subprocess.Popen(
        [sys.executable, "-c", CTRL_C_SCRIPT, reactor],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert out.splitlines() == ["main unwound", "interrupted 1"], (out, err)
    assert "Traceback" not in err and "Exception ignored" not in err, err
