"""asyncio's own child processes and pipe transports behind polyloop's hooks
(``subprocess``, ``adopt_read_pipe``, ``adopt_write_pipe``).

Rule: the data path stays asyncio's (``loop.subprocess_exec``/``subprocess_shell``,
``loop.connect_read_pipe``/``connect_write_pipe``); the wrappers here only hold asyncio's
transports to polyloop's contract where asyncio differs:

- a pipe's ``abort()`` reports ``connection_lost(None)``: the contract says
  ``ConnectionAbortedError`` (``abort_native``, as for sockets);
- ``write()`` after ``write_eof()`` is a silent no-op (a warning after five): the
  contract says ``RuntimeError``; ``write("str")`` is an ``AssertionError``: ``TypeError``;
- ``SubprocessTransport.send_signal()`` and ``close()`` call ``Popen.poll()`` first
  (bpo-38630), which reaps an exited child under the child watcher's feet: the watcher
  then reports returncode 255 with a warning. Here signals go through ``os.kill`` (the
  child is not reaped yet, so its pid cannot have been reused), and asyncio's
  ``close()`` runs only once the child is reaped;
- ``connect_read_pipe`` wants a file object: an int fd is wrapped in one.

Reaping is asyncio's child watcher, that is the event loop policy's (Python 3.11's
default is ``ThreadedChildWatcher``: a thread per child blocked in ``waitpid(pid)``, which
works on any thread and on a loop the application runs). Where the policy's watcher
cannot serve this loop (``watcher_ready``: not active -- asyncio would refuse the child
with ``RuntimeError`` -- or one attached to the main thread's loop, used from another
thread) the session keeps the core's path (a pidfd).

On uvloop (``loop="uvloop"``) all three hooks keep the core's path: uvloop's own fails
the checks in ways a wrapper cannot mend (uvloop 0.21, measured with ``polyloop
conformance --backend asyncio:loop=uvloop``): a program that does not exist leaves 9 fds
open; a child that closes its stdout and runs on never gets ``pipe_connection_lost(1)``;
``write_eof()`` on a write pipe raises ``NotImplementedError`` and a pipe's reader
going away ends the writer with ``OSError(ENOTSOCK)``.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import polyloop
from polyloop.lowlevel import (
    SessionContract,
    aborted,
    call_logged,
    check_buffer_limits,
    check_bytes,
    write_after_eof,
)

from ._transport import abort_native

if TYPE_CHECKING:
    from ._session import AsyncioSession

__all__ = ["adopt_read_pipe", "adopt_write_pipe", "spawn", "stock", "watcher_ready"]


class _Pipe:
    """What both pipe wrappers share."""

    _t: Any
    _session: AsyncioSession

    def __init__(self, transport: Any, session: AsyncioSession) -> None:
        self._t = transport
        self._session = session
        self._aborted = False
        self._lost = False

    def close(self) -> None:
        self._t.close()

    def abort(self) -> None:
        if not self._aborted and not self._lost:
            self._aborted = True
            abort_native(self._t)

    def is_closing(self) -> bool:
        return self._lost or self._aborted or self._t.is_closing()

    def set_protocol(self, protocol: Any) -> None:
        self._t.set_protocol(protocol)

    def get_protocol(self) -> Any:
        return self._t.get_protocol()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "backend":
            return self._session.name
        return self._t.get_extra_info(name, default)

    def _lost_with(self, exc: BaseException | None) -> BaseException | None:
        self._lost = True
        return exc


class ReadPipe(_Pipe, polyloop.ReadTransport):
    """An asyncio read-pipe transport, held to polyloop's ``ReadTransport``."""

    def __init__(self, transport: Any, session: AsyncioSession) -> None:
        super().__init__(transport, session)
        self._paused = False

    def pause_reading(self) -> None:
        if not self._paused:
            self._paused = True
            if not self.is_closing():
                self._t.pause_reading()

    def resume_reading(self) -> None:
        if self._paused:
            self._paused = False
            if not self.is_closing():
                self._t.resume_reading()

    def is_reading(self) -> bool:
        return not self._paused and not self.is_closing()

    def can_write_eof(self) -> bool:
        return False


class WritePipe(_Pipe, polyloop.WriteTransport):
    """An asyncio write-pipe transport, held to polyloop's ``WriteTransport``."""

    def __init__(self, transport: Any, session: AsyncioSession) -> None:
        super().__init__(transport, session)
        self._eof = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        check_bytes(data)
        if self._eof and not self._lost:
            raise write_after_eof()
        if self.is_closing() or not data:
            return
        if type(data) is not bytes and self._session.copy_writes:
            data = bytes(data)  # uvloop keeps a reference to what it buffers
        self._t.write(data)

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def write_eof(self) -> None:
        if self.is_closing():
            return
        self._eof = True
        self._t.write_eof()

    def can_write_eof(self) -> bool:
        return True

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        check_buffer_limits(high, low)
        self._t.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return int(self._t.get_write_buffer_size())


