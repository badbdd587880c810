"""Child processes and pipes: ``subprocess_exec``/``subprocess_shell``, ``open_process``,
``run_process``, ``connect_read_pipe``/``connect_write_pipe``.

Covers exit codes and ``-signum`` for a child killed by a signal; the order of the
``SubprocessProtocol`` calls (asyncio's: ``connection_made`` first, one
``pipe_connection_lost`` per pipe, ``process_exited`` once, ``connection_lost`` last);
EOF on stdin reaching the child; 10 MB through ``cat`` with flow control and nothing
lost; a cancelled ``wait()`` killing and reaping the child; ``FileNotFoundError`` for a
missing program; a child that closes its stdout early; ``env`` and ``cwd``; no zombie
and no fd left behind; the pipe transports on their own (category ``pipes``); and
``open_signal_receiver`` (category ``signals``).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
from typing import Any

import polyloop

from .._registry import check
from ._util import bounded, temp_dir

#: Bytes through ``cat`` in the large-transfer checks.
BIG = 10 * 1024 * 1024


class Child(polyloop.SubprocessProtocol):
    """Records every call of a subprocess protocol, in order."""

    def __init__(self, session: polyloop.Session) -> None:
        self.session = session
        self.events: list[Any] = []
        self.out = bytearray()
        self.err = bytearray()
        self.transport: Any = None
        self.lost = session.create_future()
        self.exited = session.create_future()
        self.paused = 0
        self.resumed: polyloop.Future[None] | None = None
        self._waiters: list[polyloop.Future[None]] = []

    async def until(self, cond: Any) -> None:
        """Wait until ``cond()`` is true, re-tested at each call of the protocol."""
        while not cond():
            waiter = self.session.create_future()
            self._waiters.append(waiter)
            await waiter

    def _notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.events.append("made")

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        (self.out if fd == 1 else self.err).extend(data)

    def pipe_connection_lost(self, fd: int, exc: BaseException | None) -> None:
        self.events.append(("pipe_lost", fd, exc))
        self._notify()

    def process_exited(self) -> None:
        self.events.append(("exited", self.transport.get_returncode()))
        if not self.exited.done():
            self.exited.set_result(None)

    def pause_writing(self) -> None:
        self.paused += 1
        self.resumed = self.session.create_future()

    def resume_writing(self) -> None:
        if self.resumed is not None and not self.resumed.done():
            self.resumed.set_result(None)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.events.append(("lost", exc))
        if not self.lost.done():
            self.lost.set_result(None)
        self._notify()


async def _run(session: polyloop.Session, *argv: str, **kwargs: Any) -> Child:
    _, child = await session.subprocess_exec(lambda: Child(session), *argv, **kwargs)
    return child


async def _finish(session: polyloop.Session, child: Child, what: str) -> None:
    await bounded(session, child.lost, 10, f"connection_lost of {what} never came")


def _reaped(pid: int) -> bool:
    """True if ``pid`` is no child of this process any more (reaped), False if it is one
    still (running, or a zombie)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def _zombies() -> list[int]:
    """This process's children in state Z."""
    found = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                pids = f.read().split()
        except OSError:
            continue
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if state == "Z":
                found.append(int(pid))
    return found


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _check_order(child: Child, what: str, pipes: tuple[int, ...] = (0, 1, 2)) -> None:
    ev = child.events
    assert ev and ev[0] == "made", f"{what}: connection_made is not the first call: {ev}"
    assert ev[-1] == ("lost", None), f"{what}: connection_lost(None) is not the last: {ev}"
    exits = [e for e in ev if isinstance(e, tuple) and e[0] == "exited"]
    assert len(exits) == 1, f"{what}: process_exited came {len(exits)} times: {ev}"
    for fd in pipes:
        n = sum(1 for e in ev if isinstance(e, tuple) and e[:2] == ("pipe_lost", fd))
        assert n == 1, f"{what}: pipe_connection_lost({fd}) came {n} times, not once: {ev}"


