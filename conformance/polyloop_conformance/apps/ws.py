"""WebSocket echo with ``wsproto``: a server and a client, both on polyloop.

What it proves: the opening handshake, text and binary messages, fragmented messages
in both directions (the client sends fragments and a ping between them; the server
reassembles, answers the ping at once, and echoes large messages in
``ECHO_FRAGMENT``-byte fragments), ping/pong, the close handshake (close frame each
way, then the server closes TCP), and a 1009 close for a message over ``MAX_MESSAGE``.

Limits (the server is one that people run): a message of at most ``MAX_MESSAGE`` (1 MiB),
counted as its frames arrive (wsproto hands over a frame's payload as it comes, so a
frame that claims 2**63 bytes costs nothing until the limit); past it, close code 1009,
then ``LINGER`` seconds for the client's close frame. The opening handshake's head is
h11's, at most 16 KiB. No extension (permessage-deflate) is accepted, so what a client
sends is what it costs. While the transport is paused the server stops reading, so a
client that sends without reading holds at most one read's worth of echoes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    Pong,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import RemoteProtocolError

import polyloop

from ._base import App, AppConfig, Running, register
from ._util import aclose_within, within

__all__ = ["WSClient", "WSEchoProtocol", "exercise", "serve"]

#: The largest message the server accepts (a 1009 close above it).
MAX_MESSAGE = 1024 * 1024
#: The server echoes messages larger than this in fragments of this size.
ECHO_FRAGMENT = 16 * 1024
#: Seconds the server waits for the client's close frame after sending its own.
LINGER = 5.0


def _fragments(data: str | bytes, size: int) -> list[Any]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [data[:0]]


def _message_events(pieces: Sequence[str | bytes]) -> list[Event]:
    out: list[Event] = []
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        if isinstance(piece, str):
            out.append(TextMessage(data=piece, message_finished=last))
        else:
            out.append(BytesMessage(data=piece, message_finished=last))
    return out


class WSEchoProtocol(polyloop.Protocol):
    """One server connection: wsproto parses, this class echoes."""

    def connection_made(self, transport: polyloop.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        self.ws = WSConnection(ConnectionType.SERVER)
        self.parts: list[Any] = []
        self.size = 0
        self.closing = False
        self.linger: polyloop.Handle | None = None

    def data_received(self, data: bytes) -> None:
        self.ws.receive_data(data)
        self._process()

    def eof_received(self) -> None:
        self.ws.receive_data(None)
        self._process()

    def pause_writing(self) -> None:
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.linger is not None:
            self.linger.cancel()

    def _send(self, *events: Event) -> None:
        self.transport.write(b"".join(self.ws.send(e) for e in events))

    def _process(self) -> None:
        try:
            for event in self.ws.events():
                if self.transport.is_closing():
                    return
                self._handle(event)
        except RemoteProtocolError as exc:
            hint = exc.event_hint
            if isinstance(hint, RejectConnection):
                self._send(hint)
            self.transport.close()

    def _handle(self, event: Event) -> None:
        if isinstance(event, Request):
            self._send(AcceptConnection())
        elif isinstance(event, Message):
            if self.closing:
                return  # draining until the peer's close frame
            self.parts.append(event.data)
            self.size += len(event.data)
            if self.size > MAX_MESSAGE:
                self._close(1009, "message too big")
            elif event.message_finished:
                whole = (
                    "".join(self.parts) if isinstance(event, TextMessage) else b"".join(self.parts)
                )
                self.parts, self.size = [], 0
                self._echo(whole)
        elif isinstance(event, Ping):
            self._send(event.response())
        elif isinstance(event, CloseConnection):
            if not self.closing:
                self._send(event.response())
            self.transport.close()

    def _echo(self, whole: str | bytes) -> None:
        self._send(*_message_events(_fragments(whole, ECHO_FRAGMENT)))

    def _close(self, code: int, reason: str) -> None:
        self.closing = True
        self.parts, self.size = [], 0
        self._send(CloseConnection(code=code, reason=reason))
        self.linger = polyloop.call_later(LINGER, self.transport.abort)


async def serve(config: AppConfig) -> Running:
    """Start the WebSocket echo server (any path)."""
    server = await polyloop.listen_tcp(WSEchoProtocol, config.host, config.port)
    return Running((config.host, server.port), server.aclose)


# --- the client ---


class WSClient:
    """A WebSocket client over one polyloop Stream (wsproto does the framing)."""

    def __init__(self, stream: polyloop.Stream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.pending: deque[Event] = deque()
        self.eof = False

    @classmethod
    async def connect(cls, host: str, port: int, target: str = "/") -> WSClient:
        """Connect and complete the opening handshake."""
        client = cls(await polyloop.open_tcp_stream(host, port))
        await client.stream.send(client.ws.send(Request(host=f"{host}:{port}", target=target)))
        event = await client.next_event()
        assert isinstance(event, AcceptConnection), f"handshake answered with {event!r}"
        return client

    async def next_event(self) -> Event:
        """The next wsproto event; ``AssertionError`` if the server closes first."""
        while not self.pending:
            assert not self.eof, "the server closed the connection"
            data = await self.stream.receive(1 << 20)
            if not data:
                self.eof = True
            self.ws.receive_data(data or None)
            self.pending.extend(self.ws.events())
        return self.pending.popleft()

    async def send(self, *events: Event) -> None:
        """Send wsproto events (messages, fragments, pings, a close)."""
        await self.stream.send(b"".join(self.ws.send(e) for e in events))

    async def send_message(self, data: str | bytes, fragment: int | None = None) -> None:
        """Send one message, in fragments of ``fragment`` bytes or characters if given."""
        pieces = _fragments(data, fragment) if fragment else [data]
        await self.send(*_message_events(pieces))

    async def receive_message(self) -> str | bytes:
        """The next whole message (fragments reassembled); pongs are skipped."""
        parts: list[Any] = []
        while True:
            event = await self.next_event()
            if isinstance(event, Message):
                parts.append(event.data)
                if event.message_finished:
                    return "".join(parts) if isinstance(event, TextMessage) else b"".join(parts)
            elif not isinstance(event, Pong):
                raise AssertionError(f"expected a message, got {event!r}")

    async def close(self, code: int = 1000, reason: str = "") -> CloseConnection:
        """Run the close handshake; return the server's close frame. EOF must follow."""
        await self.send(CloseConnection(code=code, reason=reason))
        event = await self.next_event()
        assert isinstance(event, CloseConnection), f"close answered with {event!r}"
        rest = await self.stream.receive()
        assert rest == b"", f"data after the close handshake: {rest[:40]!r}"
        return event

    async def aclose(self) -> None:
        """Close the TCP connection."""
        await aclose_within(self.stream)


