"""``spawnProcess`` of ``polyloop_twisted.compat``'s reactor: a Twisted
``ProcessProtocol`` on ``polyloop.subprocess_exec``, on every backend.

The judge is Twisted's own example (``tests/twisted_examples/process.py``, from
Twisted's process howto): on polyloop's reactor it prints what it prints on Twisted's
own epoll reactor."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import polyloop

pytest.importorskip("twisted", reason="polyloop_twisted.compat needs polyloop[twisted]")

from twisted.internet import error, interfaces, protocol
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from polyloop_twisted import compat as ctw

BACKENDS = ["asyncio", "twisted", "gevent", "tornado"]
HERE = Path(__file__).resolve().parent
EXAMPLE = HERE / "twisted_examples" / "process.py"


class Stopper:
    """What the example's ``reactor.stop()`` reaches: ends the test's wait."""

    def __init__(self) -> None:
        self.stopped: polyloop.Future[None] = polyloop.create_future()

    def stop(self) -> None:
        self.stopped.set_result(None)


def transcript_on_twisted() -> list[str]:
    """The example, as a script, on Twisted's own (global, default) reactor."""
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=60,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def check_transcript(lines: list[str]) -> None:
    """The rules of the example's output (its howto says the order of the pipes' events
    varies): first connectionMade, last processEnded and quitting, the count of lines."""
    assert lines[0] == "connectionMade!"
    assert lines[-2:] == ["processEnded, status 0", "quitting"]
    assert "I saw 40 lines" in lines
    assert lines.index("processExited, status 0") < lines.index("processEnded, status 0")
    for lost in ("inConnectionLost!", "outConnectionLost!", "errConnectionLost!"):
        assert any(line.startswith(lost) for line in lines[:-2]), lost


