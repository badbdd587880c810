"""Child processes, pipes and signals beyond the conformance checks: 1,000 short children
per backend leave no fd and no zombie behind; a child left running at the end of
``polyloop.run`` is killed and reaped; ``open_signal_receiver`` delivers on the loop's
thread and restores the handler it replaced."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest

import polyloop

BACKENDS = ["asyncio", "twisted", "gevent", "tornado"]


def _children() -> list[tuple[int, str]]:
    """This process's children and their states (``/proc``)."""
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
            found.append((int(pid), state))
    return found


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_thousand_children_leave_nothing(backend: str) -> None:
    """1,000 children, each way of running one, in a loop: afterwards the same fds are
    open and this process has no zombie (nor any child) left."""

    async def warm() -> None:
        await polyloop.run_process(["true"])

    polyloop.run(warm, backend=backend)  # the backend's first run may open fds it keeps
    before = _fds()
    others = _children()  # another test's server, say: not ours to judge

    class Quiet(polyloop.SubprocessProtocol):
        def __init__(self) -> None:
            self.done = polyloop.create_future()

        def connection_lost(self, exc: BaseException | None) -> None:
            self.done.set_result(None)

    async def main() -> int:
        codes = 0
        for i in range(1000):
            how = i % 4
            if how == 0:
                codes += (await polyloop.run_process(["true"])).returncode
            elif how == 1:
                codes += (await polyloop.run_process("exit 0", check=False)).returncode
            elif how == 2:
                async with await polyloop.open_process(["true"]) as process:
                    pass
                codes += process.returncode or 0
            else:
                transport, protocol = await polyloop.subprocess_exec(Quiet, "true")
                await protocol.done
                codes += transport.get_returncode() or 0
        return codes

    assert polyloop.run(main, backend=backend) == 0
    assert _fds() == before, f"fds left open: {sorted(_fds() - before)}"
    left = [c for c in _children() if c not in others]
    assert left == [], f"children left (pid, state; Z: a zombie): {left}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_running_child_is_reaped_when_the_session_ends(backend: str) -> None:
    """A child still running when ``run`` returns is killed and reaped by the session's end:
    no zombie, no orphan, no fd."""
    pids: list[int] = []

    async def main() -> None:
        await polyloop.run_process(["true"])
        process = await polyloop.open_process(["sleep", "30"])
        pids.append(process.pid)

    polyloop.run(main, backend=backend)
    before = _fds()
    others = _children()
    polyloop.run(main, backend=backend)
    assert _fds() == before, f"fds left open: {sorted(_fds() - before)}"
    for pid in pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reaped already: no child of ours any more
    assert [c for c in _children() if c not in others] == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_run_process_errors(backend: str) -> None:
    """``check=True`` raises ``CalledProcessError`` with the output; an empty command and a
    text mode are refused before anything runs."""

    async def main() -> None:
        with pytest.raises(subprocess.CalledProcessError) as info:
            await polyloop.run_process("echo out; echo err >&2; exit 3")
        assert (info.value.returncode, info.value.stdout, info.value.stderr) == (
            3,
            b"out\n",
            b"err\n",
        )
        with pytest.raises(ValueError, match="empty"):
            await polyloop.open_process([])
        with pytest.raises(ValueError, match="text"):
            await polyloop.subprocess_exec(polyloop.SubprocessProtocol, "true", text=True)
        with pytest.raises(ValueError, match="shell"):
            await polyloop.subprocess_exec(polyloop.SubprocessProtocol, "true", shell=True)
        with pytest.raises(TypeError, match="program"):
            await polyloop.subprocess_exec(polyloop.SubprocessProtocol, 42)  # type: ignore[arg-type]

    polyloop.run(main, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_signal_receiver(backend: str) -> None:
    """Signals sent to this process arrive in order, on the loop's thread, while the block
    runs; the handler installed before is back afterwards, and a signal sent then goes to
    it."""
    seen_before: list[int] = []

    def before(signum: int, frame: object) -> None:
        seen_before.append(signum)

    async def main() -> list[tuple[int, int]]:
        got: list[tuple[int, int]] = []
        loop_thread = threading.get_native_id()
        with polyloop.open_signal_receiver(signal.SIGUSR1, signal.SIGUSR2) as received:
            assert signal.getsignal(signal.SIGUSR1) is not before
            os.kill(os.getpid(), signal.SIGUSR1)
            os.kill(os.getpid(), signal.SIGUSR2)
            async for signum in received:
                got.append((signum, threading.get_native_id()))
                assert isinstance(signum, signal.Signals)
                if len(got) == 2:
                    break
            assert threading.get_native_id() == loop_thread
        return [(s, t == loop_thread) for s, t in got]

    old1 = signal.signal(signal.SIGUSR1, before)
    old2 = signal.getsignal(signal.SIGUSR2)
    try:
        got = polyloop.run(main, backend=backend)
        assert got == [(signal.SIGUSR1, True), (signal.SIGUSR2, True)]
        assert signal.getsignal(signal.SIGUSR1) is before
        assert signal.getsignal(signal.SIGUSR2) is old2
        os.kill(os.getpid(), signal.SIGUSR1)
        assert seen_before == [signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, old1)


def test_signal_receiver_refuses() -> None:
    """Bad signals are refused before any handler is replaced; another thread is refused."""

    async def main() -> None:
        for bad, error in ((signal.SIGKILL, ValueError), (0, ValueError), ("HUP", TypeError)):
            with pytest.raises(error):
                with polyloop.open_signal_receiver(signal.SIGUSR1, bad):  # type: ignore[arg-type]
                    pass
            assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL

    polyloop.run(main)
    errors: list[BaseException] = []

    def other_thread() -> None:
        try:
            polyloop.run(main_in_thread)
        except BaseException as exc:
            errors.append(exc)

    async def main_in_thread() -> None:
        with polyloop.open_signal_receiver(signal.SIGUSR1):
            pass

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError), errors


