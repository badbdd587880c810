"""UDP echo, up to the largest IPv4 datagram.

What it proves: a datagram endpoint sends and receives whole datagrams of every size
from 1 byte to 65,507 bytes (the IPv4 maximum; 60 KiB among them), each echoed to the
address it came from, in a lock-step exchange and in a small burst. Loopback does not
drop, so nothing may be lost; every wait is bounded.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import polyloop

from ._base import App, AppConfig, Running, register
from ._util import Signal, within

__all__ = ["UDPClientProtocol", "UDPEchoProtocol", "exercise", "serve"]

#: Datagram sizes the exercise sends one at a time.
SIZES = (1, 2, 100, 1472, 1473, 8192, 8193, 16384, 32768, 60 * 1024, 65507)
#: Datagrams of 1 KiB sent at once before reading any echo (fits the kernel's buffer).
BURST = 32


class UDPEchoProtocol(polyloop.DatagramProtocol):
    """Sends each datagram back to where it came from."""

    def connection_made(self, transport: polyloop.DatagramTransport) -> None:  # type: ignore[override]
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(data, addr)


async def serve(config: AppConfig) -> Running:
    """Bind the echo endpoint."""
    transport, _ = await polyloop.open_udp(UDPEchoProtocol, local_addr=(config.host, config.port))
    port = transport.get_extra_info("sockname")[1]

    async def close() -> None:
        transport.close()

    return Running((config.host, port), close)


class UDPClientProtocol(polyloop.DatagramProtocol):
    """Queues what arrives, and the errors the endpoint reports."""

    def __init__(self) -> None:
        self.received: deque[bytes] = deque()
        self.errors: list[OSError] = []
        self.signal = Signal()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.append(data)
        self.signal.fire()

    def error_received(self, exc: OSError) -> None:
        self.errors.append(exc)
        self.signal.fire()

    async def next(self) -> bytes:
        """The next datagram; ``AssertionError`` on an endpoint error."""
        while not self.received:
            assert not self.errors, f"UDP error: {self.errors[0]!r}"
            await self.signal.wait()
        return self.received.popleft()


def _payload(size: int, tag: int) -> bytes:
    head = b"%d:%d:" % (tag, size)
    return (head + bytes(range(256)) * (size // 256 + 1))[:size]


async def exercise(config: AppConfig, address: tuple[str, int]) -> None:
    """Every size in ``SIZES`` in lock-step, then a burst of ``BURST`` datagrams."""
    transport, client = await polyloop.open_udp(UDPClientProtocol, remote_addr=address)
    try:
        for tag, size in enumerate(SIZES):
            data = _payload(size, tag)
            transport.sendto(data)
            got = await within(5, client.next(), f"echo of a {size}-byte datagram")
            assert len(got) == size, f"sent {size} bytes, got a {len(got)}-byte datagram"
            assert got == data, f"the {size}-byte datagram came back altered"
        burst = [_payload(1024, 1000 + i) for i in range(BURST)]
        for data in burst:
            transport.sendto(data)
        got_all = {await within(5, client.next(), "burst echo") for _ in burst}
        assert got_all == set(burst), "the burst came back altered"
    finally:
        transport.close()


APP = register(
    App(
        "udp",
        "UDP echo: 1 B to 65,507 B datagrams (60 KiB among them), lock-step and burst",
        serve,
        exercise,
        udp=True,
    )
)