@pytest.mark.parametrize("backend", BACKENDS)
def test_twisteds_process_example(backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    sys.path.insert(0, str(EXAMPLE.parent))
    try:
        import process as example  # tests/twisted_examples/process.py
    finally:
        sys.path.remove(str(EXAMPLE.parent))

    async def main() -> None:
        stopper = Stopper()
        example.reactor = stopper  # the reactor its processEnded stops
        transport = ctw.get_reactor().spawnProcess(example.MyPP(10), "wc", ["wc"], {})
        await polyloop.wait_for(stopper.stopped, 20)
        assert transport.pid is None  # reaped
        assert transport.status == 0

    polyloop.run(main, backend=backend)
    ours = capsys.readouterr().out.splitlines()
    check_transcript(ours)
    assert sorted(ours) == sorted(transcript_on_twisted())


class Recorder(protocol.ProcessProtocol):
    """Records every call, in order; ``ended`` fires with processEnded's reason."""

    def __init__(self, stdin: bytes | None = None) -> None:
        self.events: list[str] = []
        self.out: dict[int, bytes] = {1: b"", 2: b""}
        self.ended: polyloop.Future[Failure] = polyloop.create_future()
        self.exited: Failure | None = None
        self.stdin = stdin
        self.pid_at_start: int | None = None

    def connectionMade(self) -> None:
        self.events.append("made")
        self.pid_at_start = self.transport.pid  # type: ignore[attr-defined]
        if self.stdin is not None:
            self.transport.write(self.stdin)  # type: ignore[union-attr]
            self.transport.closeStdin()  # type: ignore[attr-defined]

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self.out[childFD] += data

    def childConnectionLost(self, childFD: int) -> None:
        self.events.append(f"lost {childFD}")

    def processExited(self, reason: Failure) -> None:
        self.events.append("exited")
        self.exited = reason

    def processEnded(self, reason: Failure) -> None:
        self.events.append("ended")
        self.ended.set_result(reason)


def run_child(
    backend: str, code: str, *, stdin: bytes | None = None, **kw: Any
) -> tuple[Recorder, Any]:
    """Run ``python -c code`` with a ``Recorder`` on ``backend``; wait for processEnded."""
    found: list[Any] = []

    async def main() -> None:
        recorder = Recorder(stdin)
        found.append(recorder)
        transport = ctw.get_reactor().spawnProcess(
            recorder, sys.executable, [sys.executable, "-c", code], **kw
        )
        found.append(transport)
        await polyloop.wait_for(recorder.ended, 20)

    polyloop.run(main, backend=backend)
    return found[0], found[1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_calls_pipes_and_exit_status(backend: str) -> None:
    code = "import sys; d = sys.stdin.read(); print(d.upper()); print('e', file=sys.stderr)"
    rec, transport = run_child(backend, code, stdin=b"abc", env=None)
    verifyObject(interfaces.IProcessTransport, transport)
    assert rec.events[0] == "made" and rec.events[-1] == "ended"
    assert sorted(rec.events[1:-1]) == ["exited", "lost 0", "lost 1", "lost 2"]
    assert isinstance(rec.pid_at_start, int) and rec.pid_at_start > 0
    assert rec.out == {1: b"ABC\n", 2: b"e\n"}
    reason = rec.ended.result()
    assert reason.check(error.ProcessDone) and reason.value.exitCode == 0
    assert rec.exited is not None and rec.exited.check(error.ProcessDone)
    assert transport.pid is None and transport.status == 0

    rec, transport = run_child(backend, "raise SystemExit(3)", env=None)
    reason = rec.ended.result()
    assert reason.check(error.ProcessTerminated)
    assert (reason.value.exitCode, reason.value.signal, reason.value.status) == (3, None, 3 << 8)


@pytest.mark.parametrize("backend", BACKENDS)
def test_env_path_and_childfds(backend: str, tmp_path: Path) -> None:
    code = "import os, sys; print(os.getcwd(), os.environ.get('ONLY'), len(os.environ))"
    rec, _ = run_child(backend, code, env={"ONLY": "this"}, path=str(tmp_path))
    cwd, only, count = rec.out[1].split()
    # Only what env gave (the interpreter may add LC_CTYPE on a C locale):
    assert (cwd, only) == (str(tmp_path).encode(), b"this") and int(count) <= 2
    # Twisted's default env={} is an empty environment:
    rec, _ = run_child(backend, "import os; print(sorted(os.environ))")
    assert b"ONLY" not in rec.out[1] and b"PATH" not in rec.out[1]
    # stderr mapped onto a parent fd (here: a file), stdout a pipe:
    with open(tmp_path / "err", "wb") as err:
        rec, _ = run_child(
            backend, "import sys; print('o'); print('to the file', file=sys.stderr)",
            childFDs={0: "w", 1: "r", 2: err.fileno()},
        )  # fmt: skip
    assert rec.out == {1: b"o\n", 2: b""}
    assert (tmp_path / "err").read_bytes() == b"to the file\n"
    assert "lost 2" not in rec.events


@pytest.mark.parametrize("backend", BACKENDS)
def test_signals_and_closing_pipes(backend: str) -> None:
    class Killer(Recorder):
        def __init__(self, how: str | int) -> None:
            super().__init__()
            self.how = how

        def connectionMade(self) -> None:
            super().connectionMade()
            self.transport.closeStdout()  # type: ignore[attr-defined]
            self.transport.signalProcess(self.how)  # type: ignore[attr-defined]

    for how, number in (("TERM", signal.SIGTERM), ("KILL", signal.SIGKILL), (2, signal.SIGINT)):
        transports: list[Any] = []

        async def main(how: str | int = how, transports: list[Any] = transports) -> None:
            killer = Killer(how)
            transports.append(killer)
            transport = ctw.get_reactor().spawnProcess(killer, "sleep", ["sleep", "30"], env=None)
            transports.append(transport)
            # signalled before it even started: done once it runs
            await polyloop.wait_for(killer.ended, 20)

        polyloop.run(main, backend=backend)
        killer, _ = transports
        reason = killer.ended.result()
        assert reason.check(error.ProcessTerminated), reason
        assert (reason.value.signal, reason.value.exitCode) == (number, None)
        assert "lost 1" in killer.events
        with pytest.raises(error.ProcessExitedAlready):
            transports[1].signalProcess("TERM")

    # loseConnection closes the three pipes: cat sees EOF and exits 0
    class Closer(Recorder):
        def connectionMade(self) -> None:
            super().connectionMade()
            self.transport.write(b"lost?")  # type: ignore[union-attr]
            self.transport.loseConnection()  # type: ignore[union-attr]

    closers: list[Closer] = []

    async def close_all() -> None:
        closer = Closer()
        closers.append(closer)
        ctw.get_reactor().spawnProcess(closer, "cat", ["cat"], env=None)
        await polyloop.wait_for(closer.ended, 20)

    polyloop.run(close_all, backend=backend)
    assert sorted(e for e in closers[0].events if e.startswith("lost")) == [
        "lost 0",
        "lost 1",
        "lost 2",
    ]


@pytest.mark.parametrize("backend", ["asyncio", "gevent", "tornado"])
def test_refused_with_clear_errors(backend: str) -> None:
    async def main() -> None:
        r = ctw.get_reactor()
        pp = protocol.ProcessProtocol()
        with pytest.raises(ValueError, match="childFDs"):
            r.spawnProcess(pp, "cat", ["cat"], None, childFDs={0: "w", 1: "r", 2: "r", 3: "r"})
        with pytest.raises(ValueError, match="childFDs"):
            r.spawnProcess(pp, "cat", ["cat"], None, childFDs={1: "r", 2: "r"})
        with pytest.raises(ValueError, match="childFDs"):
            r.spawnProcess(pp, "cat", ["cat"], None, childFDs={0: "r", 1: "r", 2: "r"})
        with pytest.raises(ValueError, match="childFDs"):  # Twisted's rule
            r.spawnProcess(pp, "cat", ["cat"], None, usePTY=True, childFDs={0: 0, 1: 1, 2: 2})
        with pytest.raises(FileNotFoundError):
            r.spawnProcess(pp, "no-such-program-here", ["x"], None)
        with pytest.raises(PermissionError):
            r.spawnProcess(pp, os.devnull, ["x"], None)
        with pytest.raises(TypeError):
            r.spawnProcess(object(), "cat", ["cat"], None)
        # write(str) is refused, as on Twisted's transports
        rec = Recorder()
        transport = r.spawnProcess(rec, "cat", ["cat"], None)
        with pytest.raises(TypeError):
            transport.write("text")
        with pytest.raises(ValueError, match="signal"):
            transport.signalProcess("NOSUCHSIGNAL")
        transport.closeStdin()
        await polyloop.wait_for(rec.ended, 20)

    polyloop.run(main, backend=backend)


@pytest.mark.parametrize("backend", ["asyncio", "gevent", "tornado"])
def test_stdin_as_a_consumer(backend: str) -> None:
    """A pull producer (Twisted's ``FileSender``) writes stdin whenever it is empty; the
    child echoes it all back (``cat``), and stdin is closed once the sender is done."""
    from twisted.protocols.basic import FileSender

    payload = os.urandom(1_000_000)

    class Feed(Recorder):
        def connectionMade(self) -> None:
            super().connectionMade()
            import io

            done = FileSender().beginFileTransfer(io.BytesIO(payload), self.transport)
            done.addCallback(lambda _: self.transport.closeStdin())  # type: ignore[union-attr]

    found: list[Feed] = []

    async def main() -> None:
        feed = Feed()
        found.append(feed)
        ctw.get_reactor().spawnProcess(feed, "cat", ["cat"], env=None)
        await polyloop.wait_for(feed.ended, 30)

    polyloop.run(main, backend=backend)
    assert found[0].out[1] == payload
    assert found[0].ended.result().check(error.ProcessDone)


@pytest.mark.parametrize("backend", ["asyncio", "gevent", "tornado"])
def test_a_child_that_cannot_start(backend: str, tmp_path: Path) -> None:
    """A child that cannot be started once the program was found (here: its directory
    is missing) ends as Twisted's fork path reports it: connected, the error on stderr,
    the pipes closed, exit status 1."""
    rec, transport = run_child(backend, "pass", env=None, path=str(tmp_path / "missing"))
    assert rec.events == ["made", "lost 0", "lost 1", "lost 2", "exited", "ended"]
    assert b"could not start" in rec.out[2]
    reason = rec.ended.result()
    assert reason.check(error.ProcessTerminated) and reason.value.exitCode == 1
    assert transport.status == 1 << 8
    with pytest.raises(error.ProcessExitedAlready):
        transport.signalProcess("KILL")


@pytest.mark.parametrize("backend", ["asyncio", "gevent", "tornado"])
def test_twisteds_process_example_as_a_program(backend: str) -> None:
    """The example as Twisted's howto runs it (``reactor.spawnProcess`` before
    ``reactor.run()``, ``reactor.stop()`` at the end), with the compat reactor installed
    as the global one."""
    boot = (
        "import runpy, sys\n"
        "from polyloop_twisted import compat\n"
        f"compat.install(backend={backend!r})\n"
        f"runpy.run_path({str(EXAMPLE)!r}, run_name='__main__')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", boot], capture_output=True, text=True, timeout=60,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    check_transcript(lines)
    assert sorted(lines) == sorted(transcript_on_twisted())


PTY_CHILD = (
    "import os, sys\n"
    "tty = open('/dev/tty', 'rb')  # only a process with a controlling terminal can\n"
    "print(*(os.isatty(fd) for fd in (0, 1, 2)), os.getsid(0) == os.getpid(),"
    " os.tcgetpgrp(0) == os.getpgrp())\n"
    "print('got', repr(sys.stdin.readline()))\n"
)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_child_on_a_pty(backend: str) -> None:
    """``usePTY=True``: the child's fds 0, 1 and 2 are a terminal, its controlling
    terminal in a session of its own; what it writes comes on fd 1 (the terminal's echo
    of what the parent wrote too), and the calls are Twisted's ``PTYProcess``'s: no
    ``childConnectionLost``, ``closeStdin`` does nothing, ``writeToChild`` and
    ``closeChildFD`` are ``NotImplementedError``. (``twisted``: Twisted's own reactor,
    the reference.)"""

    class Talker(Recorder):
        def connectionMade(self) -> None:
            super().connectionMade()
            t: Any = self.transport
            t.closeStdin()  # a no-op on a pty: the child still reads the line below
            t.closeStderr()
            with pytest.raises(NotImplementedError):
                t.writeToChild(0, b"x")
            with pytest.raises(NotImplementedError):
                t.closeChildFD(0)
            t.write(b"ping\n")

    found: list[Any] = []

    async def main() -> None:
        talker = Talker()
        found.append(talker)
        transport = ctw.get_reactor().spawnProcess(
            talker, sys.executable, [sys.executable, "-c", PTY_CHILD], env=None, usePTY=True
        )
        found.append(transport)
        await polyloop.wait_for(talker.ended, 20)

    polyloop.run(main, backend=backend)
    talker, transport = found
    assert talker.events == ["made", "exited", "ended"]
    # The terminal turns \n into \r\n, and echoes the line the child reads.
    assert talker.out[1].split(b"\r\n") == [
        b"ping",
        b"True True True True True",
        b"got 'ping\\n'",
        b"",
    ]
    assert talker.out[2] == b""
    assert talker.ended.result().check(error.ProcessDone)
    assert transport.pid is None and transport.status == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_pty_hang_up_and_twisteds_tuple(backend: str) -> None:
    """``loseConnection`` closes the pty's master: the child, whose controlling terminal
    it is, gets ``SIGHUP`` (``sleep`` would otherwise run 30 s). Twisted's
    ``usePTY=(master, slave, ttyname)`` runs the child on that pty; the parent's slave is
    closed once the child runs."""
    import pty

    class HangUp(Recorder):
        def connectionMade(self) -> None:
            super().connectionMade()
            self.transport.loseConnection()  # type: ignore[union-attr]

    class Given(Recorder):
        def connectionMade(self) -> None:
            super().connectionMade()
            with pytest.raises(OSError):
                os.fstat(slave)  # closed here, as Twisted closes it

    found: list[Any] = []
    master, slave = pty.openpty()
    name = os.ttyname(slave)

    async def main() -> None:
        hangup, given = HangUp(), Given()
        found.extend((hangup, given))
        r = ctw.get_reactor()
        r.spawnProcess(hangup, "sleep", ["sleep", "30"], env=None, usePTY=True)
        r.spawnProcess(
            given, sys.executable, [sys.executable, "-c", "import os; print(os.ttyname(1))"],
            env=None, usePTY=(master, slave, name),
        )  # fmt: skip
        await polyloop.wait_for(hangup.ended, 20)
        await polyloop.wait_for(given.ended, 20)

    polyloop.run(main, backend=backend)
    hangup, given = found
    reason = hangup.ended.result()
    assert reason.check(error.ProcessTerminated), reason
    assert (reason.value.signal, reason.value.exitCode) == (signal.SIGHUP, None)
    assert hangup.events == ["made", "exited", "ended"]
    assert given.out[1] == name.encode() + b"\r\n"
    assert given.ended.result().check(error.ProcessDone)


@pytest.mark.parametrize("backend", ["asyncio", "gevent", "tornado"])
def test_what_a_pty_child_writes_at_once_waits_for_connection_made(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The master is read from before the child starts; what the child writes at once
    must still come after ``makeConnection``. The process transport's
    ``connection_made`` is held back 0.5 s here (what a loaded machine did once to
    Twisted's ``test_processExitedWithSignal``): before the fix the child's ``x`` reached
    a protocol without a transport, whose error closed the master, and the child died
    of SIGHUP instead of the SIGTERM sent here."""
    from polyloop_twisted.compat import _twisted_process

    made = _twisted_process.PTYProcessTransport.connection_made

    def late(self: Any, transport: Any) -> None:
        polyloop.call_later(0.5, made, self, transport)

    monkeypatch.setattr(_twisted_process.PTYProcessTransport, "connection_made", late)

    class Signaller(Recorder):
        def childDataReceived(self, childFD: int, data: bytes) -> None:
            self.events.append(f"data {data!r}")
            self.transport.signalProcess("TERM")  # type: ignore[union-attr]

    found: list[Any] = []

    async def main() -> None:
        rec = Signaller()
        found.append(rec)
        code = "import sys; sys.stdout.write('x'); sys.stdout.flush(); sys.stdin.read()"
        ctw.get_reactor().spawnProcess(
            rec, sys.executable, [sys.executable, "-c", code], env=None, usePTY=True
        )
        await polyloop.wait_for(rec.ended, 20)

    polyloop.run(main, backend=backend)
    (rec,) = found
    assert rec.events == ["made", "data b'x'", "exited", "ended"]
    reason = rec.ended.result()
    assert reason.check(error.ProcessTerminated), reason
    assert reason.value.signal == signal.SIGTERM, reason


@pytest.mark.parametrize("backend", ["asyncio", "gevent", "tornado"])
def test_a_child_that_cannot_start_on_a_pty(backend: str, tmp_path: Path) -> None:
    """As on pipes, with the error where the child's stderr is: fd 1, the terminal."""
    rec, transport = run_child(
        backend, "pass", env=None, path=str(tmp_path / "missing"), usePTY=True
    )
    assert rec.events == ["made", "exited", "ended"]
    assert b"could not start" in rec.out[1]
    reason = rec.ended.result()
    assert reason.check(error.ProcessTerminated) and reason.value.exitCode == 1
    assert transport.status == 1 << 8


@pytest.mark.parametrize("backend", ["asyncio", "gevent", "tornado"])
def test_a_pty_child_running_when_the_session_ends(backend: str) -> None:
    """The session kills and reaps it and closes the master's transports (on asyncio,
    whose read-pipe transport has no ``abort()``, its end used to fail)."""
    pids: list[int] = []

    class Started(Recorder):
        def connectionMade(self) -> None:
            super().connectionMade()
            pids.append(self.transport.pid)  # type: ignore[union-attr]
            self.ended.set_result(Failure(RuntimeError("started")))  # type: ignore[no-untyped-call]

    async def main() -> None:
        started = Started()
        ctw.get_reactor().spawnProcess(started, "sleep", ["sleep", "30"], env=None, usePTY=True)
        await polyloop.wait_for(started.ended, 20)

    polyloop.run(main, backend=backend)
    with pytest.raises(ProcessLookupError):
        os.kill(pids[0], 0)  # killed and reaped