async def exercise(config: AppConfig, address: tuple[str, int]) -> None:
    """Text, binary, fragments, ping/pong, close handshake, and the size limit."""
    await within(15, _exercise(address), "ws exercise")


async def _exercise(address: tuple[str, int]) -> None:
    client = await WSClient.connect(*address)
    try:
        messages: list[str | bytes] = ["hello", "", "héllo wörld ✓ " * 50, b"\x00\xff" * 10, b""]
        for message in messages:
            await client.send_message(message)
            got = await client.receive_message()
            assert got == message, f"echo of {message[:20]!r}... came back as {got[:20]!r}..."

        big = bytes(range(256)) * 1000  # 256 KB: the server echoes it in fragments
        await client.send_message(big, fragment=10_000)
        assert await client.receive_message() == big, "fragmented binary message mangled"
        text = "".join(chr(0x41 + i % 26) + "é" for i in range(40_000))
        await client.send_message(text, fragment=999)
        assert await client.receive_message() == text, "fragmented text message mangled"

        # A ping between the fragments of a message: the pong comes first.
        await client.send(
            TextMessage(data="part one, ", message_finished=False),
            Ping(payload=b"between"),
            TextMessage(data="part two", message_finished=True),
        )
        event = await client.next_event()
        assert isinstance(event, Pong), f"expected the pong first, got {event!r}"
        assert event.payload == b"between", f"pong payload {event.payload!r}"
        assert await client.receive_message() == "part one, part two", "interleaved ping broke it"

        await client.send(Ping(payload=b"ping!"))
        event = await client.next_event()
        assert isinstance(event, Pong) and event.payload == b"ping!", f"ping answered {event!r}"

        closing = await client.close(1000, "bye")
        assert closing.code == 1000, f"server closed with {closing.code}, expected 1000"
    finally:
        await client.aclose()

    client = await WSClient.connect(*address, target="/big")
    try:
        await client.send_message(b"x" * (MAX_MESSAGE + 1), fragment=64 * 1024)
        event = await client.next_event()
        assert isinstance(event, CloseConnection), f"oversized message answered with {event!r}"
        assert event.code == 1009, f"oversized message: close code {event.code}, expected 1009"
        await client.send(event.response())
        rest = await client.stream.receive()
        assert rest == b"", f"data after the close handshake: {rest[:40]!r}"
    finally:
        await client.aclose()


APP = register(
    App(
        "ws",
        "WebSocket (wsproto): text, binary, fragments, ping/pong, close, 1009",
        serve,
        exercise,
    )
)