@check("processes", clauses=["process.returncode", "process.callback_order"])
async def check_exit_codes(session: polyloop.Session) -> None:
    """The child's exit status is get_returncode(), 0 to 255, the same from exec and shell."""
    for code in (0, 1, 3, 255):
        child = await _run(session, sys.executable, "-c", f"raise SystemExit({code})")
        await _finish(session, child, f"a child exiting {code}")
        got = child.transport.get_returncode()
        assert got == code, f"a child that exits {code} reports get_returncode() == {got!r}"
        _check_order(child, f"exit {code}")
        _, shell = await session.subprocess_shell(lambda: Child(session), f"exit {code}")
        await _finish(session, shell, f"a shell exiting {code}")
        got = shell.transport.get_returncode()
        assert got == code, f"subprocess_shell('exit {code}') reports {got!r}"


@check("processes", clauses=["process.killed_by_signal"])
async def check_killed_by_signal(session: polyloop.Session) -> None:
    """A child killed by signal N reports -N (SIGKILL, SIGTERM, and one sent by send_signal)."""
    for how, signum in (("kill", signal.SIGKILL), ("terminate", signal.SIGTERM)):
        child = await _run(session, "sleep", "30")
        assert child.transport.get_returncode() is None, "a running child has a returncode"
        getattr(child.transport, how)()
        await _finish(session, child, f"a child after {how}()")
        got = child.transport.get_returncode()
        assert got == -signum, f"a child after {how}() reports {got!r}, not {-signum} (-signum)"
        assert _reaped(child.transport.get_pid()), f"the child is not reaped after {how}()"
    child = await _run(session, "sleep", "30")
    child.transport.send_signal(signal.SIGUSR1)
    await _finish(session, child, "a child after send_signal(SIGUSR1)")
    got = child.transport.get_returncode()
    assert got == -signal.SIGUSR1, f"send_signal(SIGUSR1) gives {got!r}, not {-signal.SIGUSR1}"
    try:
        child.transport.send_signal(signal.SIGTERM)
    except ProcessLookupError:
        pass
    else:
        raise AssertionError(
            "send_signal() after connection_lost did not raise ProcessLookupError"
        )