class _PipeBridge(asyncio.Protocol):
    """The protocol asyncio sees for an adopted pipe: forwards to the user's protocol."""

    def __init__(self, session: AsyncioSession, protocol: Any, kind: type[_Pipe]) -> None:
        self.session = session
        self.protocol = protocol
        self.kind = kind
        self.pipe: Any = None  # a ReadPipe or WritePipe
        self.failed: BaseException | None = None

    def connection_made(self, transport: Any) -> None:
        self.pipe = self.kind(transport, self.session)
        self.session._keep_native(transport)  # aborted at the session's end
        try:
            self.protocol.connection_made(self.pipe)
        except BaseException as exc:
            self.failed = exc
            self.pipe.abort()

    def data_received(self, data: bytes) -> None:
        self.protocol.data_received(data)

    def eof_received(self) -> None:
        self.protocol.eof_received()  # a pipe cannot be half-open: the answer is ignored

    def pause_writing(self) -> None:
        call_logged(self.protocol, "pause_writing")

    def resume_writing(self) -> None:
        call_logged(self.protocol, "resume_writing")

    def connection_lost(self, exc: BaseException | None) -> None:
        self.pipe._lost = True
        if exc is None and self.pipe._aborted:
            exc = aborted()
        self.protocol.connection_lost(exc)


def _as_file(pipe: Any, mode: str) -> Any:
    # asyncio's pipe transports call pipe.fileno() and, at the end, pipe.close().
    return open(pipe, mode, buffering=0) if isinstance(pipe, int) else pipe


