"""Tornado's IOStream, held to the polyloop Transport contract.

Rule: the bytes move through Tornado -- ``IOStream.read_into`` for reads,
``IOStream.write`` for writes, ``SSLIOStream`` for TLS. This file only turns Tornado's
pull-style, future-per-operation API into PEP 3156's push-style callbacks. It needs
nothing of the session but its public surface (``_track``/``_untrack``, ``name``).

Some facts about IOStream (6.x) that shape this file, read from its source:
- A read must be pending for Tornado to read at all (plus one "idle" read: a stream with
  nothing pending listens for READ, to notice a close, and reads one chunk into its own
  buffer when it fires). So ``data_received`` is fed by one ``read_into`` kept pending
  and re-armed after each delivery; ``pause_reading`` simply stops re-arming. At most the
  one pending read and one idle chunk (64 KiB each) are read after a pause; after that
  the socket is not read and the kernel pushes back on the peer.
- A pending ``read_into`` pins its buffer, and an idle connection always has one pending:
  a 64 KiB buffer each made 68 KiB an idle connection (native Tornado: 5 KiB, 10,000 idle
  connections). So the buffer starts at ``MIN_READ``, doubles whenever a read fills it
  (up to ``READ_SIZE``) and halves when reads use less than a quarter of it. Reading
  through Tornado's own buffer instead (``read_bytes``) costs what native Tornado pays,
  measured 1.3x the CPU of this per 1 KiB message and 1.5x per 64 KiB one.
- When ``read_from_fd`` returns 0 (EOF), IOStream closes itself on the spot: the fd is
  closed and the unflushed write buffer is thrown away. That makes half-close impossible
  (and loses the tail of an echo). ``_Stream``/``_SSLStream`` override ``read_from_fd``
  (a documented subclass hook) to report EOF to the transport and keep the stream open.
- ``read_into``'s future is resolved through asyncio, whose done-callbacks run one loop
  iteration later: ``data_received`` would always come one iteration after the bytes were
  read (the conformance suite's ``protocol.direct_data_path`` judges it from outside). So
  ``_Stream`` also overrides ``_finish_read`` (private, pinned by ``tests/test_tornado.py``)
  and tells the transport at once; the future is left to Tornado, which reads its outcome.
- An EOF socket stays readable forever, and IOStream re-adds READ interest whenever it is
  idle (the idle read above). After EOF that would spin the loop, so the subclasses drop
  READ interest again after each event; this is the one private hook (``_handle_events``
  and ``_state``) we touch, and ``tests/test_tornado.py`` pins it.
- ``IOStream.write`` returns a future (resolved when that write is flushed) whether or not
  anyone wants it. We only attach a callback when the write was *not* flushed at once
  (``stream.writing()``), so the fast path costs Tornado's own future and nothing more.
- ``SSLIOStream`` logs every failed handshake as a warning on ``tornado.general`` ("SSL
  Error on <fd> <peer>: ...") and then closes itself. polyloop reports the failure to the
  client as ``ssl.SSLError`` and, as asyncio does, says nothing of a server-side one; so
  ``_QuietHandshakes`` drops exactly those records whose fd is one of our streams',
  in every thread and host application, and leaves any other Tornado stream's alone.
"""

from __future__ import annotations

import errno
import functools
import logging
import socket
import ssl as _ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from tornado.ioloop import IOLoop
from tornado.iostream import IOStream, SSLIOStream, StreamClosedError

import polyloop
from polyloop.lowlevel import (
    DEFAULT_HIGH_WATER,
    READ_SIZE,
    aborted,
    check_buffer_limits,
    check_bytes,
    set_reset_on_close,
    write_after_eof,
)

if TYPE_CHECKING:
    import asyncio

log = logging.getLogger("polyloop")

#: The smallest read buffer (see the module docstring); the largest is ``READ_SIZE``.
MIN_READ = 1024


