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


def test_every_runner_in_the_shared_thread_receives_from_an_asyncio_stream() -> None:
    """An asyncio-session stream, received by a Twisted coroutine started inside an
    asyncio task's step (Twisted's runner sends back the asyncio future it cannot wait
    on), by a gevent task and by a Tornado task: each gets its bytes."""

    async def main() -> list[bytes]:
        sessions = polyloop_mixed.sessions()
        listener, client, server = await _pair()
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