def stock(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop`` is the standard library's (a mixed-mode loop is), not uvloop."""
    return isinstance(loop, asyncio.BaseEventLoop)


async def adopt_read_pipe(
    session: AsyncioSession, pipe: Any, protocol: Any
) -> polyloop.ReadTransport:
    """``SessionContract.adopt_read_pipe`` on ``loop.connect_read_pipe`` (on uvloop: the
    core's, see the module's rule)."""
    if not stock(session.loop):
        return await SessionContract.adopt_read_pipe(session, pipe, protocol)
    bridge = _PipeBridge(session, protocol, ReadPipe)
    await session.loop.connect_read_pipe(lambda: bridge, _as_file(pipe, "rb"))
    if bridge.failed is not None:
        raise bridge.failed
    adopted: ReadPipe = bridge.pipe
    return adopted


async def adopt_write_pipe(
    session: AsyncioSession, pipe: Any, protocol: Any
) -> polyloop.WriteTransport:
    """``SessionContract.adopt_write_pipe`` on ``loop.connect_write_pipe`` (on uvloop:
    the core's)."""
    if not stock(session.loop):
        return await SessionContract.adopt_write_pipe(session, pipe, protocol)
    bridge = _PipeBridge(session, protocol, WritePipe)
    await session.loop.connect_write_pipe(lambda: bridge, _as_file(pipe, "wb"))
    if bridge.failed is not None:
        raise bridge.failed
    adopted: WritePipe = bridge.pipe
    return adopted


def watcher_ready(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether the standard ``loop.subprocess_exec`` can reap for ``loop`` (before 3.12,
    through the policy's one child watcher): a ``ThreadedChildWatcher`` or
    ``MultiLoopChildWatcher`` serves any loop in any thread; the others
    (``SafeChildWatcher``, ``FastChildWatcher``, 3.11's ``PidfdChildWatcher``) are
    attached to one loop, the main thread's, and ``PidfdChildWatcher`` would add its
    reader to that loop from this thread: only a session on the main thread uses them."""
    if not isinstance(loop, asyncio.SelectorEventLoop) or sys.version_info >= (3, 12):
        return True  # 3.12+: pidfd or a thread, chosen by asyncio
    watcher = asyncio.get_child_watcher()  # creates the ThreadedChildWatcher on first use
    if not watcher.is_active():
        return False
    anywhere = (asyncio.ThreadedChildWatcher, asyncio.MultiLoopChildWatcher)
    return isinstance(watcher, anywhere) or threading.current_thread() is threading.main_thread()


class AsyncioSubprocess(polyloop.SubprocessTransport):
    """asyncio's ``SubprocessTransport``, held to polyloop's (see the module's rule)."""

    def __init__(self, session: AsyncioSession, transport: Any) -> None:
        self._session = session
        self._t = transport
        self._pid: int = transport.get_pid()
        self._pipes: dict[int, _Pipe] = {}
        for fd, kind in ((0, WritePipe), (1, ReadPipe), (2, ReadPipe)):
            native = transport.get_pipe_transport(fd)
            if native is not None:
                self._pipes[fd] = kind(native, session)
        self._closed = False
        self._finished = False
        self._reaped_at_end = False

    def get_pid(self) -> int:
        return self._pid

    def get_returncode(self) -> int | None:
        code: int | None = self._t.get_returncode()
        return code

    def get_pipe_transport(self, fd: int) -> Any:
        return self._pipes.get(fd)

    def send_signal(self, signum: int) -> None:
        if self._finished:
            raise ProcessLookupError(f"process {self._pid} has exited and been reaped")
        if self._t.get_returncode() is not None:
            return
        try:
            os.kill(self._pid, signum)  # not Popen.send_signal: see the module's rule
        except ProcessLookupError:
            pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for pipe in self._pipes.values():
            pipe.close()
        if self._t.get_returncode() is None:
            self.send_signal(signal.SIGKILL)

    def abort(self) -> None:
        self._closed = True
        for pipe in self._pipes.values():
            pipe.abort()
        if self._t.get_returncode() is None and not self._finished:
            self.send_signal(signal.SIGKILL)

    def is_closing(self) -> bool:
        return self._closed or self._finished

    def set_protocol(self, protocol: Any) -> None:
        self._t.get_protocol().protocol = protocol

    def get_protocol(self) -> Any:
        return self._t.get_protocol().protocol

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "backend":
            return self._session.name
        return self._t.get_extra_info(name, default)

    def __repr__(self) -> str:
        code = self._t.get_returncode()
        state = "running" if code is None else f"returncode={code}"
        return f"<polyloop asyncio subprocess pid={self._pid} {state}>"

    # --- the session's end ---

    def reap_now(self) -> None:
        """At the session's end (``resources.children``): kill the child if it runs, and
        let the watcher reap it; close asyncio's transport. The protocol hears no more."""
        self._reaped_at_end = True
        if not self._finished and self._t.get_returncode() is None:
            try:
                os.kill(self._pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _wait_reaped(self._pid)
        self._t.close()  # after the reaping: its poll() finds nothing to reap


def _wait_reaped(pid: int) -> None:
    """Block until the child ``pid`` (killed) is reaped: by the watcher's thread if it
    does so within 0.2 s, else here (a watcher that reaps on the loop, which is not
    running now). Reaping it first would make the watcher report 255 with a warning."""
    try:
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # until it is a zombie
    except ChildProcessError:
        return
    deadline = time.monotonic() + 0.2
    while time.monotonic() < deadline:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is None:
                return  # reaped, and another child of ours has the pid? cannot be yet
        except ChildProcessError:
            return
        time.sleep(0.001)
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


class _Bridge(asyncio.SubprocessProtocol):
    """The protocol asyncio sees for a child: forwards to the user's protocol, in
    asyncio's order (which is polyloop's)."""

    def __init__(self, session: AsyncioSession, protocol: Any) -> None:
        self.session = session
        self.protocol = protocol
        self.proc: AsyncioSubprocess | None = None
        self.failed: BaseException | None = None

    def connection_made(self, transport: Any) -> None:
        self.proc = proc = AsyncioSubprocess(self.session, transport)
        self.session.resources.children.add(proc)
        try:
            self.protocol.connection_made(proc)
        except BaseException as exc:
            self.failed = exc
            proc.close()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self.protocol.pipe_data_received(fd, data)

    def pipe_connection_lost(self, fd: int, exc: BaseException | None) -> None:
        assert self.proc is not None
        if self.proc._reaped_at_end:
            return
        pipe = self.proc._pipes[fd]
        pipe._lost = True
        if exc is None and pipe._aborted:
            exc = aborted()
        elif isinstance(exc, BrokenPipeError) and not exc.errno:
            exc = BrokenPipeError(errno.EPIPE, "the pipe's reader closed it")
        self.protocol.pipe_connection_lost(fd, exc)

    def pause_writing(self) -> None:
        call_logged(self.protocol, "pause_writing")

    def resume_writing(self) -> None:
        call_logged(self.protocol, "resume_writing")

    def process_exited(self) -> None:
        assert self.proc is not None
        if not self.proc._reaped_at_end:
            self.protocol.process_exited()

    def connection_lost(self, exc: BaseException | None) -> None:
        proc = self.proc
        assert proc is not None
        proc._finished = True
        self.session.resources.children.discard(proc)
        proc._t.close()  # reaped: asyncio's close() has nothing left to poll or kill
        if not proc._reaped_at_end:
            self.protocol.connection_lost(exc)


async def spawn(
    session: AsyncioSession,
    protocol: Any,
    args: Any,
    shell: bool,
    stdin: Any,
    stdout: Any,
    stderr: Any,
    popen_kwargs: dict[str, Any],
) -> polyloop.SubprocessTransport:
    """``SessionContract.subprocess`` on ``loop.subprocess_exec``/``subprocess_shell``
    (the core's on uvloop, and where the policy's child watcher cannot reap for this
    loop)."""
    if not stock(session.loop) or not watcher_ready(session.loop):
        return await SessionContract.subprocess(
            session, protocol, args, shell, stdin, stdout, stderr, popen_kwargs
        )
    bridge = _Bridge(session, protocol)
    loop = session.loop
    std = {"stdin": stdin, "stdout": stdout, "stderr": stderr}
    if shell:
        await loop.subprocess_shell(lambda: bridge, args, **std, **popen_kwargs)
    else:
        program, *rest = args
        await loop.subprocess_exec(lambda: bridge, program, *rest, **std, **popen_kwargs)
    assert bridge.proc is not None
    if bridge.failed is not None:
        raise bridge.failed
    return bridge.proc
