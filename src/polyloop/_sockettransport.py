"""The core's own socket transports, on a session's readiness callbacks (tier 1).

Rule: what a backend without a transport of its own gets for TCP, Unix sockets and UDP,
and what any backend may use where its framework has none (Tornado has no UDP). Only
``add_reader``/``add_writer`` and ``call_soon`` of the session are used, so the same code
keeps the Transport contract on every loop that offers readiness.

Data path: one ``recv`` per readable event into ``data_received``, as asyncio does (a
fast peer cannot starve the others); ``write`` sends at once when nothing is queued, and
only what the kernel refuses is buffered and flushed by a writable callback.
"""

from __future__ import annotations

import collections
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._errors import aborted, call_logged, check_bytes, write_after_eof
from ._sockets import MAX_DATAGRAM, READ_SIZE, set_reset_on_close
from ._transports import (
    DEFAULT_HIGH_WATER,
    BaseTransport,
    DatagramTransport,
    Transport,
    check_buffer_limits,
    datagram_address,
    drain_datagrams,
)

if TYPE_CHECKING:
    from ._protocols import DatagramProtocol
    from ._protocols import Protocol as StreamProtocol
    from ._session import Session

__all__ = [
    "SocketDatagramTransport",
    "SocketTransport",
    "socket_extra",
]

log = logging.getLogger("polyloop")

#: Datagrams read per readable event.
DATAGRAMS_PER_EVENT = 64


def socket_extra(session: Session, sock: socket.socket) -> dict[str, Any]:
    """For transports: the extra info every backend answers for a socket."""
    extra: dict[str, Any] = {"socket": sock, "backend": session.name}
    for key, get in (("sockname", sock.getsockname), ("peername", sock.getpeername)):
        try:
            extra[key] = get()
        except OSError:
            extra[key] = None  # not connected (UDP), or reset already
    return extra


class _SocketEnd(BaseTransport):
    """What the stream and the datagram transport share: a socket, its session, its
    protocol, its extra info, and the end of its life."""

    __slots__ = ("__weakref__", "_extra", "_lost", "_protocol", "_session", "_sock")

    _extra: dict[str, Any]
    _lost: bool
    _protocol: Any
    _sock: socket.socket
    _session: Session

    def _lose(self, exc: BaseException | None) -> None:
        if self._lost:
            return
        self._lost = True
        # Never from inside close()/abort(): on the next iteration.
        self._session.call_soon(self.finish_lost, exc)

    def finish_lost(self, exc: BaseException | None) -> None:
        self._sock.close()
        self._extra["socket"] = None
        self._session.resources.untrack(self)
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            protocol.connection_lost(exc)

    @property
    def session(self) -> Session:
        """The session this transport belongs to."""
        return self._session

    @property
    def sock(self) -> socket.socket:
        """The socket (closed once ``connection_lost`` has run)."""
        return self._sock

    def set_protocol(self, protocol: Any) -> None:
        self._protocol = protocol

    def get_protocol(self) -> Any:
        return self._protocol

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)


