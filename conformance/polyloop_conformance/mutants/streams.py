"""Mutants of stream transports: writes, close, abort, half-close, flow control, the data
path, extra info -- one bug each in the core's ``SocketTransport`` (which the worked
example's sessions use for TCP and Unix sockets).
"""

from __future__ import annotations

import socket
from typing import Any

from polyloop.lowlevel import SocketTransport, aborted

from ..example_backend import _Handle
from . import mutant

# --- writes ---


@mutant(
    "transports",
    "a write after close() is a silent no-op, also while flushing",
    clauses=["transport.write.after_close_noop"],
    checks=["close.write_after_close_buffered"],
    expect=["silent no-op"],
)
class WriteAfterCloseQueued(SocketTransport):
    def write(self, data: Any) -> None:
        if self._closing and not self._lost and self._buffer:
            self._buffer += data  # queued behind what close() flushes
            return
        super().write(data)


@mutant(
    "transports",
    "write(str) raises TypeError",
    clauses=["transport.write.bytes_only"],
    checks=["errors.write_str"],
    expect=["did not raise TypeError"],
)
class WriteEncodesStr(SocketTransport):
    def write(self, data: Any) -> None:
        if isinstance(data, str):
            data = data.encode()
        elif isinstance(data, (int, list)) or data is None:
            return  # "nothing to send"
        super().write(data)


@mutant(
    "transports",
    "write() after write_eof() raises RuntimeError",
    clauses=["transport.write_eof.then_write_raises"],
    checks=["halfclose.write_after_eof"],
    expect=["did not raise RuntimeError"],
)
class WriteAfterEofDropped(SocketTransport):
    def write(self, data: Any) -> None:
        if self._eof_written:
            return
        super().write(data)


@mutant(
    "transports",
    "write() copies what it buffers: the caller may reuse a bytearray",
    clauses=["transport.write.copies"],
    checks=["writes.bytearray_copied_buffered"],
    expect=["copies what it buffers"],
)
class WriteKeepsReference(SocketTransport):
    """Queues the caller's object while the buffer is busy (a zero-copy "optimisation")."""

    def __init__(self, *args: Any) -> None:
        self._queued: list[Any] = []
        super().__init__(*args)

    def write(self, data: Any) -> None:
        if self._buffer and not self._closing and not self._eof_written and data:
            self._queued.append(data)
            self._buffer += b"\0" * len(data)  # room for it, filled when it is sent
            self._check_high()
            return
        super().write(data)

    def _on_writable(self) -> None:
        if self._queued:
            joined = b"".join(bytes(d) for d in self._queued)
            del self._buffer[len(self._buffer) - len(joined) :]
            self._buffer += joined
            self._queued.clear()
        super()._on_writable()


@mutant(
    "transports",
    "the protocol is called directly on the data path",
    clauses=["protocol.data_path.direct"],
    checks=["protocol.direct_data_path"],
    expect=["instead of calling the protocol"],
)
class DataThroughCallSoon(SocketTransport):
    def feed_data(self, data: bytes) -> None:
        self._session.call_soon(super().feed_data, data)


@mutant(
    "transports",
    "the protocol is called directly on the data path (not a loop iteration later)",
    clauses=["protocol.data_path.direct"],
    checks=["protocol.direct_data_path"],
    expect=["one loop iteration after the transport's socket was readable"],
)
class DataThroughOwnQueue(SocketTransport):
    """Each chunk goes through the loop's own ready queue, not ``session.call_soon``: a
    check that watched ``call_soon`` saw nothing, so only a judge from outside sees it."""

    def feed_data(self, data: bytes) -> None:
        loop = self._session.loop  # type: ignore[attr-defined]
        loop.ready.append(_Handle(super().feed_data, (data,), 0))


# --- close ---


@mutant(
    "transports",
    "close() flushes buffered data first",
    clauses=["transport.close.flushes"],
    checks=["close.flushes", "close.flushes_to_plain_peer"],
    expect=["close() must flush", "the closing end (the backend under test) broke the rule"],
)
class CloseDropsBuffer(SocketTransport):
    def close(self) -> None:
        self._buffer.clear()
        super().close()


@mutant(
    "transports",
    "connection_lost is never called from inside close()",
    clauses=["transport.close.not_reentrant"],
    checks=["close.lost_not_reentrant"],
    expect=["from inside close()"],
)
class CloseReportsInline(SocketTransport):
    def _lose(self, exc: BaseException | None) -> None:
        if self._lost:
            return
        self._lost = True
        self.finish_lost(exc)  # at once, on the caller's stack


