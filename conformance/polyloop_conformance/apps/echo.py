"""TCP echo, twice: on the Protocol API and on the Stream API.

The client sends 16 MiB in seeded random chunk sizes while reading concurrently,
half-closes, and checks that every byte came back in order and that EOF followed.
"""

from __future__ import annotations

import hashlib
import random

import polyloop

from ._base import App, AppConfig, Running, register

TOTAL = 16 * 1024 * 1024


class EchoProtocol(polyloop.Protocol):
    """Writes back what it reads; honours flow control both ways; closes after EOF."""

    def connection_made(self, transport: polyloop.Transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def eof_received(self) -> bool:
        # Stay half-open until what we echoed is flushed; close() flushes first.
        self.transport.close()
        return True

    def pause_writing(self) -> None:
        # The peer reads slower than it sends: stop reading so that backpressure
        # reaches it through the kernel instead of growing our buffer.
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()


async def serve_protocol(config: AppConfig) -> Running:
    server = await polyloop.listen_tcp(
        EchoProtocol, config.host, config.port, ssl=config.server_ssl
    )
    return Running((config.host, server.port), server.aclose)


async def echo_handler(stream: polyloop.Stream) -> None:
    """The Stream API echo: receive, send (waiting on flow control), until EOF."""
    while data := await stream.receive():
        await stream.send(data)


async def serve_stream(config: AppConfig) -> Running:
    listener = await polyloop.open_tcp_listener(config.host, config.port, ssl=config.server_ssl)
    task = polyloop.spawn(listener.serve(echo_handler))

    async def close() -> None:
        await listener.aclose()
        await task

    return Running((config.host, listener.port), close)


def chunks(total: int, seed: int) -> list[bytes]:
    """``total`` random bytes, cut at seeded random sizes (1 byte to 128 KiB)."""
    rng = random.Random(seed)
    out, left = [], total
    while left:
        sizes = (1, 7, 512, 1460, 4096, 65536, 131072, rng.randrange(1, 99999))
        n = min(left, rng.choice(sizes))
        out.append(rng.randbytes(n))
        left -= n
    return out


async def exercise(config: AppConfig, address: tuple[str, int], total: int = TOTAL) -> None:
    """Send ``total`` bytes concurrently with reading them back; compare digests."""
    stream = await polyloop.open_tcp_stream(
        address[0], address[1], ssl=config.client_ssl,
        server_hostname=config.server_hostname if config.client_ssl else None,
    )  # fmt: skip
    parts = chunks(total, seed=address[1])
    sent = hashlib.sha256()

    async def send_all() -> None:
        for part in parts:
            sent.update(part)
            await stream.send(part)
        if stream.transport.can_write_eof():
            await stream.send_eof()

    sender = polyloop.spawn(send_all())
    got = hashlib.sha256()
    n = 0
    try:
        while n < total:
            data = await stream.receive(1 << 20)
            assert data, f"EOF after {n} of {total} echoed bytes"
            got.update(data)
            n += len(data)
        await sender
        assert got.hexdigest() == sent.hexdigest(), "echoed bytes differ from those sent"
        if stream.transport.can_write_eof():
            assert await stream.receive() == b"", "no EOF after the echo"
    finally:
        sender.cancel()
        await stream.aclose()


PROTOCOL = register(
    App("echo", "TCP echo on the Protocol API, 16 MiB in random chunks", serve_protocol, exercise)
)
STREAM = register(
    App("echo-stream", "TCP echo on the Stream API, 16 MiB in random chunks", serve_stream,
        exercise)
)  # fmt: skip