class SocketTransport(_SocketEnd, Transport):
    """A connected TCP or Unix stream socket held to the Transport contract.

    Reading is three methods a subclass may replace (the gevent adapter reads in a
    greenlet): ``start_reader`` (after ``connection_made``, and on ``resume_reading``),
    ``stop_reader`` (on ``pause_reading``, ``close`` and loss), and what they feed:
    ``feed_data`` (data) and ``feed_eof``. Writing and closing stay as they are here.
    """

    __slots__ = (
        "_buffer",
        "_closing",
        "_eof_written",
        "_high",
        "_low",
        "_reading",
        "_write_paused",
        "_writing",
    )

    def __init__(
        self, session: Session, sock: socket.socket, factory: Callable[[], StreamProtocol]
    ) -> None:
        self._session = session
        self._sock = sock
        self._buffer = bytearray()
        self._high, self._low = DEFAULT_HIGH_WATER, DEFAULT_HIGH_WATER // 4
        self._closing = self._lost = self._eof_written = False
        self._write_paused = self._writing = False
        self._reading = True
        self._extra = socket_extra(session, sock)
        self._protocol: Any = None
        session.resources.track(self)
        self._protocol = factory()
        try:
            self._protocol.connection_made(self)
        except BaseException:
            self.abort()  # the client's connect raises it; an acceptor logs it
            raise
        if self._reading and not self._closing:
            self.start_reader()

    # --- reading ---

    def start_reader(self) -> None:
        self._session.add_reader(self._sock, self._on_readable)

    def stop_reader(self) -> None:
        self._session.remove_reader(self._sock)

    def _on_readable(self) -> None:
        try:
            data = self._sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.fail(exc)
            return
        if data:
            self.feed_data(data)
        else:
            self.stop_reader()
            self.feed_eof()

    def feed_data(self, data: bytes) -> None:
        try:
            self._protocol.data_received(data)
        except Exception as exc:
            self._protocol_failed("data_received", exc)

    def feed_eof(self) -> None:
        self._reading = False
        try:
            keep_open = self._protocol.eof_received()
        except Exception as exc:
            self._protocol_failed("eof_received", exc)
            return
        if not keep_open:
            self.close()

    def _protocol_failed(self, method: str, exc: Exception) -> None:
        # The policy (docs/errors.md): logged, the connection aborted (the peer sees a
        # reset), connection_lost(exc) once, with the protocol's own exception.
        log.error("polyloop: %s.%s raised", type(self._protocol).__name__, method, exc_info=exc)
        if not self._lost:
            set_reset_on_close(self._sock)
        self.fail(exc)

    def pause_reading(self) -> None:
        if self._reading:
            self._reading = False
            if not self._closing:
                self.stop_reader()

    def resume_reading(self) -> None:
        if not self._reading and not self._closing:
            self._reading = True
            self.start_reader()

    def is_reading(self) -> bool:
        return self._reading and not self._closing

    # --- writing ---

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if type(data) is not bytes:
            check_bytes(data)
        if self._closing:
            return
        if self._eof_written:
            raise write_after_eof()
        if not data:
            return
        buffer = self._buffer
        if not buffer:
            try:
                n = self._sock.send(data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as exc:
                self.fail(exc)
                return
            if n == len(data) and type(data) is bytes:
                return  # the common case, without a memoryview (~0.2 us a write)
            view = memoryview(data).cast("B")
            if n == len(view):
                return
            buffer += view[n:]  # a copy: the caller may reuse a bytearray at once
            self._start_writing()
        else:
            buffer += data
        self._check_high()

    def _start_writing(self) -> None:
        if not self._writing:
            self._writing = True
            self._session.add_writer(self._sock, self._on_writable)

    def _check_high(self) -> None:
        if not self._write_paused and len(self._buffer) > self._high:
            self._write_paused = True
            call_logged(self._protocol, "pause_writing")

    def _on_writable(self) -> None:
        buffer = self._buffer
        try:
            n = self._sock.send(buffer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.fail(exc)
            return
        del buffer[:n]
        if self._write_paused and len(buffer) <= self._low:
            self._write_paused = False
            call_logged(self._protocol, "resume_writing")
        if buffer:
            return
        self._writing = False
        self._session.remove_writer(self._sock)
        if self._closing:
            self._lose(None)
        elif self._eof_written:
            self._shutdown_write()

    def write_eof(self) -> None:
        if self._closing or self._eof_written:
            return
        self._eof_written = True
        if not self._buffer:
            self._shutdown_write()

    def _shutdown_write(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            self.fail(exc)

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
        self.stop_reader()
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

    def fail(self, exc: BaseException) -> None:
        if not self._lost:
            self._drop(exc)

    def _drop(self, exc: BaseException) -> None:
        self._closing = True
        self._buffer.clear()
        self.stop_reader()
        if self._writing:
            self._writing = False
            self._session.remove_writer(self._sock)
        self._lose(exc)


class SocketDatagramTransport(_SocketEnd, DatagramTransport):
    """A UDP socket: reads on readable events, sends queued only while the kernel is full."""

    __slots__ = (
        "_closing",
        "_queue",
        "_remote",
    )

    def __init__(
        self, session: Session, sock: socket.socket, protocol: DatagramProtocol, remote: Any
    ) -> None:
        self._session = session
        self._sock = sock
        self._protocol: Any = protocol
        self._remote = remote
        self._queue: collections.deque[tuple[bytes, Any]] = collections.deque()
        self._closing = self._lost = False
        self._extra = socket_extra(session, sock)
        self._extra["peername"] = remote
        session.resources.track(self)
        protocol.connection_made(self)
        if not self._closing:
            session.add_reader(sock, self._on_readable)

    def _on_readable(self) -> None:
        for _ in range(DATAGRAMS_PER_EVENT):
            if self._closing:
                return
            try:
                data, addr = self._sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # ICMP errors on a connected socket, for instance
                self._protocol.error_received(exc)
                return
            self._protocol.datagram_received(data, addr)

    def _send(self, data: bytes | bytearray | memoryview, addr: Any) -> None:
        if addr is None:
            self._sock.send(data)
        else:
            self._sock.sendto(data, addr)

    def sendto(self, data: bytes | bytearray | memoryview, addr: Any = None) -> None:
        check_bytes(data)
        if self._closing:
            return
        addr = datagram_address(self._remote, addr)
        if self._queue:
            self._queue.append((bytes(data), addr))
            return
        try:
            self._send(data, addr)
        except (BlockingIOError, InterruptedError):
            self._queue.append((bytes(data), addr))
            self._session.add_writer(self._sock, self._on_writable)
        except OSError as exc:
            self._protocol.error_received(exc)

    def _on_writable(self) -> None:
        if not drain_datagrams(self._queue, self._send, self._protocol.error_received):
            return
        self._session.remove_writer(self._sock)
        if self._closing:
            self._lose(None)

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._session.remove_reader(self._sock)
        if not self._queue:
            self._lose(None)

    def abort(self) -> None:
        if self._lost:
            return
        self._closing = True
        self._queue.clear()
        self._session.remove_reader(self._sock)
        self._session.remove_writer(self._sock)
        self._lose(aborted())

    def is_closing(self) -> bool:
        return self._closing
