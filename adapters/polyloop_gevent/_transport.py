"""gevent connections held to the polyloop Transport contract.

Rule: the data path lives here and stays lean. Reading: one greenlet per connection,
``recv`` -> ``data_received``, parked on its own read watcher when the socket is dry and
on nothing at all while reading is paused -- so the kernel's buffers fill and the peer is
pushed back. Because the protocol's reading callbacks run in that greenlet, they may
call gevent's blocking API (in a hub callback that raises ``BlockingSwitchOutError``).
Writing never blocks the caller: ``write`` sends at once when nothing is queued, queues
the rest in a ``bytearray``, and the session's writer callback flushes it from the hub.

The session binds, connects and accepts; a transport only gets a connected socket. UDP
is the core's ``SocketDatagramTransport`` on this session's readiness.

Why not gevent's own pieces: a gevent socket in blocking mode parks the *writer* when the
kernel is full (``write`` must not), ``DatagramServer`` truncates datagrams at 8192 bytes,
and ``StreamServer`` given a stdlib ``SSLContext`` blocks the whole thread in the
handshake (TLS here is the core's MemoryBIO layer over these plain transports).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import polyloop
from polyloop.lowlevel import (
    DEFAULT_HIGH_WATER,
    READ_SIZE,
    aborted,
    check_buffer_limits,
    check_bytes,
    set_reset_on_close,
)

if TYPE_CHECKING:
    from ._session import GeventSession, SessionGreenlet

log = logging.getLogger("polyloop")

#: Reads in a row before the reader lets other greenlets run.
READS_PER_TURN = 16


class GeventTransport(polyloop.Transport):
    """A TCP or Unix stream connection on the gevent hub."""

    __slots__ = (
        "__weakref__",
        "_buffer",
        "_closing",
        "_eof",
        "_extra",
        "_high",
        "_lost",
        "_low",
        "_protocol",
        "_reader",
        "_reading",
        "_rw",
        "_session",
        "_sock",
        "_write_paused",
    )

    def __init__(
        self, session: GeventSession, sock: socket.socket, factory: Callable[[], Any]
    ) -> None:
        self._session = session
        self._sock = sock
        self._rw = session.loop.io(sock.fileno(), 1)
        self._buffer = bytearray()
        self._high, self._low = DEFAULT_HIGH_WATER, DEFAULT_HIGH_WATER // 4
        self._write_paused = False
        self._reading = True
        self._closing = False  # close()/abort() called, or the connection is gone
        self._eof = False  # write_eof() called
        self._lost = False  # connection_lost is scheduled (or done)
        self._reader: SessionGreenlet | None = None
        self._extra: dict[str, Any] = {"socket": sock, "backend": session.name}
        for key, get in (("sockname", sock.getsockname), ("peername", sock.getpeername)):
            try:
                self._extra[key] = get()
            except OSError:
                self._extra[key] = None
        self._protocol: Any = None
        session._track(self)
        try:
            self._protocol = factory()
            self._protocol.connection_made(self)
        except BaseException:
            self.abort()  # the client's connect raises it; an acceptor logs it
            raise
        if not self._closing:
            self._reader = session._spawn_reader(self._read_loop)

    # --- reading (the reader greenlet) ---

    def _read_loop(self) -> None:
        reader = self._reader
        assert reader is not None
        recv = self._sock.recv
        turn = 0
        while not self._closing:
            if not self._reading:
                reader.park()  # resume_reading() or closing wakes us
                continue
            try:
                data = recv(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                turn = 0
                reader.park(self._rw)
                continue
            except OSError as exc:
                self._fatal(exc)
                return
            if not data:
                self._read_eof()
                return
            try:
                self._protocol.data_received(data)
            except Exception as exc:
                self._protocol_failed("data_received", exc)
                return
            turn += 1
            if turn == READS_PER_TURN:  # a fast peer must not starve the others
                turn = 0
                self._wake_reader()
                reader.park()

    def _read_eof(self) -> None:
        self._reading = False
        try:
            keep_open = self._protocol.eof_received()
        except Exception as exc:
            self._protocol_failed("eof_received", exc)
            return
        if not keep_open:
            self.close()

    def _protocol_failed(self, method: str, exc: Exception) -> None:
        # As asyncio: a protocol that fails on data loses its connection.
        log.error("polyloop: %s.%s raised", type(self._protocol).__name__, method, exc_info=exc)
        self._fatal(exc)

    def _wake_reader(self) -> None:
        if self._reader is not None:
            self._session.loop.run_callback(self._reader.resume)

    def pause_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._rw.stop()

    def resume_reading(self) -> None:
        if not self._reading and not self._closing:
            self._reading = True
            self._wake_reader()

    def is_reading(self) -> bool:
        return self._reading and not self._closing

    # --- writing ---

    def write(self, data: bytes | bytearray | memoryview) -> None:
        check_bytes(data)
        if self._closing:
            return
        if self._eof:
            raise RuntimeError("write() after write_eof()")
        buffer = self._buffer
        if buffer:
            buffer += data
        else:
            try:
                n = self._sock.send(data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as exc:
                self._fatal(exc)
                return
            view = memoryview(data).cast("B")
            if n == len(view):
                return
            buffer += view[n:]  # a copy: the caller may reuse a bytearray at once
            self._session.add_writer(self._sock, self._on_writable)
        self._check_high()

    def _check_high(self) -> None:
        if not self._write_paused and len(self._buffer) > self._high:
            self._write_paused = True
            self._protocol.pause_writing()

    def _on_writable(self) -> None:
        buffer = self._buffer
        try:
            n = self._sock.send(buffer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fatal(exc)
            return
        del buffer[:n]
        if self._write_paused and len(buffer) <= self._low:
            self._write_paused = False
            self._protocol.resume_writing()
        if buffer:
            return
        self._session.remove_writer(self._sock)
        if self._closing:
            self._lose(None)
        elif self._eof:
            self._shutdown_write()

    def write_eof(self) -> None:
        if self._closing or self._eof:
            return
        self._eof = True
        if not self._buffer:
            self._shutdown_write()

    def _shutdown_write(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            self._fatal(exc)

    def can_write_eof(self) -> bool:
        return True

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high, self._low = check_buffer_limits(high, low)
        if not self._closing:
            self._check_high()

    def get_write_buffer_size(self) -> int:
        return len(self._buffer)

    # --- closing ---

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._stop_reader()
        if not self._buffer:
            self._lose(None)
        # else: _on_writable loses the connection once the buffer is flushed

    def is_closing(self) -> bool:
        return self._closing

    def abort(self) -> None:
        if self._lost:
            return
        set_reset_on_close(self._sock)
        self._drop(aborted())

    def _fatal(self, exc: BaseException) -> None:
        """A read or write failed: the connection is gone, with ``exc``."""
        if not self._lost:
            self._drop(exc)

    def _drop(self, exc: BaseException) -> None:
        self._closing = True
        self._buffer.clear()
        self._session.remove_writer(self._sock)
        self._stop_reader()
        self._lose(exc)

    def _stop_reader(self) -> None:
        self._rw.stop()
        self._wake_reader()  # it sees _closing and ends

    def _lose(self, exc: BaseException | None) -> None:
        if self._lost:
            return
        self._lost = True
        # Never from inside close()/abort(): the hub calls it, after the reader ended.
        self._session.call_soon(self._connection_lost, exc)

    def _connection_lost(self, exc: BaseException | None) -> None:
        self._rw.close()
        self._sock.close()
        self._extra["socket"] = None
        self._session._untrack(self)
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            protocol.connection_lost(exc)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)
