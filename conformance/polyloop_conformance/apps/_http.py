"""The HTTP/1.1 server, sans-io: h11 parses, this module routes and builds the response
bytes, with no loop.

Rule: nothing here does I/O or knows a backend (it imports neither polyloop nor a
loop). ``ServerConnection`` turns received bytes into the bytes to send, one write at a
time; the I/O side (``http.py``'s protocol, and the benchmarks' native servers, which
load this file by path) moves the bytes, decides *when* to ask for more output (never
while the transport is paused), closes when ``end`` says so, and owns the head timer.
The clock is injected, so that the head's start follows the backend's clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import h11

__all__ = ["CLOSE", "LINGER", "ServerConnection", "pattern"]

#: The largest request body the server accepts (413 above it).
MAX_BODY = 1024 * 1024
#: The largest ``n`` of ``GET /bytes/<n>`` (400 above it).
MAX_BYTES = 1024 * 1024
#: The largest ``n`` of ``GET /chunked/<n>`` (400 above it).
MAX_CHUNKS = 1_000_000
#: The largest request head, request line and headers together (431 above it).
MAX_HEAD = 16 * 1024
#: Seconds a client has to send a complete request head (408 after them).
HEADER_TIMEOUT = 10.0
#: Bytes of a response body produced at a time, and only while the transport takes them.
WRITE_SIZE = 64 * 1024

#: ``ServerConnection.end``: close once what was returned is written.
CLOSE = "close"
#: ``ServerConnection.end``: an error response was returned; close so that the client
#: can read it (half-close, then discard what it still sends: a lingering close).
LINGER = "linger"

_HELLO = b"hello, world\n"


def pattern(n: int) -> bytes:
    """``n`` deterministic bytes (``GET /bytes/<n>``)."""
    block = bytes(range(256))
    return (block * (n // 256 + 1))[:n]


# WRITE_SIZE is a multiple of 256, so every piece of a pattern starts on a period.
_BLOCK = pattern(WRITE_SIZE)


def _pattern_pieces(n: int) -> Iterator[bytes]:
    """``pattern(n)`` in pieces of at most ``WRITE_SIZE`` bytes, none built ahead."""
    for start in range(0, n, WRITE_SIZE):
        yield _BLOCK[: min(WRITE_SIZE, n - start)]


def _numbered_chunks(n: int) -> Iterator[bytes]:
    """The chunked framing of ``chunk 0\\n`` ... ``chunk <n-1>\\n``, one chunk each,
    batched into writes of about ``WRITE_SIZE`` bytes (the body of ``GET /chunked/<n>``).

    The chunks are framed here, not by h11: h11's chunked writer emits exactly
    ``%x\\r\\n<data>\\r\\n`` per chunk and keeps no count for a chunked body, so its state
    is right when it writes the last chunk (``EndOfMessage``); one chunk through
    ``conn.send`` costs a few microseconds, which made a million chunks take seconds.
    """
    batch: list[bytes] = []
    size = 0
    for i in range(n):
        line = b"chunk %d\n" % i
        piece = b"%x\r\n%s\r\n" % (len(line), line)
        batch.append(piece)
        size += len(piece)
        if size >= WRITE_SIZE:
            yield b"".join(batch)
            batch, size = [], 0
    if batch:
        yield b"".join(batch)


def _size(digits: bytes, limit: int) -> int | None:
    """``int(digits)`` if it is a decimal number up to ``limit``, else None (no huge
    ``int()``: a 16 KiB target of digits is refused before it is converted)."""
    if not digits.isdigit() or len(digits) > len(str(limit)):
        return None
    n = int(digits)
    return n if n <= limit else None


class ServerConnection:
    """One server connection's HTTP state: ``receive_data(data)``, then ``next_output()``
    until it returns ``b""``; ``end`` then says whether to close (``CLOSE``, ``LINGER``).

    Each ``next_output()`` returns one write: a whole response when it is small (head,
    body and end joined), else the head and then ``WRITE_SIZE`` pieces of the body, one
    per call, built only when asked for. A request the client pipelined stays unparsed
    in h11's buffer until the responses before it are out.

    The common request (a ``GET`` in one read) costs three ``next_event`` calls: the
    request, its end, and ``NEED_DATA`` after the next cycle is started in place (no
    pass through h11's ``PAUSED``).
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self.clock = clock
        #: Requests started on this connection (the ``x-request-count`` header).
        self.count = 0
        #: When the client started to owe a request head (the connection's start, or the
        #: end of the previous response): the I/O side times the head from here.
        self.head_since = clock()
        #: None while the connection goes on; then ``CLOSE`` or ``LINGER``.
        self.end: str | None = None
        self.request: h11.Request | None = None
        self.body = bytearray()
        #: The rest of the response being sent: wire bytes, piece by piece.
        self.producer: Iterator[bytes] | None = None

    def receive_data(self, data: bytes) -> None:
        """Bytes from the client; ``b""`` for its EOF."""
        self.conn.receive_data(data)

    @property
    def awaiting_head(self) -> bool:
        """Whether the client owes a request head (the head timer runs)."""
        return self.end is None and self.conn.their_state is h11.IDLE

    def next_output(self) -> bytes:
        """The next bytes to send; ``b""`` when nothing is due until more bytes come
        (or ever, once ``end`` is set)."""
        while self.end is None:
            if self.producer is not None:
                piece = next(self.producer, None)
                if piece is None:
                    self.producer = None
                    self._response_done()
                elif piece:  # an empty one (the end of a sized body) is skipped
                    return piece
                continue
            out = self._step()
            if out is None:
                return b""
            if out:
                return out
        return b""

    def time_out(self, text: str) -> bytes:
        """The head timer fired: a 408 (then ``end`` is ``LINGER``), or nothing and
        ``CLOSE`` if nothing of a new request came (an idle keep-alive connection)."""
        if not self.conn.trailing_data[0]:
            self.end = CLOSE
            return b""
        return self.fail(408, text)

    def fail(self, status: int, text: str) -> bytes:
        """The error response to send (if h11's state still allows one); ``end`` is
        ``LINGER`` from now on."""
        self.producer = None
        self.end = LINGER
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return b""
        body = text.encode() + b"\n"
        headers = self._headers(
            b"text/plain", [(b"content-length", b"%d" % len(body)), (b"connection", b"close")]
        )
        send = self.conn.send
        try:
            return b"".join(
                send(e) or b""
                for e in (h11.Response(status_code=status, headers=headers),
                          h11.Data(data=body), h11.EndOfMessage())
            )  # fmt: skip
        except h11.LocalProtocolError:
            return b""

    def _response_done(self) -> None:
        """Our response is out: start the next cycle, or close."""
        conn = self.conn
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
            self.head_since = self.clock()
        elif conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
            self.end = CLOSE

    def _step(self) -> bytes | None:
        """Handle one h11 event: bytes to send (maybe none), or None when nothing is due
        until more bytes come."""
        try:
            event = self.conn.next_event()
        except h11.RemoteProtocolError as exc:
            if exc.error_status_hint == 431:
                return self.fail(431, f"request head over {MAX_HEAD} bytes (MAX_HEAD)")
            return self.fail(exc.error_status_hint, f"bad request: {exc}")
        if event is h11.NEED_DATA:
            return None
        kind = type(event)
        if kind is h11.Request:
            return self._start(event)  # type: ignore[arg-type]
        if kind is h11.EndOfMessage:
            return self._respond()
        if kind is h11.Data:
            self.body += event.data  # type: ignore[union-attr]
            if len(self.body) > MAX_BODY:
                return self.fail(413, f"request body over {MAX_BODY} bytes (MAX_BODY)")
            return b""
        if kind is h11.ConnectionClosed:
            self.end = CLOSE
            return b""
        if event is h11.PAUSED:
            # Not on the common path (a response's end starts the next cycle), but h11
            # pauses when the client sent more after a request that closes.
            self._response_done()
            if self.end is None and self.conn.their_state is not h11.IDLE:
                self.end = CLOSE
        return b""

    def _start(self, request: h11.Request) -> bytes:
        self.count += 1
        self.request = request
        self.body = bytearray()
        for name, value in request.headers:
            if name == b"content-length" and int(value) > MAX_BODY:
                return self.fail(413, f"request body over {MAX_BODY} bytes (MAX_BODY)")
        if self.conn.they_are_waiting_for_100_continue:
            # curl sends "Expect: 100-continue" for large bodies and waits for this.
            return self.conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b""
        return b""

    def _headers(self, content_type: bytes, extra: Iterable[tuple[bytes, bytes]]) -> list[Any]:
        return [
            (b"content-type", content_type),
            (b"x-request-count", b"%d" % self.count),
            (b"server", b"polyloop-conformance"),
            *extra,
        ]

    def _respond(self) -> bytes:
        request = self.request
        assert request is not None
        method, target = request.method, request.target
        if target == b"/" and method == b"GET":
            return self._reply(200, _HELLO)
        if target.startswith(b"/bytes/") and method == b"GET":
            digits = target[7:]
            n = _size(digits, MAX_BYTES)
            if n is not None:
                return self._reply_sized(200, n, _pattern_pieces(n))
            if digits.isdigit():
                return self._reply(400, b"GET /bytes/<n> serves at most %d bytes\n" % MAX_BYTES)
            return self._reply(404, b"no such size\n")
        if target.startswith(b"/chunked/") and method == b"GET" and target[9:].isdigit():
            n = _size(target[9:], MAX_CHUNKS)
            if n is None:
                text = b"GET /chunked/<n> serves at most %d chunks\n" % MAX_CHUNKS
                return self._reply(400, text)
            return self._reply_chunked(200, _numbered_chunks(n))
        if target == b"/echo" and method == b"POST":
            chunked = dict(request.headers).get(b"transfer-encoding") == b"chunked"
            body = bytes(self.body)
            self.body = bytearray()
            if chunked:
                step = max(1, len(body) // 7 + 1)
                send = self.conn.send
                return self._reply_chunked(
                    200, (send(h11.Data(data=body[i : i + step])) or b""
                          for i in range(0, len(body), step)),
                )  # fmt: skip
            pieces = (body[i : i + WRITE_SIZE] for i in range(0, len(body), WRITE_SIZE))
            return self._reply_sized(200, len(body), pieces, b"application/octet-stream")
        if target in (b"/", b"/echo") or target.startswith((b"/bytes/", b"/chunked/")):
            allow = b"POST" if target == b"/echo" else b"GET"
            return self._reply(405, b"method not allowed\n", extra=[(b"allow", allow)])
        return self._reply(404, b"not found\n")

    def _reply(
        self,
        status: int,
        body: bytes,
        content_type: bytes = b"text/plain",
        extra: Sequence[tuple[bytes, bytes]] = (),
    ) -> bytes:
        """The whole response in one write."""
        headers = self._headers(content_type, [*extra, (b"content-length", b"%d" % len(body))])
        send = self.conn.send
        wire = send(h11.Response(status_code=status, headers=headers)) or b""
        wire += (send(h11.Data(data=body)) or b"") + (send(h11.EndOfMessage()) or b"")
        self._response_done()
        return wire

    def _reply_sized(
        self,
        status: int,
        length: int,
        pieces: Iterator[bytes],
        content_type: bytes = b"application/octet-stream",
    ) -> bytes:
        """The head now; ``pieces`` (``length`` bytes in all) one per ``next_output``."""
        headers = self._headers(content_type, [(b"content-length", b"%d" % length)])
        send = self.conn.send
        self.producer = self._produce(send(h11.Data(data=p)) or b"" for p in pieces)
        return send(h11.Response(status_code=status, headers=headers)) or b""

    def _reply_chunked(self, status: int, wire: Iterator[bytes]) -> bytes:
        """The head now; ``wire`` (framed chunks) one per ``next_output``, then the end."""
        headers = self._headers(b"application/octet-stream", [(b"transfer-encoding", b"chunked")])
        self.producer = self._produce(wire)
        return self.conn.send(h11.Response(status_code=status, headers=headers)) or b""

    def _produce(self, wire: Iterable[bytes]) -> Iterator[bytes]:
        yield from wire
        yield self.conn.send(h11.EndOfMessage()) or b""
