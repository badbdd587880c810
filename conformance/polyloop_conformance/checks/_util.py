"""Small protocols and helpers the checks share.

Rule: every wait here is event-driven (a backend future set by a callback); nothing
polls with sleeps. Helpers take the backend explicitly and use only the polyloop API.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import polyloop

#: Bytes per write when a check fills a connection until the writer is paused.
CHUNK = 64 * 1024
#: Upper bound on what a check writes to a non-reading peer before giving up.
FILL_LIMIT = 64 * 1024 * 1024


class Recorder(polyloop.Protocol):
    """Records every callback, in order, and lets a check await any condition on them."""

    def __init__(self, session: polyloop.Session, keep_open_on_eof: bool = False) -> None:
        self.session = session
        self.events: list[str] = []
        self.data = bytearray()
        self.transport: polyloop.Transport | None = None
        self.lost_exc: BaseException | None = None
        self.keep_open_on_eof = keep_open_on_eof
        self.made = session.create_future()
        self.lost = session.create_future()
        self.eof = session.create_future()
        #: Write-buffer sizes seen inside pause_writing / resume_writing.
        self.size_at_pause: list[int] = []
        self.size_at_resume: list[int] = []
        #: Set while a callback of this protocol runs (to detect re-entrant calls).
        self.in_callback = False
        self._waiters: list[polyloop.Future[None]] = []

    def _notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def connection_made(self, transport: polyloop.Transport) -> None:  # type: ignore[override]
        self.events.append("made")
        self.transport = transport
        self.made.set_result(transport)
        self._notify()

    def data_received(self, data: bytes) -> None:
        self.events.append("data")
        self.data += data
        self._notify()

    def eof_received(self) -> bool:
        self.events.append("eof")
        if not self.eof.done():
            self.eof.set_result(None)
        self._notify()
        return self.keep_open_on_eof

    def connection_lost(self, exc: BaseException | None) -> None:
        self.events.append("lost")
        self.lost_exc = exc
        if not self.lost.done():
            self.lost.set_result(exc)
        self._notify()

    def pause_writing(self) -> None:
        self.events.append("pause")
        if self.transport is not None:
            self.size_at_pause.append(self.transport.get_write_buffer_size())
        self._notify()

    def resume_writing(self) -> None:
        self.events.append("resume")
        if self.transport is not None:
            self.size_at_resume.append(self.transport.get_write_buffer_size())
        self._notify()

    async def until(self, cond: Callable[[], bool], what: str = "") -> None:
        """Wait until ``cond()`` holds; re-tested after every callback of this protocol.

        Fails at once if the connection is lost first (unless ``cond`` became true).
        """
        while not cond():
            assert "lost" not in self.events, (
                f"connection lost ({self.lost_exc!r}) while waiting for {what or 'a condition'};"
                f" events {compact(self.events)}"
            )
            fut: polyloop.Future[None] = self.session.create_future()
            self._waiters.append(fut)
            await fut

    async def wait_bytes(self, n: int) -> bytes:
        """Wait until ``n`` bytes have arrived in all (fails if the connection ends first)."""
        while len(self.data) < n and "lost" not in self.events:
            fut: polyloop.Future[None] = self.session.create_future()
            self._waiters.append(fut)
            await fut
        assert len(self.data) >= n, (
            f"got {len(self.data)} of {n} bytes before the connection ended"
        )
        return bytes(self.data)

    async def wait_lost(self) -> BaseException | None:
        """Wait for ``connection_lost`` and return its argument."""
        exc: BaseException | None = await self.lost
        return exc


class ReentrancyProbe(Recorder):
    """Notes whether connection_lost runs while close()/abort() is still on the stack.

    A check sets ``inside`` around its call; ``lost_inside`` tells if the callback ran then.
    """

    def __init__(self, session: polyloop.Session) -> None:
        super().__init__(session)
        self.inside = False
        self.lost_inside = False

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost_inside = self.inside
        super().connection_lost(exc)


def compact(events: list[str]) -> str:
    """``["data", "data", "eof"]`` -> ``"data*2, eof"``: readable event lists in messages."""
    out: list[str] = []
    for ev in events:
        if out and out[-1].split("*")[0] == ev:
            name, _, n = out[-1].partition("*")
            out[-1] = f"{name}*{int(n or 1) + 1}"
        else:
            out.append(ev)
    return "[" + ", ".join(out) + "]"


class Accepted:
    """A protocol factory that remembers what it made and lets a check await the next one."""

    def __init__(self, session: polyloop.Session, make: Callable[[], Any] | None = None) -> None:
        self.session = session
        self.make = make or (lambda: Recorder(session))
        self.protocols: list[Any] = []
        self._waiters: list[polyloop.Future[None]] = []

    def __call__(self) -> Any:
        proto = self.make()
        self.protocols.append(proto)
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
        return proto

    async def get(self, index: int = 0) -> Any:
        """The ``index``-th protocol made, once it exists and its connection is made."""
        while len(self.protocols) <= index:
            fut: polyloop.Future[None] = self.session.create_future()
            self._waiters.append(fut)
            await fut
        proto = self.protocols[index]
        if isinstance(proto, Recorder):
            await proto.made
        return proto


async def pair(
    session: polyloop.Session, server_proto: Any = None, client_proto: Any = None, **tls: Any
) -> tuple[polyloop.Server, Recorder, Recorder]:
    """A listening server and one connection to it: (server, server side, client side)."""
    accepted = Accepted(session, server_proto)
    client_ssl = tls.get("client_ssl")
    server = await session.listen_tcp(accepted, "127.0.0.1", 0, ssl=tls.get("server_ssl"))
    _, client = await session.connect_tcp(
        client_proto or (lambda: Recorder(session)), "127.0.0.1", server.port,
        ssl=client_ssl, server_hostname="localhost" if client_ssl else None,
    )  # fmt: skip
    srv = await accepted.get(0)
    return server, srv, client


def transport_of(proto: Recorder) -> polyloop.Transport:
    """The protocol's transport (asserting that ``connection_made`` gave it one)."""
    assert proto.transport is not None, "connection_made was never called"
    return proto.transport


