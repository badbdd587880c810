"""The gevent backend: what the conformance suite cannot see from the outside.

Patched and unpatched processes, no monkey patching by the library, bounded memory under
a slow reader, whole 60 KB datagrams, a TLS handshake that does not block the hub,
cancellation of a coroutine parked in gevent's own API, and nothing left after ``run``.
"""

from __future__ import annotations

import gc
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
from typing import Any

import pytest

gevent = pytest.importorskip("gevent")

import greenlet  # noqa: E402

import polyloop  # noqa: E402

BACKEND = "gevent"


def run(main: Any, *args: Any) -> Any:
    return polyloop.run(main, *args, backend=BACKEND)


# --- the conformance suite, in a process where gevent.monkey.patch_all() ran first ---

PATCHED_RUNNER = textwrap.dedent(
    """
    from gevent import monkey
    monkey.patch_all()
    import json, sys
    import polyloop_conformance as pc
    from polyloop_conformance._registry import run_app
    from polyloop import load_backend
    make = lambda: load_backend("gevent")
    results = [pc.run_check(c, make, "gevent") for c in pc.CHECKS.values()]
    results += [run_app(a, make, "gevent") for a in pc.APPS.values()]
    assert monkey.is_module_patched("socket") and monkey.is_module_patched("threading")
    json.dump([r.to_json() for r in results], sys.stdout)
    """
)


def test_conformance_in_a_patched_process() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PATCHED_RUNNER], capture_output=True, text=True, timeout=110
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout)
    assert len(results) > 50, "the catalogue looks empty"
    bad = [f"{r['check']}: {r['status']} {r['detail']}" for r in results if r["status"] != "pass"]
    assert not bad, "\n".join(bad)


