"""Child processes at PEP 3156's level: ``subprocess_exec``/``subprocess_shell``, the
``SubprocessProtocol`` and the core's ``SubprocessTransport``, written once on readiness.

Rule: the order of the protocol's calls is asyncio's (``base_subprocess.py``), on every
backend:

1. ``connection_made(transport)``, before ``subprocess_exec`` returns;
2. ``pipe_data_received(fd, data)`` (1: stdout, 2: stderr) as data comes, and
   ``pipe_connection_lost(fd, exc)`` once for each pipe (0: stdin too), when it closes;
3. ``process_exited()`` once, when the child has exited and been reaped -- it may come
   before or after the pipes' ``pipe_connection_lost`` (a child's grandchild may hold a
   pipe open after the child exited; a child may close its stdout and run on);
4. ``connection_lost(None)`` once, last: after ``process_exited`` *and* every
   ``pipe_connection_lost``.

Every one of these calls is made on a later loop iteration than the event (``call_soon``,
in order), never inside a transport method. A child killed by signal N reports
``returncode == -N``. A program that does not exist raises ``FileNotFoundError`` from
``subprocess_exec`` itself (``subprocess.Popen`` raises it in the parent).

Reaping uses no signal and leaves the process-wide ``SIGCHLD`` handler alone: on Linux
``os.pidfd_open(pid)`` gives an fd that is readable once the child has exited (watched
with ``add_reader``, then ``os.waitpid(pid, WNOHANG)``); elsewhere a thread per child
blocks in ``os.waitpid`` and hands the status back with ``call_soon_threadsafe``. A child
still running when its session ends is killed and reaped there (blocking, briefly), so
no zombie outlives the session.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import subprocess
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from . import _errors
from ._protocols import BaseProtocol
from ._reaper import ChildWatch, watch_child
from ._transports import BaseTransport

if TYPE_CHECKING:
    from ._session import Session

__all__ = [
    "CoreSubprocessTransport",
    "SubprocessProtocol",
    "SubprocessTransport",
    "popen_class",
    "subprocess_exec",
    "subprocess_shell",
]

log = logging.getLogger("polyloop")

SP = TypeVar("SP", bound="SubprocessProtocol")

PIPE = subprocess.PIPE


class SubprocessProtocol(BaseProtocol):
    """What a child process tells its protocol (PEP 3156); see ``subprocess_exec`` for
    the order of the calls."""

    __slots__ = ()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        """The child wrote ``data`` to its stdout (``fd`` 1) or stderr (2)."""

    def pipe_connection_lost(self, fd: int, exc: BaseException | None) -> None:
        """The pipe of ``fd`` (0, 1 or 2) is closed: ``None`` at EOF or after ``close()``,
        else the error (``BrokenPipeError`` on stdin whose reader went with data queued)."""

    def process_exited(self) -> None:
        """The child has exited and been reaped: ``transport.get_returncode()`` is set."""


class SubprocessTransport(BaseTransport):
    """A child process (PEP 3156): its pid, its exit status, its pipes, and signals."""

    __slots__ = ()

    def get_pid(self) -> int:
        """The child's process id."""
        raise NotImplementedError

    def get_returncode(self) -> int | None:
        """``None`` while it runs; its exit status once reaped, ``-N`` if signal N
        killed it."""
        raise NotImplementedError

    def get_pipe_transport(self, fd: int) -> Any:
        """The transport of the child's ``fd`` (0: a ``WriteTransport``, 1 and 2:
        ``ReadTransport``), or ``None`` if that stream is not a pipe."""
        raise NotImplementedError

    def send_signal(self, signum: int) -> None:
        """Send ``signum`` to the child; a no-op once it has exited, and
        ``ProcessLookupError`` once the transport is finished (``connection_lost``)."""
        raise NotImplementedError

    def terminate(self) -> None:
        """``send_signal(SIGTERM)``."""
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """``send_signal(SIGKILL)``."""
        self.send_signal(signal.SIGKILL)


