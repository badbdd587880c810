"""Async byte streams, built once on Protocol/Transport and polyloop futures.

Rule: nothing here knows a framework (asyncio, the standard library's, is the one loop
the core may meet as itself: see ``_readable`` and ``BufferedStreamProtocol``). A
``Stream`` owns a ``StreamProtocol`` that holds what ``data_received`` brings (pausing the
transport's reading past a limit, so the kernel pushes back on the peer) and wakes the one
waiting ``receive``; ``send`` writes and waits while the transport has asked to pause
writing. What arrives while nothing is held is handed to ``receive`` as the same
``bytes`` object; only what piles up is copied into a ``bytearray``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl as _ssl
import types
import weakref
from collections.abc import Callable
from typing import Any

from ._errors import (
    BusyResourceError,
    Cancelled,
    ClosedResourceError,
    IncompleteReadError,
    LimitOverrunError,
    check_bytes,
)
from ._futures import Future, task_var
from ._protocols import Protocol
from ._session import Session
from ._tasks import AsyncioTask
from ._transports import Transport

__all__ = ["DEFAULT_LIMIT", "Stream", "StreamProtocol"]

log = logging.getLogger("polyloop")

#: Bytes a stream buffers before it pauses reading from its transport.
DEFAULT_LIMIT = 256 * 1024

#: What one read of a ``BufferedStreamProtocol`` may bring (asyncio's ``max_size``), and
#: what it brings while the reader asks for no more (see ``BufferedStreamProtocol``).
READ_BUFFER, SMALL_READ = 256 * 1024, 128 * 1024

_current_asyncio_task: Callable[[Any], Any] = asyncio.current_task
if isinstance(_current_asyncio_task, types.FunctionType):  # 3.11's, in Python: its dict
    _current_asyncio_task = getattr(asyncio.tasks, "_current_tasks", {}).get  # is C's
_AsyncioFuture = asyncio.Future
_reads: weakref.WeakKeyDictionary[Any, tuple[memoryview, memoryview]] = weakref.WeakKeyDictionary()


def _waiter(p: StreamProtocol) -> Any:
    """What the reader waits on: asyncio's C ``Future`` (about 1.8 us a message less than
    the core's, docs/benchmarks.md) where the session's callbacks run on an asyncio loop
    and an asyncio task of it runs the caller (no core task, a greenlet's in mixed mode,
    in between); else the core's."""
    loop = p.loop
    if loop is None or _current_asyncio_task(loop) is None:
        return p.session.create_future()
    if isinstance(task_var.get(None), (AsyncioTask, type(None))):
        return _AsyncioFuture(loop=loop)
    return p.session.create_future()


async def _readable(p: StreamProtocol) -> None:
    """Wait on ``_waiter(p)``; ``receive`` does the same inline (a frame less)."""
    waiter = p.read_waiter = _waiter(p)
    try:
        await waiter
    except RuntimeError:
        if type(waiter) is not _AsyncioFuture or waiter.done():
            raise
        waiter = p.read_waiter = p.session.create_future()
        await waiter
    finally:
        p.read_waiter = None