class _Stream(IOStream):
    """An IOStream that reports read EOF instead of closing itself, and a finished read at
    once (see the module doc)."""

    read_eof = False
    on_eof: Any = None
    #: ``on_read(size)``, called as a ``read_into`` completes, before its future's
    #: callbacks (which asyncio runs one loop iteration later).
    on_read: Any = None

    def _finish_read(self, size: int) -> None:
        super()._finish_read(size)
        if self.on_read is not None:
            self.on_read(size)

    #: An EOF read and not yet reported (reported once the stream's handler is done).
    eof_pending = False
    _in_events = False

    def read_from_fd(self, buf: bytearray | memoryview) -> int | None:
        n = super().read_from_fd(buf)
        if n != 0:
            return n
        self._check_reset()
        self.read_eof = True
        if self.on_eof is not None and not self.eof_pending:
            # Not from inside Tornado's read machinery (eof_received may close the
            # stream): at the end of this readiness event, in the same loop iteration,
            # or, for a read started outside one, on the next iteration.
            self.eof_pending = True
            if not self._in_events:
                self.io_loop.add_callback(self._report_eof)
        return None  # "nothing to read now": the stream stays open for writing

    def _report_eof(self) -> None:
        if self.eof_pending:
            self.eof_pending = False
            self.on_eof()

    def _check_reset(self) -> None:
        """A plain socket reports a reset itself (``ECONNRESET``); TLS does not."""

    def _handle_events(self, fd: Any, events: int) -> None:
        self._in_events = True
        try:
            super()._handle_events(fd, events)
        finally:
            self._in_events = False
        self._report_eof()
        state = self._state
        if self.read_eof and state is not None and state & IOLoop.READ and not self.closed():
            self._state = state & ~IOLoop.READ
            self.io_loop.update_handler(fd, self._state)


def _was_reset(sock: socket.socket) -> bool:
    # The ssl module reports a TCP reset as a (suppressed, ragged) EOF: OpenSSL consumes
    # the ECONNRESET. The kernel still knows: a reset leaves the socket in TCP_CLOSE,
    # a FIN in TCP_CLOSE_WAIT. (Linux; elsewhere a reset reads as EOF here.)
    try:
        return sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 1)[0] == _TCP_CLOSE
    except (OSError, TypeError):
        return False


_TCP_INFO = getattr(socket, "TCP_INFO", -1)
_TCP_CLOSE = 7  # include/net/tcp_states.h


class _QuietHandshakes(logging.Filter):
    """Drops SSLIOStream's "SSL Error on <fd>" warning for our own streams' fds."""

    fds: set[int] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("SSL Error on") or not record.args:
            return True
        return cast(tuple[Any, ...], record.args)[0] not in self.fds


logging.getLogger("tornado.general").addFilter(_QuietHandshakes())


class _SSLStream(_Stream, SSLIOStream):
    """The same, for TLS: the transport then closes (flushing), as TLS cannot half-close.

    Made on a connected, wrapped socket (``do_handshake_on_connect=False``): SSLIOStream
    then starts the handshake on the next IOLoop iteration; ``wait_for_handshake()``
    resolves with it, or fails with the ``ssl.SSLError`` it failed with. (The MRO puts
    ``_Stream``'s overrides in front of SSLIOStream's own ``read_from_fd``.)
    """

    socket: _ssl.SSLSocket

    def __init__(self, sock: _ssl.SSLSocket, ssl: _ssl.SSLContext) -> None:
        self._fd = sock.fileno()
        _QuietHandshakes.fds.add(self._fd)  # until close: it logs before closing
        super().__init__(sock, ssl_options=ssl)

    def close(self, exc_info: Any = False) -> None:
        _QuietHandshakes.fds.discard(self._fd)
        super().close(exc_info)

    def _check_reset(self) -> None:
        if _was_reset(self.socket):
            # IOStream treats ECONNRESET as a close with .error set: connection_lost
            # then gets ConnectionResetError, as on the other backends.
            raise ConnectionResetError(errno.ECONNRESET, "connection reset by peer")


def _send_close_notify(sock: _ssl.SSLSocket) -> None:
    # IOStream.close() just closes the fd, so the peer would read a truncated (ragged)
    # TLS stream. unwrap() sends close_notify first; on a non-blocking socket it then
    # stops with SSLWantReadError instead of waiting for the peer's: that is all we want.
    try:
        sock.unwrap()
    except (OSError, ValueError):
        pass


def _reportable(exc: BaseException | None) -> BaseException | None:
    """What ``connection_lost`` gets for the error Tornado closed a stream with."""
    if isinstance(exc, StreamClosedError):  # never set as .error by Tornado 6, but cheap
        return exc.real_error or ConnectionResetError(errno.ECONNRESET, "connection closed")
    # Builtin already: ConnectionResetError, BrokenPipeError, ssl.SSLError ..., or the
    # exception a protocol callback raised (see _fatal), as asyncio reports it.
    return exc


