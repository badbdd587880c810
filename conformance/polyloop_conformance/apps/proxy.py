"""TCP proxy: flow control between two transports, both ways, and half-close.

What it proves: the proxy forwards bytes between a downstream client and an upstream
server with nothing but the transport contract. When one side's transport calls
``pause_writing``, the proxy calls ``pause_reading`` on the other side, so a slow
reader slows the sender at the far end through the kernel, and the proxy's buffers
stay bounded. EOF is passed on as ``write_eof`` and the connection stays half-open
until both directions are done.

``serve`` starts an upstream echo server and the proxy in front of it. The upstream
answers a connection that opens with ``STATS_MAGIC`` with the proxy's statistics (one
JSON line; the counters cover the server's whole life), so that a client in another
process can check the bound: the exercise stops reading while it sends 16 MiB, waits
until its sender is held back, and requires the proxy's peak write buffer to stay under
``PEAK_BOUND`` with pauses in both directions; then it reads everything back and checks
the bytes and the EOF.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from typing import Any

import polyloop

from ._base import App, AppConfig, Running, register
from ._util import aclose_within, shrink_socket_buffers, within
from .echo import chunks

__all__ = ["ProxySide", "ProxyStats", "UpstreamEcho", "exercise", "serve"]

#: Kernel send buffer size on every socket of the scenario (see ``shrink_socket_buffers``).
SOCKET_BUFFER = 128 * 1024
#: What a connection sends first to get the proxy's statistics from the upstream.
STATS_MAGIC = b"\x00polyloop-proxy-stats\n"
#: The proxy's high-water mark (the default), plus one read that a backend may deliver
#: before the pause takes effect (asyncio reads up to 256 KiB at once), with margin.
PEAK_BOUND = 512 * 1024
#: Bytes the exercise pushes through.
TOTAL = 16 * 1024 * 1024
#: Bounds on the exercise, in seconds (it takes well under 1 s when nothing is wrong).
#: Not reading: the sender must be held back and the proxy paused both ways by then
#: (checked after each poll); the phase itself gets 10 s more for its last poll.
HOLD_BACK_BOUND = 15
#: Reading: the longest wait for the next bytes of the echo, and for the sender, the EOF.
STALL_BOUND = 10
#: The whole exercise: not shorter than the sum of the bounds of its phases (stats 5,
#: not reading 25, the sender 10, the EOF 10, stats 5) plus some reading, so that the
#: bound of the phase that stalls is what a failure names.
TOTAL_BOUND = 60
#: The app's limit, the referee's backstop: past TOTAL_BOUND and the client's closing
#: (``aclose_within``, 5 s), so that the exercise's own message, with its state, comes first.
APP_TIMEOUT = TOTAL_BOUND + 15


@dataclass
class ProxyStats:
    """What the proxy measured: its peak write buffer and its pauses per direction."""

    peak: int = 0
    pauses_up: int = 0  # upstream was full, so the proxy stopped reading the client
    pauses_down: int = 0  # the client was full, so the proxy stopped reading upstream
    connections: int = 0


class ProxySide(polyloop.Protocol):
    """One end of a proxied connection; what it reads is written to its peer."""

    def __init__(self, stats: ProxyStats, downstream: bool) -> None:
        self.stats = stats
        self.downstream = downstream
        self.peer: ProxySide | None = None
        self.transport: polyloop.Transport | None = None
        self.pending = bytearray()  # read before the peer was connected
        self.got_eof = False
        self.write_paused = False

    def connection_made(self, transport: polyloop.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        shrink_socket_buffers(transport, SOCKET_BUFFER)

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is None or peer.transport is None:
            self.pending += data
            return
        peer.transport.write(data)
        self.stats.peak = max(self.stats.peak, peer.transport.get_write_buffer_size())

    def eof_received(self) -> bool:
        self.got_eof = True
        peer = self.peer
        if peer is not None and peer.transport is not None:
            if peer.got_eof:
                # Both directions are done: close both (each flushes first).
                peer.transport.close()
                return False
            if peer.transport.can_write_eof():
                peer.transport.write_eof()
        return True

    def connection_lost(self, exc: BaseException | None) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            # An error is passed on as a reset; a clean end as a flushed close.
            if exc is None:
                peer.transport.close()
            else:
                peer.transport.abort()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.downstream:
            self.stats.pauses_down += 1
        else:
            self.stats.pauses_up += 1
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def link(self, peer: ProxySide) -> None:
        """Pair with ``peer``, and pass on what arrived before it was there."""
        self.peer, peer.peer = peer, self
        if self.pending and peer.transport is not None:
            data, self.pending = bytes(self.pending), bytearray()
            self.data_received(data)
        if self.got_eof:
            self.got_eof = False
            self.eof_received()


class Downstream(ProxySide):
    """The client's connection: it opens the upstream one, reading nothing till then."""

    def __init__(self, stats: ProxyStats, upstream: tuple[str, int]) -> None:
        super().__init__(stats, downstream=True)
        self.upstream = upstream

    def connection_made(self, transport: polyloop.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.stats.connections += 1
        transport.pause_reading()
        polyloop.spawn(self._connect())

    async def _connect(self) -> None:
        assert self.transport is not None
        try:
            _, up = await polyloop.connect_tcp(
                lambda: ProxySide(self.stats, downstream=False), *self.upstream
            )
        except OSError:
            self.transport.abort()
            return
        if self.transport.is_closing():
            assert up.transport is not None
            up.transport.abort()
            return
        self.link(up)
        # Passing on what arrived early may already have filled the upstream side.
        if not up.write_paused:
            self.transport.resume_reading()


class UpstreamEcho(polyloop.Protocol):
    """The upstream: an echo with flow control, or the stats if asked with the magic."""

    def __init__(self, stats: ProxyStats) -> None:
        self.stats = stats
        self.head = b""  # the first bytes, until we know whether they are the magic
        self.echoing = False

    def connection_made(self, transport: polyloop.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        shrink_socket_buffers(transport, SOCKET_BUFFER)

    def data_received(self, data: bytes) -> None:
        if not self.echoing:
            self.head += data
            if self.head.startswith(STATS_MAGIC):
                self.transport.write(json.dumps(asdict(self.stats)).encode() + b"\n")
                self.transport.close()
                return
            if STATS_MAGIC.startswith(self.head):
                return  # maybe the magic: wait for more
            self.echoing = True
            data, self.head = self.head, b""
        self.transport.write(data)

    def eof_received(self) -> bool:
        if self.head:
            self.transport.write(self.head)
        self.transport.close()  # after what we echoed is flushed
        return True

    def pause_writing(self) -> None:
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()


async def serve(config: AppConfig) -> Running:
    """Start the upstream echo (on an ephemeral port) and the proxy in front of it."""
    stats = ProxyStats()
    upstream = await polyloop.listen_tcp(lambda: UpstreamEcho(stats), config.host, 0)
    target = (config.host, upstream.port)
    proxy = await polyloop.listen_tcp(lambda: Downstream(stats, target), config.host, config.port)

    async def close() -> None:
        await proxy.aclose()
        await upstream.aclose()

    return Running((config.host, proxy.port), close)


async def query_stats(address: tuple[str, int]) -> dict[str, Any]:
    """Ask the proxy at ``address`` (through to its upstream) for its statistics."""
    stream = await polyloop.open_tcp_stream(*address)
    try:
        await stream.send(STATS_MAGIC)
        line = await within(5, stream.receive_until(b"\n"), "proxy stats")
        stats: dict[str, Any] = json.loads(line)
        return stats
    finally:
        await aclose_within(stream)


async def exercise(config: AppConfig, address: tuple[str, int]) -> None:
    """16 MiB through the proxy with a reader that stops, then drains; bounds checked."""
    state: dict[str, Any] = {"phase": "connecting", "sent": 0, "received": 0, "seconds": {}}
    state["_since"] = time.monotonic()
    try:
        await within(TOTAL_BOUND, _exercise(address, state), "proxy exercise")
    except AssertionError as exc:
        if state["phase"] not in state["seconds"]:  # not timed by _exercise yet
            _lap(state)
        shown = {k: v for k, v in state.items() if not k.startswith("_")}
        raise AssertionError(f"{exc} [{shown}]") from None


def _lap(state: dict[str, Any]) -> float:
    """Note the wall-clock time of the current phase so far in ``state["seconds"]``."""
    now = time.monotonic()
    state["seconds"][state["phase"]] = round(now - state["_since"], 3)
    return now


def _enter(state: dict[str, Any], phase: str) -> None:
    """Start ``phase``, noting the time the one before it took."""
    state["_since"] = _lap(state)
    state["phase"] = phase


async def _exercise(address: tuple[str, int], state: dict[str, Any]) -> None:
    # The server may have served earlier runs (--cross): count pauses from here.
    before = await query_stats(address)
    stream = await polyloop.open_tcp_stream(*address)
    shrink_socket_buffers(stream.transport, SOCKET_BUFFER)
    parts = chunks(TOTAL, seed=address[1] + 1)
    sent = hashlib.sha256()

    async def send_all() -> None:
        for part in parts:
            sent.update(part)
            await stream.send(part)
            state["sent"] += len(part)
        await stream.send_eof()  # half-close: the echo must still come back
        state["sent"] = "all, then EOF"

    async def hold_back() -> None:
        # Read nothing until the sender is held back (no progress for 20 polls in a
        # row) and the proxy has paused both ways. A stall alone is not enough: a
        # proxy process starved of CPU stalls the sender too, without any pause.
        deadline = time.monotonic() + HOLD_BACK_BOUND
        while True:
            still, last = 0, state["sent"]
            while still < 20:
                await polyloop.sleep(0.01)
                now = state["sent"]
                assert isinstance(now, int), (
                    f"all {TOTAL} bytes were accepted while the client read nothing:"
                    " backpressure does not reach the sender through the proxy"
                )
                still = still + 1 if now == last else 0
                last = now
            stats = await query_stats(address)
            assert stats["peak"] <= PEAK_BOUND, (
                f"the proxy buffered {stats['peak']} bytes (bound {PEAK_BOUND})"
            )
            down = stats["pauses_down"] - before["pauses_down"]
            up = stats["pauses_up"] - before["pauses_up"]
            if down > 0 and up > 0:
                break
            assert time.monotonic() < deadline, (
                f"the sender is held back but the proxy did not pause both ways:"
                f" {down} down, {up} up"
            )

    sender = polyloop.spawn(send_all())
    try:
        _enter(state, "not reading")
        await within(
            HOLD_BACK_BOUND + 10, hold_back(),
            "the sender held back and the proxy paused both ways while the client read nothing",
        )  # fmt: skip
        _enter(state, "reading")
        got = hashlib.sha256()
        while state["received"] < TOTAL:
            data = await within(
                STALL_BOUND, stream.receive(1 << 20),
                f"the echo, after {state['received']} of {TOTAL} bytes",
            )  # fmt: skip
            assert data, f"EOF after {state['received']} of {TOTAL} bytes"
            got.update(data)
            state["received"] += len(data)
            if state["received"] < TOTAL // 4:
                await polyloop.sleep(0)  # a slow reader for the first quarter
        _enter(state, "waiting for the sender")
        await within(STALL_BOUND, sender, "the sender's end, once the echo was all back")
        assert got.hexdigest() == sent.hexdigest(), "bytes through the proxy differ"
        _enter(state, "waiting for EOF")
        tail = await within(STALL_BOUND, stream.receive(), "the EOF after the echo")
        assert tail == b"", "no EOF after the echo: half-close was lost"
        _enter(state, "final stats")
        stats = await query_stats(address)
        assert stats["peak"] <= PEAK_BOUND, (
            f"the proxy buffered {stats['peak']} bytes (bound {PEAK_BOUND})"
        )
    finally:
        _lap(state)  # before the cleanup, which may wait 5 s for a flush
        sender.cancel()
        await aclose_within(stream)


APP = register(
    App(
        "proxy",
        "TCP proxy to an echo: 16 MiB, backpressure both ways, bounded buffer, half-close",
        serve,
        exercise,
        timeout=APP_TIMEOUT,
    )
)
