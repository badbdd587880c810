"""Child processes on Twisted's own ``reactor.spawnProcess``, behind polyloop's
``subprocess`` hook: an ``IProcessProtocol`` drives the ``SubprocessProtocol``.

Rule: the child, its pipes and the bytes are Twisted's (``process.Process``,
``ProcessReader``/``ProcessWriter`` on the session's reactor); this file maps Twisted's
callbacks onto PEP 3156's, which line up one to one (``childDataReceived`` ->
``pipe_data_received``, ``childConnectionLost`` -> ``pipe_connection_lost``,
``processExited`` -> ``process_exited``, ``processEnded`` -> ``connection_lost``), each
one queued with ``call_soon`` so it never runs inside a transport method. Pipes opened
with ``connect_read_pipe``/``connect_write_pipe`` stay the core's: Twisted has no public
pipe transport for an arbitrary fd (its ``ProcessReader``/``ProcessWriter`` belong to a
``Process``), and the core's run on this reactor's ``IReactorFDSet`` already.

What Twisted does differently, and is fixed here (read from ``twisted/internet/process.py``):

- **Reaping needs ``SIGCHLD``.** Twisted reaps a child from its ``SIGCHLD`` handler
  (``reapAllProcesses``), and otherwise only once, with ``waitpid(WNOHANG)``, when all
  its pipes have closed (``Process.maybeCallProcessEnded`` -> ``reapProcess``). A
  session's reactor runs with ``installSignalHandlers=False`` (and a reactor on another
  thread cannot have one), so a child that closes its stdout early and runs on -- or one
  whose pipes hit EOF a moment before the kernel makes it a zombie, since a dying
  process closes its files first -- is never reaped: no ``processExited``, a zombie.
  Here a pidfd (``os.pidfd_open``, watched with the reactor's ``addReader``; without
  pidfds a thread in ``waitid(WNOWAIT)``) says when the child has exited, *without*
  reaping it, and Twisted's own ``reapProcess()`` then reaps it and runs its callbacks.
  (The core's ``watch_child`` is not used: it reaps itself, and Twisted's ``waitpid``
  would then find nothing and never call ``processExited``.)
- **A missing program is the child's error.** ``spawnProcess`` forks, and a failed
  ``exec`` is reported by the child (a traceback on its stderr, exit status 1). The
  program is looked up here first, as ``subprocess.Popen`` does, so that a program that
  does not exist raises ``FileNotFoundError`` from ``subprocess_exec`` on every backend
  (``PermissionError`` for one that is not executable; a missing ``cwd`` too).
- **``env=None``** means an *empty* environment to ``spawnProcess`` on POSIX (only
  ``None`` passes ``os.environ``): polyloop's ``env=None`` inherits, so it is passed
  as ``os.environ``.
- **Flow control on stdin** is Twisted's producer protocol: the writer pauses a
  registered streaming producer past ``bufferSize`` (set to the high-water mark) and
  resumes it once its buffer is *empty* (so the low-water mark is 0 here).
- A write after ``write_eof()`` is a silent no-op in Twisted: ``RuntimeError`` here.
- **Reads of 8 KiB.** ``ProcessReader.doRead`` is ``fdesc.readFromFD``, which reads at
  most 8192 bytes per readable event: a pipe holds 64 KiB, so a fast child costs eight
  wake-ups of the protocol (and of a ``Stream`` reader above it) per pipeful. Measured:
  100 MiB through ``cat`` with ``open_process`` ran at 0.42x native Twisted (a bare
  ``ProcessProtocol``, whose ``outReceived`` only counts), at 2.4x its CPU. The child's
  readers here read up to ``READ_SIZE`` (64 KiB) per event instead (``_read_more``, set
  on the reader instance; the rest of ``doRead`` is Twisted's own).

What ``spawnProcess`` cannot express keeps the core's path (``Popen``): ``stderr=STDOUT``
(``childFDs`` maps a child fd to a parent fd or a new pipe, not to another child fd) and
any ``Popen`` keyword beyond ``cwd`` and ``env`` (``start_new_session``, ``pass_fds``,
``preexec_fn``, ...).
"""

from __future__ import annotations

import errno
import functools
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from typing import Any

from twisted.internet import main as _tw_main
from twisted.internet import process as _tw_process
from twisted.internet.interfaces import IProcessProtocol, IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer  # type: ignore[import-untyped]

import polyloop
from polyloop.lowlevel import (
    DEFAULT_HIGH_WATER,
    READ_SIZE,
    Session,
    SessionContract,
    aborted,
    call_logged,
    check_buffer_limits,
    check_bytes,
    write_after_eof,
)

__all__ = ["spawn"]

_PIPE = subprocess.PIPE


