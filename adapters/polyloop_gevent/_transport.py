"""gevent connections held to the polyloop Transport contract.

Rule: the data path lives here and stays lean. Reading: one greenlet per connection,
``recv`` -> ``data_received``, parked on its own read watcher when the socket is dry
and on nothing at all while reading is paused -- so the kernel's buffers fill and the
peer is pushed back. Writing never blocks the caller: ``write`` sends at once when
nothing is queued, queues the rest in a ``bytearray``, and a write watcher's callback
flushes it from the hub.

Why not gevent's own pieces: a gevent socket in blocking mode parks the *writer* when the
kernel is full (``write`` must not), ``DatagramServer`` truncates datagrams at 8192 bytes,
and ``StreamServer`` given a stdlib ``SSLContext`` blocks the whole thread in the
handshake (TLS here is the core's MemoryBIO layer over these plain transports).
"""

from __future__ import annotations

import collections
import socket
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from greenlet import getcurrent

import polyloop
from polyloop._errors import check_bytes
from polyloop._transports import DEFAULT_HIGH_WATER, check_buffer_limits, drain_datagrams

from ._driver import log_callback_error

if TYPE_CHECKING:
    from ._backend import GeventBackend

_LINGER_RST = struct.pack("ii", 1, 0)
#: Bytes asked of one ``recv``. Not asyncio's 256 KiB: CPython allocates the whole size
#: (past malloc's mmap threshold) before shrinking it, which made recv of a small
#: message ~10x slower in the echo benchmark (measured on the Twisted adapter).
READ_SIZE = 64 * 1024
#: Reads in a row before the reader lets other greenlets run.
READS_PER_TURN = 16
#: Largest datagram ``recvfrom`` takes whole (the IPv4 maximum is 65,507).
MAX_DATAGRAM = 65536


