"""The generic TLS layer: TLS over any polyloop Transport, with ``ssl.MemoryBIO``.

Rule: this file knows ``ssl`` and the Transport/Protocol contract, nothing else. It is
what asyncio's ``sslproto`` does, cut to the contract: a ``TLSProtocol`` sits on the raw
transport as its protocol, and hands the application a ``TLSTransport``. Backends whose
framework cannot take a stdlib ``ssl.SSLContext`` (Twisted's TLS wants pyOpenSSL and the
global reactor) use it for every TLS connection.

Facts that shaped it:
- ``SSLObject.read`` raises ``SSLWantReadError`` when the incoming BIO has no whole
  record; a TLS 1.3 server also sends session tickets *after* the handshake, so outgoing
  data must be flushed after reads too, not only after writes.
- ``SSLObject.unwrap()`` raises ``SSLWantReadError`` after queueing our close_notify
  while the peer's has not arrived; we flush it and close without waiting (as browsers do).
- The application's ``connection_made`` runs only after the handshake, so a protocol
  never sees an unverified peer; a failed handshake never reaches it at all.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._errors import check_bytes
from ._protocols import Protocol
from ._transports import Transport

if TYPE_CHECKING:
    from ._contract import Handle
    from ._futures import Future
    from ._session import Session

log = logging.getLogger("polyloop")

__all__ = ["HANDSHAKE_TIMEOUT", "RecordCounter", "TLSProtocol", "TLSTransport"]

_READ_SIZE = 256 * 1024
#: Seconds a TLS handshake may take before the connection is dropped (asyncio's 60 s).
HANDSHAKE_TIMEOUT = 60.0


class RecordCounter:
    """Follows the record boundaries of a TLS byte stream, as it arrives.

    A TLS record is a 5-byte header (type, version, a 2-byte length) and that many bytes.
    The ``ssl`` module cannot say whether an EOF came between records or inside one
    (OpenSSL 3 reports ``UNEXPECTED_EOF_WHILE_READING`` for both), so whoever reads a
    TLS connection's raw bytes -- this module's ``TLSProtocol``, or a backend that puts
    it beside its framework's own TLS -- feeds them here and asks ``mid_record()`` when
    the peer's EOF comes (the rule of docs/tls.md). One step per record of up to 16 KiB:
    9 µs per MB in 256 KiB reads, 30 µs per MB in 4 KiB reads (a TLS echo spends about
    2 ms of CPU per MB)."""

    __slots__ = ("_head", "_left")

    def __init__(self) -> None:
        self._head = bytearray()  # the incoming record's header, while incomplete
        self._left = 0  # bytes of the incoming record's body still to come

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Count ``data``, the next bytes the peer sent."""
        n = len(data)
        left = self._left
        if left >= n:  # all inside the body of the current record
            self._left = left - n
            return
        i = left  # where the next record's header starts
        head = self._head
        if head:  # a header the previous read cut (its body has not begun: left == 0)
            need = 5 - len(head)
            head += data[:need]
            if len(head) < 5:
                return
            i = need + (head[3] << 8 | head[4])
            head.clear()
        while i + 5 <= n:  # one step per record: its length is in its header
            i += 5 + (data[i + 3] << 8 | data[i + 4])
        if i < n:
            head += data[i:]  # a header cut by this read
            self._left = 0
        else:
            self._left = i - n

    def mid_record(self) -> bool:
        """Whether the bytes so far end inside a record (its header or its body)."""
        return bool(self._head) or self._left > 0

    @staticmethod
    def truncated() -> ssl.SSLEOFError:
        """What the reader's ``connection_lost`` gets when the peer's socket closed in
        the middle of a record: its data was cut short, never a clean end."""
        return ssl.SSLEOFError(
            ssl.SSL_ERROR_EOF,
            "EOF in the middle of a TLS record: the connection was cut, its data truncated",
        )