def popen_class() -> type[subprocess.Popen[bytes]]:
    """``subprocess.Popen`` as the process has it. After gevent's ``patch_all()`` that is
    gevent's, whose children are reaped on the hub by a ``SIGCHLD`` watcher (the stdlib's
    own class is no way out: ``patch_all`` replaced the module globals it runs on, such as
    ``_fork_exec``); the core's reaper still works there, because the patched
    ``os.waitpid`` answers from gevent's record, and a pidfd is readable once the child
    exits, reaped or not."""
    return subprocess.Popen


class _PipeProto(BaseProtocol):
    """The protocol of one pipe of a child: forwards to the subprocess transport."""

    def __init__(self, proc: CoreSubprocessTransport, fd: int) -> None:
        self.proc = proc
        self.fd = fd
        self.pipe: Any = None
        self.disconnected = False

    def connection_made(self, transport: Any) -> None:
        self.pipe = transport

    def data_received(self, data: bytes) -> None:
        self.proc._call(self.proc._protocol.pipe_data_received, self.fd, data)

    def eof_received(self) -> None:
        return None

    def connection_lost(self, exc: BaseException | None) -> None:
        self.disconnected = True
        self.proc._pipe_connection_lost(self.fd, exc)

    def pause_writing(self) -> None:
        self.proc._protocol.pause_writing()

    def resume_writing(self) -> None:
        self.proc._protocol.resume_writing()


class CoreSubprocessTransport(SubprocessTransport):
    """The core's subprocess transport: ``subprocess.Popen``, the session's pipe
    transports (``adopt_read_pipe``/``adopt_write_pipe``) and ``watch_child``."""

    def __init__(self, session: Session, protocol: SubprocessProtocol, proc: Any) -> None:
        self._session = session
        self._protocol: Any = protocol
        self._proc = proc
        self._pid: int = proc.pid
        self._returncode: int | None = None
        self._pipes: dict[int, _PipeProto] = {}
        self._pending: list[tuple[Callable[..., object], tuple[Any, ...]]] | None = []
        self._closed = False
        self._finished = False
        self._exit_waiters: list[Any] = []
        self._watch: ChildWatch | None = None

    async def _start(self) -> None:
        session, proc = self._session, self._proc
        try:
            for fd, pipe, adopt in (
                (0, proc.stdin, session.adopt_write_pipe),
                (1, proc.stdout, session.adopt_read_pipe),
                (2, proc.stderr, session.adopt_read_pipe),
            ):
                if pipe is not None:
                    proto = _PipeProto(self, fd)
                    await adopt(pipe, proto)
                    self._pipes[fd] = proto
        except BaseException:
            for proto in self._pipes.values():
                proto.pipe.abort()
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
            proc.kill()
            proc.wait()
            raise
        session.resources.track(self)
        self._watch = watch_child(session, self._pid, self._process_exited)
        self._watch.popen = proc
        self._protocol.connection_made(self)
        pending, self._pending = self._pending, None
        for cb, args in pending or ():
            session.call_soon(cb, *args)

    def _call(self, cb: Callable[..., object], *args: Any) -> None:
        if self._pending is not None:
            self._pending.append((cb, args))
        else:
            self._session.call_soon(cb, *args)

    def _pipe_connection_lost(self, fd: int, exc: BaseException | None) -> None:
        self._call(self._protocol.pipe_connection_lost, fd, exc)
        self._try_finish()

    def _process_exited(self, returncode: int) -> None:
        self._returncode = returncode
        if self._proc.returncode is None:
            self._proc.returncode = returncode  # else Popen.__del__ warns "still running"
        self._call(self._protocol.process_exited)
        self._try_finish()

    def _try_finish(self) -> None:
        if self._finished or self._returncode is None:
            return
        if all(p.disconnected for p in self._pipes.values()):
            self._finished = True
            self._call(self._connection_lost, None)

    def _connection_lost(self, exc: BaseException | None) -> None:
        self._session.resources.untrack(self)
        waiters, self._exit_waiters = self._exit_waiters, []
        protocol, self._protocol = self._protocol, None
        try:
            protocol.connection_lost(exc)
        finally:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(self._returncode)

    async def _wait(self) -> int:
        """Wait for ``connection_lost`` (exit and every pipe closed); the return code."""
        if self._finished and self._protocol is None:
            assert self._returncode is not None
            return self._returncode
        waiter = self._session.create_future()
        self._exit_waiters.append(waiter)
        return await waiter  # type: ignore[no-any-return]

    # --- the public interface ---

    def get_pid(self) -> int:
        return self._pid

    def get_returncode(self) -> int | None:
        return self._returncode

    def get_pipe_transport(self, fd: int) -> Any:
        proto = self._pipes.get(fd)
        return None if proto is None else proto.pipe

    def send_signal(self, signum: int) -> None:
        if self._finished and self._protocol is None:
            raise ProcessLookupError(f"process {self._pid} has exited and been reaped")
        if self._returncode is not None:
            return
        # Not reaped yet, so the pid cannot have been reused. Not Popen.send_signal: it
        # calls poll(), which would reap the child under the watcher.
        try:
            os.kill(self._pid, signum)
        except ProcessLookupError:
            pass

    def close(self) -> None:
        """Close the pipes, and kill the child if it still runs (as asyncio does); the
        protocol still gets ``process_exited`` and ``connection_lost``."""
        if self._closed:
            return
        self._closed = True
        for proto in self._pipes.values():
            if proto.pipe is not None:
                proto.pipe.close()
        if self._returncode is None:
            self.send_signal(signal.SIGKILL)

    def abort(self) -> None:
        """As ``close()``, dropping what stdin has queued."""
        self._closed = True
        for proto in self._pipes.values():
            if proto.pipe is not None:
                proto.pipe.abort()
        if self._returncode is None and not self._finished:
            self.send_signal(signal.SIGKILL)

    def is_closing(self) -> bool:
        return self._closed or self._finished

    def set_protocol(self, protocol: Any) -> None:
        self._protocol = protocol

    def get_protocol(self) -> Any:
        return self._protocol

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "subprocess":
            return self._proc
        if name == "backend":
            return self._session.name
        return default

    def __repr__(self) -> str:
        state = "running" if self._returncode is None else f"returncode={self._returncode}"
        return f"<polyloop subprocess pid={self._pid} {state}>"


