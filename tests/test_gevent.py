"""The gevent backend: what the conformance suite cannot see from the outside.

Patched and unpatched processes, no monkey patching by the library, bounded memory under
a slow reader, whole 60 KB datagrams, a TLS handshake that does not block the hub,
cancellation of a coroutine parked in gevent's own API, a protocol whose
``connection_made`` raises, KeyboardInterrupt, nothing left after ``run``, and host mode:
polyloop code called from a gevent application's own greenlets (``polyloop_gevent.wait``
and ``spawn``), unpatched here and patched in a subprocess.
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

gevent = pytest.importorskip("gevent", reason="the gevent backend needs polyloop[gevent]")

import greenlet  # noqa: E402

import polyloop  # noqa: E402
import polyloop_gevent  # noqa: E402

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
    checks = [c for c in pc.CHECKS.values() if not c.mixed_only]  # bridges: --mixed
    results = [pc.run_check(c, make, "gevent") for c in checks]
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
    def __init__(self, backend: polyloop.Session) -> None:
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

    # OS threads that are not Python's (pytest-xdist's worker has execnet's, started
    # with _thread) are there before and after alike.
    foreign = _os_threads() - threading.active_count()
    run(main)  # the hub and the imports, once
    before = (_fds(), _live_greenlets())
    for _ in range(3):
        run(main)
    assert (_fds(), _live_greenlets()) == before
    for _ in range(100):  # the pool's threads leave when they see its kill()
        if _os_threads() - foreign <= threading.active_count():
            break
        gevent.sleep(0.01)
    assert _os_threads() - foreign == threading.active_count()


async def _parked_in_gevent() -> None:
    gevent.sleep(100)


# --- protocols on greenlets ---


def test_data_received_may_call_gevents_blocking_api() -> None:
    """Reading callbacks run in the connection's greenlet, not in a hub callback (where
    gevent.sleep raises BlockingSwitchOutError), so a gevent-style protocol may block."""

    class SlowEcho(polyloop.Protocol):
        def connection_made(self, transport: polyloop.Transport) -> None:  # type: ignore[override]
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            gevent.sleep(0.01)  # parks this connection's greenlet only
            self.transport.write(data.upper())

    async def main() -> bytes:
        server = await polyloop.listen_tcp(SlowEcho)
        streams = [await polyloop.open_tcp_stream("127.0.0.1", server.port) for _ in range(3)]
        for stream in streams:
            await stream.send(b"slow")
        got = [await polyloop.wait_for(s.receive_exactly(4), 10) for s in streams]
        for stream in streams:
            await stream.aclose()
        await server.aclose()
        return b" ".join(got)

    assert run(main) == b"SLOW SLOW SLOW"


# --- errors on the way in and out ---


class MadeRaises(polyloop.Protocol):
    def connection_made(self, transport: polyloop.Transport) -> None:  # type: ignore[override]
        raise LookupError("from connection_made")


def test_connection_made_raising_on_the_client_aborts_and_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> str:
        class Server(polyloop.Protocol):
            def connection_lost(self, exc: BaseException | None) -> None:
                lost.set_result(exc)

        lost = polyloop.create_future()
        server = await polyloop.listen_tcp(Server)
        try:
            await polyloop.connect_tcp(MadeRaises, "127.0.0.1", server.port)
        except LookupError as exc:
            raised = str(exc)
        peer = await polyloop.wait_for(_await(lost), 10)  # the peer sees the abort
        assert isinstance(peer, ConnectionResetError), peer
        await server.aclose()
        return raised

    assert run(main) == "from connection_made"
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text


def test_connection_made_raising_on_the_server_drops_that_connection_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        server = await polyloop.listen_tcp(MadeRaises)
        for _ in range(2):  # the server goes on accepting
            stream = await polyloop.open_tcp_stream("127.0.0.1", server.port)
            with pytest.raises(ConnectionResetError):
                await polyloop.wait_for(stream.receive(), 10)
            await stream.aclose()
        await server.aclose()

    run(main)
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 2, caplog.text
    assert all("connection_made raised" in r.getMessage() for r in errors), caplog.text
    assert all(isinstance(r.exc_info[1], LookupError) for r in errors if r.exc_info)


def test_gevent_timeout_inside_a_coroutine() -> None:
    """A gevent.Timeout that fires while the coroutine awaits a polyloop future is raised
    at that await; one that escapes fails the task with TimeoutError."""

    async def main() -> list[str]:
        seen = []
        try:
            with gevent.Timeout(0.01):
                await polyloop.sleep(30)
        except gevent.Timeout:
            seen.append("caught at the await")

        async def child() -> None:
            with gevent.Timeout(0.01):
                await polyloop.sleep(30)

        try:
            await polyloop.spawn(child())
        except TimeoutError:
            seen.append("task: TimeoutError")
        return seen

    assert run(main) == ["caught at the await", "task: TimeoutError"]


def test_tasks_that_ignore_cancellation_never_see_greenlet_exit() -> None:
    """At the end of run, a task that swallows Cancelled is killed: GeneratorExit where it
    waits, as coro.close() gives, also when it waits in gevent's own API."""
    seen: list[tuple[str, str]] = []

    async def stubborn(where: str) -> None:
        for attempt in ("first", "then"):
            try:
                if where == "gevent":
                    gevent.sleep(30)
                else:
                    await polyloop.sleep(30)
            except BaseException as exc:
                seen.append((f"{where}: {attempt}", type(exc).__name__))
                if attempt == "then":
                    raise

    async def main() -> None:
        polyloop.spawn(stubborn("gevent"))
        polyloop.spawn(stubborn("await"))
        await polyloop.sleep(0.01)

    run(main)
    assert sorted(seen) == [
        ("await: first", "CancelledError"),
        ("await: then", "GeneratorExit"),
        ("gevent: first", "CancelledError"),
        ("gevent: then", "GeneratorExit"),
    ]


