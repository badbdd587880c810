"""Twisted's TCP, Unix and UDP transports, held to the polyloop contract.

One Twisted protocol (``Bridge``) sits on each connection. It is the Twisted side:
``IProtocol`` for the callbacks, ``IHalfCloseableProtocol`` so that a peer's EOF is a
half-close instead of the end, and ``IPushProducer`` so that Twisted tells it when its
write buffer passes the limit. ``TwistedTransport`` is what the user's protocol holds.

The data path stays off the front end: ``Bridge.dataReceived`` *is* the user's bound
``data_received`` (set as an instance attribute), and ``write`` hands bytes straight to
Twisted's buffer.

What Twisted does differently, and is fixed here:
- ``write`` keeps a reference to the object, it does not copy: a ``bytearray`` the
  caller reuses would be sent changed. Anything but ``bytes`` is copied first.
- ``write`` after ``loseConnection`` still queues (the socket is open until flushed);
  the contract makes it a no-op. After ``write_eof`` it raises, as asyncio does.
- With a paused streaming producer registered, the final flush of ``loseConnection``
  or ``loseWriteConnection`` resumes the producer *instead of* closing
  (``FileDescriptor.doWrite``), so the connection would stay open for ever: we
  unregister the producer before closing.
- After the write side is shut, ``loseConnection`` calls ``connectionLost`` from inside
  itself; the contract forbids that re-entrancy, so we close on the next iteration.
- ``bufferSize`` is two things at once: the write-buffer size past which Twisted
  pauses its producer, *and* the size of every ``recv()``. Setting it to a small high
  mark would make reads tiny (and ``recv(0)`` reads as EOF), so it stays a read size
  (Twisted's own 64 KiB) and the high mark is checked here, on each write.
- Measured: ``recv(256 KiB)`` costs ~13 us against ~1.3 us for ``recv(64 KiB)`` on a
  64-byte message (CPython allocates the whole size, past malloc's mmap threshold, then
  shrinks it); at 256 KiB the echo benchmark ran at 0.55-0.86x native Twisted.
- Twisted resumes a paused producer only when its buffer is *empty*: so
  ``resume_writing`` comes when the buffer is at 0, which is at or below any low mark.
- ``abortConnection`` already sets ``SO_LINGER`` 0 (the peer sees a reset) and reports
  ``ConnectionAborted`` on the next iteration: we only translate it.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from typing import TYPE_CHECKING, Any

from twisted.internet import interfaces, protocol, udp
from twisted.python.failure import Failure
from zope.interface import implementer  # type: ignore[import-untyped]

import polyloop
from polyloop._errors import check_bytes
from polyloop._transports import DEFAULT_HIGH_WATER, check_buffer_limits

from ._errors import lost_reason, translate

if TYPE_CHECKING:
    from collections.abc import Callable

    from twisted.internet.defer import Deferred

    from ._backend import TwistedBackend

__all__ = ["Bridge", "DatagramBridge", "TwistedDatagramTransport", "TwistedTransport"]

log = logging.getLogger("polyloop")

#: Bytes asked of each recv() (Twisted's ``bufferSize``, left at its default).
READ_SIZE = 64 * 1024


class TwistedTransport(polyloop.Transport):
    """A polyloop ``Transport`` over a Twisted ``ITCPTransport``/``IUNIXTransport``."""

    __slots__ = (
        "__weakref__",
        "_aborted",
        "_backend",
        "_bridge",
        "_closing",
        "_eof_in",
        "_eof_out",
        "_extra",
        "_high",
        "_lost",
        "_read_paused",
        "_t",
    )

    def __init__(self, t: Any, bridge: Bridge, backend: TwistedBackend) -> None:
        self._t = t
        self._bridge = bridge
        self._backend = backend
        self._closing = self._aborted = self._lost = False
        self._eof_in = self._eof_out = self._read_paused = False
        self._high = DEFAULT_HIGH_WATER
        t.bufferSize = READ_SIZE
        sock = t.getHandle()
        self._extra: dict[str, Any] = {"socket": sock}
        for key, get in (("sockname", sock.getsockname), ("peername", sock.getpeername)):
            try:
                self._extra[key] = get()
            except OSError:
                self._extra[key] = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if type(data) is not bytes:
            check_bytes(data)
            data = bytes(data)  # Twisted keeps a reference; the caller may reuse theirs
        if self._closing:
            return
        if self._eof_out:
            raise RuntimeError("cannot write after write_eof()")
        if data:
            t = self._t
            t.write(data)
            # Our high-water mark, not Twisted's bufferSize (see the module docstring).
            if len(t.dataBuffer) - t.offset + t._tempDataLen > self._high:
                self._bridge.pause()

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def write_eof(self) -> None:
        if self._closing or self._eof_out:
            return
        self._eof_out = True
        self._t.unregisterProducer()  # see the module docstring: else the flush may stall
        self._t.loseWriteConnection()

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        t = self._t
        t.unregisterProducer()
        if getattr(t, "_writeDisconnected", False):
            # Twisted would call connectionLost from inside loseConnection().
            self._backend.call_soon(t.loseConnection)
        else:
            t.loseConnection()

    def is_closing(self) -> bool:
        return self._closing

    def abort(self) -> None:
        if self._aborted or self._lost:
            return
        self._aborted = self._closing = True
        self._t.abortConnection()

    def pause_reading(self) -> None:
        if not self._read_paused:
            self._read_paused = True
            if not self._lost:
                self._t.pauseProducing()

    def resume_reading(self) -> None:
        if self._read_paused:
            self._read_paused = False
            # After EOF, reading again would report the EOF a second time.
            if not (self._closing or self._eof_in):
                self._t.resumeProducing()

    def is_reading(self) -> bool:
        return not (self._read_paused or self._closing)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high, _ = check_buffer_limits(high, low)
        if self.get_write_buffer_size() > self._high:
            self._bridge.pause()

    def get_write_buffer_size(self) -> int:
        if self._lost:
            return 0
        # What abstract.FileDescriptor buffers: ``dataBuffer`` (being sent, from
        # ``offset``) and the list of later writes, ``_tempDataLen`` bytes long.
        t = self._t
        return len(t.dataBuffer) - t.offset + t._tempDataLen  # type: ignore[no-any-return]

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "backend":
            return self._backend.name
        if name == "socket" and self._lost:
            return None
        return self._extra.get(name, default)


@implementer(interfaces.IHalfCloseableProtocol, interfaces.IPushProducer)
class Bridge(protocol.Protocol):
    """The Twisted protocol of one connection; it drives the user's protocol."""

    def __init__(
        self,
        backend: TwistedBackend,
        factory: Callable[[], polyloop.Protocol],
        connected: Deferred[Any] | None = None,
    ) -> None:
        self.backend = backend
        self.factory = factory
        self.connected_d = connected
        self.user: Any = None
        self.tr: TwistedTransport | None = None
        self.write_paused = False

    def connectionMade(self) -> None:
        tr = self.tr = TwistedTransport(self.transport, self, self.backend)
        self.backend._track(tr)
        try:
            self.user = self.factory()
        except Exception as exc:
            log.exception("polyloop: protocol factory %r failed", self.factory)
            tr.abort()
            self.user = _Null()
            if self.connected_d is not None:
                self.backend.call_soon(_fail, self.connected_d, exc)
            return
        # The hot path: Twisted now calls the user's method directly.
        self.dataReceived = self.user.data_received  # type: ignore[method-assign]
        self.transport.registerProducer(self, True)  # type: ignore[union-attr]
        self.user.connection_made(tr)
        if self.connected_d is not None:
            self.backend.call_soon(_succeed, self.connected_d, (tr, self.user))

    def dataReceived(self, data: bytes) -> None:  # replaced in connectionMade
        pass

    # IHalfCloseableProtocol
    def readConnectionLost(self) -> None:
        tr = self.tr
        assert tr is not None
        tr._eof_in = True
        if not self.user.eof_received():
            tr.close()

    def writeConnectionLost(self) -> None:
        pass  # our write_eof() was flushed and the socket shut for writing

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        tr = self.tr
        if tr is None:
            return
        exc = lost_reason(reason)
        if tr._aborted:
            if not isinstance(exc, ConnectionAbortedError):
                exc = ConnectionAbortedError("connection aborted")
        elif tr._closing and exc is not None and tr.get_write_buffer_size() == 0:
            # close() with nothing left to send is a clean close: asyncio then never
            # touches the socket again. Twisted's loseConnection still send()s the empty
            # buffer once, which fails with EPIPE on a Unix socket whose peer is gone.
            exc = None
        tr._lost = tr._closing = True
        self.user.connection_lost(exc)

    def pause(self) -> None:
        """The write buffer passed our high-water mark."""
        if not self.write_paused:
            self.write_paused = True
            # Twisted resumes its producer after draining only if *it* paused it.
            self.transport.producerPaused = True  # type: ignore[union-attr]
            self.user.pause_writing()

    # IPushProducer: Twisted's write buffer passed ``bufferSize`` (ignored: our own
    # mark is checked on write), or drained completely.
    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        if self.write_paused:
            self.write_paused = False
            self.user.resume_writing()

    def stopProducing(self) -> None:
        pass  # the connection is going away; connectionLost follows