async def spawn_core(
    session: Session,
    protocol: SubprocessProtocol,
    args: Any,
    shell: bool,
    stdin: Any,
    stdout: Any,
    stderr: Any,
    kwargs: dict[str, Any],
) -> CoreSubprocessTransport:
    """The default of ``SessionContract.subprocess``: Popen, then the pipes and the
    reaper on the session's readiness."""
    proc = popen_class()(
        args, shell=shell, stdin=stdin, stdout=stdout, stderr=stderr, bufsize=0, **kwargs
    )
    if proc.stdout is not None:
        _widen(proc.stdout.fileno())
    transport = CoreSubprocessTransport(session, protocol, proc)
    await transport._start()
    return transport


#: The size asked for a child's stdout pipe (Linux: F_SETPIPE_SZ). With the kernel's
#: 64 KiB a busy reader gets at most 64 KiB per readable event, one loop turn each;
#: wider, it takes what piled up meanwhile in one read (_pipes.PIPE_READ_SIZE). 100 MiB
#: through cat with open_process, against each framework's own process API (5
#: interleaved rounds): gevent 0.86x -> 1.34x, Tornado 1.24x -> 1.49x. Only stdout, and
#: 256 KiB, not more: the kernel counts pipe pages per user, and an unprivileged user
#: past /proc/sys/fs/pipe-user-pages-soft (16,384 pages) gets 2-page pipes from then on;
#: 64 pages a child keeps that at 256 children alive at once.
PIPE_SIZE = 256 * 1024