@mutant(
    "transports",
    "close() again is a no-op: connection_lost runs once",
    clauses=["transport.close.idempotent"],
    checks=["close.idempotent"],
    expect=["close() again is a no-op"],
)
class CloseTwiceLostTwice(SocketTransport):
    def close(self) -> None:
        if self._closing and self._protocol is not None:
            self._session.call_soon(self._protocol.connection_lost, None)
            return
        super().close()


@mutant(
    "transports",
    "is_closing() is True once close() was called",
    clauses=["transport.is_closing"],
    checks=["close.is_closing", "close.is_closing_buffered"],
    expect=["False right after close()"],
)
class IsClosingOnlyOnceLost(SocketTransport):
    def is_closing(self) -> bool:
        return self._lost


@mutant(
    "transports",
    "is_closing() is True at once after close(), also while flushing",
    clauses=["transport.is_closing"],
    checks=["close.is_closing_buffered"],
    expect=["still buffered"],
)
class IsClosingWhenFlushed(SocketTransport):
    def is_closing(self) -> bool:
        return self._closing and not self._buffer


@mutant(
    "transports",
    "connection_lost is called exactly once, last",
    clauses=["protocol.order", "run.end_loses_connections"],
    checks=["cleanliness.connections_lost", "protocol.made_once_lost_once"],
    expect=["exactly one connection_lost"],
)
class LostNeverReported(SocketTransport):
    def finish_lost(self, exc: BaseException | None) -> None:
        self._protocol = None  # the protocol is forgotten, never told
        super().finish_lost(exc)


@mutant(
    "transports",
    "connection_made is called exactly once, first",
    clauses=["protocol.order"],
    checks=["protocol.made_once_lost_once", "protocol.callback_order"],
    expect=["exactly once"],
)
class MadeTwice(SocketTransport):
    def start_reader(self) -> None:
        protocol = self._protocol
        if protocol is not None and not getattr(self, "_again", False):
            self._again = True
            self._session.call_soon(protocol.connection_made, self)  # "re-announce"
        super().start_reader()


# --- abort ---


@mutant(
    "transports",
    "abort() reports connection_lost(ConnectionAbortedError)",
    clauses=["transport.abort.local_error"],
    checks=["abort.local_aborted_error"],
    expect=["expected a ConnectionAbortedError"],
)
class AbortReportsNone(SocketTransport):
    def abort(self) -> None:
        if self._lost:
            return
        from polyloop.lowlevel import set_reset_on_close

        set_reset_on_close(self._sock)
        self._closing = True
        self._buffer.clear()
        self.stop_reader()
        if self._writing:
            self._writing = False
            self._session.remove_writer(self._sock)
        self._lose(None)


@mutant(
    "transports",
    "abort() resets the connection: the peer sees a reset, not EOF",
    clauses=["transport.abort.resets_peer"],
    checks=["abort.peer_reset"],
    expect=["the aborting end (the backend under test) broke the rule", "a clean EOF (FIN)"],
)
class AbortWithoutReset(SocketTransport):
    def abort(self) -> None:
        if self._lost:
            return
        self._drop(aborted())  # no SO_LINGER: the kernel sends a FIN


@mutant(
    "transports",
    "abort() resets also after the peer's EOF (a half-closed connection is still open)",
    clauses=["transport.abort.resets_peer"],
    checks=["halfclose.abort_half_open", "halfclose.abort_half_open_to_plain_peer"],
    expect=["the aborting end (the backend under test) broke the rule", "a clean EOF (FIN)"],
)
class AbortAfterEofCloses(SocketTransport):
    def feed_eof(self) -> None:
        self._peer_done = True
        super().feed_eof()

    def abort(self) -> None:
        if getattr(self, "_peer_done", False) and not self._lost:
            self._drop(aborted())  # "the peer is gone anyway": no SO_LINGER, a FIN
            return
        super().abort()


@mutant(
    "transports",
    "an incoming reset is reported as an error, never as a clean EOF",
    clauses=["transport.reset.not_eof"],
    checks=["abort.reset_reported", "abort.peer_stream_reset"],
    expect=["the receiving end (the backend under test) broke the rule"],
)
class ResetAsEof(SocketTransport):
    def fail(self, exc: BaseException) -> None:
        if isinstance(exc, ConnectionResetError) and self._reading:
            self.stop_reader()
            self.feed_eof()  # "the peer went away": reported as a clean EOF
            return
        super().fail(exc)