class _Null(polyloop.Protocol):
    """Stands in for a protocol whose factory failed."""


def _succeed(d: Deferred[Any], value: object) -> None:
    if not d.called:
        d.callback(value)


def _fail(d: Deferred[Any], exc: BaseException) -> None:
    if not d.called:
        d.errback(exc)


class TwistedDatagramTransport(polyloop.DatagramTransport):
    """A polyloop ``DatagramTransport`` over a Twisted UDP port."""

    __slots__ = ("__weakref__", "_aborted", "_backend", "_bridge", "_closing", "_port", "_remote")

    def __init__(self, port: Any, bridge: DatagramBridge, remote: Any, backend: TwistedBackend):
        self._port = port
        self._bridge = bridge
        self._remote = remote
        self._backend = backend
        self._closing = self._aborted = False

    def sendto(self, data: bytes | bytearray | memoryview, addr: Any = None) -> None:
        if type(data) is not bytes:
            check_bytes(data)
            data = bytes(data)
        if self._closing:
            return
        if self._remote is not None:
            if addr is not None and tuple(addr[:2]) != tuple(self._remote[:2]):
                raise ValueError(f"invalid address: must be None or {self._remote}")
            addr = None
        elif addr is None:
            raise ValueError("this endpoint is not connected: sendto() needs an address")
        try:
            self._port.write(data, None if addr is None else tuple(addr[:2]))
        except Exception as exc:
            err = translate(exc)
            self._bridge.user.error_received(
                err if isinstance(err, OSError) else OSError(str(err))
            )

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._port.stopListening()

    def is_closing(self) -> bool:
        return self._closing

    def abort(self) -> None:
        if self._closing:
            return
        self._aborted = True
        self.close()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "backend":
            return self._backend.name
        sock = getattr(self._port, "socket", None)
        if name == "socket":
            return sock
        if name == "sockname":
            return sock.getsockname() if sock is not None else default
        if name == "peername":
            return self._remote if self._remote is not None else default
        return default


