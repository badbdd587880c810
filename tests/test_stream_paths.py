"""The Stream's fast paths (issue 25): what ``receive`` hands on as it came, and the waiter
it parks on, which is asyncio's own future where an asyncio task waits on an asyncio
session's stream and the core's ``Future`` for every other runner.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred

import polyloop
import polyloop_mixed
from polyloop import bridge

pytestmark = pytest.mark.timeout(30)

BACKENDS = ["asyncio", "asyncio:loop=uvloop", "twisted", "gevent", "tornado"]


async def _pair() -> tuple[polyloop.Listener, polyloop.Stream, polyloop.Stream]:
    listener = await polyloop.open_tcp_listener("127.0.0.1", 0)
    client = await polyloop.open_tcp_stream("127.0.0.1", listener.port)
    server = await listener.accept()
    return listener, client, server


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_arrival_is_cut_and_taken_in_pieces(backend: str) -> None:
    async def main() -> list[Any]:
        listener, client, server = await _pair()
        got: list[Any] = []
        try:
            await client.send(b"abcdefghij")
            await client.send_eof()
            got.append(await server.receive_exactly(2))
            got.append(await server.receive(3))
            got.append(await server.receive_until(b"h"))
            got.append(server.at_eof())
            got.append(await server.receive())
            got.append(await server.receive())
            got.append(server.at_eof())
        finally:
            await client.aclose()
            await server.aclose()
            await listener.aclose()
        return got

    got = polyloop.run(main, backend=backend)
    # Whatever the chunks the kernel made of the ten bytes, each call takes its share.
    assert got[:3] == [b"ab", b"cde", b"fgh"], got
    assert got[3] is False, "at_eof() while 'ij' is still held"
    assert got[4] == b"ij" and got[5] == b"" and got[6] is True, got


@pytest.mark.parametrize("owner", ["asyncio", "tornado"])
def test_every_runner_in_the_shared_thread_receives_from_an_asyncio_stream(owner: str) -> None:
    """A stream of a session on the shared asyncio loop, received by a Twisted coroutine
    started inside an asyncio task's step (Twisted's runner sends back the asyncio future
    it cannot wait on), by a gevent task, a Tornado task and an asyncio one: each gets its
    bytes."""

    async def main() -> list[bytes]:
        sessions = polyloop_mixed.sessions()
        listener, client, server = await sessions[owner].spawn(_pair())
        got: list[bytes] = []
        try:
            # The first step runs at once, here, in this asyncio task: no data yet.
            deferred = Deferred.fromCoroutine(server.receive())
            await client.send(b"to twisted")
            got.append(await bridge.future(deferred))
            for name in ("gevent", "tornado", "asyncio"):
                task = sessions[name].spawn(server.receive())
                await polyloop.sleep(0.01)  # it waits before the bytes come
                await client.send(f"to {name}".encode())
                got.append(await task)
        finally:
            await client.aclose()
            await server.aclose()
            await listener.aclose()
        return got

    got = polyloop.run(main, backend="mixed", session="asyncio")
    assert got == [b"to twisted", b"to gevent", b"to tornado", b"to asyncio"], got


class _Transport:
    """What a Stream asks of its transport while it only receives."""

    def __init__(self) -> None:
        self.reading = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def can_write_eof(self) -> bool:
        return True

    def is_closing(self) -> bool:
        return False


def _feed(p: Any, data: bytes | bytearray, buffered: bool) -> None:
    if buffered:  # what asyncio's transport does with a BufferedProtocol
        view = p.get_buffer(-1)
        view[: len(data)] = data
        p.buffer_updated(len(data))
    else:
        p.data_received(data)


@pytest.mark.parametrize(
    ("backend", "buffered"), [("asyncio", True), ("asyncio", False), ("twisted", False)]
)
def test_arrivals_are_handed_on_in_order_and_pause_reading(backend: str, buffered: bool) -> None:
    from polyloop._streams import StreamProtocol

    async def main() -> None:
        session = polyloop.current_backend()
        t = _Transport()
        p = StreamProtocol(session, 4, None)
        assert hasattr(p, "get_buffer") == (backend == "asyncio"), type(p)
        p.connection_made(t)  # type: ignore[arg-type]
        s = p.stream
        assert s is not None
        for data in (b"ab", b"cd", b"ef"):  # three arrivals before anyone receives
            _feed(p, data, buffered)
        assert not t.reading, "6 bytes held over a limit of 4, and reading not paused"
        assert await s.receive(1) == b"a"
        assert await s.receive(100) == b"bcdef"  # merged while paused, then resumed
        assert t.reading, "reading not resumed once the held bytes were taken"
        for data in (b"gh", b"ij"):
            _feed(p, data, buffered)
        if not buffered:  # a transport may hand over a bytearray: copied, in order
            p.data_received(bytearray(b"kl"))
        assert await s.receive(100) == (b"gh" if buffered else b"ghijkl")
        if buffered:
            assert await s.receive_exactly(2) == b"ij"
        _feed(p, b"mnop", buffered)
        assert await s.receive(3) == b"mno"
        assert not s.at_eof()
        p.eof_received()
        assert not s.at_eof(), "at_eof() while 'p' is still held"
        assert await s.receive_exactly(1) == b"p"
        assert s.at_eof() and await s.receive() == b""

    polyloop.run(main, backend=backend)


@pytest.mark.parametrize(("backend", "buffered"), [("asyncio", True), ("twisted", False)])
def test_large_arrivals_are_handed_out_in_pieces_as_bytes(backend: str, buffered: bool) -> None:
    """A read brings at most 128 KiB while the waiting ``receive`` asks for no more
    (asyncio's buffered path; 256 KiB for ``receive(1 << 20)``); an arrival larger than
    ``max_bytes`` is cut through a view, and every piece handed out is ``bytes``."""
    from polyloop._streams import StreamProtocol

    data = bytes(range(256)) * 1024  # 256 KiB

    async def main() -> None:
        session = polyloop.current_backend()
        t = _Transport()
        p = StreamProtocol(session, 1 << 20, None)
        p.connection_made(t)  # type: ignore[arg-type]
        s = p.stream
        assert s is not None
        if buffered:
            assert len(p.get_buffer(-1)) == 131072, "a read of 256 KiB for receive()"
            waiting = session.spawn(s.receive(1 << 20))
            await polyloop.sleep(0.01)
            assert len(p.get_buffer(-1)) == len(data), "receive(1 << 20) waits: 256 KiB"
            _feed(p, data, buffered)
            assert await waiting == data
            assert len(p.get_buffer(-1)) == len(data)
        p.data_received(data)  # one arrival of 256 KiB, taken in pieces
        pieces = [await s.receive(), await s.receive(1000), await s.receive_exactly(1000)]
        pieces.append(await s.receive_until(b"\xff\x00"))
        pieces.append(await s.receive(len(data)))
        assert [type(piece) for piece in pieces] == [bytes] * 5
        assert [len(piece) for piece in pieces[:4]] == [65536, 1000, 1000, 49]
        assert b"".join(pieces) == data and not p.head and not p.buffer

    polyloop.run(main, backend=backend)