def test_signal_receiver_and_processes_in_host_mode() -> None:
    """On a loop the application runs (asyncio.run): a signal arrives, a child runs."""
    import asyncio

    async def main() -> tuple[int, bytes]:
        with polyloop.open_signal_receiver(signal.SIGUSR1) as received:
            os.kill(os.getpid(), signal.SIGUSR1)
            signum = await received.__anext__()
        result = await polyloop.run_process(["cat"], input=b"hosted")
        await polyloop.current_backend().aclose()
        return signum, result.stdout

    assert asyncio.run(main()) == (signal.SIGUSR1, b"hosted")
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL


@pytest.mark.parametrize("backend", BACKENDS)
def test_reaping_without_pidfd(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where ``os.pidfd_open`` is missing (not Linux, or a kernel before 5.3), a thread per
    child waits in ``waitpid`` and hands the status back: the same exit codes, nothing
    left behind, and a child still running at the end is killed and reaped."""
    monkeypatch.delattr(os, "pidfd_open")
    others = _children()
    pids: list[int] = []

    async def main() -> list[int]:
        codes = [(await polyloop.run_process("exit 5", check=False)).returncode]
        process = await polyloop.open_process(["sleep", "30"])
        process.kill()
        codes.append(await process.wait())
        await process.aclose()
        pids.append((await polyloop.open_process(["sleep", "30"])).pid)  # left running
        return codes

    assert polyloop.run(main, backend=backend) == [5, -signal.SIGKILL]
    for pid in pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    assert [c for c in _children() if c not in others] == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_child_that_closes_every_pipe_and_runs_on_is_reaped(backend: str) -> None:
    """A child that closes stdin, stdout and stderr and then runs on: all its pipes end
    before it exits, so a framework that reaps only when the pipes close (Twisted without
    its SIGCHLD handler, which a session's reactor never installs) would never see it
    exit. Its exit status still arrives, and the run_process returns."""
    code = "import os, sys, time; os.close(0); os.close(1); os.close(2); time.sleep(0.2)"

    async def main() -> tuple[int, bool]:
        with polyloop.move_on_after(10) as scope:
            result = await polyloop.run_process(
                [sys.executable, "-c", code], input=b"", check=False
            )
            return result.returncode, scope.cancelled_caught
        return -1, scope.cancelled_caught

    assert polyloop.run(main, backend=backend) == (0, False)


def test_asyncio_child_watcher_of_another_loop_keeps_the_core_path() -> None:
    """Before Python 3.12 asyncio reaps through the policy's one child watcher. One that
    serves only the main thread's loop (SafeChildWatcher, FastChildWatcher, 3.11's
    PidfdChildWatcher) cannot serve a session in another thread: there the asyncio
    backend runs the child on the core's path (a pidfd), and it works; on the default
    ThreadedChildWatcher it runs on asyncio's own subprocess transport."""
    import asyncio

    if sys.version_info >= (3, 12):
        pytest.skip("3.12+ chooses pidfd or a thread by itself: no policy watcher to mind")

    class MainLoopOnly(asyncio.AbstractChildWatcher):  # what SafeChildWatcher is, to us
        def add_child_handler(self, pid: int, callback: object, *args: object) -> None:
            raise AssertionError("asyncio's path was taken with a main-loop-only watcher")

        def remove_child_handler(self, pid: int) -> bool:
            return False

        def attach_loop(self, loop: object) -> None:
            pass

        def close(self) -> None:
            pass

        def is_active(self) -> bool:
            return True

        def __enter__(self) -> MainLoopOnly:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

    async def main() -> tuple[str, int]:
        transport, protocol = await polyloop.subprocess_exec(Done, "sh", "-c", "exit 4")
        await protocol.done
        return type(transport).__name__, transport.get_returncode() or 0

    class Done(polyloop.SubprocessProtocol):
        def __init__(self) -> None:
            self.done = polyloop.create_future()

        def connection_lost(self, exc: BaseException | None) -> None:
            self.done.set_result(None)

    results: list[tuple[str, int]] = []
    thread = threading.Thread(target=lambda: results.append(polyloop.run(main)))
    thread.start()
    thread.join()
    assert results == [("AsyncioSubprocess", 4)]  # the default watcher: asyncio's own
    previous = asyncio.get_child_watcher()
    asyncio.set_child_watcher(MainLoopOnly())
    try:
        results.clear()
        thread = threading.Thread(target=lambda: results.append(polyloop.run(main)))
        thread.start()
        thread.join()
        assert results == [("CoreSubprocessTransport", 4)]
    finally:
        asyncio.set_child_watcher(previous)