def _resolve(program: Any, env: dict[str, str] | None, cwd: Any) -> str:
    """The executable ``Popen`` would run for ``program``, or its error."""
    if cwd is not None and not os.path.isdir(cwd):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), os.fspath(cwd))
    name = os.fsdecode(program)
    if "/" in name:
        candidates = [name]
    else:
        path = (env if env is not None else os.environ).get("PATH", os.defpath)
        candidates = [os.path.join(d, name) for d in path.split(os.pathsep)]
    denied = None
    for candidate in candidates:
        full = os.path.join(os.fspath(cwd), candidate) if cwd is not None else candidate
        if os.path.isfile(full):
            if os.access(full, os.X_OK):
                return candidate
            denied = candidate
    if denied is not None:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), denied)
    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)


class _ExitWatch:
    """Calls ``on_exit()`` on the loop once the child ``pid`` has exited, without reaping
    it (a pidfd on the reactor, or a thread in ``waitid(WNOWAIT)``)."""

    def __init__(self, session: Session, pid: int, on_exit: Callable[[], object]) -> None:
        self.session = session
        self.on_exit: Callable[[], object] | None = on_exit
        self.pidfd: int | None = None
        pidfd_open = getattr(os, "pidfd_open", None)
        if pidfd_open is not None:
            try:
                self.pidfd = pidfd_open(pid)
            except OSError:  # an old kernel (ENOSYS), or seccomp
                self.pidfd = None
        if self.pidfd is not None:
            session.add_reader(self.pidfd, self._fire)
        else:
            threading.Thread(target=self._wait, args=(pid,), daemon=True).start()

    def _wait(self, pid: int) -> None:
        try:
            os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:
            pass
        try:
            self.session.call_soon_threadsafe(self._fire)
        except RuntimeError:
            pass  # the session ended: its end reaped the child

    def _fire(self) -> None:
        self.stop()
        on_exit, self.on_exit = self.on_exit, None
        if on_exit is not None:
            on_exit()

    def stop(self) -> None:
        fd, self.pidfd = self.pidfd, None
        if fd is not None:
            self.session.remove_reader(fd)
            os.close(fd)


@implementer(IPushProducer)
class _StdinFlow:
    """The streaming producer registered on stdin's ``ProcessWriter``: Twisted's
    pause/resume become the protocol's ``pause_writing``/``resume_writing``."""

    def __init__(self, proc: TwistedSubprocess) -> None:
        self.proc = proc

    def pauseProducing(self) -> None:
        self.proc._stdin_paused(True)

    def resumeProducing(self) -> None:
        self.proc._stdin_paused(False)

    def stopProducing(self) -> None:
        pass


class _WritePipe(polyloop.WriteTransport):
    """The child's stdin: Twisted's ``ProcessWriter``, through its ``Process``."""

    def __init__(self, proc: TwistedSubprocess) -> None:
        self._proc = proc
        self._eof = self._closing = self._lost = self._aborted = False
        self._high = DEFAULT_HIGH_WATER

    @property
    def _writer(self) -> Any:
        return self._proc._process.pipes.get(0)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if type(data) is not bytes:
            check_bytes(data)
            data = bytes(data)  # Twisted keeps what it is given until it is sent
        if self._eof and not self._lost:
            raise write_after_eof()
        if self._closing or not data:
            return
        writer = self._writer
        if writer is not None:
            writer.write(data)

    def write_eof(self) -> None:
        if self._closing:
            return
        self._eof = True
        self.close()

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._proc._process.closeStdin()  # flushes first

    def abort(self) -> None:
        if self._lost or self._aborted:
            return
        self._aborted = self._closing = True
        writer = self._writer
        if writer is not None:
            writer.connectionLost(Failure(aborted()))  # type: ignore[no-untyped-call]

    def is_closing(self) -> bool:
        return self._closing or self._lost

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high, _ = check_buffer_limits(high, low)
        writer = self._writer
        if writer is not None:
            writer.bufferSize = self._high

    def get_write_buffer_size(self) -> int:
        t = self._writer
        if t is None:
            return 0
        # What abstract.FileDescriptor buffers: dataBuffer (from offset) and later writes.
        return len(t.dataBuffer) - t.offset + t._tempDataLen  # type: ignore[no-any-return]

    def set_protocol(self, protocol: Any) -> None:
        self._proc.set_protocol(protocol)

    def get_protocol(self) -> Any:
        return self._proc.get_protocol()  # the child's protocol: the pipe has none of its own

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._proc._session.name if name == "backend" else default