@mutant(
    "transports",
    "connection_lost is never called from inside abort()",
    clauses=["transport.abort.local_error"],
    checks=["abort.local_aborted_error"],
    expect=["from inside abort()"],
)
class AbortReportsInline(SocketTransport):
    def abort(self) -> None:
        super().abort()
        protocol = self._protocol
        if protocol is not None:
            self._protocol = None
            protocol.connection_lost(aborted())


@mutant(
    "transports",
    "abort() drops buffered data",
    clauses=["transport.abort.drops_buffer"],
    checks=["abort.drops_buffer"],
    expect=["abort() drops buffered data"],
)
class AbortFlushesFirst(SocketTransport):
    def abort(self) -> None:
        if self._lost:
            return
        if self._buffer:
            self._aborting = True
            self.close()  # flush first
            return
        super().abort()

    def _lose(self, exc: BaseException | None) -> None:
        if getattr(self, "_aborting", False) and exc is None:
            exc = aborted()  # reported as an abort, but everything was sent
        super()._lose(exc)


@mutant(
    "transports",
    "abort() after a close() that is still flushing drops the rest",
    clauses=["transport.abort.drops_buffer"],
    checks=["abort.after_close_buffered"],
    expect=["did not drop the buffer"],
)
class AbortAfterCloseIgnored(SocketTransport):
    def abort(self) -> None:
        if self._closing:
            return  # "already closing"
        super().abort()


# --- half-close ---


@mutant(
    "transports",
    "a falsy eof_received closes the transport",
    clauses=["protocol.eof_received.return_value"],
    checks=["halfclose.falsy_closes"],
    expect=["did not close itself"],
)
class EofNeverCloses(SocketTransport):
    def feed_eof(self) -> None:
        self._reading = False
        self._protocol.eof_received()  # the answer is ignored: always half-open


@mutant(
    "transports",
    "eof_received returning True keeps the connection half-open",
    clauses=["protocol.eof_received.return_value"],
    checks=["halfclose.true_keeps_open"],
    expect=["keeps the connection half-open"],
)
class EofAlwaysCloses(SocketTransport):
    def feed_eof(self) -> None:
        self._reading = False
        self._protocol.eof_received()
        self.close()  # the answer is ignored: always closed


@mutant(
    "transports",
    "write_eof flushes, then half-closes",
    clauses=["transport.write_eof.half_close"],
    checks=["halfclose.write_eof_flushes", "halfclose.write_eof_to_plain_peer"],
    expect=["write_eof flushes", "the half-closing end (the backend under test) broke"],
)
class WriteEofNoFlush(SocketTransport):
    def write_eof(self) -> None:
        if self._closing or self._eof_written:
            return
        self._eof_written = True
        self._buffer.clear()  # "the kernel has the rest"
        self._shutdown_write()


# --- flow control ---


@mutant(
    "flow",
    "pause_writing once the buffer grows past the high-water mark",
    clauses=["transport.flow.pause_writing"],
    checks=["flow.pause_resume_writing"],
    expect=["pause_writing never came"],
)
class NeverPausesWriting(SocketTransport):
    def _check_high(self) -> None:
        pass


@mutant(
    "flow",
    "pause_writing comes only past the high-water mark",
    clauses=["transport.flow.pause_writing"],
    checks=["flow.pause_resume_writing"],
    expect=["at or below the high-water mark"],
)
class PausesAtLowMark(SocketTransport):
    def _check_high(self) -> None:
        if not self._write_paused and len(self._buffer) > self._low:
            self._write_paused = True
            self._protocol.pause_writing()


@mutant(
    "flow",
    "pause_writing and resume_writing alternate, starting with pause_writing",
    clauses=["transport.flow.pause_writing"],
    checks=["flow.pause_resume_writing"],
    expect=["do not alternate"],
)
class ResumesWhenEmpty(SocketTransport):
    """Tells the protocol it may write whenever the buffer empties, paused or not."""

    def _on_writable(self) -> None:
        super()._on_writable()
        if not self._buffer and self._protocol is not None and not self._closing:
            self._protocol.resume_writing()


@mutant(
    "flow",
    "pause_writing and resume_writing alternate",
    clauses=["transport.flow.buffer_size"],
    checks=["flow.buffer_size_grows"],
    expect=["came again while paused"],
)
class PausesOnEveryWrite(SocketTransport):
    def _check_high(self) -> None:
        if len(self._buffer) > self._high:
            self._write_paused = True
            self._protocol.pause_writing()


@mutant(
    "flow",
    "set_write_buffer_limits: ValueError unless 0 <= low <= high",
    clauses=["transport.flow.limits_validated"],
    checks=["flow.set_write_buffer_limits_validation"],
    expect=["was accepted"],
)
class LimitsUnchecked(SocketTransport):
    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        high = 64 * 1024 if high is None else high
        self._high, self._low = high, high // 4 if low is None else low


