"""Reliability under load: memory returns to its baseline after thousands of
connections, and closed connections are freed by reference counting.

Each server is ``polyloop serve echo`` in a process of its own; a plain-socket client in
this process opens, uses and closes connections one after another (bounded, loopback).
Memory is the server's resident set size (``/proc/PID/status``): a bound, not a timing.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
from _serve import Script, Served

import polyloop

INSTALLED = [b.name for b in polyloop.available_backends() if b.error is None]
EXAMPLE = "polyloop_conformance.example_backend:SelectorsBackend"
MIXED = [f"mixed:session={name}" for name in ("asyncio", "tornado", "twisted", "gevent")]

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _echo_server(backend: str, gc_off: bool) -> Served:
    boot = "import gc, sys; gc.disable(); " if gc_off else "import sys; "
    boot += "from polyloop._cli import main; sys.exit(main(sys.argv[1:]))"
    return Served("echo", backend, command=[sys.executable, "-c", boot])


def _wave(port: int, n: int, reset: bool = False) -> None:
    for i in range(n):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"x" * 100)
            got = b""
            while len(got) < 100:
                chunk = conn.recv(1000)
                assert chunk, "the echo server closed early"
                got += chunk
            if reset and i % 2:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")


@pytest.mark.parametrize("backend", [*INSTALLED, EXAMPLE])
def test_rss_returns_to_baseline_after_5000_connections(backend: str) -> None:
    """The issue's bound: within 5 MB of the starting RSS after 5,000 connections (half of
    them reset by the client), with the garbage collector left to itself."""
    with _echo_server(backend, gc_off=False) as server:
        _wave(server.port, 300)
        base = _rss_mb(server.pid)
        _wave(server.port, 5000, reset=True)
        grown = _rss_mb(server.pid) - base
    assert grown < 5, f"{backend}: RSS grew by {grown:.1f} MB over 5,000 connections"


# asyncio's own _SelectorSocketTransport keeps a bound method of itself (its read
# callback), so every closed connection is cyclic garbage there, polyloop or not
# (measured: 1.1 KB a connection with gc disabled, the same for a native asyncio echo).
FREED_BY_REFCOUNT = [b for b in INSTALLED if b != "asyncio"] + [EXAMPLE]


@pytest.mark.parametrize("backend", FREED_BY_REFCOUNT)
def test_closed_connections_are_freed_by_reference_counting(backend: str) -> None:
    """With the cycle collector off, 3,000 closed connections leave < 2 MB behind: no
    transport, protocol or read buffer is held in a reference cycle."""
    with _echo_server(backend, gc_off=True) as server:
        _wave(server.port, 300)
        base = _rss_mb(server.pid)
        _wave(server.port, 3000)
        grown = _rss_mb(server.pid) - base
    assert grown < 2, f"{backend}: {grown:.1f} MB of cyclic garbage after 3,000 connections"


async def _small_main() -> str:
    session = polyloop.current_backend()
    server = await session.listen_tcp(polyloop.Protocol, "127.0.0.1", 0)
    transport, _ = await session.connect_tcp(polyloop.Protocol, "127.0.0.1", server.port)
    await polyloop.sleep(0.001)
    task = polyloop.spawn(polyloop.sleep(0))
    await task
    transport.close()
    await server.aclose()
    return session.name


@pytest.mark.parametrize("first", INSTALLED)
def test_runs_of_every_backend_in_one_process_in_any_order(first: str) -> None:
    """A run ends cleanly whatever ran before it in the thread (a gevent run leaves the
    thread's hub behind; a later Twisted run once hung on it while ending)."""
    for second in INSTALLED:
        assert polyloop.run(_small_main, backend=first) == first
        assert polyloop.run(_small_main, backend=second) == second


@pytest.mark.parametrize("later", INSTALLED)
def test_a_future_outlives_its_run(later: str) -> None:
    """A future made in one run can be completed and awaited in a later run, on any
    backend (it once hung on Twisted and raised on asyncio and Tornado)."""

    async def make() -> polyloop.Future[str]:
        return polyloop.create_future()

    fut = polyloop.run(make, backend="asyncio")

    async def use() -> str:
        polyloop.call_later(0.001, fut.set_result, "done")
        return await polyloop.wait_for(fut, 10)

    assert polyloop.run(use, backend=later) == "done"


SIGTERM_SCRIPT = """
import sys, polyloop
async def main():
    print("ready", flush=True)
    try:
        await polyloop.sleep(3600)
    finally:
        await polyloop.sleep(0.01)
        print("cleaned up", flush=True)
polyloop.run(main, backend=sys.argv[1], handle_sigterm=True)
"""


@pytest.mark.parametrize("backend", INSTALLED)
def test_sigterm_runs_the_clean_up(backend: str) -> None:
    """polyloop.run(..., handle_sigterm=True): SIGTERM cancels main, its finally runs
    (awaiting too), and the process exits with 143 (128 + SIGTERM)."""
    import signal

    with Script(SIGTERM_SCRIPT, backend) as proc:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert out.strip() == "cleaned up", out + err
    assert proc.returncode == 143, (proc.returncode, err)


HUNG_CLEAN_UP_SCRIPT = """
import sys, polyloop
async def main():
    print("ready", flush=True)
    try:
        await polyloop.sleep(3600)
    finally:
        print("cleaning up", flush=True)
        with polyloop.CancelScope(shield=True):
            await polyloop.sleep(3600)  # a clean-up that hangs
polyloop.run(main, backend=sys.argv[1], handle_sigterm=True)
"""


@pytest.mark.parametrize("backend", INSTALLED)
def test_a_second_sigterm_ends_a_clean_up_that_hangs(backend: str) -> None:
    """The first SIGTERM cancels main; the second gets the handler that was there before
    (the default: the process ends), as a second Ctrl-C would, instead of being ignored."""
    import signal

    with Script(HUNG_CLEAN_UP_SCRIPT, backend) as proc:
        assert proc.stdout is not None
        proc.send_signal(signal.SIGTERM)
        assert proc.stdout.readline().strip() == "cleaning up"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        assert proc.returncode == -signal.SIGTERM, proc.returncode


BUSY_CLEAN_UP_SCRIPT = """
import sys, time, polyloop
def busy():  # the loop is in a callback nearly all the time
    time.sleep(0.02)
    polyloop.call_soon(busy)
async def main():
    print("ready", flush=True)
    try:
        await polyloop.sleep(3600)
    finally:
        print("cleaning up", flush=True)
        busy()
        with polyloop.CancelScope(shield=True):
            await polyloop.sleep(3600)  # a clean-up that hangs
polyloop.run(main, backend=sys.argv[1])
"""


@pytest.mark.parametrize("backend", [*INSTALLED, *MIXED, EXAMPLE])
def test_a_second_ctrl_c_in_a_callback_ends_a_clean_up_that_hangs(backend: str) -> None:
    """The first Ctrl-C cancels main; the second, arriving while a callback runs (one
    busy callback after another), raises KeyboardInterrupt there, and run() lets it out
    at once: the process ends as an uncaught Ctrl-C ends it (-SIGINT). Twisted's and the
    example backend's escape paths, and mixed mode's, took it for a first one (cancel
    main, wait for its clean-up): the process hung."""
    import signal

    with Script(BUSY_CLEAN_UP_SCRIPT, backend) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        proc.send_signal(signal.SIGINT)
        assert proc.stdout.readline().strip() == "cleaning up"
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{backend}: a second Ctrl-C did not end run()") from None
        assert proc.returncode == -signal.SIGINT, (proc.returncode, proc.stderr.read()[-2000:])


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("backend", INSTALLED)
def test_serve_winds_down_gracefully(backend: str, signame: str) -> None:
    """``polyloop serve`` on SIGTERM/SIGINT: stops accepting, lets an open connection
    finish its exchange within ``--grace``, closes the idle one cleanly (the client reads
    EOF, not a reset), and exits 0."""
    import signal
    import time

    with Served("echo-stream", backend, "--grace", "1") as server:
        port = server.port
        busy = socket.create_connection(("127.0.0.1", port), timeout=10)
        idle = socket.create_connection(("127.0.0.1", port), timeout=10)
        with busy, idle:
            busy.sendall(b"before")
            assert busy.recv(100) == b"before"
            started = time.monotonic()
            server.proc.send_signal(getattr(signal, signame))
            time.sleep(0.3)  # the server has stopped accepting, and is in its grace
            assert server.proc.poll() is None, "the server exited before its grace"
            with pytest.raises(ConnectionRefusedError):  # while it still runs
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
            busy.sendall(b"during the grace")
            assert busy.recv(100) == b"during the grace", "an open connection was cut short"
            busy.close()
            try:
                assert idle.recv(100) == b"", "the idle client read data, not EOF"
            except ConnectionResetError:
                raise AssertionError("the idle client was reset, not closed cleanly") from None
            assert time.monotonic() - started < 10
        server.proc.wait(20)
        assert server.proc.returncode == 0, (server.proc.returncode, server.errors())


WAVE_CLIENT = 5000


@pytest.mark.parametrize("backend", [*INSTALLED, EXAMPLE])
def test_fds_timers_tasks_return_to_baseline_after_a_wave_with_resets(backend: str) -> None:
    """5,000 connections to a stream server (a task per connection, a timeout each), half
    of them reset by the client: afterwards the process has the fds it had, and the
    session no task, timer or transport more than before."""

    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    async def handler(stream: polyloop.Stream) -> None:
        try:
            with polyloop.move_on_after(30):  # a timer per connection
                while data := await stream.receive():
                    await stream.send(data)
        finally:
            await stream.aclose()

    async def main() -> list[tuple[int, int, int, int]]:
        session = polyloop.current_backend()
        listener = await polyloop.open_tcp_listener("127.0.0.1", 0)
        serving = polyloop.spawn(listener.serve(handler))

        def counts() -> tuple[int, int, int, int]:
            return (
                fds(),
                len(session.resources.tasks),
                len(session.resources.timers),
                len(session.resources.transports),
            )

        await session.run_in_thread(_wave, listener.port, 50)
        await session.sleep(0.2)
        before = counts()
        await session.run_in_thread(_wave, listener.port, WAVE_CLIENT, True)
        for _ in range(200):  # the server sees the last closes and resets
            if counts() == before:
                break
            await session.sleep(0.02)
        after = counts()
        await listener.aclose()
        await serving
        return [before, after]

    before, after = polyloop.run(main, backend=backend)
    names = ("fds", "tasks", "timers", "transports")
    grown = {n: (b, a) for n, b, a in zip(names, before, after, strict=True) if a > b}
    assert not grown, f"{backend}: after {WAVE_CLIENT} connections: {grown} (before, after)"


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("backend", ["mixed"])
def test_serve_winds_down_gracefully_in_mixed_mode(backend: str, signame: str) -> None:
    """The same grace with ``--backend mixed`` (docs/errors.md promises it there too)."""
    test_serve_winds_down_gracefully(backend, signame)


@pytest.mark.parametrize("first", ["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("backend", [*INSTALLED, "mixed"])
def test_a_second_signal_cuts_the_grace_short(backend: str, first: str) -> None:
    """``polyloop serve --grace 30`` with a connection held open: the first signal starts
    the grace, a second one (of either kind) ends it; the held client then reads EOF (a
    clean close, as at the grace's end) and the server exits 0, long before 30 s."""
    import signal

    second = {"SIGTERM": "SIGINT", "SIGINT": "SIGTERM"}[first]
    with Served("echo-stream", backend, "--grace", "30") as server:
        held = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        with held:
            held.sendall(b"before")
            assert held.recv(100) == b"before"
            server.proc.send_signal(getattr(signal, first))
            # The server stops accepting once it has seen the first signal.
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
                except ConnectionRefusedError:
                    break
                time.sleep(0.05)
            else:
                raise AssertionError(f"still accepting after {first}: {server.errors()}")
            assert server.proc.poll() is None, "the server exited before its grace"
            server.proc.send_signal(getattr(signal, second))
            try:
                server.proc.wait(5)
            except subprocess.TimeoutExpired:
                raise AssertionError(
                    f"the second signal ({second}) did not end --grace 30 within 5 s"
                ) from None
            held.settimeout(5)
            assert held.recv(100) == b"", "the held client read data, not EOF"
        assert server.proc.returncode == 0, (server.proc.returncode, server.errors())


FD_LIMIT = 64  # the server's RLIMIT_NOFILE: a few dozen connections exhaust it
HOLD = 2.5  # seconds the clients hold every descriptor the server could have


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("backend", [*INSTALLED, *MIXED])
def test_out_of_descriptors_pauses_accepting(backend: str) -> None:
    """``polyloop serve echo`` under ``RLIMIT_NOFILE`` 64, with 150 clients connecting:
    accept() fails with EMFILE, and the server pauses accepting for a while and logs one
    line per pause (asyncio's rule: 1 s), on every backend -- no traceback per failed
    accept(), no loop spinning on a listening socket that stays readable (it used no more
    than a third of the CPU time that passed). When the clients go, it serves again."""
    boot = (
        "import resource, sys; "
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({FD_LIMIT}, {FD_LIMIT})); "
        "from polyloop._cli import main; sys.exit(main(sys.argv[1:]))"
    )
    with Served("echo", backend, command=[sys.executable, "-c", boot]) as server:
        address = ("127.0.0.1", server.port)
        clients = []
        try:
            before = _cpu_seconds(server.pid)
            for _ in range(150):
                try:
                    clients.append(socket.create_connection(address, timeout=2))
                except OSError:
                    break  # the backlog is full: enough
            time.sleep(HOLD)  # every descriptor taken, more clients queued
            used = _cpu_seconds(server.pid) - before
            server.stderr.seek(0)
            logged = server.stderr.read().decode(errors="replace")
        finally:
            for client in clients:
                client.close()
        assert len(clients) > FD_LIMIT, f"only {len(clients)} clients connected"
        pauses = logged.count("out of system resource")
        assert 1 <= pauses <= 2 * HOLD + 2, (
            f"{pauses} 'accept() out of system resource' lines in {HOLD} s of EMFILE (rule:"
            f" one per pause of 1 s); stderr ends: {logged[-1500:]}"
        )
        assert used < HOLD / 3, (
            f"the server used {used:.2f} s of CPU in {HOLD} s out of descriptors: it spins"
        )
        # Descriptors are back: the server accepts again (after its pause).
        with socket.create_connection(address, timeout=10) as again:
            again.sendall(b"again")
            assert again.recv(100) == b"again"
        assert server.proc.poll() is None, server.errors()


def test_out_of_descriptors_on_uvloop() -> None:
    """What ``asyncio:loop=uvloop`` does instead of pausing (docs/errors.md says why it
    cannot pause: libuv accepts in C). Under ``RLIMIT_NOFILE`` 64 with 150 clients, libuv's
    ``uv__emfile_trick`` accepts and at once closes every client queued beyond the limit,
    and tells uvloop nothing: no log line, no spinning, the queued clients read the end
    (EOF or a reset) instead of waiting in the backlog, and the server serves again once
    descriptors come back. If this test fails, uvloop changed: revisit docs/errors.md."""
    pytest.importorskip("uvloop", reason="polyloop[uvloop]")
    boot = (
        "import resource, sys; "
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({FD_LIMIT}, {FD_LIMIT})); "
        "from polyloop._cli import main; sys.exit(main(sys.argv[1:]))"
    )
    command = [sys.executable, "-c", boot]
    with Served("echo", "asyncio:loop=uvloop", command=command) as server:
        address = ("127.0.0.1", server.port)
        clients = []
        try:
            before = _cpu_seconds(server.pid)
            for _ in range(150):
                try:
                    clients.append(socket.create_connection(address, timeout=2))
                except OSError:
                    break
            time.sleep(HOLD)
            used = _cpu_seconds(server.pid) - before
            echoed = dropped = 0
            for client in clients:
                client.settimeout(1)
                try:
                    client.sendall(b"hi")
                    got = client.recv(10)
                except TimeoutError:
                    continue  # accepted later, or still queued
                except OSError:
                    dropped += 1  # reset
                    continue
                if got == b"hi":
                    echoed += 1
                elif got == b"":
                    dropped += 1
            server.stderr.seek(0)
            logged = server.stderr.read().decode(errors="replace")
        finally:
            for client in clients:
                client.close()
        assert len(clients) > FD_LIMIT, f"only {len(clients)} clients connected"
        assert 0 < echoed < FD_LIMIT, f"{echoed} of {len(clients)} clients were served"
        assert dropped >= len(clients) - FD_LIMIT, (
            f"only {dropped} of the {len(clients)} clients were closed by the server:"
            " libuv no longer drops the clients it cannot take (see docs/errors.md)"
        )
        assert "out of system resource" not in logged and "Traceback" not in logged, logged
        assert used < HOLD / 3, f"the server used {used:.2f} s of CPU in {HOLD} s: it spins"
        # The clients just closed free their descriptors once the server has read their
        # ends; until then libuv may still drop a newcomer (a reset): try again, bounded.
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(address, timeout=10) as again:
                    again.sendall(b"again")
                    got = again.recv(100)
            except ConnectionResetError:
                got = b""
            if got or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert got == b"again", "the server did not serve again once descriptors came back"
        assert server.proc.poll() is None, server.errors()


EXIT_SCRIPT = """
import sys, polyloop
print("ready", flush=True)

def exit_3():
    sys.exit(3)

async def main():
    polyloop.current_backend().on_close(lambda _: print("session ended", flush=True))
    try:
        polyloop.call_later(0.01, exit_3)
        await polyloop.sleep(10)
        print("sleep returned", flush=True)
    finally:
        print("finally", flush=True)

polyloop.run(main, backend=sys.argv[1])
print("run returned", flush=True)
"""


@pytest.mark.parametrize("backend", [*INSTALLED, *MIXED])
def test_sys_exit_in_a_callback_is_the_exit_code(backend: str) -> None:
    """``sys.exit(3)`` in a ``call_later`` callback: main is cancelled and cleans up, the
    session ends, and ``polyloop.run`` raises that SystemExit -- the process exits 3, as
    with asyncio (Twisted's reactor used to log it and go on: exit 0 after 10 s)."""
    with Script(EXIT_SCRIPT, backend) as proc:
        proc.wait(30)
        assert proc.stdout is not None and proc.stderr is not None
        lines = proc.stdout.read().split()
        assert proc.returncode == 3, (proc.returncode, lines, proc.stderr.read()[-2000:])
        assert " ".join(lines) == "finally session ended", lines


def test_record_counter_finds_every_cut() -> None:
    """``RecordCounter`` (how every backend tells a TLS record cut in the middle from a
    close between records, docs/tls.md) against the plain definition, on random record
    streams cut anywhere -- in a header, in a body, between records -- and fed in random
    pieces, down to one byte."""
    import random

    from polyloop.lowlevel import RecordCounter

    rng = random.Random(24)
    for _ in range(2000):
        stream = bytearray()
        ends = {0}  # the offsets where a record ends
        for _ in range(rng.randint(0, 6)):
            size = rng.choice([0, 1, 5, 16406, rng.randint(0, 65535)])
            stream += bytes([23, 3, 3]) + size.to_bytes(2, "big") + bytes(size)
            ends.add(len(stream))
        cut = rng.randint(0, len(stream))
        counter, fed = RecordCounter(), 0
        view = memoryview(stream)[:cut]
        while fed < cut:
            piece = rng.choice([1, 2, 3, 4, 5, 6, 100, 4096, 65536])
            counter.feed(view[fed : fed + piece])
            fed = min(cut, fed + piece)
        assert counter.mid_record() == (cut not in ends), (len(stream), sorted(ends), cut)