class TLSProtocol(Protocol):
    """Protocol on the raw transport; runs TLS and drives the application protocol."""

    def __init__(
        self,
        session: Session,
        app_protocol: Protocol | None,
        context: ssl.SSLContext,
        server_side: bool,
        server_hostname: str | None,
        *,
        handshake_timeout: float | None = None,
        call_connection_made: bool = True,
        app_factory: Callable[[], Protocol] | None = None,
    ) -> None:
        # A server's protocol is made once the handshake is done (``app_factory``), as
        # asyncio does: a failed or abandoned handshake never reaches it at all.
        self.app_protocol: Any = app_protocol
        self._app_factory = app_factory
        self._server_side = server_side
        self.app_transport = TLSTransport(self)
        self.handshake_done: Future[None] = session.create_future()
        self._session = session
        self._timeout = HANDSHAKE_TIMEOUT if handshake_timeout is None else handshake_timeout
        self._timer: Handle | None = None
        # start_tls upgrades a connection whose protocol was made already.
        self._call_connection_made = call_connection_made
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._sslobj = context.wrap_bio(
            self._incoming, self._outgoing, server_side=server_side,
            server_hostname=server_hostname,
        )  # fmt: skip
        self._raw: Transport | None = None
        self._handshaking = True
        self._app_started = False
        self._closing = False
        self._eof_written = False
        self._lost = False
        self._peer_closed = False  # the peer's close_notify came
        self._records = RecordCounter()  # where the peer's records begin and end
        self._upgrade_told = False  # a failed start_tls's protocol got connection_lost

    # --- raw side ---

    def connection_made(self, transport: Transport) -> None:  # type: ignore[override]
        self._raw = transport
        # A peer that connects and never finishes its handshake is not held for ever.
        self._timer = self._session.call_later(self._timeout, self._handshake_timed_out)
        self._handshake()

    def _handshake_timed_out(self) -> None:
        self._timer = None
        if self._handshaking:
            # Closed, not aborted: the dropped peer reads EOF, as with asyncio's and
            # Tornado's own TLS (one rule on every backend, docs/tls.md). Only the first
            # flight of the handshake can be queued, which the socket takes at once.
            self._fail_handshake(
                TimeoutError(f"TLS handshake not done within {self._timeout:g} s"), close=True
            )

    def data_received(self, data: bytes) -> None:
        self._incoming.write(data)
        self._records.feed(data)
        if self._handshaking:
            self._handshake()
        else:
            self._read()

    def eof_received(self) -> bool | None:
        if self._handshaking:
            self._fail_handshake(ConnectionResetError("connection closed during TLS handshake"))
        elif self._app_started and self._records.mid_record():
            # The rule of docs/tls.md: the peer's socket closed in the middle of a record,
            # so what it sent was cut short -- never a clean end.
            self._abort_with(RecordCounter.truncated())
        elif self._app_started:
            # The peer closed without close_notify, between records: EOF, as asyncio
            # reports it; protocols that delimit their messages see a cut one themselves.
            self.app_protocol.eof_received()
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        self._lost = True
        if self._peer_closed and isinstance(exc, (BrokenPipeError, ConnectionResetError)):
            # The peer ended the session cleanly (close_notify) and then closed its
            # socket: our close_notify in reply hit a socket the peer had shut, so the
            # flush failed (EPIPE/ECONNRESET). The contract reports a clean close.
            exc = None
        if self._handshaking:
            self._fail_handshake(
                exc or ConnectionResetError("connection lost during TLS handshake")
            )
        if self._app_started:
            self._app_started = False
            self.app_protocol.connection_lost(exc)
        elif not self._call_connection_made and not self._upgrade_told:
            # start_tls: the protocol was made on the plain connection, so it hears of the
            # connection's end even when the upgrade failed (a Stream's aclose() waits
            # for it: it hung for ever after a failed start_tls, on every backend).
            self._upgrade_told = True
            self.app_protocol.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._app_started:
            self.app_protocol.pause_writing()

    def resume_writing(self) -> None:
        if self._app_started:
            self.app_protocol.resume_writing()

    # --- TLS engine ---

    def _flush(self) -> None:
        data = self._outgoing.read()
        if data and self._raw is not None and not self._lost:
            self._raw.write(data)

    def _handshake(self) -> None:
        try:
            self._sslobj.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except (ssl.SSLError, OSError) as exc:
            self._flush()
            self._fail_handshake(exc)
            return
        self._flush()
        self._handshaking = False
        self._stop_timer()
        self._app_started = True
        if self.app_protocol is None:
            assert self._app_factory is not None
            self.app_protocol = self._app_factory()
        if self._call_connection_made:
            # Before handshake_done: a connect that waits for it raises what
            # connection_made raised, as it does on a plain connection.
            try:
                self.app_protocol.connection_made(self.app_transport)
            except Exception as exc:
                self._refused(exc)
                return
        if not self.handshake_done.done():
            self.handshake_done.set_result(None)
        if self._closing:
            self._shutdown()
        else:
            self._read()  # application data may have come with the last handshake record

    def _refused(self, exc: Exception) -> None:
        """The application's ``connection_made`` raised: the connection is aborted (its
        ``connection_lost`` follows) and the error goes where a plain connection's goes
        (docs/errors.md): a client's connect raises it, a server logs it."""
        if self._server_side:
            log.error(
                "polyloop: a protocol's connection_made raised; connection aborted", exc_info=exc
            )
        elif not self.handshake_done.done():
            self.handshake_done.set_exception(exc)
        self.app_transport.abort()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fail_handshake(self, exc: BaseException, close: bool = False) -> None:
        self._handshaking = False
        self._stop_timer()
        if not self.handshake_done.done():
            self.handshake_done.set_exception(exc)
            # Nobody may await a server-side handshake: mark the exception retrieved.
            if not self.handshake_done.cancelled():
                try:
                    self.handshake_done.result()
                except BaseException:
                    pass
        if self._raw is not None and not self._lost:
            if close:
                self._raw.close()
            else:
                self._raw.abort()

    def _read(self) -> None:
        chunks: list[bytes] = []
        eof = False
        try:
            while True:
                chunk = self._sslobj.read(_READ_SIZE)
                if not chunk:
                    eof = True
                    break
                chunks.append(chunk)
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:
            eof = True
        except ssl.SSLError as exc:
            self._flush()
            self._abort_with(exc)
            return
        self._flush()
        if chunks and self._app_started:
            self.app_protocol.data_received(b"".join(chunks) if len(chunks) > 1 else chunks[0])
        if eof and self._app_started and not self._lost:
            self._peer_closed = True
            self.app_protocol.eof_received()  # TLS cannot be half-open: close after it
            self._shutdown()

    def _abort_with(self, exc: BaseException) -> None:
        if self._raw is not None and not self._lost:
            self._raw.abort()
        if self._app_started:
            self._app_started = False
            self.app_protocol.connection_lost(exc)

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        # Only reachable after the handshake: the app gets its transport only then.
        view = memoryview(data)
        while view:
            try:
                n = self._sslobj.write(view)
            except ssl.SSLError as exc:
                self._flush()
                self._abort_with(exc)
                return
            view = view[n:]
        self._flush()

    def _shutdown(self) -> None:
        if self._raw is None or self._lost:
            return
        if not self._handshaking and not self._eof_written:
            self._eof_written = True
            try:
                self._sslobj.unwrap()
            except (ssl.SSLError, OSError):
                pass  # SSLWantReadError: the peer's close_notify is not awaited
            self._flush()
        self._raw.close()


