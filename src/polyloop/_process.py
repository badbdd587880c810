"""Child processes at the streams level, as anyio shapes them: ``run_process`` and
``open_process`` with a ``Process`` whose pipes are ``polyloop.Stream``s.

Rule: built only on ``Session.subprocess_exec``/``subprocess_shell`` and the core's
``Stream`` (nothing here knows a framework), the way asyncio builds
``asyncio.subprocess`` on its subprocess transports: one ``StreamProtocol`` per pipe,
fed by the ``SubprocessProtocol`` callbacks, so a Stream's read limit pauses the pipe's
reading and the child blocks on a full pipe (nothing is lost, nothing grows unbounded).

Cancellation never leaves a child behind: a cancelled ``wait()`` (or ``run_process``)
kills the child and waits, shielded, until it is reaped before ``Cancelled`` goes on.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Sequence
from typing import Any

from ._cancel import CancelScope
from ._context import current_backend
from ._errors import Cancelled
from ._futures import Future
from ._session import Session
from ._streams import DEFAULT_LIMIT, Stream, StreamProtocol
from ._subprocess import SubprocessProtocol, SubprocessTransport
from ._taskgroup import TaskGroup

__all__ = ["Process", "open_process", "run_process"]

PIPE = subprocess.PIPE
Command = str | bytes | Sequence[str | bytes | os.PathLike[str]]


class _ProcessProtocol(SubprocessProtocol):
    """Feeds each pipe into a ``StreamProtocol`` and records the exit."""

    def __init__(self, session: Session, limit: int) -> None:
        self.session = session
        self.limit = limit
        self.streams: dict[int, StreamProtocol] = {}
        self.exited: Future[int] = session.create_future()
        self.transport: SubprocessTransport | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        for fd in (0, 1, 2):
            pipe = transport.get_pipe_transport(fd)
            if pipe is not None:
                protocol = StreamProtocol(self.session, self.limit, None)
                protocol.connection_made(pipe)
                self.streams[fd] = protocol

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self.streams[fd].data_received(data)

    def pipe_connection_lost(self, fd: int, exc: BaseException | None) -> None:
        self.streams[fd].connection_lost(exc)

    def pause_writing(self) -> None:
        self.streams[0].pause_writing()

    def resume_writing(self) -> None:
        self.streams[0].resume_writing()

    def process_exited(self) -> None:
        assert self.transport is not None
        code = self.transport.get_returncode()
        if not self.exited.done() and code is not None:
            self.exited.set_result(code)


class Process:
    """A running child process, from ``polyloop.open_process``: its pipes as Streams
    (``stdin`` to send to, ``stdout``/``stderr`` to receive from; ``None`` for what is
    not a pipe), ``wait()``, signals, ``pid`` and ``returncode``.

    ``async with await polyloop.open_process([...]) as process:`` -- on a normal exit
    of the block the pipes are closed and the child waited for (a child that reads its
    stdin to EOF sees it now); on an exception or a cancellation it is killed first. Either
    way it is reaped before the block is left."""

    def __init__(self, transport: SubprocessTransport, protocol: _ProcessProtocol) -> None:
        self._transport = transport
        self._protocol = protocol
        streams = protocol.streams
        self.stdin: Stream | None = streams[0].stream if 0 in streams else None
        self.stdout: Stream | None = streams[1].stream if 1 in streams else None
        self.stderr: Stream | None = streams[2].stream if 2 in streams else None

    def __repr__(self) -> str:
        return f"<polyloop.Process pid={self.pid} returncode={self.returncode}>"

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self._transport.get_pid()

    @property
    def returncode(self) -> int | None:
        """``None`` while it runs; its exit status once reaped (``-N``: killed by signal
        N)."""
        return self._transport.get_returncode()

    @property
    def transport(self) -> SubprocessTransport:
        """The ``SubprocessTransport`` underneath."""
        return self._transport

    async def wait(self) -> int:
        """Wait until the child has exited and been reaped; its exit status (``-N`` for
        signal N). Cancelled, it kills the child and waits until it is reaped, then raises
        ``Cancelled``."""
        exited = self._protocol.exited
        if exited.done():
            return exited.result()
        waiter: Future[int] = self._protocol.session.create_future()

        def relay(fut: Future[int]) -> None:
            if not waiter.done():
                waiter.set_result(fut.result())

        exited.add_done_callback(relay)
        try:
            return await waiter
        except Cancelled:
            self.kill()
            with CancelScope(shield=True):
                await self._reaped()
            raise

    async def _reaped(self) -> None:
        exited = self._protocol.exited
        if not exited.done():
            waiter: Future[None] = self._protocol.session.create_future()

            def wake(_: Future[int]) -> None:
                if not waiter.done():
                    waiter.set_result(None)

            exited.add_done_callback(wake)
            await waiter

    def send_signal(self, signum: int) -> None:
        """Send ``signum`` to the child (a no-op once it has exited)."""
        if self.returncode is None:
            self._transport.send_signal(signum)

    def terminate(self) -> None:
        """``SIGTERM``."""
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """``SIGKILL``."""
        self.send_signal(signal.SIGKILL)

    async def aclose(self, *, kill: bool = False) -> None:
        """Close the pipes, then wait for the child (killing it first if ``kill``); a
        cancellation of the wait kills it, and it is reaped either way."""
        if kill:
            self.kill()
        try:
            for stream in (self.stdin, self.stdout, self.stderr):
                if stream is not None:
                    await stream.aclose()
            await self.wait()
        except BaseException:
            self.kill()
            with CancelScope(shield=True):
                await self._reaped()
            raise
        finally:
            self._transport.close()

    async def __aenter__(self) -> Process:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        await self.aclose(kill=exc_type is not None)


async def open_process(
    command: Command,
    *,
    stdin: Any = PIPE,
    stdout: Any = PIPE,
    stderr: Any = PIPE,
    cwd: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
    limit: int = DEFAULT_LIMIT,
    **popen_kwargs: Any,
) -> Process:
    """Start ``command`` and return its ``Process``: a ``str`` (or bytes) runs in the
    shell, a sequence is the program and its arguments. ``stdin``/``stdout``/``stderr``
    as ``subprocess_exec`` takes them; a pipe becomes a Stream that buffers up to
    ``limit`` bytes before it stops reading (the child then blocks on a full pipe).
    ``FileNotFoundError`` for a program that does not exist."""
    session = current_backend()
    kwargs = dict(popen_kwargs, stdin=stdin, stdout=stdout, stderr=stderr, cwd=cwd, env=env)
    transport: SubprocessTransport
    if isinstance(command, (str, bytes)):
        transport, protocol = await session.subprocess_shell(
            lambda: _ProcessProtocol(session, limit), command, **kwargs
        )
    else:
        if not command:
            raise ValueError("open_process needs a program: the command is empty")
        program, *args = command
        transport, protocol = await session.subprocess_exec(
            lambda: _ProcessProtocol(session, limit), program, *args, **kwargs
        )
    return Process(transport, protocol)


async def _read_all(stream: Stream, into: list[bytes]) -> None:
    while chunk := await stream.receive():
        into.append(chunk)


async def _feed(stream: Stream, data: bytes) -> None:
    try:
        await stream.send(data)
        await stream.aclose()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the child stopped reading: its exit status says the rest


async def run_process(
    command: Command,
    *,
    input: bytes | None = None,
    check: bool = True,
    stdin: Any = None,
    stdout: Any = PIPE,
    stderr: Any = PIPE,
    cwd: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
    **popen_kwargs: Any,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``command`` (as ``open_process`` takes it) to its end and return a
    ``subprocess.CompletedProcess`` (``args``, ``returncode``, ``stdout``, ``stderr``:
    bytes, or ``None`` for what was not a pipe). ``input`` is written to its stdin, which
    is then closed (without ``input``, ``stdin`` is what the child gets: inherited by
    default). ``check=True``: a non-zero exit status raises
    ``subprocess.CalledProcessError`` (with the output). Cancelled, it kills the child
    and reaps it before ``Cancelled`` goes on."""
    if input is not None:
        stdin = PIPE
    out: list[bytes] = []
    err: list[bytes] = []
    async with await open_process(
        command, stdin=stdin, stdout=stdout, stderr=stderr, cwd=cwd, env=env, **popen_kwargs
    ) as process:
        async with TaskGroup() as tg:
            if process.stdin is not None:
                tg.spawn(_feed(process.stdin, input or b""))
            if process.stdout is not None:
                tg.spawn(_read_all(process.stdout, out))
            if process.stderr is not None:
                tg.spawn(_read_all(process.stderr, err))
        returncode = await process.wait()
    stdout_data = b"".join(out) if process.stdout is not None else None
    stderr_data = b"".join(err) if process.stderr is not None else None
    if check and returncode != 0:
        raise subprocess.CalledProcessError(returncode, command, stdout_data, stderr_data)
    return subprocess.CompletedProcess(command, returncode, stdout_data, stderr_data)
