"""Data integrity, by property and at scale, on every backend.

- hypothesis: random write sizes, random ``pause_reading``/``resume_reading`` schedules on
  the receiving side, a random half-close point -- over TCP and TLS -- and every byte
  arrives once, in order, and the EOF after the last;
- 256 MiB through ``polyloop serve proxy`` (a proxy in front of an echo, both polyloop)
  from a plain-socket client, with SHA-256 at both ends.
"""

from __future__ import annotations

import hashlib
import random
import socket
import threading
import time
from typing import Any

import pytest
from _serve import Served

hypothesis = pytest.importorskip("hypothesis", reason="in the test extra: polyloop[test]")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import polyloop  # noqa: E402
from polyloop_conformance.tls import material  # noqa: E402

INSTALLED = [b.name for b in polyloop.available_backends() if b.error is None]
BACKENDS = [*INSTALLED, "polyloop_conformance.example_backend:SelectorsBackend"]


class _Receiver(polyloop.Protocol):
    """Collects bytes, pausing and resuming its reading at given byte counts; notes when
    the stream ends (EOF or connection lost) and keeps anything that arrives after."""

    def __init__(self, session: polyloop.Session, toggles: list[int], expected: int) -> None:
        self.session = session
        self.toggles = sorted(toggles)
        self.expected = expected
        self.data = bytearray()
        self.done = session.create_future()  # the expected bytes are in, or the stream ended
        self.ended = session.create_future()  # the byte count when the stream ended
        self.lost = session.create_future()  # connection_lost's exc
        self.eof = False  # eof_received was called
        self.late = bytearray()  # data_received after the stream ended
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.ended.done():
            self.late += data
            return
        self.data += data
        while self.toggles and len(self.data) >= self.toggles[0]:
            self.toggles.pop(0)
            self.transport.pause_reading()
            # Resume a little later, from the loop: the kernel buffers fill meanwhile.
            self.session.call_later(0.001, self.transport.resume_reading)
        if len(self.data) >= self.expected and not self.done.done():
            self.done.set_result(None)

    def _end(self) -> None:
        if not self.done.done():
            self.done.set_result(None)
        if not self.ended.done():
            self.ended.set_result(len(self.data))

    def eof_received(self) -> bool:
        self.eof = True
        self._end()
        return True

    def connection_lost(self, exc: BaseException | None) -> None:
        self._end()
        if not self.lost.done():
            self.lost.set_result(exc)


async def _transfer(sizes: list[int], toggles: list[int], eof_after: int, tls: bool) -> None:
    session = polyloop.current_backend()
    rng = random.Random(len(sizes) * 7919 + sum(sizes))
    chunks = [rng.randbytes(n) for n in sizes]
    payload = b"".join(chunks)
    cut = min(eof_after, len(chunks))  # chunks sent before the half-close (TCP)
    expected = len(b"".join(chunks[:cut])) if not tls else len(payload)
    receivers: list[_Receiver] = []
    ssl_server = material().server_context() if tls else None
    ssl_client = material().client_context() if tls else None

    def factory() -> _Receiver:
        receivers.append(_Receiver(session, toggles, expected))
        return receivers[-1]

    server = await session.listen_tcp(factory, "127.0.0.1", 0, ssl=ssl_server)
    transport, _ = await session.connect_tcp(
        polyloop.Protocol, "127.0.0.1", server.port, ssl=ssl_client,
        server_hostname="localhost" if tls else None,
    )  # fmt: skip
    for i, chunk in enumerate(chunks):
        if not tls and i == cut:
            transport.write_eof()
            break
        transport.write(chunk)
    else:
        if not tls:
            transport.write_eof()
    accepted_by = time.monotonic() + 5
    while not receivers:
        assert time.monotonic() < accepted_by, "the server never accepted the connection (5 s)"
        await session.sleep(0.001)
    await polyloop.wait_for(receivers[0].done, 5)
    got = bytes(receivers[0].data)
    want = payload[:expected]
    assert len(got) == len(want), f"{len(got)} of {len(want)} bytes arrived"
    assert got == want, "the bytes arrived changed or out of order"
    # Then the end of the stream, and nothing more: TCP's EOF follows the write_eof above;
    # TLS has no half-close, so its sender closes now (close_notify, then FIN).
    receiver = receivers[0]
    if tls:
        transport.close()
    how = "close" if tls else "write_eof"
    try:
        at = await polyloop.wait_for(receiver.ended, 5)
    except TimeoutError:
        n = len(receiver.data)
        raise AssertionError(f"no EOF within 5 s of the sender's {how} ({n} bytes in)") from None
    assert at == len(want), f"{at - len(want)} bytes more than the {len(want)} sent arrived"
    assert tls or receiver.eof, "the connection was lost, not half-closed by an EOF"
    receiver.transport.close()
    try:
        exc = await polyloop.wait_for(receiver.lost, 5)
    except TimeoutError:
        raise AssertionError("no connection_lost within 5 s of the receiver's close") from None
    assert exc is None, f"after the sender's {how} the stream ended with {exc!r}"
    assert not receiver.late, f"{len(receiver.late)} bytes arrived after the EOF"
    transport.close()
    await server.aclose()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(1, 200_000), min_size=1, max_size=12),
    toggles=st.lists(st.integers(0, 1_500_000), max_size=6),
    eof_after=st.integers(0, 12),
)
def test_every_byte_arrives_in_order(
    backend: str, tls: bool, sizes: list[int], toggles: list[int], eof_after: int
) -> None:
    polyloop.run(_transfer, sizes, toggles, eof_after, tls, backend=backend)