def test_keyboard_interrupt_cancels_main_then_propagates() -> None:
    """As asyncio.Runner: main is cancelled and cleans up, then run() re-raises."""
    script = textwrap.dedent(
        """
        import polyloop
        seen = []

        async def main():
            def interrupt():
                raise KeyboardInterrupt  # gevent's hub throws it into the main greenlet
            polyloop.current_backend().hub.loop.run_callback(interrupt)
            try:
                await polyloop.sleep(30)
            except polyloop.Cancelled:
                seen.append("cancelled")
                await polyloop.sleep(0.01)  # clean-up may still await
                seen.append("cleaned up")
                raise

        try:
            polyloop.run(main, backend="gevent")
        except KeyboardInterrupt:
            seen.append("KeyboardInterrupt")
        print(seen)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "['cancelled', 'cleaned up', 'KeyboardInterrupt']"


def test_run_from_the_hub_is_refused() -> None:
    async def main() -> None:
        pass

    refused: list[BaseException] = []

    def in_the_hub() -> None:
        try:
            run(main)
        except RuntimeError as exc:
            refused.append(exc)

    gevent.get_hub().loop.run_callback(in_the_hub)
    gevent.sleep(0.01)
    assert len(refused) == 1 and "hub" in str(refused[0])


# --- host mode: polyloop code called from a gevent application's greenlets ---
#
# Each scenario is a plain function, so that the patched subprocess runs the very same
# code: ``test_host_mode_in_a_patched_process`` imports this module after patch_all().


def host_many_greenlets(n: int = 20) -> None:
    """n plain greenlets call a coroutine through wait() at once: a TCP echo round trip
    to a listener served by a spawn()'d greenlet, and a sleep. One session for all."""
    ready = gevent.event.AsyncResult()

    async def serve() -> None:
        listener = await polyloop.open_tcp_listener("127.0.0.1", 0)
        ready.set(listener.port)

        async def handler(stream: polyloop.Stream) -> None:
            while data := await stream.receive():
                await stream.send(data)

        await listener.serve(handler)

    server = polyloop_gevent.spawn(serve())
    assert isinstance(server, gevent.Greenlet)
    port = ready.get(timeout=10)
    inside = 0
    all_inside = gevent.event.Event()

    async def one(i: int) -> tuple[bytes, polyloop.Session]:
        nonlocal inside
        stream = await polyloop.open_tcp_stream("127.0.0.1", port)
        message = b"greenlet %d" % i
        await stream.send(message)
        data = await stream.receive_exactly(len(message))
        inside += 1
        if inside == n:
            all_inside.set()
        while not all_inside.is_set():  # every caller is inside wait() at once
            await polyloop.sleep(0.001)
        await stream.aclose()
        return data, polyloop.current_backend()

    def client(i: int) -> tuple[bytes, polyloop.Session, polyloop.Session]:
        data, inner = polyloop_gevent.wait(one(i))
        return data, inner, polyloop.current_backend()

    greenlets = [gevent.spawn(client, i) for i in range(n)]
    gevent.joinall(greenlets, timeout=30, raise_error=True)
    assert all(g.successful() for g in greenlets), [g.exception for g in greenlets]
    assert [g.value[0] for g in greenlets] == [b"greenlet %d" % i for i in range(n)]
    session = polyloop.current_backend()
    assert {s for g in greenlets for s in g.value[1:]} == {session}
    assert session.name == "gevent" and not session.owned
    server.kill(timeout=10)  # the listener's task is cancelled and unwinds
    assert server.dead and isinstance(server.value, greenlet.GreenletExit)
    assert (
        polyloop_gevent.spawn(
            polyloop.sleep(
                0,
            )
        ).get(timeout=10)
        is None
    )


def host_gevent_timeout_cancels() -> None:
    """A gevent.Timeout around wait(): the coroutine sees Cancelled, the greenlet the Timeout."""
    seen: list[str] = []

    async def slow() -> None:
        try:
            await polyloop.sleep(30)
        except polyloop.Cancelled:
            seen.append("coroutine: Cancelled")
            await polyloop.sleep(0)  # it may unwind with awaits
            raise

    timeout = gevent.Timeout(0.01)
    try:
        with timeout:
            polyloop_gevent.wait(slow())
    except gevent.Timeout as exc:
        assert exc is timeout
        seen.append("greenlet: Timeout")
    assert seen == ["coroutine: Cancelled", "greenlet: Timeout"]


def host_kill_cancels() -> None:
    """Killing a greenlet in wait() cancels the coroutine; so does killing a spawn()'d
    greenlet before it ever ran."""
    seen: list[str] = []

    async def forever(name: str) -> None:
        try:
            await polyloop.sleep(30)
        except polyloop.Cancelled:
            seen.append(name)
            raise

    waiting = gevent.spawn(polyloop_gevent.wait, forever("waiting"))
    gevent.sleep(0.01)
    waiting.kill(timeout=10)
    polyloop_gevent.spawn(forever("never ran")).kill(timeout=10)
    polyloop_gevent.wait(polyloop.sleep(0.01))
    assert seen == ["waiting", "never ran"]


def host_gevent_sleep_cancelled() -> None:
    """A coroutine blocked in gevent.sleep inside a polyloop task is cancelled at once."""
    seen: list[str] = []

    async def parked() -> None:
        try:
            gevent.sleep(3600)
        except polyloop.Cancelled:
            seen.append("parked: Cancelled")
            raise

    async def main() -> None:
        task = polyloop.spawn(parked())
        await polyloop.sleep(0.01)
        task.cancel()
        with pytest.raises(polyloop.Cancelled):
            await task

    with gevent.Timeout(10):  # far less than the sleep: a failure does not hang
        polyloop_gevent.wait(main())
    assert seen == ["parked: Cancelled"]


def host_aclose_then_new_session() -> None:
    """After wait(session.aclose()) the hub runs gevent code on; the next call gets a new
    session."""
    session = polyloop_gevent.wait(_current())
    polyloop_gevent.wait(session.aclose())
    assert session.closed
    ticks = gevent.spawn(lambda: [gevent.sleep(0.001) for _ in range(3)] and "ticked")
    assert ticks.get(timeout=10) == "ticked"
    again = polyloop_gevent.wait(_current())
    assert again is not session and not again.closed and again is polyloop.current_backend()


async def _current() -> polyloop.Session:
    await polyloop.sleep(0)
    return polyloop.current_backend()


def host_refused_on_the_hub() -> None:
    """wait() and spawn() from the hub greenlet raise RuntimeError (they would block it)."""
    refused: list[str] = []

    def in_the_hub() -> None:
        for entry in (polyloop_gevent.wait, polyloop_gevent.spawn):
            try:
                entry(polyloop.sleep(0))
            except RuntimeError:
                refused.append(entry.__name__)

    gevent.get_hub().loop.run_callback(in_the_hub)
    gevent.sleep(0.01)
    assert refused == ["wait", "spawn"]


def test_an_idle_borrowed_session_lets_the_hub_end() -> None:
    """A borrowed session keeps the hub's loop alive only while it has tasks: afterwards
    the application's own gevent.wait() ends as if polyloop were not there."""
    script = textwrap.dedent(
        """
        import gevent, polyloop, polyloop_gevent
        session = polyloop_gevent.wait(polyloop.sleep(0.01)) or polyloop.current_backend()
        assert not session.closed
        print(gevent.wait(timeout=10))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "True", "the idle session kept the hub's loop running"


def test_a_destroyed_hub_ends_its_session(hub_session: None) -> None:
    """gevent has no shutdown hook: a session whose hub was destroyed (another thread's,
    here) is found out and ended when the next session is made."""
    found: list[polyloop.Session] = []

    def thread_main() -> None:
        found.append(polyloop_gevent.wait(_current()))
        gevent.get_hub().destroy(destroy_loop=True)

    thread = threading.Thread(target=thread_main)
    thread.start()
    thread.join(10)
    assert len(found) == 1 and not found[0].closed
    polyloop_gevent.wait(polyloop.current_backend().aclose())
    polyloop_gevent.wait(_current())  # a new session here: the dead one is ended
    assert found[0].closed


HOST_SCENARIOS = [
    host_many_greenlets,
    host_gevent_timeout_cancels,
    host_kill_cancels,
    host_gevent_sleep_cancelled,
    host_aclose_then_new_session,
    host_refused_on_the_hub,
]


@pytest.fixture
def hub_session() -> Any:
    """Each host-mode test ends the hub's session, as the application would."""
    yield
    polyloop_gevent.wait(polyloop.current_backend().aclose())


@pytest.mark.parametrize("scenario", HOST_SCENARIOS, ids=lambda f: f.__name__)
def test_host_mode(scenario: Any, hub_session: None) -> None:
    scenario()


def test_host_mode_in_a_patched_process() -> None:
    script = textwrap.dedent(
        f"""
        from gevent import monkey
        monkey.patch_all()
        import sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        import polyloop, polyloop_gevent, test_gevent
        for scenario in test_gevent.HOST_SCENARIOS:
            scenario()
            polyloop_gevent.wait(polyloop.current_backend().aclose())
        assert monkey.is_module_patched("socket")
        print("ok")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=110
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "ok"


BORROWED_TIMER = """
import gevent, gevent.event
import polyloop_gevent

session = polyloop_gevent.GeventBackend().attach(gevent.get_hub())
done = gevent.event.Event()
# A timer callback of a borrowed session with no task asks for a call through
# call_soon_threadsafe; nothing else keeps the hub running meanwhile.
session.call_later(0.01, lambda: session.call_soon_threadsafe(done.set))
print(done.wait(), flush=True)  # no timeout: gevent raises LoopExit if the hub runs dry
polyloop_gevent.wait(session.aclose())
print(session.closed, flush=True)
"""


def test_borrowed_hub_runs_a_threadsafe_call_made_from_a_timer() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", BORROWED_TIMER], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["True", "True"], proc.stdout + proc.stderr