class TLSTransport(Transport):
    """The application's view of a TLS connection made by ``TLSProtocol``."""

    __slots__ = ("_tls",)

    def __init__(self, tls: TLSProtocol) -> None:
        self._tls = tls

    def write(self, data: bytes | bytearray | memoryview) -> None:
        check_bytes(data)
        tls = self._tls
        if tls._closing or tls._lost or not data:
            return
        tls._write(data)

    def write_eof(self) -> None:
        raise NotImplementedError("TLS connections cannot be half-closed (can_write_eof)")

    def can_write_eof(self) -> bool:
        return False

    def close(self) -> None:
        tls = self._tls
        if tls._closing:
            return
        tls._closing = True
        if not tls._handshaking:
            tls._shutdown()

    def is_closing(self) -> bool:
        return self._tls._closing or self._tls._lost

    def abort(self) -> None:
        tls = self._tls
        tls._closing = True
        if tls._raw is not None and not tls._lost:
            tls._raw.abort()

    def pause_reading(self) -> None:
        if self._tls._raw is not None:
            self._tls._raw.pause_reading()

    def resume_reading(self) -> None:
        if self._tls._raw is not None:
            self._tls._raw.resume_reading()

    def is_reading(self) -> bool:
        raw = self._tls._raw
        return raw is not None and raw.is_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if self._tls._raw is not None:
            self._tls._raw.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        raw = self._tls._raw
        return 0 if raw is None else raw.get_write_buffer_size()

    def set_protocol(self, protocol: Any) -> None:
        self._tls.app_protocol = protocol

    def get_protocol(self) -> Any:
        return self._tls.app_protocol

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        sslobj = self._tls._sslobj
        if name == "ssl_object":
            return sslobj
        if name == "peercert":
            return sslobj.getpeercert()
        if name == "cipher":
            return sslobj.cipher()
        if name == "compression":
            return sslobj.compression()
        raw = self._tls._raw
        return default if raw is None else raw.get_extra_info(name, default)