def set_nodelay(sock: socket.socket) -> None:
    """TCP_NODELAY, as asyncio sets it: small writes go out at once."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


class GeventTransport(polyloop.Transport):
    """A TCP or Unix stream connection on the gevent hub."""

    __slots__ = (
        "__weakref__",
        "_backend",
        "_buffer",
        "_closing",
        "_eof",
        "_extra",
        "_high",
        "_lost",
        "_lost_exc",
        "_low",
        "_protocol",
        "_reader",
        "_reader_parked",
        "_reading",
        "_rw",
        "_sock",
        "_write_paused",
        "_ww",
    )

    def __init__(
        self,
        backend: GeventBackend,
        sock: socket.socket,
        protocol: Any,
        factory: Callable[[], Any] | None,
    ) -> None:
        self._backend = backend
        self._sock = sock
        self._protocol = protocol
        loop = backend._loop
        fd = sock.fileno()
        self._rw = loop.io(fd, 1)
        self._ww = loop.io(fd, 2)
        self._buffer = bytearray()
        self._high, self._low = DEFAULT_HIGH_WATER, DEFAULT_HIGH_WATER // 4
        self._write_paused = False
        self._reading = True
        self._closing = False  # close()/abort() called, or the connection is gone
        self._eof = False  # write_eof() called
        self._lost = False  # connection_lost is scheduled (or done)
        self._lost_exc: BaseException | None = None
        self._reader_parked = False
        self._extra = {"socket": sock, "sockname": sock.getsockname()}
        try:
            self._extra["peername"] = sock.getpeername()
        except OSError:
            self._extra["peername"] = None
        backend._transports.add(self)
        if factory is None:  # we connected: connection_made before connect returns
            try:
                protocol.connection_made(self)
            except BaseException:
                self.abort()
                raise
            self._reader = None if self._closing else backend._spawn_greenlet(self._read_loop)
        else:  # accepted: the reader greenlet makes the protocol, off the accept path
            self._reader = backend._spawn_greenlet(self._start, factory)

    # --- reading (the reader greenlet) ---

    def _start(self, factory: Callable[[], Any]) -> None:
        try:
            self._protocol = factory()
            self._protocol.connection_made(self)
        except Exception as exc:
            log_callback_error(factory, exc)
            self._protocol = None
            self.abort()
            return
        self._read_loop()

    def _park(self, watcher: Any) -> None:
        self._reader_parked = True
        try:
            self._backend._park(watcher)
        finally:
            self._reader_parked = False

    def _wake_reader(self) -> None:
        reader = self._reader
        if self._reader_parked and reader is not None and not reader.dead:
            reader.switch()

    def _read_loop(self) -> None:
        recv = self._sock.recv
        rw = self._rw
        turn = 0
        while not self._closing:
            if not self._reading:
                self._park(None)  # resume_reading() or close wakes us
                continue
            try:
                data = recv(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                turn = 0
                self._park(rw)
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
                self._backend._loop.run_callback(self._wake_reader)
                self._park(None)

    def _read_eof(self) -> None:
        try:
            keep_open = self._protocol.eof_received()
        except Exception as exc:
            self._protocol_failed("eof_received", exc)
            return
        if not keep_open:
            self.close()

    def _protocol_failed(self, method: str, exc: Exception) -> None:
        log_callback_error(f"{type(self._protocol).__name__}.{method}", exc)
        self._fatal(exc)

    # --- writing ---

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing:
            check_bytes(data)
            return
        if self._eof:
            check_bytes(data)
            raise RuntimeError("write() after write_eof()")
        buffer = self._buffer
        if buffer:
            check_bytes(data)
            buffer += data
        else:
            try:
                n = self._sock.send(data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as exc:
                self._fatal(exc)
                return
            except TypeError:
                check_bytes(data)  # str and friends: the contract's TypeError
                raise
            view = memoryview(data)
            if n == view.nbytes:
                return
            buffer += view.cast("B")[n:]  # the copy the contract promises (data may be reused)
            self._ww.start(self._backend._context.run, self._on_writable)
        if not self._write_paused and len(buffer) > self._high:
            self._write_paused = True
            try:
                self._protocol.pause_writing()
            except Exception as exc:
                log_callback_error("pause_writing", exc)

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
            try:
                self._protocol.resume_writing()
            except Exception as exc:
                log_callback_error("resume_writing", exc)
        if buffer:
            return
        self._ww.stop()
        if self._lost:
            return
        if self._closing:
            self._connection_lost(None)
        elif self._eof:
            self._shutdown_write()

    def _shutdown_write(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            self._fatal(exc)

    def write_eof(self) -> None:
        if self._closing or self._eof:
            return
        self._eof = True
        if not self._buffer:
            self._shutdown_write()

    def can_write_eof(self) -> bool:
        return True

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high, self._low = check_buffer_limits(high, low)
        if not self._write_paused and len(self._buffer) > self._high and not self._closing:
            self._write_paused = True
            self._protocol.pause_writing()

    def get_write_buffer_size(self) -> int:
        return len(self._buffer)

    # --- reading control ---

    def pause_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._rw.stop()

    def resume_reading(self) -> None:
        if not self._reading:
            self._reading = True
            if not self._closing and self._reader_parked:
                self._backend._loop.run_callback(self._wake_reader)

    def is_reading(self) -> bool:
        return self._reading and not self._closing

    # --- closing ---

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._stop_reader()
        if not self._buffer:
            self._connection_lost(None)
        # else: _on_writable calls _connection_lost(None) once the buffer is flushed

    def is_closing(self) -> bool:
        return self._closing

    def abort(self) -> None:
        if self._lost and self._protocol is None:
            return  # connection_lost already ran
        self._closing = True
        self._buffer.clear()
        self._ww.stop()
        self._stop_reader()
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        except OSError:
            pass  # already reset, or a socket without linger
        if self._lost_exc is None:
            self._lost_exc = ConnectionAbortedError("the connection was aborted")
        self._connection_lost(self._lost_exc)

    def _fatal(self, exc: BaseException) -> None:
        """A read or write failed: the connection is gone, with ``exc``."""
        self._closing = True
        self._buffer.clear()
        self._ww.stop()
        self._stop_reader()
        if self._lost_exc is None:
            self._lost_exc = exc
        self._connection_lost(exc)

    def _stop_reader(self) -> None:
        self._rw.stop()
        if self._reader_parked:
            self._backend._loop.run_callback(self._wake_reader)

    def _connection_lost(self, exc: BaseException | None) -> None:
        if self._lost:
            return
        self._lost = True
        if exc is not None and self._lost_exc is None:
            self._lost_exc = exc
        # Never from inside close()/abort(): the hub calls it (after the reader ends).
        self._backend._loop.run_callback(self._backend._call, self._call_connection_lost)

    def _call_connection_lost(self) -> None:
        protocol, self._protocol = self._protocol, None
        self._rw.close()
        self._ww.close()
        self._sock.close()
        self._backend._transports.discard(self)
        if self._reader is not None and not self._reader.dead:
            self._backend._loop.run_callback(self._reader.throw)  # parked in user code
        if protocol is not None:
            protocol.connection_lost(self._lost_exc)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "backend":
            return self._backend.name
        return self._extra.get(name, default)


class GeventDatagramTransport(polyloop.DatagramTransport):
    """A UDP endpoint: a reader greenlet on ``recvfrom``, sends queued only if the kernel
    is full (then flushed by a write watcher)."""

    __slots__ = (
        "__weakref__",
        "_backend",
        "_closing",
        "_extra",
        "_lost",
        "_protocol",
        "_queue",
        "_reader",
        "_remote",
        "_rw",
        "_sock",
        "_ww",
    )

    def __init__(
        self, backend: GeventBackend, sock: socket.socket, protocol: Any, remote: Any
    ) -> None:
        self._backend = backend
        self._sock = sock
        self._protocol = protocol
        self._remote = remote
        loop = backend._loop
        self._rw = loop.io(sock.fileno(), 1)
        self._ww = loop.io(sock.fileno(), 2)
        self._queue: collections.deque[tuple[bytes, Any]] = collections.deque()
        self._closing = False
        self._lost = False
        self._extra = {"socket": sock, "sockname": sock.getsockname(), "peername": remote}
        backend._transports.add(self)
        protocol.connection_made(self)
        self._reader = backend._spawn_greenlet(self._read_loop)

    def _read_loop(self) -> None:
        recvfrom = self._sock.recvfrom
        while not self._closing:
            try:
                data, addr = recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                self._backend._park(self._rw)
                continue
            except OSError as exc:  # ICMP errors on a connected socket, for instance
                self._protocol.error_received(exc)
                continue
            try:
                self._protocol.datagram_received(data, addr)
            except Exception as exc:
                log_callback_error("datagram_received", exc)

    def sendto(self, data: bytes | bytearray | memoryview, addr: Any = None) -> None:
        check_bytes(data)
        if self._closing:
            return
        if self._remote is not None and addr not in (None, self._remote):
            raise ValueError(f"this endpoint is connected to {self._remote!r}, not {addr!r}")
        if self._queue:
            self._queue.append((bytes(data), addr))
            return
        try:
            self._send(data, addr)
        except (BlockingIOError, InterruptedError):
            self._queue.append((bytes(data), addr))
            self._ww.start(self._backend._context.run, self._on_writable)
        except OSError as exc:
            self._protocol.error_received(exc)

    def _send(self, data: Any, addr: Any) -> None:
        if addr is None:
            self._sock.send(data)
        else:
            self._sock.sendto(data, addr)

    def _on_writable(self) -> None:
        if not drain_datagrams(self._queue, self._send, self._protocol.error_received):
            return
        self._ww.stop()
        if self._closing:
            self._connection_lost(None)

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._rw.stop()
        self._backend._loop.run_callback(self._wake_reader)
        if not self._queue:
            self._connection_lost(None)

    def abort(self) -> None:
        if self._lost:
            return
        self._closing = True
        self._queue.clear()
        self._ww.stop()
        self._rw.stop()
        self._backend._loop.run_callback(self._wake_reader)
        self._connection_lost(ConnectionAbortedError("the endpoint was aborted"))

    def _wake_reader(self) -> None:
        # The reader parks only in _read_loop's wait on the read watcher.
        if not self._reader.dead and self._reader is not getcurrent():
            self._reader.switch()

    def is_closing(self) -> bool:
        return self._closing

    def _connection_lost(self, exc: BaseException | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._backend._loop.run_callback(self._backend._call, self._call_connection_lost, exc)

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        self._rw.close()
        self._ww.close()
        self._sock.close()
        self._backend._transports.discard(self)
        self._protocol.connection_lost(exc)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "backend":
            return self._backend.name
        return self._extra.get(name, default)