def test_patched_threadsafe_same_os_thread() -> None:
    script = textwrap.dedent(
        """
        from gevent import monkey
        monkey.patch_all()
        import polyloop
        os_ident = monkey.get_original("threading", "get_ident")
        start_thread = monkey.get_original("_thread", "start_new_thread")

        async def main():
            backend = polyloop.current_backend()
            fut = backend.create_future()
            loop_thread = os_ident()
            def on_loop():
                fut.set_result((os_ident(), polyloop.current_backend() is backend))
            # A real OS thread (patched threading would give a greenlet).
            start_thread(lambda: backend.call_soon_threadsafe(on_loop), ())
            ident, same_backend = await fut
            assert ident == loop_thread and same_backend
            assert await polyloop.run_in_thread(os_ident) != loop_thread
            return "ok"

        print(polyloop.run(main, backend="gevent"))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "ok"


def test_the_library_never_patches() -> None:
    from gevent import monkey

    async def main() -> None:
        server = await polyloop.listen_tcp(polyloop.Protocol)
        await polyloop.connect_tcp(polyloop.Protocol, "localhost", server.port)
        await polyloop.run_in_thread(len, "x")

    run(main)
    assert not monkey.is_anything_patched()
    assert socket.socket.__module__ == "socket"


# --- flow control ---


class SlowReader(polyloop.Protocol):
    def connection_made(self, transport: polyloop.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        self.received = 0
        transport.pause_reading()  # reads nothing until told: the kernel fills up

    def data_received(self, data: bytes) -> None:
        self.received += len(data)


class PoliteWriter(polyloop.Protocol):
    def __init__(self, backend: polyloop.Backend) -> None:
        self.paused = False
        self.pauses = 0
        self.resumed = backend.create_future()

    def connection_made(self, transport: polyloop.Transport) -> None:  # type: ignore[override]
        self.transport = transport

    def pause_writing(self) -> None:
        self.paused = True
        self.pauses += 1

    def resume_writing(self) -> None:
        self.paused = False
        if not self.resumed.done():
            self.resumed.set_result(None)


def test_slow_reader_keeps_the_writers_buffer_bounded() -> None:
    """A writer that honours pause_writing queues at most high-water + one chunk."""
    chunk = b"x" * 16384
    high = 64 * 1024

    async def main() -> tuple[int, int, int, int]:
        backend = polyloop.current_backend()
        readers: list[SlowReader] = []

        def make_reader() -> SlowReader:
            readers.append(SlowReader())
            return readers[-1]

        server = await polyloop.listen_tcp(make_reader)
        transport, writer = await polyloop.connect_tcp(
            lambda: PoliteWriter(backend), "127.0.0.1", server.port
        )
        transport.set_write_buffer_limits(high)
        peak = written = 0
        # Keep writing whenever the transport lets us, for a while: memory must stay flat.
        for _ in range(300):
            while not writer.paused:
                transport.write(chunk)
                written += len(chunk)
                peak = max(peak, transport.get_write_buffer_size())
            await backend.sleep(0.001)
        assert writer.pauses >= 1
        # Now let the reader drain it all: the writer is told to resume, nothing is lost.
        while not readers:
            await backend.sleep(0.001)
        readers[0].transport.resume_reading()
        await writer.resumed
        transport.close()
        while readers[0].received < written:
            await backend.sleep(0.005)
        return peak, written, readers[0].received, transport.get_write_buffer_size()

    peak, written, received, left = run(main)
    assert peak <= high + 16384, f"the write buffer reached {peak} bytes"
    assert received == written
    assert left == 0
    # The kernel's buffers took what the writer could not queue: far less than 300
    # rounds of writing would have produced without backpressure.
    assert written < 300 * 16384


# --- UDP ---


def test_udp_60k_datagram_arrives_whole() -> None:
    payload = os.urandom(60 * 1024)

    async def main() -> bytes:
        backend = polyloop.current_backend()
        got = backend.create_future()

        class Receiver(polyloop.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                got.set_result(data)

        receiver, _ = await polyloop.open_udp(Receiver, local_addr=("127.0.0.1", 0))
        port = receiver.get_extra_info("sockname")[1]
        sender, _ = await polyloop.open_udp(
            polyloop.DatagramProtocol, remote_addr=("127.0.0.1", port)
        )
        sender.sendto(payload)
        data: bytes = await polyloop.wait_for(_await(got), 10)
        sender.close()
        receiver.close()
        return data

    assert run(main) == payload


async def _await(fut: Any) -> Any:
    return await fut


# --- TLS does not block the hub ---


def test_stalled_tls_handshake_does_not_block_other_connections() -> None:
    from polyloop_conformance.tls import material

    tls = material()

    class Echo(polyloop.Protocol):
        def connection_made(self, transport: polyloop.Transport) -> None:  # type: ignore[override]
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.transport.write(data)

    async def main() -> bytes:
        server = await polyloop.listen_tcp(Echo, ssl=tls.server_context())
        # A client that connects and never starts its handshake. A stdlib context
        # in gevent's StreamServer would now block the whole thread in do_handshake().
        stalled, _ = await polyloop.connect_tcp(polyloop.Protocol, "127.0.0.1", server.port)
        stream = await polyloop.wait_for(
            polyloop.open_tcp_stream(
                "127.0.0.1", server.port, ssl=tls.client_context(), server_hostname="localhost"
            ),
            10,
        )
        await stream.send(b"through TLS")
        data = await polyloop.wait_for(stream.receive_exactly(11), 10)
        await stream.aclose()
        stalled.close()
        return data

    assert run(main) == b"through TLS"


# --- tasks ---


def test_cancel_reaches_a_coroutine_parked_in_gevent_api() -> None:
    """gevent.sleep inside a coroutine parks its greenlet; cancel() still works."""

    async def main() -> list[str]:
        seen: list[str] = []

        async def child() -> None:
            try:
                gevent.sleep(30)  # gevent's own blocking API, not an await
            except BaseException as exc:
                seen.append(type(exc).__name__)
                raise

        task = polyloop.spawn(child())
        await polyloop.sleep(0.01)
        task.cancel()
        try:
            await task
        except polyloop.Cancelled:
            seen.append("awaited: Cancelled")
        return seen

    assert run(main) == ["CancelledError", "awaited: Cancelled"]


def test_await_foreign_awaitable_is_a_clear_error() -> None:
    class Foreign:  # yields what another framework's runner would understand
        def __await__(self) -> Any:
            yield "a foreign future"

    async def main() -> str:
        try:
            await Foreign()
        except TypeError as exc:
            return str(exc)
        return "no error"

    assert "cannot await" in run(main)


def test_run_inside_a_greenlet_parks_only_that_greenlet() -> None:
    ticks: list[int] = []

    def ticker() -> None:
        for i in range(5):
            ticks.append(i)
            gevent.sleep(0.005)

    async def main() -> str:
        await polyloop.sleep(0.05)
        return "done"

    other = gevent.spawn(ticker)
    assert gevent.spawn(run, main).get(timeout=10) == "done"
    other.join(timeout=10)
    assert ticks == [0, 1, 2, 3, 4]


# --- nothing left behind ---


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _live_greenlets() -> int:
    gc.collect()
    return sum(1 for g in gc.get_objects() if isinstance(g, greenlet.greenlet) and not g.dead)


def _os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts fds with /proc")
def test_run_leaves_no_fds_greenlets_or_threads() -> None:
    async def main() -> None:
        server = await polyloop.listen_tcp(polyloop.Protocol)
        for _ in range(3):
            await polyloop.connect_tcp(polyloop.Protocol, "127.0.0.1", server.port)
        listener = await polyloop.open_tcp_listener()
        polyloop.spawn(listener.serve(lambda s: s.receive()))
        stream = await polyloop.open_tcp_stream("127.0.0.1", listener.port)
        await stream.send(b"x")
        polyloop.spawn(polyloop.sleep(100))
        polyloop.spawn(_parked_in_gevent())
        polyloop.call_later(100, print, "never")
        await polyloop.run_in_thread(sum, [1])
        await polyloop.open_udp(polyloop.DatagramProtocol, local_addr=("127.0.0.1", 0))
        await polyloop.sleep(0.01)

    run(main)  # the hub and the imports, once
    before = (_fds(), _live_greenlets())
    for _ in range(3):
        run(main)
    assert (_fds(), _live_greenlets()) == before
    for _ in range(100):  # the pool's threads leave when they see its kill()
        if _os_threads() <= threading.active_count():
            break
        gevent.sleep(0.01)
    assert _os_threads() == threading.active_count()


async def _parked_in_gevent() -> None:
    gevent.sleep(100)