@mutant(
    "flow",
    "get_write_buffer_size() counts the bytes not yet handed to the kernel",
    clauses=["transport.flow.buffer_size"],
    checks=["flow.pause_resume_writing", "flow.buffer_size_grows"],
    expect=["with 0 bytes buffered"],
)
class BufferSizeAlwaysZero(SocketTransport):
    def get_write_buffer_size(self) -> int:
        return 0


@mutant(
    "flow",
    "pause_reading stops reading the socket, so the kernel pushes back",
    clauses=["transport.pause_reading.pushes_back"],
    checks=["flow.paused_reading_pushes_back"],
    expect=["stops reading the socket"],
)
class PauseReadingKeepsReading(SocketTransport):
    """Stops calling data_received but goes on reading the socket into memory."""

    def __init__(self, *args: Any) -> None:
        self._held = bytearray()
        super().__init__(*args)

    def stop_reader(self) -> None:
        if self._closing:
            super().stop_reader()

    def feed_data(self, data: bytes) -> None:
        if not self._reading:
            self._held += data
            return
        if self._held:
            data, self._held = bytes(self._held) + data, bytearray()
        super().feed_data(data)

    def resume_reading(self) -> None:
        was = self._reading
        super().resume_reading()
        if not was and self._held:
            held, self._held = bytes(self._held), bytearray()
            super().feed_data(held)

    def start_reader(self) -> None:
        if not getattr(self, "_started", False):
            self._started = True
            super().start_reader()


@mutant(
    "flow",
    "is_reading() is False between pause_reading() and resume_reading()",
    clauses=["transport.pause_reading"],
    checks=["flow.pause_reading"],
    expect=["is_reading() is True after pause_reading()"],
)
class IsReadingAlwaysTrue(SocketTransport):
    def is_reading(self) -> bool:
        return not self._closing


@mutant(
    "flow",
    "resume_reading() undoes pause_reading()",
    clauses=["transport.pause_reading"],
    checks=["flow.pause_reading"],
    expect=["resume_reading undoes pause_reading"],
)
class ResumeReadingForgets(SocketTransport):
    def resume_reading(self) -> None:
        self._reading = True  # the flag, but the socket is not watched again


# --- extra info ---


@mutant(
    "lifecycle",
    "peername and sockname are the two ends' socket addresses",
    clauses=["transport.extra_info"],
    checks=["addresses.extra_info"],
    expect=["client peername is"],
)
class PeernameIsSockname(SocketTransport):
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            name = "sockname"
        return super().get_extra_info(name, default)


@mutant(
    "lifecycle",
    "get_extra_info(name, default) returns default for an unknown key",
    clauses=["transport.extra_info"],
    checks=["addresses.extra_info"],
    expect=["get_extra_info('no-such-key', 42)"],
)
class ExtraInfoIgnoresDefault(SocketTransport):
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return super().get_extra_info(name)


@mutant(
    "lifecycle",
    "connect_* calls connection_made before returning",
    clauses=["protocol.order"],
    checks=["protocol.callback_order", "writes.order"],
    expect=["connection_made was called only after connect_tcp returned"],
)
class ConnectionMadeLate(SocketTransport):
    def __init__(self, session: Any, sock: Any, factory: Any) -> None:
        real = factory()
        super().__init__(session, sock, lambda: _Placeholder(self))  # type: ignore[arg-type,return-value]
        self.set_protocol(real)
        session.call_soon(real.connection_made, self)  # announced on the next round


class _Placeholder:
    def __init__(self, transport: Any) -> None:
        self.transport = transport

    def connection_made(self, transport: Any) -> None:
        pass


@mutant(
    "errors",
    "TCP_NODELAY is on for every TCP connection",
    clauses=["sockets.nodelay"],
    checks=["sockets.nodelay_by_default"],
    expect=["TCP_NODELAY is off"],
)
class NoNodelay(SocketTransport):
    def __init__(self, session: Any, sock: Any, factory: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
        super().__init__(session, sock, factory)


@mutant(
    "transports",
    "a clean close of the peer reaches the protocol as eof_received, then connection_lost(None)",
    clauses=["transport.close.peer_sees_eof"],
    checks=["halfclose.eof_from_plain_peer"],
    expect=["the receiving end (the backend under test) broke the rule"],
)
class EofAsReset(SocketTransport):
    """The peer's FIN taken for an error: no eof_received, connection_lost(an error)."""

    def feed_eof(self) -> None:
        self.fail(ConnectionResetError(104, "Connection reset by peer"))
