"""A small Redis-protocol client library, written once on polyloop's public API.

It is what ``docs/library-authors.md`` walks through: an asyncio, Tornado, Twisted or
gevent application calls it on the loop it already runs, and every caller on that loop
shares one connection pool (at most ``POOL_SIZE`` connections per server), because the
pool is keyed on the session (``polyloop.current_backend()``) and dropped when the
session ends.
"""

from __future__ import annotations

import polyloop

POOL_SIZE = 5

# session -> (host, port) -> Pool. A session is the same object for every caller on one
# loop, and its on_close hook tells us when the loop (or polyloop.run) is over.
_pools: dict[polyloop.Session, dict[tuple[str, int], Pool]] = {}


class Pool:
    """Up to ``size`` connections to one server; callers queue, first come first served."""

    def __init__(self, host: str, port: int, size: int) -> None:
        self.host, self.port, self.size = host, port, size
        self.idle: list[polyloop.Stream] = []
        self.opened = 0
        self.waiters: list[polyloop.Future[polyloop.Stream]] = []

    async def acquire(self) -> polyloop.Stream:
        if self.idle:
            return self.idle.pop()
        if self.opened < self.size:
            self.opened += 1
            try:
                return await polyloop.open_tcp_stream(self.host, self.port)
            except BaseException:
                self.opened -= 1
                raise
        waiter: polyloop.Future[polyloop.Stream] = polyloop.create_future()
        self.waiters.append(waiter)
        try:
            return await waiter
        except polyloop.Cancelled:
            if waiter in self.waiters:
                self.waiters.remove(waiter)
            elif waiter.done() and not waiter.cancelled():
                self.release(waiter.result())  # handed to us as we were cancelled
            raise

    def release(self, stream: polyloop.Stream) -> None:
        while self.waiters:
            waiter = self.waiters.pop(0)
            if not waiter.done():
                waiter.set_result(stream)
                return
        self.idle.append(stream)

    def discard(self) -> None:
        """A connection broke: make room for a new one."""
        self.opened -= 1

    async def aclose(self) -> None:
        idle, self.idle = self.idle, []
        for stream in idle:
            await stream.aclose()


def _pool(host: str, port: int) -> Pool:
    session = polyloop.current_backend()
    pools = _pools.get(session)
    if pools is None:
        pools = _pools[session] = {}
        session.on_close(lambda s: _pools.pop(s, None))
    pool = pools.get((host, port))
    if pool is None:
        pool = pools[(host, port)] = Pool(host, port, POOL_SIZE)
    return pool


def _encode(*args: bytes | str | int) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


async def _reply(stream: polyloop.Stream) -> bytes | int | None:
    line = await stream.receive_until(b"\r\n")
    kind, rest = line[:1], line[1:-2]
    if kind == b":":
        return int(rest)
    if kind == b"+":
        return rest
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        return (await stream.receive_exactly(n + 2))[:-2]
    raise RuntimeError(f"server error: {rest.decode(errors='replace')}")


async def call(host: str, port: int, *args: bytes | str | int) -> bytes | int | None:
    """Send one command on a pooled connection and return its reply."""
    pool = _pool(host, port)
    stream = await pool.acquire()
    try:
        await stream.send(_encode(*args))
        reply = await _reply(stream)
    except BaseException:
        pool.discard()
        await stream.aclose()
        raise
    pool.release(stream)
    return reply


async def incr(host: str, port: int, key: str) -> int:
    """``INCR key``: the new value."""
    value = await call(host, port, "INCR", key)
    assert isinstance(value, int), value
    return value


async def client_id(host: str, port: int) -> int:
    """``CLIENT ID`` on a new, unpooled connection: how many connections the server saw."""
    stream = await polyloop.open_tcp_stream(host, port)
    try:
        await stream.send(_encode("CLIENT", "ID"))
        value = await _reply(stream)
    finally:
        await stream.aclose()
    assert isinstance(value, int), value
    return value