class TornadoTransport(polyloop.Transport):
    """A TCP, Unix or TLS connection on a Tornado IOStream.

    Made on a connected (and handshaken) stream, it makes its protocol with ``factory``
    and calls ``connection_made`` before the constructor returns; if that raises, the
    connection is aborted and the error propagates to the caller.
    """

    __slots__ = (
        "__weakref__",
        "_aborted",
        "_arming",
        "_buf",
        "_closed_by_us",
        "_closing",
        "_eof_delivered",
        "_eof_written",
        "_extra",
        "_flushed",
        "_high",
        "_inline",
        "_lost",
        "_low",
        "_paused",
        "_protocol",
        "_read_fut",
        "_session",
        "_sock",
        "_stash",
        "_stream",
        "_tls",
        "_write_paused",
        "_written",
    )

    def __init__(
        self,
        session: polyloop.Session,
        stream: _Stream | _SSLStream,
        factory: Callable[[], polyloop.Protocol],
    ) -> None:
        self._stream = stream
        self._sock: socket.socket = stream.socket
        self._session = session
        self._tls = isinstance(stream, SSLIOStream)
        self._closing = self._lost = self._aborted = self._closed_by_us = False
        self._eof_written = self._eof_delivered = False
        self._paused = self._write_paused = False
        self._read_fut: asyncio.Future[int] | None = None
        self._arming = False
        self._inline: int | None = None
        self._stash: bytes | None = None  # read while paused, delivered on resume
        self._buf = bytearray(MIN_READ)
        self._written = self._flushed = 0
        self._high, self._low = DEFAULT_HIGH_WATER, DEFAULT_HIGH_WATER // 4
        # Read now: the socket is gone once the stream closes.
        sock = self._sock
        self._extra: dict[str, Any] = {"socket": sock, "backend": session.name}
        for key, get in (("peername", sock.getpeername), ("sockname", sock.getsockname)):
            try:
                self._extra[key] = get()
            except OSError:
                self._extra[key] = None
        if self._tls:
            ssl_sock = cast(_ssl.SSLSocket, sock)
            self._extra["ssl_object"] = ssl_sock
            self._extra["peercert"] = ssl_sock.getpeercert()
            self._extra["cipher"] = ssl_sock.cipher()
            self._extra["sslcontext"] = ssl_sock.context
        stream.on_eof = self._eof_seen
        stream.on_read = self._read_done
        stream.set_close_callback(self._stream_closed)
        self._protocol: Any = None
        session.resources.track(self)
        try:
            self._protocol = factory()
            self._protocol.connection_made(self)
        except BaseException:
            self.abort()
            raise
        if not self._closing and not self._paused:
            self._arm()

    # --- reading ---

    def _arm(self) -> None:
        # A read that completes inline (data already buffered) calls _read_done while
        # read_into runs: it is taken here, in a loop, not by recursion.
        while True:
            self._arming = True
            self._inline = None
            try:
                fut = cast("asyncio.Future[int]", self._stream.read_into(self._buf, partial=True))
            except StreamClosedError:
                return  # the close callback reports it
            finally:
                self._arming = False
            inline = self._completed_inline()
            if inline is None:
                self._read_fut = fut  # pending: _read_done comes from the stream's handler
                return
            if not self._take(inline):
                return

    def _completed_inline(self) -> int | None:
        """The size of the read that completed inside ``read_into``, if it did."""
        return self._inline

    def _read_done(self, size: int) -> None:
        # From _Stream._finish_read: a read_into just completed.
        if self._arming:
            self._inline = size
            return
        self._read_fut = None
        if self._take(size):
            self._arm()

    def _take(self, n: int) -> bool:
        """Hand ``n`` bytes of the read buffer to the protocol; True to read on."""
        if self._closing:
            return False
        buf = self._buf
        data = memoryview(buf)[:n].tobytes()
        size = len(buf)
        if n == size and size < READ_SIZE:
            self._buf = bytearray(size * 2)  # the read that just ended no longer pins it
        elif n < size // 4 and size > MIN_READ:
            self._buf = bytearray(size // 2)
        if self._paused:
            self._stash = data
            return False
        try:
            self._protocol.data_received(data)
        except Exception as exc:
            self._fatal(exc, "data_received")
            return False
        return not self._closing and not self._paused and self._read_fut is None

    def _deliver(self, data: bytes) -> None:
        try:
            self._protocol.data_received(data)
        except Exception as exc:
            self._fatal(exc, "data_received")
            return
        if not self._closing and not self._paused and self._read_fut is None:
            self._arm()

    def _eof_seen(self) -> None:
        # Scheduled by the stream each time a read finds EOF. Data read just before the
        # EOF may still be on its way to _on_read: then _on_read re-arms, the re-armed
        # read finds EOF again, and we come back here with the read pending.
        if self._closing or self._eof_delivered or self._paused or self._stash is not None:
            return
        if self._read_fut is None or self._read_fut.done():
            return
        self._eof_delivered = True
        try:
            keep_open = self._protocol.eof_received()
        except Exception as exc:
            self._fatal(exc, "eof_received")
            return
        if self._tls or not keep_open:
            self.close()

    def pause_reading(self) -> None:
        self._paused = True

    def resume_reading(self) -> None:
        if not self._paused:
            return
        self._paused = False
        if self._closing:
            return
        if self._stash is not None:
            self._stream.io_loop.add_callback(self._deliver_stash)
        elif self._read_fut is None and not self._eof_delivered:
            self._arm()

    def _deliver_stash(self) -> None:
        data, self._stash = self._stash, None
        if data is None or self._closing:
            return
        if self._paused:
            self._stash = data
            return
        self._deliver(data)

    def is_reading(self) -> bool:
        return not self._paused and not self._closing

    # --- writing ---

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if type(data) is not bytes:
            check_bytes(data)
            data = bytes(data)  # Tornado keeps a view of large writes: copy mutable data
        if self._closing:
            return
        if self._eof_written:
            raise write_after_eof()
        if not data:
            return
        stream = self._stream
        try:
            fut = stream.write(data)
        except StreamClosedError:
            return  # the close callback reports the loss
        self._written += len(data)
        if not stream.writing():
            self._flushed = self._written  # the fast path: all handed to the kernel
            return
        fut.add_done_callback(functools.partial(self._on_flushed, self._written))
        if not self._write_paused and self._written - self._flushed > self._high:
            self._write_paused = True
            self._call("pause_writing")

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def _on_flushed(self, end: int, fut: asyncio.Future[None]) -> None:
        # A write's future resolves once everything up to its end is flushed.
        if end > self._flushed:
            self._flushed = end
        self._maybe_resume()

    def _maybe_resume(self) -> None:
        if self._write_paused and self._written - self._flushed <= self._low and not self._lost:
            self._write_paused = False
            self._call("resume_writing")

    def _call(self, name: str) -> None:
        try:
            getattr(self._protocol, name)()
        except Exception:
            log.exception("protocol.%s() failed", name)

    def write_eof(self) -> None:
        if self._tls:
            raise NotImplementedError("TLS transports cannot half-close (see can_write_eof)")
        if self._closing or self._eof_written:
            return
        self._eof_written = True
        self._after_flush(self._shutdown_write)

    def _after_flush(self, fn: Callable[[], None]) -> None:
        if not self._stream.writing():
            fn()
            return
        try:
            # An empty write's future resolves when all earlier writes are flushed.
            self._stream.write(b"").add_done_callback(lambda f: fn())
        except StreamClosedError:
            pass

    def _shutdown_write(self) -> None:
        if self._stream.closed():
            return
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the peer is gone already; reading reports it

    def can_write_eof(self) -> bool:
        return not self._tls

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high, self._low = check_buffer_limits(high, low)
        if not self._write_paused and self.get_write_buffer_size() > self._high:
            self._write_paused = True
            self._call("pause_writing")
        self._maybe_resume()

    def get_write_buffer_size(self) -> int:
        return 0 if self._lost else self._written - self._flushed

    # --- closing ---

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._after_flush(self._close_stream)

    def _close_stream(self) -> None:
        if not self._stream.closed():
            self._closed_by_us = True
            if self._tls:
                _send_close_notify(cast(_ssl.SSLSocket, self._sock))
            self._stream.close()  # the close callback runs later: never re-entrant

    def abort(self) -> None:
        if self._aborted or self._lost:
            return
        self._closing = True
        if self._stream.closed():
            return  # lost already; the close callback reports why
        self._aborted = True
        set_reset_on_close(self._sock)
        self._stream.close()

    def _fatal(self, exc: BaseException, where: str) -> None:
        log.error("protocol.%s() raised; closing the connection", where, exc_info=exc)
        self._closing = True
        if not self._stream.closed():
            self._stream.close(exc_info=exc)

    def _stream_closed(self) -> None:
        if self._lost:
            return
        self._lost = self._closing = True
        self._write_paused = False
        if self._aborted:
            exc: BaseException | None = aborted()
        elif self._closed_by_us:
            exc = None
        else:
            exc = _reportable(self._stream.error)
        protocol, self._protocol = self._protocol, None
        # The stream's callbacks are our bound methods: drop them (and the read buffer),
        # so that the stream <-> transport cycle does not outlive the connection.
        self._stream.on_eof = self._stream.on_read = None
        self._stream.set_close_callback(None)
        self._buf = bytearray()
        try:
            if protocol is not None:
                protocol.connection_lost(exc)
        except Exception:
            log.exception("protocol.connection_lost() failed")
        finally:
            self._session.resources.untrack(self)

    def is_closing(self) -> bool:
        return self._closing

    def set_protocol(self, protocol: Any) -> None:
        self._protocol = protocol

    def get_protocol(self) -> Any:
        return self._protocol

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)