class _ReadPipe(polyloop.ReadTransport):
    """The child's stdout or stderr: Twisted's ``ProcessReader``."""

    def __init__(self, proc: TwistedSubprocess, fd: int) -> None:
        self._proc = proc
        self._fd = fd
        self._paused = self._closing = self._lost = self._aborted = False

    @property
    def _reader(self) -> Any:
        return self._proc._process.pipes.get(self._fd)

    def pause_reading(self) -> None:
        if not self._paused and not self.is_closing():
            self._paused = True
            self._reader.stopReading()

    def resume_reading(self) -> None:
        if self._paused and not self.is_closing():
            self._paused = False
            self._reader.startReading()

    def is_reading(self) -> bool:
        return not self._paused and not self.is_closing()

    def close(self) -> None:
        if not self.is_closing():
            self._closing = True
            self._proc._process.closeChildFD(self._fd)

    def abort(self) -> None:
        if self._lost or self._aborted:
            return
        self._aborted = self._closing = True
        reader = self._reader
        if reader is not None:
            reader.connectionLost(Failure(aborted()))  # type: ignore[no-untyped-call]

    def is_closing(self) -> bool:
        return self._closing or self._lost

    def set_protocol(self, protocol: Any) -> None:
        self._proc.set_protocol(protocol)

    def get_protocol(self) -> Any:
        return self._proc.get_protocol()  # the child's protocol: the pipe has none of its own

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._proc._session.name if name == "backend" else default


@implementer(IProcessProtocol)
class TwistedSubprocess(polyloop.SubprocessTransport):
    """A child on ``spawnProcess``: the ``SubprocessTransport`` the user sees, and the
    ``IProcessProtocol`` Twisted drives."""

    def __init__(self, session: Session, protocol: Any, pipes: tuple[int, ...]) -> None:
        self._session = session
        self._protocol: Any = protocol
        self._process: Any = None
        self._pid = 0
        self._returncode: int | None = None
        self._pipes: dict[int, Any] = {
            fd: (_WritePipe(self) if fd == 0 else _ReadPipe(self, fd)) for fd in pipes
        }
        self._pending: list[tuple[Callable[..., object], tuple[Any, ...]]] | None = []
        self._closed = self._finished = self._gone = False
        self._watch: _ExitWatch | None = None

    # --- IProcessProtocol (Twisted calls these, inside its own events) ---

    def makeConnection(self, process: Any) -> None:
        self._process = process
        self._pid = process.pid

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self._call(self._protocol_call, "pipe_data_received", childFD, data)

    def childConnectionLost(self, childFD: int) -> None:
        pipe = self._pipes.get(childFD)
        exc = None
        if pipe is not None:
            pipe._lost = True
            exc = aborted() if pipe._aborted else None
        self._call(self._protocol_call, "pipe_connection_lost", childFD, exc)

    def processExited(self, reason: Failure) -> None:
        status = self._process.status
        self._returncode = os.waitstatus_to_exitcode(status)
        if self._watch is not None:
            self._watch.stop()
        self._session.resources.children.discard(self)
        self._call(self._protocol_call, "process_exited")

    def processEnded(self, reason: Failure) -> None:
        self._finished = True
        self._call(self._connection_lost)

    # --- queued calls ---

    def _call(self, fn: Callable[..., object], *args: Any) -> None:
        if self._gone:
            return
        if self._pending is not None:
            self._pending.append((fn, args))
        else:
            self._session.call_soon(fn, *args)

    def _protocol_call(self, name: str, *args: Any) -> None:
        if self._protocol is not None:
            getattr(self._protocol, name)(*args)

    def _connection_lost(self) -> None:
        self._session.resources.untrack(self)
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            protocol.connection_lost(None)

    def _stdin_paused(self, paused: bool) -> None:
        if self._protocol is not None:
            call_logged(self._protocol, "pause_writing" if paused else "resume_writing")

    def _reap(self) -> None:
        """The pidfd says the child exited: Twisted's own reaping, and its callbacks."""
        if self._process is not None and self._process.pid is not None:
            self._process.reapProcess()

    # --- the SubprocessTransport ---

    def get_pid(self) -> int:
        return self._pid

    def get_returncode(self) -> int | None:
        return self._returncode

    def get_pipe_transport(self, fd: int) -> Any:
        return self._pipes.get(fd)

    def send_signal(self, signum: int) -> None:
        if self._finished and self._protocol is None:
            raise ProcessLookupError(f"process {self._pid} has exited and been reaped")
        if self._returncode is not None:
            return
        try:
            os.kill(self._pid, signum)  # not reaped yet: the pid is still the child's
        except ProcessLookupError:
            pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for pipe in self._pipes.values():
            pipe.close()
        if self._returncode is None:
            self.send_signal(signal.SIGKILL)

    def abort(self) -> None:
        self._closed = True
        for pipe in self._pipes.values():
            pipe.abort()
        if self._returncode is None and not self._finished:
            self.send_signal(signal.SIGKILL)

    def is_closing(self) -> bool:
        return self._closed or self._finished

    def set_protocol(self, protocol: Any) -> None:
        self._protocol = protocol

    def get_protocol(self) -> Any:
        return self._protocol

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "backend":
            return self._session.name
        if name == "subprocess":
            return self._process  # Twisted's IProcessTransport
        return default

    def __repr__(self) -> str:
        state = "running" if self._returncode is None else f"returncode={self._returncode}"
        return f"<polyloop twisted subprocess pid={self._pid} {state}>"

    # --- the session's end (resources.children) ---

    def reap_now(self) -> None:
        """Kill the child if it still runs and reap it (blocking, briefly); close its
        pipes. The protocol hears no more."""
        self._gone = True
        process = self._process
        if self._watch is not None:
            self._watch.stop()
        if process is None or process.pid is None:
            return
        pid = process.pid
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            status = signal.SIGKILL
        try:
            _tw_process.unregisterReapProcessHandler(pid, process)  # type: ignore[no-untyped-call]
        except RuntimeError:
            pass  # not registered: reaped at spawn
        process.processEnded(status)  # Twisted's bookkeeping; the protocol is gone
        for reader_or_writer in list(process.pipes.values()):
            reader_or_writer.connectionLost(Failure(aborted()))  # type: ignore[no-untyped-call]