@check("processes", clauses=["process.callback_order"])
async def check_callback_order(session: polyloop.Session) -> None:
    """connection_made first (before subprocess_exec returns), one pipe_connection_lost per
    pipe, process_exited once, connection_lost(None) last, after both."""
    child = await _run(session, sys.executable, "-c", "import sys; print('x'); sys.exit(2)")
    assert child.events == ["made"], (
        f"when subprocess_exec returned the protocol had seen {child.events}, not"
        " ['made'] (connection_made comes before it returns)"
    )
    await _finish(session, child, "a short child")
    _check_order(child, "a short child")
    assert bytes(child.out).strip() == b"x", f"stdout was {bytes(child.out)!r}"
    assert child.transport.get_pipe_transport(1) is not None, "get_pipe_transport(1) is None"
    child = await _run(session, "true", stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    await _finish(session, child, "a child with one pipe")
    _check_order(child, "stdout only", pipes=(1,))
    assert child.transport.get_pipe_transport(0) is None, "stdin=DEVNULL has a pipe transport"
    assert not [e for e in child.events if isinstance(e, tuple) and e[:2] == ("pipe_lost", 0)]


@check("processes", clauses=["process.stdin_eof"])
async def check_stdin_eof_reaches_child(session: polyloop.Session) -> None:
    """write_eof() on stdin is EOF for the child: cat echoes what it got and exits 0."""
    child = await _run(session, "cat")
    stdin = child.transport.get_pipe_transport(0)
    stdin.write(b"one ")
    stdin.write(bytearray(b"two"))
    assert stdin.can_write_eof(), "a stdin pipe's can_write_eof() is False"
    stdin.write_eof()
    await _finish(session, child, "cat after write_eof() on its stdin")
    assert bytes(child.out) == b"one two", f"cat gave back {bytes(child.out)!r}"
    assert child.transport.get_returncode() == 0
    _check_order(child, "cat")


@check("processes", timeout=60, clauses=["process.flow_control"])
async def check_big_through_cat(session: polyloop.Session) -> None:
    """10 MB through cat: stdin pauses the writer past its high-water mark, and every byte
    comes back in order (sha256), at the protocol level and through open_process's Streams."""
    data = os.urandom(BIG)
    digest = hashlib.sha256(data).hexdigest()
    child = await _run(session, "cat", stderr=subprocess.DEVNULL)
    stdin = child.transport.get_pipe_transport(0)
    view = memoryview(data)
    for i in range(0, BIG, 256 * 1024):
        stdin.write(view[i : i + 256 * 1024])
        if child.resumed is not None and not child.resumed.done():
            assert stdin.get_write_buffer_size() > 0, "paused with an empty buffer"
            await bounded(session, child.resumed, 20, "resume_writing never came")
    stdin.write_eof()
    await _finish(session, child, "cat of 10 MB")
    assert child.paused, "10 MB written to a pipe never paused the protocol (no flow control)"
    got = hashlib.sha256(child.out).hexdigest()
    assert len(child.out) == BIG and got == digest, (
        f"cat gave back {len(child.out)} of {BIG} bytes, sha256 equal: {got == digest}"
    )
    async with await polyloop.open_process(["cat"], stderr=subprocess.DEVNULL) as process:
        assert process.stdin is not None and process.stdout is not None
        h = hashlib.sha256()
        n = 0

        async def feed() -> None:
            assert process.stdin is not None
            for i in range(0, BIG, 1024 * 1024):
                await process.stdin.send(view[i : i + 1024 * 1024])
            await process.stdin.send_eof()

        async with polyloop.TaskGroup() as tg:
            tg.spawn(feed())
            while chunk := await process.stdout.receive():
                h.update(chunk)
                n += len(chunk)
    assert n == BIG and h.hexdigest() == digest, f"open_process's cat gave back {n} bytes"
    assert process.returncode == 0, f"cat exited {process.returncode}"


@check("processes", clauses=["process.cancel_kills"])
async def check_cancel_wait_kills_and_reaps(session: polyloop.Session) -> None:
    """A cancelled Process.wait() (and run_process) kills the child and reaps it before
    Cancelled goes on."""
    process = await polyloop.open_process(["sleep", "30"])
    with polyloop.move_on_after(0.05) as scope:
        await process.wait()
    assert scope.cancelled_caught, "wait() on sleep 30 returned by itself"
    assert process.returncode == -signal.SIGKILL, (
        f"after a cancelled wait() returncode is {process.returncode!r}, not -9 (killed, reaped)"
    )
    assert _reaped(process.pid), "the child of a cancelled wait() is not reaped"
    await process.aclose()
    with polyloop.move_on_after(0.05) as scope:
        await polyloop.run_process(["sleep", "30"])
    assert scope.cancelled_caught, "run_process(sleep 30) returned by itself"
    assert not _zombies(), f"zombies after a cancelled run_process: {_zombies()}"


@check("processes", clauses=["process.missing_program"])
async def check_missing_program(session: polyloop.Session) -> None:
    """A program that does not exist raises FileNotFoundError from subprocess_exec,
    open_process and run_process, and leaves no fd behind; the shell says 127."""
    before = _fds()
    for call in (
        lambda: session.subprocess_exec(lambda: Child(session), "/nonexistent/polyloop-x"),
        lambda: polyloop.open_process(["polyloop-no-such-program"]),
        lambda: polyloop.run_process(["polyloop-no-such-program"]),
    ):
        try:
            await call()
        except FileNotFoundError:
            pass
        else:
            raise AssertionError("a missing program did not raise FileNotFoundError")
    assert _fds() <= before, f"{_fds() - before} fds left after missing programs"
    result = await polyloop.run_process("polyloop-no-such-program", check=False)
    assert result.returncode == 127, f"the shell's missing command exits {result.returncode}"


@check("processes", clauses=["process.callback_order"])
async def check_child_closes_stdout_early(session: polyloop.Session) -> None:
    """A child that closes its stdout and runs on: pipe_connection_lost(1) comes before
    process_exited, and connection_lost only after both."""
    code = "import os,sys,time; os.write(1,b'bye'); os.close(1); sys.stdin.read(); sys.exit(7)"
    child = await _run(session, sys.executable, "-c", code, stderr=subprocess.DEVNULL)
    await bounded(
        session,
        child.until(lambda: ("pipe_lost", 1, None) in child.events),
        10,
        "pipe_connection_lost(1, None) after the child closed its stdout",
    )
    assert not child.exited.done(), "process_exited before the child exited"
    assert child.transport.get_returncode() is None
    child.transport.get_pipe_transport(0).write_eof()
    await _finish(session, child, "the child after its stdin's EOF")
    assert bytes(child.out) == b"bye", f"stdout was {bytes(child.out)!r}"
    assert child.transport.get_returncode() == 7
    _check_order(child, "early stdout close", pipes=(0, 1))


@check("processes", clauses=["process.env_cwd"])
async def check_env_and_cwd(session: polyloop.Session) -> None:
    """env replaces the environment and cwd sets the working directory, on exec and shell."""
    with temp_dir() as where:
        real = os.path.realpath(where)
        result = await polyloop.run_process(
            [sys.executable, "-c", "import os; print(os.environ.get('PL_X'), os.getcwd())"],
            env={"PL_X": "42", "PATH": os.environ.get("PATH", "")},
            cwd=where,
        )
        assert result.stdout.decode().split() == ["42", real], (
            f"env/cwd: the child printed {result.stdout!r}, not '42 {real}'"
        )
        _, child = await session.subprocess_shell(
            lambda: Child(session), "echo $PL_Y; pwd", env={"PL_Y": "y"}, cwd=where
        )
        await _finish(session, child, "a shell with env and cwd")
        assert bytes(child.out).decode().split() == ["y", real], (
            f"shell printed {bytes(child.out)!r}"
        )


@check("processes", timeout=60, clauses=["process.no_leak"])
async def check_no_zombie_no_fd(session: polyloop.Session) -> None:
    """50 children, each way of ending: afterwards no zombie, and as many fds open as before."""
    await polyloop.run_process(["true"])  # the session's first child may open fds it keeps
    before = _fds()
    pids = []
    for i in range(50):
        how = i % 3
        if how == 0:
            result = await polyloop.run_process(["true"])
            assert result.returncode == 0
        elif how == 1:
            child = await _run(session, "sleep", "30")
            pids.append(child.transport.get_pid())
            child.transport.close()  # kills it; it is reaped all the same
            await _finish(session, child, "a closed child")
        else:
            async with await polyloop.open_process(["cat"]) as process:
                pids.append(process.pid)
    assert all(_reaped(pid) for pid in pids), "a child was left unreaped"
    assert not _zombies(), f"zombie children: {_zombies()}"
    # Up to 1 s for the count to settle: once, under a loaded CI run (gevent@host after
    # patch_all, 2026-12-06), one fd more was open at the first look and never again in
    # reruns -- a descriptor closed a loop turn later, or one the process opened for a
    # moment elsewhere. A leak, one fd or more per child, stays and is still caught.
    for _ in range(20):
        if _fds() == before:
            break
        await polyloop.sleep(0.05)
    assert _fds() == before, f"{_fds() - before} fds more open after 50 children"


class PipeEnd(polyloop.Protocol):
    def __init__(self, session: polyloop.Session) -> None:
        self.data = bytearray()
        self.events: list[Any] = []
        self.lost = session.create_future()
        self.paused = 0

    def connection_made(self, transport: Any) -> None:
        self.events.append("made")

    def data_received(self, data: bytes) -> None:
        self.data += data

    def eof_received(self) -> None:
        self.events.append("eof")

    def pause_writing(self) -> None:
        self.paused += 1

    def connection_lost(self, exc: BaseException | None) -> None:
        self.events.append(("lost", exc))
        if not self.lost.done():
            self.lost.set_result(None)


@check("pipes", name="pipe_transports", clauses=["pipe.transport"])
async def check_pipes(session: polyloop.Session) -> None:
    """connect_read_pipe/connect_write_pipe on os.pipe(): data, flow control, write_eof
    reaching the reader as eof_received then connection_lost(None), both fds closed."""
    r, w = os.pipe()
    rt, reader = await session.connect_read_pipe(lambda: PipeEnd(session), os.fdopen(r, "rb"))
    wt, writer = await session.connect_write_pipe(lambda: PipeEnd(session), w)
    assert reader.events == ["made"] and writer.events == ["made"]
    rt.pause_reading()
    wt.write(b"x" * (1024 * 1024))
    assert writer.paused == 1, "1 MB into a pipe nobody reads did not pause the writer"
    assert wt.get_write_buffer_size() > 0
    rt.resume_reading()
    wt.write_eof()
    try:
        wt.write(b"late")
    except RuntimeError:
        pass
    else:
        raise AssertionError("write() after write_eof() on a pipe did not raise RuntimeError")
    await bounded(session, reader.lost, 10, "the read pipe's connection_lost after write_eof")
    await bounded(session, writer.lost, 10, "the write pipe's connection_lost after write_eof")
    assert len(reader.data) == 1024 * 1024, f"{len(reader.data)} bytes of 1 MB arrived"
    assert reader.events == ["made", "eof", ("lost", None)], f"reader: {reader.events}"
    assert writer.events == ["made", ("lost", None)], f"writer: {writer.events}"
    for fd in (r, w):
        try:
            os.fstat(fd)
        except OSError:
            continue
        raise AssertionError(f"fd {fd} is still open after connection_lost")
    # The reader goes: the writer learns it without writing.
    r, w = os.pipe()
    wt, writer = await session.connect_write_pipe(lambda: PipeEnd(session), w)
    # A file object's close(), not os.close(): after gevent's patch_all() os.close() of a
    # pipe defers the close, and on a reused fd number the close may not reach the kernel
    # for a while (docs/processes.md, "Traps").
    open(r, "rb", buffering=0).close()
    await bounded(session, writer.lost, 10, "connection_lost of a write pipe whose reader closed")
    try:
        await session.connect_read_pipe(lambda: PipeEnd(session), 10_000)
    except ValueError:
        pass
    else:
        raise AssertionError("connect_read_pipe on a closed fd did not raise ValueError")


@check("signals", clauses=["signal.receiver"])
async def check_signal_receiver(session: polyloop.Session) -> None:
    """open_signal_receiver: a signal sent to the process arrives once, as signal.Signals,
    on the loop's thread; the handler installed before is back after the block. Off the
    main thread it raises RuntimeError (Python runs handlers only there)."""
    main_thread = threading.get_native_id() == threading.main_thread().native_id
    previous = signal.getsignal(signal.SIGUSR2)
    if not main_thread:
        try:
            with polyloop.open_signal_receiver(signal.SIGUSR2):
                pass
        except RuntimeError:
            return
        raise AssertionError("open_signal_receiver off the main thread did not raise")
    got: list[tuple[int, int]] = []
    with polyloop.open_signal_receiver(signal.SIGUSR2) as received:
        assert signal.getsignal(signal.SIGUSR2) is not previous, "no handler was installed"
        os.kill(os.getpid(), signal.SIGUSR2)

        async def first() -> None:
            async for signum in received:
                got.append((signum, threading.get_native_id()))
                return

        await bounded(session, first(), 10, "SIGUSR2 sent to the process never arrived")
    assert got[0][0] is signal.SIGUSR2, f"received {got[0][0]!r}, not signal.SIGUSR2"
    assert got[0][1] == session.thread_id, "the signal was received off the loop's thread"
    assert signal.getsignal(signal.SIGUSR2) is previous, (
        "the handler installed before open_signal_receiver is not back after the block"
    )