class DatagramBridge(protocol.DatagramProtocol):
    """The Twisted side of one UDP endpoint."""

    noisy = False

    def __init__(self, user: polyloop.DatagramProtocol) -> None:
        self.user = user
        self.tr: TwistedDatagramTransport | None = None
        # The hot path: Twisted calls the user's method directly.
        self.datagramReceived = user.datagram_received  # type: ignore[method-assign,assignment]

    def connectionRefused(self) -> None:
        self.user.error_received(ConnectionRefusedError(errno.ECONNREFUSED, "connection refused"))

    def errorReceived(self, exc: OSError) -> None:
        """A socket error ``UDPPort`` read (not a Twisted callback)."""
        self.user.error_received(exc)

    def stopProtocol(self) -> None:
        tr = self.tr
        if tr is None:
            return
        exc = ConnectionAbortedError("endpoint aborted") if tr._aborted else None
        self.user.connection_lost(exc)


class UDPPort(udp.Port):
    """Twisted's UDP port, kept open when an ICMP error arrives.

    The kernel reports "port unreachable" for a connected UDP socket as a pending
    socket error. epoll and poll flag it as ``EPOLLERR``/``POLLERR`` without ``IN``, and
    the reactor takes that for a hang-up: it closes the port (``ConnectionDone``)
    instead of calling ``connectionRefused``. We read the error and report it, as
    asyncio does (``error_received``), and go on reading.
    """

    def readConnectionLost(self, reason: Failure) -> None:
        code = self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if not code:  # a real end: do what Twisted does
            super().readConnectionLost(reason)
            return
        self.startReading()  # type: ignore[no-untyped-call]
        self.protocol.errorReceived(OSError(code, os.strerror(code)))