class StreamProtocol(Protocol):
    """What a ``Stream`` reads through: it holds what arrives until ``receive`` takes it."""

    def __new__(cls, session: Session, *args: Any) -> StreamProtocol:
        if cls is StreamProtocol and isinstance(session.native, asyncio.BaseEventLoop):
            cls = BufferedStreamProtocol
        return super().__new__(cls)

    def __init__(self, session: Session, limit: int, on_connect: Callable[[Stream], None] | None):
        self.session = session
        self.limit = limit
        #: What is held: ``head`` (what arrived while nothing was held, as it came) and
        #: what came after it (``more``), else ``buffer`` (the slower receive paths merge
        #: them there); never both. What came whole is handed on whole: no copy.
        self.head: bytes | memoryview = b""  # a view of what is left of a cut bytes
        self.more: list[bytes] | None = None
        #: What the last waiting ``receive`` asked for: how much the next read may bring.
        self.want = SMALL_READ
        self.buffer = bytearray()
        self.eof = False
        self.exc: BaseException | None = None
        self.lost = False
        self.transport: Transport | None = None
        self.read_paused = False
        self.write_paused = False
        self.read_waiter: Future[None] | asyncio.Future[None] | None = None
        self.drain_waiter: Future[None] | None = None
        self.lost_waiter: Future[None] | None = None
        self.on_connect = on_connect
        self.stream: Stream | None = None
        # The asyncio loop that runs this session's callbacks (SessionContract.asyncio_loop).
        self.loop = session.asyncio_loop()

    def connection_made(self, transport: Transport) -> None:  # type: ignore[override]
        self.transport = transport
        self.stream = Stream(self)
        if self.on_connect is not None:
            self.on_connect(self.stream)

    def data_received(self, data: bytes) -> None:
        if self.buffer:
            self.buffer += data
        elif type(data) is not bytes:
            self.merge()
            self.buffer += data
        elif self.head:
            self.queue(data)
        else:
            self.head = data  # kept as it came, for receive() to return whole
        waiter = self.read_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self.read_paused:
            return
        held = self.held() if self.more else len(self.buffer) + len(self.head)
        if held > self.limit and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()

    def queue(self, data: bytes) -> None:
        """One more ``bytes`` object behind ``head``, kept as it is too."""
        if self.more is None:
            self.more = [data]
        else:
            self.more.append(data)

    def held(self) -> int:
        """How many bytes are held."""
        n = len(self.buffer) + len(self.head)
        if self.more:
            n += sum(map(len, self.more))
        return n

    def take_head(self) -> bytes:
        """``head``, which the next queued object replaces."""
        head, more = self.head, self.more
        self.head = more.pop(0) if more else b""
        return head if type(head) is bytes else bytes(head)

    def merge(self) -> bytearray:
        """Everything held, in ``buffer`` (what the slower receive paths read)."""
        head = self.head
        if head:
            self.head = b""
            buffer = self.buffer
            buffer += head
            more, self.more = self.more, None
            for data in more or ():
                buffer += data
        return self.buffer

    def eof_received(self) -> bool:
        self.eof = True
        self._wake_reader()
        # Stay half-open so the stream may still send; TLS cannot (asyncio warns if asked).
        return self.transport is not None and self.transport.can_write_eof()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = True
        self.eof = True
        if exc is not None:
            self.exc = exc
        self._wake_reader()
        for waiter in (self.drain_waiter, self.lost_waiter):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        waiter = self.drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_reader(self) -> None:
        waiter = self.read_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class BufferedStreamProtocol(StreamProtocol, asyncio.BufferedProtocol):  # type: ignore[misc]
    """The ``StreamProtocol`` of a stock asyncio loop, which reads into our buffer.

    asyncio's transport otherwise reads with ``recv(256 KiB)``: CPython allocates the
    whole 256 KiB before shrinking it to what came, and whether malloc then hands out
    fresh pages (an ``mmap``, or heap trimmed and grown back: page faults on every read)
    depends on the process's history. Measured: the same Stream echo at 32 KiB ran at
    51k or 20k requests/s by that alone. ``recv_into`` one read buffer per loop (the
    transport calls ``get_buffer``, ``recv_into``, ``buffer_updated`` in one go) and an
    exact-size copy out allocate nothing large. uvloop reads into its own loop buffer and
    copies out in C: its ``data_received`` stays. A read brings at most 128 KiB while the
    waiting ``receive`` asks for no more, else 256 KiB. One 256 KiB read handed out 64 KiB
    at a time cost an ``mmap``'d copy (64 page faults a request) and the cuts; 64 KiB
    reads took a 70,000-byte message in two loop turns (0.91-0.96x asyncio's streams,
    1.06-1.07x with 128 KiB, docs/benchmarks.md "Round 3").
    """

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        # One buffer per loop: its reads run one at a time. (Not per thread: after
        # gevent's patch_all a threading.local is per greenlet.)
        loop = self.session.native
        views = _reads.get(loop)
        if views is None:
            view = memoryview(bytearray(READ_BUFFER))
            views = _reads[loop] = (view, view[:SMALL_READ])
        self.view, self.small = views

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.small if self.want <= SMALL_READ else self.view

    def buffer_updated(self, nbytes: int) -> None:
        if self.buffer:
            self.buffer += self.view[:nbytes]
        elif self.head:
            self.queue(bytes(self.view[:nbytes]))
        else:
            self.head = bytes(self.view[:nbytes])  # the one copy, of the exact size
        waiter = self.read_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self.read_paused:
            return
        held = self.held() if self.more else len(self.buffer) + len(self.head)
        if held > self.limit and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()


