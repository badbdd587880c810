"""Pipe transports on a session's readiness callbacks, and ``connect_read_pipe`` /
``connect_write_pipe``.

Rule: written once on tier 1 (``add_reader``/``add_writer``, ``call_soon``), so every
backend has them; a backend with pipe transports of its own plugs them in through the
``adopt_read_pipe``/``adopt_write_pipe`` hooks. The semantics are asyncio's
(``unix_events._UnixReadPipeTransport``/``_UnixWritePipeTransport``) held to polyloop's
Transport contract: ``connection_made`` before the connect returns, ``connection_lost``
once, never from inside ``close()``/``abort()``, ``ConnectionAbortedError`` after
``abort()``, ``RuntimeError`` for a write after ``write_eof()``.

A read pipe reads one chunk per readable event; at EOF it calls ``eof_received`` and then
``connection_lost(None)`` (a pipe cannot be half-open: the return value is ignored).

A write pipe writes at once when nothing is queued, buffers what the kernel refuses, and
flushes it on writable events, with ``pause_writing``/``resume_writing`` around the
high-water mark. It also watches its fd for *reading*: the write end of a pipe becomes
readable (``EPOLLERR``/``POLLERR``) when the reading end is closed, which is how it learns
that the reader (a child) went away without a write failing (``connection_lost(None)``,
or ``BrokenPipeError`` if data was still queued) -- asyncio does the same.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from . import _errors
from ._errors import aborted, call_logged, check_bytes, write_after_eof
from ._transports import DEFAULT_HIGH_WATER, BaseTransport, check_buffer_limits

if TYPE_CHECKING:
    from ._session import Session

#: A pipe read takes up to this much (a child's stdout is widened to 256 KiB: _subprocess).
PIPE_READ_SIZE = 256 * 1024


__all__ = [
    "PipeReadTransport",
    "PipeWriteTransport",
    "ReadTransport",
    "WriteTransport",
    "connect_read_pipe",
    "connect_write_pipe",
    "pipe_fd",
]

T = TypeVar("T")

log = logging.getLogger("polyloop")


class ReadTransport(BaseTransport):
    """The reading end of a pipe (PEP 3156's ``ReadTransport``): ``data_received``,
    then ``eof_received`` and ``connection_lost(None)`` at EOF."""

    __slots__ = ()

    def pause_reading(self) -> None:
        """Stop calling ``data_received`` until ``resume_reading()`` (the writer then
        blocks once the kernel's pipe buffer is full). Idempotent."""
        raise NotImplementedError

    def resume_reading(self) -> None:
        """Undo ``pause_reading()``. Idempotent."""
        raise NotImplementedError

    def is_reading(self) -> bool:
        """False between ``pause_reading()`` and ``resume_reading()``, and once closing."""
        raise NotImplementedError

    def can_write_eof(self) -> bool:
        """False: a read pipe has no writing direction (for ``polyloop.Stream``)."""
        return False


class WriteTransport(BaseTransport):
    """The writing end of a pipe (PEP 3156's ``WriteTransport``), with the same write,
    flow-control and ``write_eof`` rules as ``polyloop.Transport``."""

    __slots__ = ()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data``; never blocks. ``TypeError`` for what is not bytes-like; a
        no-op after ``close()``/``abort()``/loss; ``RuntimeError`` after ``write_eof()``."""
        raise NotImplementedError

    def writelines(self, list_of_data: Any) -> None:
        """Write each item in turn, as one write."""
        self.write(b"".join(list_of_data))

    def write_eof(self) -> None:
        """Flush, then close the pipe: the reader sees EOF. For a pipe this ends the
        transport (``connection_lost(None)`` once flushed)."""
        raise NotImplementedError

    def can_write_eof(self) -> bool:
        """True."""
        return True

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """As ``Transport.set_write_buffer_limits`` (default 64 KiB, ``high // 4``)."""
        raise NotImplementedError

    def get_write_buffer_size(self) -> int:
        """Bytes written but not yet handed to the kernel."""
        raise NotImplementedError


def _log_failed(protocol: Any, method: str, exc: Exception) -> None:
    log.error("polyloop: %s.%s raised", type(protocol).__name__, method, exc_info=exc)


def pipe_fd(pipe: Any) -> int:
    """The fd of ``pipe`` (an int or an object with ``fileno()``); ``ValueError`` unless
    it is an open pipe, socket or character device (what a loop can watch: a regular
    file is always "ready", and epoll refuses it)."""
    if isinstance(pipe, bool):
        raise TypeError("a pipe (an object with fileno(), or an int fd) was expected, not bool")
    if isinstance(pipe, int):
        fd = pipe
    else:
        fileno = getattr(pipe, "fileno", None)
        if fileno is None:
            raise TypeError(
                "a pipe (an object with fileno(), or an int fd) was expected, not"
                f" {type(pipe).__name__}"
            )
        fd = fileno()
    try:
        mode = os.fstat(fd).st_mode
    except OSError as exc:
        raise ValueError(f"{pipe!r} is not an open file descriptor") from exc
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)):
        raise ValueError(f"{pipe!r} is not a pipe, a socket or a character device")
    return fd


class _PipeEnd:
    """What both pipe transports share: the fd, the object that owns it, the protocol,
    the session, and the end of their life."""

    _session: Session
    _pipe: Any
    _fd: int
    _protocol: Any
    _closing: bool
    _lost: bool
    _extra: dict[str, Any]

    def _setup(self, session: Session, pipe: Any, protocol: Any) -> None:
        self._session = session
        self._pipe = pipe
        self._fd = pipe_fd(pipe)
        os.set_blocking(self._fd, False)
        self._protocol = protocol
        self._closing = self._lost = False
        self._extra = {"pipe": pipe, "backend": session.name}

    def _lose(self, exc: BaseException | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._session.call_soon(self._finish_lost, exc)

    def _finish_lost(self, exc: BaseException | None) -> None:
        pipe, self._pipe = self._pipe, None
        try:
            if isinstance(pipe, int):
                os.close(pipe)
            elif pipe is not None:
                pipe.close()
        except OSError:
            pass
        self._extra["pipe"] = None
        self._session.resources.untrack(self)  # type: ignore[arg-type]
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            protocol.connection_lost(exc)

    @property
    def fd(self) -> int:
        """The pipe's file descriptor (closed once ``connection_lost`` has run)."""
        return self._fd

    def is_closing(self) -> bool:
        return self._closing

    def set_protocol(self, protocol: Any) -> None:
        self._protocol = protocol

    def get_protocol(self) -> Any:
        return self._protocol

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def __repr__(self) -> str:
        state = " lost" if self._lost else " closing" if self._closing else ""
        return f"<polyloop {type(self).__name__} fd={self._fd}{state}>"


class PipeReadTransport(_PipeEnd, ReadTransport):
    """The core's read-pipe transport on ``add_reader``."""

    def __init__(self, session: Session, pipe: Any, protocol: Any) -> None:
        self._setup(session, pipe, protocol)
        self._paused = False
        session.resources.track(self)
        try:
            protocol.connection_made(self)
        except BaseException:
            self.abort()
            raise
        if not self._closing and not self._paused:
            session.add_reader(self._fd, self._on_readable)

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, PIPE_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if exc.errno == errno.EIO:  # a pty whose other side closed: its EOF
                data = b""
            else:
                self._drop(exc)
                return
        if data:
            try:
                self._protocol.data_received(data)
            except Exception as exc:
                _log_failed(self._protocol, "data_received", exc)
                self._drop(exc)
            return
        self._closing = True
        self._session.remove_reader(self._fd)
        try:
            self._protocol.eof_received()
        except Exception as exc:
            _log_failed(self._protocol, "eof_received", exc)
            self._lose(exc)
            return
        self._lose(None)

    def pause_reading(self) -> None:
        if not self._paused and not self._closing:
            self._paused = True
            self._session.remove_reader(self._fd)

    def resume_reading(self) -> None:
        if self._paused and not self._closing:
            self._paused = False
            self._session.add_reader(self._fd, self._on_readable)

    def is_reading(self) -> bool:
        return not self._paused and not self._closing

    def close(self) -> None:
        if not self._closing:
            self._drop(None)

    def abort(self) -> None:
        if not self._lost:
            self._drop(aborted())

    def _drop(self, exc: BaseException | None) -> None:
        self._closing = True
        if not self._lost:
            self._session.remove_reader(self._fd)
        self._lose(exc)


class PipeWriteTransport(_PipeEnd, WriteTransport):
    """The core's write-pipe transport on ``add_writer`` (and ``add_reader`` to see the
    reader go: see the module's docstring).

    What the kernel refuses is queued as it came, not copied into one buffer: ``bytes``
    by reference (immutable), anything else as a copy (the caller may reuse it). A pipe
    takes at most its capacity (64 KiB) per ``os.write``, so a large write is sent from
    a ``memoryview`` that advances; copying each 1 MiB write into a ``bytearray`` first
    cost 14 % of the CPU of 100 MiB through ``cat`` on gevent."""

    def __init__(self, session: Session, pipe: Any, protocol: Any) -> None:
        self._setup(session, pipe, protocol)
        self._queue: deque[memoryview] = deque()
        self._size = 0
        self._high, self._low = DEFAULT_HIGH_WATER, DEFAULT_HIGH_WATER // 4
        self._eof = self._paused = self._writing = False
        session.resources.track(self)
        try:
            protocol.connection_made(self)
        except BaseException:
            self.abort()
            raise
        if not self._closing and stat.S_ISFIFO(os.fstat(self._fd).st_mode):
            session.add_reader(self._fd, self._on_reader_gone)

    def _on_reader_gone(self) -> None:
        gone = BrokenPipeError(errno.EPIPE, "the pipe's reader closed it")
        self._drop(gone if self._size else None)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        check_bytes(data)
        if self._eof and not self._lost:
            raise write_after_eof()
        if self._closing or not data:
            return
        n = 0
        if not self._size:
            try:
                n = os.write(self._fd, data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as exc:
                self._drop(exc)
                return
        view = memoryview(data).cast("B")
        if n == len(view):
            return
        rest = view[n:] if type(data) is bytes else memoryview(bytes(view[n:]))
        self._queue.append(rest)
        self._size += len(rest)
        if not self._writing:
            self._writing = True
            self._session.add_writer(self._fd, self._on_writable)
        self._check_high()

    def _check_high(self) -> None:
        if not self._paused and self._size > self._high:
            self._paused = True
            call_logged(self._protocol, "pause_writing")

    def _on_writable(self) -> None:
        queue = self._queue
        first = queue[0]
        try:
            n = os.write(self._fd, first)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._drop(exc)
            return
        if n == len(first):
            queue.popleft()
        else:
            queue[0] = first[n:]
        self._size -= n
        if self._paused and self._size <= self._low:
            self._paused = False
            call_logged(self._protocol, "resume_writing")
        if queue:
            return
        self._writing = False
        self._session.remove_writer(self._fd)
        if self._closing:
            self._finish_close()

    def write_eof(self) -> None:
        if self._closing:
            return
        self._eof = True
        self.close()

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if not self._size:
            self._finish_close()

    def _finish_close(self) -> None:
        self._session.remove_reader(self._fd)
        self._lose(None)

    def abort(self) -> None:
        if not self._lost:
            self._drop(aborted())

    def _drop(self, exc: BaseException | None) -> None:
        if self._lost:
            return
        self._closing = True
        self._queue.clear()
        self._size = 0
        if self._writing:
            self._writing = False
            self._session.remove_writer(self._fd)
        self._session.remove_reader(self._fd)
        self._lose(exc)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high, self._low = check_buffer_limits(high, low)
        if not self._closing:
            self._check_high()

    def get_write_buffer_size(self) -> int:
        return self._size


async def connect_read_pipe(
    session: Session, protocol_factory: Callable[[], T], pipe: Any
) -> tuple[ReadTransport, T]:
    """Read from ``pipe`` (a file object with ``fileno()``, or an int fd, of a pipe, a
    socket or a character device) into ``protocol_factory()``, a ``polyloop.Protocol``
    (``data_received``, then ``eof_received`` and ``connection_lost(None)`` at EOF). The
    transport owns ``pipe`` now: it closes it after ``connection_lost``. The fd is made
    non-blocking. ``ValueError`` for a closed fd or a regular file."""
    _errors.check_callable("protocol_factory", protocol_factory)
    pipe_fd(pipe)
    session.check_open()
    protocol = protocol_factory()
    transport = await session.adopt_read_pipe(pipe, protocol)
    return transport, protocol


async def connect_write_pipe(
    session: Session, protocol_factory: Callable[[], T], pipe: Any
) -> tuple[WriteTransport, T]:
    """Write to ``pipe`` (as ``connect_read_pipe``) through a ``WriteTransport`` with flow
    control (``pause_writing``/``resume_writing``) and ``write_eof``. When the reader
    closes its end, ``connection_lost`` comes without a write: ``None``, or
    ``BrokenPipeError`` if data was still queued; a write that meets a closed reader ends
    the transport with ``BrokenPipeError``."""
    _errors.check_callable("protocol_factory", protocol_factory)
    pipe_fd(pipe)
    session.check_open()
    protocol = protocol_factory()
    transport = await session.adopt_write_pipe(pipe, protocol)
    return transport, protocol
