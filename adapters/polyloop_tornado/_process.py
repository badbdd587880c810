"""Pipes on Tornado's ``PipeIOStream``, behind polyloop's ``adopt_read_pipe`` and
``adopt_write_pipe`` hooks; child processes are the core's ``subprocess.Popen`` whose
pipes then move their bytes through these.

Rule: the bytes move through Tornado (``PipeIOStream.read_bytes``/``write``, on the
session's IOLoop); this file turns Tornado's pull-style, future-per-operation API into
PEP 3156's push-style callbacks, as ``_transport.py`` does for sockets.

Why not ``tornado.process.Subprocess`` for the children (read from Tornado 6's source):

- ``Subprocess(..., stdin=Subprocess.STREAM)`` makes its ``PipeIOStream``\\ s *before*
  ``Popen`` runs, and when ``Popen`` fails (a program that does not exist) it closes
  their fds with ``os.close`` but leaves the streams' ``FileIO`` objects owning them: they
  close the same fd numbers again when collected (measured: an ``EBADF`` ``OSError``
  surfacing at an unrelated line; on a busy process, another file's fd closed under it).
- ``set_exit_callback`` needs ``Subprocess.initialize()``, which installs a process-wide
  ``SIGCHLD`` handler with ``signal.signal`` -- only possible on the main thread, for one
  IOLoop at a time, and replacing whatever handler the application (or asyncio, or
  Twisted) had. ``Subprocess.wait_for_exit`` is built on it.

So the children are the core's (``Popen``, reaped by a pidfd watched with the IOLoop's
``add_handler``, any thread), and what Tornado offers for pipes, ``PipeIOStream``, carries
their stdin, stdout and stderr. ``SessionContract.subprocess`` is left at its default.

Facts about ``PipeIOStream`` this file depends on:

- A read end is read only while a read is pending: ``pause_reading`` stops re-arming
  ``read_bytes``, the kernel's pipe fills and the writer blocks. No close callback is set
  on a read end, so Tornado does not read it while idle either.
- A write end with a close callback is watched for READ while idle; when the reader
  closes its end the fd polls readable, the read fails with ``EBADF`` and Tornado closes
  the stream (``PipeIOStream.read_from_fd``): that is how the writer learns the reader
  went without writing, as the core's and asyncio's pipe transports do.
- ``close()`` throws away what is not flushed yet: ``write_eof``/``close`` wait for the
  last write's future first.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
from typing import TYPE_CHECKING, Any

from tornado.iostream import PipeIOStream, StreamClosedError

import polyloop
from polyloop.lowlevel import (
    DEFAULT_HIGH_WATER,
    READ_SIZE,
    aborted,
    call_logged,
    check_buffer_limits,
    check_bytes,
    write_after_eof,
)

if TYPE_CHECKING:
    import asyncio

__all__ = ["ReadPipe", "WritePipe", "adopt_read_pipe", "adopt_write_pipe"]

log = logging.getLogger("polyloop")


def _stream_of(pipe: Any) -> PipeIOStream:
    """A ``PipeIOStream`` that owns a copy of ``pipe``'s fd; ``pipe`` itself is closed
    (the transport owns the pipe from now on, and the copy is closed with the stream)."""
    if isinstance(pipe, int):
        fd = pipe
    else:
        fd = os.dup(pipe.fileno())
        pipe.close()
    return PipeIOStream(fd)


class _Pipe:
    """What both pipe transports share: the stream, the protocol, the end of life."""

    def __init__(self, session: polyloop.Session, stream: PipeIOStream, protocol: Any):
        self._session = session
        self._s = stream
        self._protocol: Any = protocol
        self._closing = self._lost = self._aborted = False
        self._extra: dict[str, Any] = {"pipe": stream, "backend": session.name}

    def _start(self) -> None:
        self._session.resources.track(self)  # type: ignore[arg-type]
        try:
            self._protocol.connection_made(self)
        except BaseException:
            self.abort()
            raise

    def _lose(self, exc: BaseException | None) -> None:
        """Close the stream and call ``connection_lost(exc)`` on a later iteration, once."""
        if self._lost:
            return
        self._lost = self._closing = True
        self._s.close()
        self._session.call_soon(self._finish, exc)

    def _finish(self, exc: BaseException | None) -> None:
        self._session.resources.untrack(self)  # type: ignore[arg-type]
        self._extra["pipe"] = None
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            protocol.connection_lost(exc)

    def abort(self) -> None:
        if not self._lost:
            self._aborted = True
            self._lose(aborted())

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
        return f"<polyloop tornado {type(self).__name__} fd={self._s.fd}{state}>"


class ReadPipe(_Pipe, polyloop.ReadTransport):
    """The read end of a pipe on a ``PipeIOStream``: one ``read_bytes`` kept pending."""

    def __init__(self, session: polyloop.Session, stream: PipeIOStream, protocol: Any):
        super().__init__(session, stream, protocol)
        self._paused = False
        self._reading: asyncio.Future[bytes] | None = None
        self._start()
        self._arm()

    def _arm(self) -> None:
        if self._reading is not None or self._closing or self._paused:
            return
        try:
            fut: asyncio.Future[bytes] = self._s.read_bytes(READ_SIZE, partial=True)  # type: ignore[assignment]
        except StreamClosedError as exc:
            self._ended(exc)
            return
        self._reading = fut
        fut.add_done_callback(self._read_done)

    def _read_done(self, fut: asyncio.Future[bytes]) -> None:
        self._reading = None
        if self._closing or fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            self._ended(exc)
            return
        try:
            self._protocol.data_received(fut.result())
        except Exception as exc:
            log.error("polyloop: %r.data_received raised", self._protocol, exc_info=exc)
            self._lose(exc)
            return
        self._arm()

    def _ended(self, exc: BaseException) -> None:
        # Tornado closes a PipeIOStream at EOF: the pending read fails with
        # StreamClosedError, whose real_error is None at EOF.
        real = getattr(exc, "real_error", None) or self._s.error
        if isinstance(exc, StreamClosedError) and real is None:
            self._closing = True
            try:
                self._protocol.eof_received()
            except Exception as error:
                log.error("polyloop: %r.eof_received raised", self._protocol, exc_info=error)
                self._lose(error)
                return
            self._lose(None)
        else:
            self._lose(real if isinstance(real, BaseException) else exc)

    def pause_reading(self) -> None:
        self._paused = True  # the pending read, if any, still delivers

    def resume_reading(self) -> None:
        if self._paused:
            self._paused = False
            self._arm()

    def is_reading(self) -> bool:
        return not self._paused and not self._closing

    def close(self) -> None:
        if not self._closing:
            self._lose(None)


class WritePipe(_Pipe, polyloop.WriteTransport):
    """The write end of a pipe on a ``PipeIOStream``: each write's future says when it
    is flushed; flow control counts what is written and not yet flushed."""

    def __init__(self, session: polyloop.Session, stream: PipeIOStream, protocol: Any):
        super().__init__(session, stream, protocol)
        self._written = self._flushed = 0
        self._high, self._low = DEFAULT_HIGH_WATER, DEFAULT_HIGH_WATER // 4
        self._eof = self._paused = False
        stream.set_close_callback(self._stream_closed)  # also: watch for the reader to go
        self._start()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if type(data) is not bytes:
            check_bytes(data)
            data = bytes(data)  # Tornado keeps a view of what it buffers: copy mutable data
        if self._eof and not self._lost:
            raise write_after_eof()
        if self._closing or not data:
            return
        stream = self._s
        try:
            fut = stream.write(data)
        except StreamClosedError:
            return  # the close callback reports the loss
        self._written += len(data)
        if not stream.writing():
            self._flushed = self._written  # all handed to the kernel at once
            return
        fut.add_done_callback(functools.partial(self._on_flushed, self._written))
        self._check_high()

    def _check_high(self) -> None:
        if not self._paused and self._written - self._flushed > self._high:
            self._paused = True
            call_logged(self._protocol, "pause_writing")

    def _on_flushed(self, upto: int, fut: asyncio.Future[None]) -> None:
        if fut.cancelled() or fut.exception() is not None or self._lost:
            return
        self._flushed = max(self._flushed, upto)
        if self._paused and self._written - self._flushed <= self._low:
            self._paused = False
            call_logged(self._protocol, "resume_writing")
        if self._closing and self._flushed == self._written:
            self._lose(None)

    def _stream_closed(self) -> None:
        # Tornado closed the stream itself: the reader went (EBADF on the idle read), or
        # a write failed (EPIPE).
        if self._lost:
            return
        error = self._s.error
        if isinstance(error, BrokenPipeError) or self._written > self._flushed:
            self._lose(BrokenPipeError(errno.EPIPE, "the pipe's reader closed it"))
        elif error is None or (isinstance(error, OSError) and error.errno == errno.EBADF):
            self._lose(None)
        else:
            self._lose(error)

    def write_eof(self) -> None:
        if self._closing:
            return
        self._eof = True
        self.close()

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if not self._s.writing():
            self._lose(None)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high, self._low = check_buffer_limits(high, low)
        if not self._closing:
            self._check_high()

    def get_write_buffer_size(self) -> int:
        return self._written - self._flushed


async def adopt_read_pipe(session: polyloop.Session, pipe: Any, protocol: Any) -> ReadPipe:
    """``SessionContract.adopt_read_pipe`` on a ``PipeIOStream``."""
    return ReadPipe(session, _stream_of(pipe), protocol)


async def adopt_write_pipe(session: polyloop.Session, pipe: Any, protocol: Any) -> WritePipe:
    """``SessionContract.adopt_write_pipe`` on a ``PipeIOStream``."""
    return WritePipe(session, _stream_of(pipe), protocol)