async def fill_until_paused(session: polyloop.Session, writer: Recorder) -> int:
    """Write ``CHUNK``s until the writer's ``pause_writing`` is called; return bytes written.

    The peer must not be reading. Between writes the loop runs (``sleep(0)``) so a backend
    that only sends from the loop gets to fill the kernel buffers. Returns right after the
    write that paused, so the transport's buffer is above its high-water mark then.
    """
    transport = transport_of(writer)
    pauses = writer.events.count("pause")
    total = 0
    while writer.events.count("pause") == pauses:
        assert total < FILL_LIMIT, (
            f"pause_writing never came after writing {total} bytes to a peer that stopped"
            f" reading (write buffer {transport.get_write_buffer_size()} bytes)"
        )
        transport.write(b"x" * CHUNK)
        total += CHUNK
        if writer.events.count("pause") == pauses:
            await session.sleep(0)
    return total


class PausedReader(Recorder):
    """A Recorder that calls ``pause_reading()`` as soon as it is connected."""

    def connection_made(self, transport: polyloop.Transport) -> None:  # type: ignore[override]
        transport.pause_reading()
        super().connection_made(transport)


@contextlib.contextmanager
def temp_dir() -> Iterator[str]:
    """A short private folder (Unix socket paths must stay under ~100 bytes)."""
    base = "/tmp" if os.path.isdir("/tmp") else None
    path = tempfile.mkdtemp(prefix="pl-", dir=base)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def refusing_port() -> tuple[Any, int]:
    """A bound, non-listening loopback TCP socket and its port: connecting is refused.

    The caller closes the socket. Holding it bound keeps another process from taking the
    port while the check runs.
    """
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock, sock.getsockname()[1]