@pytest.mark.parametrize("backend", INSTALLED)
def test_256_mib_through_the_proxy_app(backend: str) -> None:
    """256 MiB out and back through a polyloop proxy and a polyloop echo; SHA-256 of what
    was sent equals SHA-256 of what came back, and the EOF follows."""
    total = 256 * 1024 * 1024
    with Served("proxy", backend) as server:
        conn = socket.create_connection(("127.0.0.1", server.port), timeout=60)
        sent, got = hashlib.sha256(), hashlib.sha256()
        received = [0]
        ended: list[object] = []  # "EOF", or the error recv() raised

        def reader() -> None:
            try:
                while data := conn.recv(1 << 20):
                    got.update(data)
                    received[0] += len(data)
            except OSError as exc:  # a reset or the 60 s timeout: not a clean end
                ended.append(exc)
            else:
                ended.append("EOF")

        thread = threading.Thread(target=reader)
        thread.start()
        block = random.Random(256).randbytes(1 << 20)
        for i in range(total >> 20):
            chunk = block[i % 97 :] + block[: i % 97]  # not the same block every time
            sent.update(chunk)
            conn.sendall(chunk)
        conn.shutdown(socket.SHUT_WR)
        thread.join(120)
        conn.close()
        assert not thread.is_alive(), f"no EOF after {received[0]} of {total} bytes"
        assert ended == ["EOF"], f"the stream ended by {ended[0]!r} after {received[0]} bytes"
        assert received[0] == total, f"{received[0]} of {total} bytes came back"
        assert got.hexdigest() == sent.hexdigest(), "the bytes came back changed"


# --- mixed mode: two frameworks, one connection, both ends scheduled by hypothesis ---

FRAMEWORKS = ("asyncio", "tornado", "twisted", "gevent")


async def _mixed_exchange(
    server_fw: str, client_fw: str, ops: list[tuple[str, int]], ender: str
) -> None:
    """The server on one framework's session, the client on another's: both ends write
    chunks, pause and resume their reading, then one half-closes (or closes) first and
    the other answers; every byte arrives in order, then the EOF, then nothing."""
    import polyloop_mixed

    server_session = polyloop_mixed.session(server_fw)
    client_session = polyloop_mixed.session(client_fw)
    rng = random.Random(hash((server_fw, client_fw, len(ops))) & 0xFFFF)
    sent = {"client": bytearray(), "server": bytearray()}
    accepted: list[_Receiver] = []

    def factory() -> _Receiver:
        accepted.append(_Receiver(server_session, [], 1 << 62))
        return accepted[-1]

    server = await server_session.listen_tcp(factory, "127.0.0.1", 0)
    client_t, client = await client_session.connect_tcp(
        lambda: _Receiver(client_session, [], 1 << 62), "127.0.0.1", server.port
    )
    for _ in range(500):
        if accepted:
            break
        await polyloop.sleep(0.001)
    assert accepted, "the server never accepted the connection"
    ends = {"client": (client_t, client), "server": (accepted[0].transport, accepted[0])}
    for op, n in ops:
        side = "client" if n % 2 else "server"
        transport, receiver = ends[side]
        if op == "write":
            chunk = rng.randbytes(n)
            transport.write(chunk)
            sent[side] += chunk
        elif op == "pause":
            receiver.transport.pause_reading()
        elif op == "resume":
            receiver.transport.resume_reading()
        else:
            await polyloop.sleep(n / 100_000)
    for _, receiver in ends.values():
        receiver.transport.resume_reading()
    first, second = ("client", "server") if ender == "client" else ("server", "client")
    ends[first][0].write_eof()
    other = ends[second][1]
    at = await polyloop.wait_for(other.ended, 10)
    assert bytes(other.data) == bytes(sent[first]), (
        f"{second} got {len(other.data)} of the {len(sent[first])} bytes {first} sent, or"
        " in another order"
    )
    assert at == len(sent[first]) and other.eof, "the EOF did not follow the data"
    ends[second][0].write(b"bye")
    sent[second] += b"bye"
    ends[second][0].close()
    mine = ends[first][1]
    await polyloop.wait_for(mine.ended, 10)  # the EOF of the close (it half-closed first)
    assert bytes(mine.data) == bytes(sent[second]), (
        f"{first} got {len(mine.data)} of the {len(sent[second])} bytes {second} sent"
    )
    assert not other.late and not mine.late, "bytes arrived after the EOF"
    ends[first][0].close()
    await server.aclose()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    server_fw=st.sampled_from(FRAMEWORKS),
    client_fw=st.sampled_from(FRAMEWORKS),
    ops=st.lists(
        st.tuples(
            st.sampled_from(["write", "write", "pause", "resume", "sleep"]),
            st.integers(1, 300_000),
        ),
        max_size=16,
    ),
    ender=st.sampled_from(["client", "server"]),
)
def test_mixed_mode_schedules_of_writes_eof_pause_and_close(
    server_fw: str, client_fw: str, ops: list[tuple[str, int]], ender: str
) -> None:
    polyloop.run(_mixed_exchange, server_fw, client_fw, ops, ender, backend="mixed")