class Stream:
    """A bidirectional byte stream over a transport (TCP, Unix socket or TLS)."""

    def __init__(self, protocol: StreamProtocol) -> None:
        self._p = protocol
        assert protocol.transport is not None
        self.transport: Transport = protocol.transport
        self._closed = False
        self._receiving = False
        self._sending = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """The transport's extra info (``peername``, ``ssl_object`` ...)."""
        return self.transport.get_extra_info(name, default)

    def is_closing(self) -> bool:
        """True once this side closed or aborted the stream, or the connection is gone
        (the peer's EOF alone does not count: see ``at_eof``)."""
        return self._closed or self._p.lost or self.transport.is_closing()

    def at_eof(self) -> bool:
        """True if the peer sent EOF (or the connection was lost) and nothing is left to
        receive: an idle pooled connection the server has closed, told without reading."""
        return self._p.eof and not self._p.buffer and not self._p.head

    def abort(self) -> None:
        """Close at once, dropping what is buffered: the peer sees a reset. For a
        connection in an unknown state (a pool's, after a cancelled request)."""
        self._closed = True
        self.transport.abort()

    async def start_tls(
        self,
        ssl: _ssl.SSLContext,
        *,
        server_side: bool = False,
        server_hostname: str | None = None,
        ssl_handshake_timeout: float | None = None,
    ) -> None:
        """Upgrade this stream to TLS in place (STARTTLS: SMTP, IMAP, PostgreSQL,
        Redis); both ends call it, one with ``server_side=True``. Bytes already received
        past the plain part (a client's ClientHello sent right after its command) are
        fed to the handshake. Raises what ``Session.start_tls`` raises."""
        if self._closed:
            raise ClosedResourceError("the stream was closed")
        if self._receiving or self._sending:
            raise BusyResourceError("start_tls() while another task receives or sends")
        p = self._p
        leftover = bytes(p.merge())
        p.buffer.clear()
        transport = await p.session.start_tls(
            self.transport, p, ssl, server_side=server_side, server_hostname=server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout, leftover=leftover,
        )  # fmt: skip
        self.transport = p.transport = transport

    def _take(self, n: int) -> bytes:
        p = self._p
        buffer = p.merge()
        if n >= len(buffer):
            # All of it: one copy. ``bytes(buffer[:n])`` copies twice (the slice is a
            # bytearray): measured 3.8 against 38 us for 64 KiB, 0.43 against 0.68 for 1 KiB.
            data = bytes(buffer)
            buffer.clear()
        else:
            data = bytes(memoryview(buffer)[:n])  # one copy; the views end here
            del buffer[:n]
        if p.read_paused and len(buffer) <= p.limit // 2 and not p.lost:
            p.read_paused = False
            self.transport.resume_reading()
        return data

    def _enter_receive(self) -> None:
        if self._closed:
            raise ClosedResourceError("the stream was closed")
        if self._receiving:
            raise BusyResourceError("another task is already receiving on this stream")
        self._receiving = True

    async def receive(self, max_bytes: int = 65536) -> bytes:
        """Return up to ``max_bytes`` (at least one); ``b""`` if, and only if, EOF.

        After EOF it keeps returning ``b""``. A connection lost with an error raises that
        error (``ConnectionResetError`` ...) once the buffered data is consumed.
        """
        if max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        # The hot path of every Stream user: _enter_receive inline (a frame per message).
        if self._closed:
            raise ClosedResourceError("the stream was closed")
        if self._receiving:
            raise BusyResourceError("another task is already receiving on this stream")
        self._receiving = True
        try:
            p = self._p
            while True:
                head = p.head
                if head:
                    if p.read_paused:
                        break
                    # The bytes object that arrived, handed on as it came (no copy in or
                    # out; trio's receive_some does the same), or cut in two.
                    if len(head) <= max_bytes:
                        if p.more:
                            return p.take_head()
                        p.head = b""
                        return head if type(head) is bytes else bytes(head)
                    # What is left stays where it is, seen through a view: cutting 256
                    # KiB into four as bytes copied 192 + 128 + 64 KiB more.
                    view = head if type(head) is memoryview else memoryview(head)
                    p.head = view[max_bytes:]
                    return view[:max_bytes].tobytes()
                if p.buffer:
                    break
                if p.exc is not None:
                    raise p.exc
                if p.eof:
                    return b""
                p.want = max_bytes  # _readable, inline (a coroutine frame less)
                waiter = p.session.create_future() if p.loop is None else _waiter(p)
                p.read_waiter = waiter
                try:
                    await waiter
                except RuntimeError:
                    if type(waiter) is not _AsyncioFuture or waiter.done():
                        raise
                    # Sent back by its runner (Twisted's, started in an asyncio task's step).
                    waiter = p.read_waiter = p.session.create_future()
                    await waiter
                finally:
                    p.read_waiter = None
            buffer = p.merge()
            if max_bytes >= len(buffer) and not p.read_paused:
                data = bytes(buffer)  # all of it, as _take does
                buffer.clear()
                return data
            return self._take(max_bytes)
        finally:
            self._receiving = False

    async def receive_exactly(self, n: int) -> bytes:
        """Return exactly ``n`` bytes; ``IncompleteReadError`` if EOF comes first."""
        if n < 0:
            raise ValueError("n must be >= 0")
        self._enter_receive()
        try:
            p = self._p
            if len(p.head) == n and n and not p.read_paused:
                return p.take_head()
            while len(p.merge()) < n:
                if p.exc is not None:
                    raise p.exc
                if p.eof:
                    raise IncompleteReadError(self._take(len(p.buffer)), n)
                p.want = n - len(p.buffer)
                await _readable(p)
            return self._take(n)
        finally:
            self._receiving = False

    async def receive_until(self, delimiter: bytes, max_bytes: int = 65536) -> bytes:
        """Return data up to and including ``delimiter``.

        ``LimitOverrunError`` if ``max_bytes`` arrive without it (the data stays
        buffered); ``IncompleteReadError`` if EOF comes first.
        """
        if not delimiter:
            raise ValueError("delimiter must not be empty")
        self._enter_receive()
        try:
            p = self._p
            start = 0
            while True:
                i = p.merge().find(delimiter, start)
                if i >= 0:
                    end = i + len(delimiter)
                    if end > max_bytes:
                        raise LimitOverrunError(f"no delimiter within {max_bytes} bytes")
                    return self._take(end)
                if len(p.buffer) >= max_bytes:
                    raise LimitOverrunError(f"no delimiter within {max_bytes} bytes")
                start = max(0, len(p.buffer) - len(delimiter) + 1)
                if p.exc is not None:
                    raise p.exc
                if p.eof:
                    raise IncompleteReadError(self._take(len(p.buffer)), None)
                p.want = max_bytes
                await _readable(p)
        finally:
            self._receiving = False

    async def send(self, data: bytes | bytearray | memoryview) -> None:
        """Send all of ``data``, waiting while the transport's buffer is over its limit.

        ``BrokenPipeError`` (or the connection's own error) if the connection is gone.
        """
        if type(data) is not bytes:  # the transport checks again; bytes need no call
            check_bytes(data)
        if self._closed:
            raise ClosedResourceError("the stream was closed")
        if self._sending:
            raise BusyResourceError("another task is already sending on this stream")
        p = self._p
        if p.lost:
            raise p.exc if p.exc is not None else BrokenPipeError("the connection is closed")
        self._sending = True
        try:
            self.transport.write(data)
            while p.write_paused and not p.lost:
                waiter = p.session.create_future()
                p.drain_waiter = waiter
                try:
                    await waiter
                finally:
                    p.drain_waiter = None
            exc = p.exc  # the wait above may have ended in connection loss
            if exc is not None:
                raise exc
        finally:
            self._sending = False

    async def send_eof(self) -> None:
        """Half-close: the peer reads EOF; this side can still receive."""
        if self._closed:
            raise ClosedResourceError("the stream was closed")
        if not self._p.lost:
            self.transport.write_eof()

    async def aclose(self) -> None:
        """Flush and close, and wait until the connection is gone. Idempotent."""
        self._closed = True
        p = self._p
        if p.lost:
            return
        waiter = p.lost_waiter
        if waiter is None:
            waiter = p.lost_waiter = p.session.create_future()
        self.transport.close()
        try:
            await waiter
        except Cancelled:
            self.transport.abort()
            raise

    async def __aenter__(self) -> Stream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