def _read_more(reader: Any) -> Any:
    """``ProcessReader.doRead`` (``fdesc.readFromFD``) with ``READ_SIZE`` reads, not 8 KiB."""
    try:
        data = os.read(reader.fd, READ_SIZE)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EINTR):
            return None
        return _tw_main.CONNECTION_LOST
    if not data:
        return _tw_main.CONNECTION_DONE
    reader.dataReceived(data)
    return None


def _child_fd(std: Any, fd: int, opened: list[int]) -> Any:
    """What ``childFDs`` takes for ``std`` (a Popen-style argument) at ``fd``."""
    if std == _PIPE:
        return "w" if fd == 0 else "r"
    if std is None:
        return fd
    if std == subprocess.DEVNULL:
        devnull = os.open(os.devnull, os.O_RDWR)
        opened.append(devnull)
        return devnull
    if isinstance(std, int):
        return std
    return std.fileno()


async def spawn(
    session: Any,
    protocol: Any,
    args: Any,
    shell: bool,
    stdin: Any,
    stdout: Any,
    stderr: Any,
    popen_kwargs: dict[str, Any],
) -> polyloop.SubprocessTransport:
    """``SessionContract.subprocess`` on ``reactor.spawnProcess`` (see the module's rule
    for what keeps the core's path)."""
    extra = {k: v for k, v in popen_kwargs.items() if k not in ("cwd", "env")}
    if any(v not in (None, False) for v in extra.values()) or stderr == subprocess.STDOUT:
        return await SessionContract.subprocess(
            session, protocol, args, shell, stdin, stdout, stderr, popen_kwargs
        )
    env, cwd = popen_kwargs.get("env"), popen_kwargs.get("cwd")
    if shell:
        executable: Any = "/bin/sh"
        argv = ["/bin/sh", "-c", args]
        if cwd is not None and not os.path.isdir(cwd):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), os.fspath(cwd))
    else:
        executable = _resolve(args[0], env, cwd)
        argv = [os.fspath(a) for a in args]
    opened: list[int] = []
    try:
        child_fds = {
            fd: _child_fd(std, fd, opened) for fd, std in enumerate((stdin, stdout, stderr))
        }
        pipes = tuple(fd for fd, how in child_fds.items() if how in ("r", "w"))
        proc = TwistedSubprocess(session, protocol, pipes)
        process = session.reactor.spawnProcess(
            proc, executable, argv, env=os.environ if env is None else env,
            path=None if cwd is None else os.fspath(cwd), childFDs=child_fds,
        )  # fmt: skip
    finally:
        for fd in opened:
            os.close(fd)
    for fd in (1, 2):
        reader = process.pipes.get(fd)
        if reader is not None:
            reader.doRead = functools.partial(_read_more, reader)
    if 0 in process.pipes:
        writer = process.pipes[0]
        writer.bufferSize = DEFAULT_HIGH_WATER
        process.registerProducer(_StdinFlow(proc), True)
    session.resources.track(proc)
    session.resources.children.add(proc)
    if process.pid is not None:  # not reaped at once by registerReapProcessHandler
        proc._watch = _ExitWatch(session, process.pid, proc._reap)
    try:
        protocol.connection_made(proc)
    except BaseException:
        proc.abort()
        raise
    pending, proc._pending = proc._pending, None
    for fn, fn_args in pending or ():
        session.call_soon(fn, *fn_args)
    return proc
