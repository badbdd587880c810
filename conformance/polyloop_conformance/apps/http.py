"""HTTP/1.1 with ``h11``: a server and a keep-alive client, both on polyloop.

What it proves: a real protocol stack (h11 parses, polyloop moves the bytes) works the
same on every backend: keep-alive, request bodies by length and chunked, chunked
responses, pipelined requests answered in order, a 400 for a malformed request and a
413 past ``MAX_BODY``, answered with a lingering close (half-close, then discard what
the client still sends) so that the client reads the error instead of a reset.

Routes: ``GET /`` (a greeting), ``GET /bytes/<n>`` (``n`` patterned bytes),
``GET /chunked/<n>`` (``n`` chunks), ``POST /echo`` (the body back; chunked if the
request was). Every response carries ``x-request-count``: the requests served on this
connection so far, which shows keep-alive from the outside.

Limits (the server is one that people run, and some clients are hostile):

- ``GET /bytes/<n>``: ``n`` at most ``MAX_BYTES`` (1 MiB); ``GET /chunked/<n>``: ``n``
  at most ``MAX_CHUNKS`` (1,000,000 chunks, about 19 MB). Past them: ``400`` with a body
  that names the limit.
- A request body: at most ``MAX_BODY`` (1 MiB), by length or chunked; ``413`` past it.
- A request head (request line and headers): at most ``MAX_HEAD`` (16 KiB); ``431``.
- A request head must be complete within ``HEADER_TIMEOUT`` (10 s) of the connection's
  start or of the previous response's end; then ``408`` and a close (a plain close if
  nothing of a new request came: an idle keep-alive connection). The body is not timed.
- Responses are produced as the client reads them: while the transport is paused
  (``pause_writing``) the server neither reads nor handles requests nor produces more
  of a body, so a client that pipelines requests and never reads holds about one
  ``WRITE_SIZE`` piece and the transport's buffer on the server, whatever it asked for.

The request handling (h11, the routes, the response bytes) is sans-io, in ``_http.py``;
this module moves the bytes, pauses, lingers and times the head. The benchmarks' native
``http-h11`` servers load ``_http.py`` by path, so that the app and each framework's own
server differ only in how bytes move.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import h11

import polyloop

from ._base import App, AppConfig, Running, register
from ._http import (
    CLOSE,
    HEADER_TIMEOUT,
    MAX_BODY,
    MAX_BYTES,
    MAX_CHUNKS,
    MAX_HEAD,
    WRITE_SIZE,
    ServerConnection,
    pattern,
)
from ._util import aclose_within, linger_close, within

__all__ = [
    "DRAIN_LIMIT",
    "HEADER_TIMEOUT",
    "LINGER",
    "MAX_BODY",
    "MAX_BYTES",
    "MAX_CHUNKS",
    "MAX_HEAD",
    "WRITE_SIZE",
    "HTTPClient",
    "HTTPServerProtocol",
    "Response",
    "exercise",
    "pattern",
    "serve",
]

#: Bytes a lingering close discards before it gives up and aborts.
DRAIN_LIMIT = 8 * 1024 * 1024
#: Seconds a lingering close waits for the client's EOF.
LINGER = 5.0


class HTTPServerProtocol(polyloop.Protocol):
    """One server connection: ``_http.ServerConnection`` parses, routes and builds the
    bytes (sans-io, shared with the benchmarks' native servers); this class moves them.

    Rule: output is made only while the transport takes it. ``pause_writing`` stops
    reading *and* handling requests *and* producing the current body; ``resume_writing``
    goes on where it stopped (``_pump``).

    The head timer is one ``call_later`` per connection, not one per request: when it
    fires it looks at when the client started to owe the current head
    (``ServerConnection.head_since``) and either answers 408 or sleeps again for what
    is left (a request that keeps the connection busy is never timed).
    """

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self.clock = clock

    def connection_made(self, transport: polyloop.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        if self.clock is None:
            self.clock = polyloop.current_backend().time
        self.http = ServerConnection(self.clock)
        self.draining = False
        self.drained = 0
        self.linger: polyloop.Handle | None = None
        self.paused = False
        self.pumping = False
        self.head_timer: polyloop.Handle | None = polyloop.call_later(
            HEADER_TIMEOUT, self._check_head
        )

    def data_received(self, data: bytes) -> None:
        if self.draining:
            self.drained += len(data)
            if self.drained > DRAIN_LIMIT:
                self.transport.abort()
            return
        self.http.receive_data(data)
        self._pump()

    def eof_received(self) -> bool:
        if self.draining:
            self.transport.close()
        else:
            self.http.receive_data(b"")
            self._pump()
        return True  # we close ourselves, once the last response is out

    def pause_writing(self) -> None:
        # A client that pipelines without reading: stop reading its requests, and stop
        # answering those already read (_pump checks `paused` after every write).
        self.paused = True
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.paused = False
        self.transport.resume_reading()
        self._pump()

    def connection_lost(self, exc: BaseException | None) -> None:
        http = self.http
        http.producer = None
        if http.end is None:
            http.end = CLOSE  # nothing more to parse or send (_pump looks at `end`)
        for handle in (self.linger, self.head_timer):
            if handle is not None:
                handle.cancel()
        self.head_timer = None

    def _check_head(self) -> None:
        """The head timer: 408 (or a plain close) if the client has owed a request head
        for ``HEADER_TIMEOUT`` seconds, else sleep until that could be so."""
        self.head_timer = None
        http = self.http
        if self.draining or http.end is not None or self.transport.is_closing():
            return
        left = HEADER_TIMEOUT
        if http.awaiting_head:
            left = http.head_since + HEADER_TIMEOUT - http.clock()
            if left <= 0:
                wire = http.time_out(f"request head not complete within {HEADER_TIMEOUT:g} s")
                if wire:
                    self.transport.write(wire)
                self._end()
                return
        self.head_timer = polyloop.call_later(left, self._check_head)

    def _pump(self) -> None:
        """Send what is due and handle what was read, until paused, done or closed."""
        # `pumping`: a write called pause_writing, and then... never re-enter. Once `end`
        # is set (also by connection_lost) nothing more is sent: no is_closing() needed.
        if self.pumping or self.http.end is not None:
            return
        self.pumping = True
        http, transport = self.http, self.transport
        try:
            while not self.paused:
                wire = http.next_output()
                if wire:
                    transport.write(wire)
                if http.end is not None:
                    self._end()
                    return
                if not wire:
                    return
        finally:
            self.pumping = False

    def _end(self) -> None:
        """``end`` is set: close, or (after an error response) close lingering."""
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        if self.http.end == CLOSE:
            self.transport.close()
            return
        # Why linger: closing with unread request bytes in the kernel makes it send a
        # reset, and the client may lose our error response. So half-close and discard
        # what still comes, until the client's EOF, DRAIN_LIMIT bytes, or LINGER s.
        self.draining = True
        self.linger = linger_close(self.transport, LINGER)


async def serve(config: AppConfig) -> Running:
    """Start the HTTP/1.1 server."""
    clock = polyloop.current_backend().time
    server = await polyloop.listen_tcp(lambda: HTTPServerProtocol(clock), config.host, config.port)
    return Running((config.host, server.port), server.aclose)


# --- the client ---


@dataclass
class Response:
    """A complete response: status, headers (lower-case names), body, and framing."""

    status: int
    headers: dict[bytes, bytes]
    body: bytes

    @property
    def chunked(self) -> bool:
        """Whether the body came with ``Transfer-Encoding: chunked``."""
        return self.headers.get(b"transfer-encoding") == b"chunked"


class HTTPClient:
    """A keep-alive HTTP/1.1 client over one polyloop Stream (h11 does the parsing)."""

    def __init__(self, stream: polyloop.Stream, host: str) -> None:
        self.stream = stream
        self.host = host.encode()
        self.conn = h11.Connection(h11.CLIENT)

    @classmethod
    async def connect(cls, host: str, port: int) -> HTTPClient:
        """Open a connection to ``host:port``."""
        return cls(await polyloop.open_tcp_stream(host, port), host)

    def _events(
        self, method: bytes, target: bytes, body: bytes | None, chunks: Sequence[bytes] | None
    ) -> list[Any]:
        headers = [(b"host", self.host)]
        if chunks is not None:
            headers.append((b"transfer-encoding", b"chunked"))
            data = [h11.Data(data=c) for c in chunks]
        elif body is not None:
            headers.append((b"content-length", b"%d" % len(body)))
            data = [h11.Data(data=body)]
        else:
            data = []
        return [
            h11.Request(method=method, target=target, headers=headers),
            *data,
            h11.EndOfMessage(),
        ]

    async def request(
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        chunks: Sequence[bytes] | None = None,
    ) -> Response:
        """Send one request (body by length, or ``chunks`` chunked) and read its response."""
        events = self._events(method.encode(), target.encode(), body, chunks)
        await self.stream.send(b"".join(self.conn.send(e) or b"" for e in events))
        return await self._read_response()

    async def pipeline(self, requests: Sequence[tuple[str, str, bytes | None]]) -> list[Response]:
        """Send all ``(method, target, body)`` requests in one write, then read the answers."""
        wire = bytearray()
        for method, target, body in requests:
            scratch = h11.Connection(h11.CLIENT)
            for e in self._events(method.encode(), target.encode(), body, None):
                wire += scratch.send(e) or b""
        await self.stream.send(bytes(wire))
        out = []
        for method, target, body in requests:
            # Walk our state machine through the request already on the wire.
            for e in self._events(method.encode(), target.encode(), body, None):
                self.conn.send(e)
            out.append(await self._read_response())
        return out

    async def _read_response(self) -> Response:
        response: h11.Response | None = None
        body = bytearray()
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(await self.stream.receive(1 << 20))
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise AssertionError("the server closed the connection mid-response")
        assert response is not None
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        return Response(response.status_code, dict(response.headers), bytes(body))

    async def aclose(self) -> None:
        """Close the connection."""
        await aclose_within(self.stream)


async def _raw_exchange(address: tuple[str, int], data: bytes) -> bytes:
    """Send ``data`` on a fresh connection, then read until the server closes."""
    stream = await polyloop.open_tcp_stream(*address)
    try:
        await stream.send(data)
        got = bytearray()
        while chunk := await stream.receive(1 << 20):
            got += chunk
        return bytes(got)
    finally:
        await aclose_within(stream)


def _expect(r: Response, status: int, body: bytes | None, count: int, what: str) -> None:
    assert r.status == status, f"{what}: status {r.status}, expected {status}"
    if body is not None:
        assert r.body == body, (
            f"{what}: body of {len(r.body)} bytes differs from the {len(body)} expected"
            f" (sha256 {hashlib.sha256(r.body).hexdigest()[:12]})"
        )
    got = r.headers.get(b"x-request-count")
    assert got == b"%d" % count, (
        f"{what}: x-request-count {got!r}, expected {count}: keep-alive did not hold"
    )


async def exercise(config: AppConfig, address: tuple[str, int]) -> None:
    """Keep-alive GET/POST, chunked both ways, pipelining, 404/405, 400, 413, close, and
    the limits on what a client can ask for."""
    await within(15, _exercise(address), "http exercise")


async def _exercise(address: tuple[str, int]) -> None:
    client = await HTTPClient.connect(*address)
    try:
        _expect(await client.request("GET", "/"), 200, b"hello, world\n", 1, "GET /")
        body = pattern(200_000)[::-1]
        r = await client.request("POST", "/echo", body)
        _expect(r, 200, body, 2, "POST /echo")
        assert not r.chunked, "a sized body was echoed chunked"
        pieces = [b"a", b"bc" * 1000, pattern(70_000), b"", b"z"]
        r = await client.request("POST", "/echo", chunks=pieces)
        _expect(r, 200, b"".join(pieces), 3, "chunked POST /echo")
        assert r.chunked, "a chunked request was not echoed chunked"
        r = await client.request("GET", "/chunked/50")
        _expect(r, 200, b"".join(b"chunk %d\n" % i for i in range(50)), 4, "GET /chunked/50")
        assert r.chunked, "GET /chunked/50 did not come chunked"
        r = await client.request("GET", "/bytes/300000")
        _expect(r, 200, pattern(300_000), 5, "GET /bytes/300000")
        _expect(await client.request("GET", "/nope"), 404, None, 6, "GET /nope")
        r = await client.request("GET", "/echo")
        _expect(r, 405, None, 7, "GET /echo")
        assert r.headers.get(b"allow") == b"POST", "405 without Allow: POST"
        _expect(await client.request("POST", "/echo", b""), 200, b"", 8, "empty POST")
        for i, (target, limit) in enumerate(
            [(f"/chunked/{MAX_CHUNKS + 1}", MAX_CHUNKS), (f"/bytes/{MAX_BYTES + 1}", MAX_BYTES)]
        ):
            r = await client.request("GET", target)
            _expect(r, 400, None, 9 + i, f"GET {target}")
            assert b"%d" % limit in r.body, f"GET {target}: the 400 does not name the limit"
    finally:
        await client.aclose()

    client = await HTTPClient.connect(*address)
    try:
        reqs: list[tuple[str, str, bytes | None]] = [
            ("GET", "/", None),
            ("POST", "/echo", b"first"),
            ("GET", "/bytes/100000", None),
            ("GET", "/chunked/3", None),
            ("POST", "/echo", pattern(5000)),
            ("GET", "/", None),
        ]
        rs = await client.pipeline(reqs)
        wants = [b"hello, world\n", b"first", pattern(100_000), b"chunk 0\nchunk 1\nchunk 2\n"]
        for i, (r, want) in enumerate(zip(rs, [*wants, pattern(5000), wants[0]], strict=True)):
            _expect(r, 200, want, i + 1, f"pipelined request {i + 1} ({reqs[i][1]})")
        # The connection still works after the pipeline.
        r = await client.request("GET", "/")
        _expect(r, 200, None, 7, "GET / after the pipeline")
    finally:
        await client.aclose()

    raw = await _raw_exchange(address, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200 "), f"Connection: close: got {raw[:40]!r}"
    assert raw.endswith(b"hello, world\n"), "Connection: close: body missing before EOF"

    raw = await _raw_exchange(address, b"THIS IS NOT HTTP\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 400 "), f"malformed request: got {raw[:40]!r}, expected 400"

    head = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (2 * MAX_BODY)
    raw = await _raw_exchange(address, head)
    assert raw.startswith(b"HTTP/1.1 413 "), f"oversized Content-Length: got {raw[:40]!r}"
    assert b"connection: close" in raw.lower(), "413 without Connection: close"

    chunk = b"%x\r\n%s\r\n" % (64 * 1024, b"c" * 64 * 1024)
    body = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    body += chunk * (MAX_BODY // (64 * 1024) + 2) + b"0\r\n\r\n"
    raw = await _raw_exchange(address, body)
    assert raw.startswith(b"HTTP/1.1 413 "), f"oversized chunked body: got {raw[:40]!r}"


APP = register(
    App(
        "http",
        "HTTP/1.1 (h11): keep-alive, chunked both ways, pipelining, 400, 413",
        serve,
        exercise,
    )
)