def _widen(fd: int) -> None:
    setpipe = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setpipe is not None:
        try:
            fcntl.fcntl(fd, setpipe, PIPE_SIZE)
        except OSError:  # over pipe-max-size, or not a pipe: the kernel's size stays
            pass


def _check_popen_kwargs(kwargs: dict[str, Any]) -> None:
    if "shell" in kwargs:
        raise ValueError("shell is set by the call: subprocess_exec or subprocess_shell")
    for name in ("universal_newlines", "text", "encoding", "errors"):
        if kwargs.get(name):
            raise ValueError(f"{name} must be false: the pipes carry bytes")
    if kwargs.get("bufsize", 0) != 0:
        raise ValueError("bufsize must be 0")
    kwargs.pop("bufsize", None)


async def subprocess_exec(
    session: Session,
    /,
    protocol_factory: Callable[[], SP],
    program: str | bytes | os.PathLike[str],
    *args: str | bytes | os.PathLike[str],
    stdin: Any = PIPE,
    stdout: Any = PIPE,
    stderr: Any = PIPE,
    cwd: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
    **popen_kwargs: Any,
) -> tuple[SubprocessTransport, SP]:
    """Run ``program`` with ``args`` (no shell) and return ``(transport, protocol)``.

    ``stdin``/``stdout``/``stderr``: ``subprocess.PIPE`` (the default: a pipe the
    protocol sees), ``subprocess.DEVNULL``, ``None`` (inherit), a file object or an fd;
    ``stderr=subprocess.STDOUT`` too. ``cwd``, ``env`` and other keyword arguments go to
    ``subprocess.Popen`` (text mode is refused: pipes carry bytes). ``FileNotFoundError``
    if ``program`` does not exist, ``PermissionError`` if it is not executable.

    The protocol's calls come in asyncio's order (see ``polyloop.SubprocessProtocol``):
    ``connection_made`` before this returns; ``pipe_data_received`` and one
    ``pipe_connection_lost(fd, exc)`` per pipe; ``process_exited()`` once the child is
    reaped (``get_returncode()``: its exit status, ``-N`` if signal N killed it); and
    ``connection_lost(None)`` last, once the child exited *and* every pipe closed.
    ``close()`` closes the pipes and kills a child that still runs; a child still running
    when the session ends is killed and reaped then.
    """
    _errors.check_callable("protocol_factory", protocol_factory)
    for arg in (program, *args):
        if not isinstance(arg, (str, bytes, os.PathLike)):
            raise TypeError(
                f"program and args must be str, bytes or path-like, not {type(arg).__name__}"
            )
    _check_popen_kwargs(popen_kwargs)
    session.check_open()
    protocol = protocol_factory()
    transport = await session.subprocess(
        protocol, [program, *args], False, stdin, stdout, stderr,
        dict(popen_kwargs, cwd=cwd, env=env),
    )  # fmt: skip
    return transport, protocol


async def subprocess_shell(
    session: Session,
    /,
    protocol_factory: Callable[[], SP],
    cmd: str | bytes,
    *,
    stdin: Any = PIPE,
    stdout: Any = PIPE,
    stderr: Any = PIPE,
    cwd: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
    **popen_kwargs: Any,
) -> tuple[SubprocessTransport, SP]:
    """Run ``cmd`` with the shell (``/bin/sh -c cmd``) and return ``(transport,
    protocol)``, as ``subprocess_exec``. A command that does not exist is the shell's
    error: exit status 127, not ``FileNotFoundError``."""
    _errors.check_callable("protocol_factory", protocol_factory)
    if not isinstance(cmd, (str, bytes)):
        raise TypeError(f"cmd must be a str or bytes, not {type(cmd).__name__}")
    _check_popen_kwargs(popen_kwargs)
    session.check_open()
    protocol = protocol_factory()
    transport = await session.subprocess(
        protocol, cmd, True, stdin, stdout, stderr, dict(popen_kwargs, cwd=cwd, env=env)
    )
    return transport, protocol
