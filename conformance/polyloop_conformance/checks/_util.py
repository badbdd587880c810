"""Small protocols and helpers the checks share.

Rule: every wait here is event-driven (a backend future set by a callback); nothing
polls with sleeps. Helpers take the backend explicitly and use only the polyloop API.
Each wait names what it waits for (``referee.waiting_for``), so that a timeout says it,
and each assertion says the rule, what was expected and what happened.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import polyloop

from ..referee import settle as settle
from ..referee import waiting_for

T = TypeVar("T")

#: Bytes per write when a check fills a connection until the writer is paused.
CHUNK = 64 * 1024
#: Upper bound on what a check writes to a non-reading peer before giving up.
FILL_LIMIT = 64 * 1024 * 1024


class Recorder(polyloop.Protocol):
    """Records every callback, in order, and lets a check await any condition on them."""

    def __init__(self, session: polyloop.Session, keep_open_on_eof: bool = False) -> None:
        self.session = session
        #: Which end this is, for messages ("client", "server").
        self.side = "protocol"
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

    def describe(self) -> str:
        """What this protocol has seen so far, for messages."""
        return f"{self.side}: events {compact(self.events)}, {len(self.data)} bytes received"

    async def _next_event(self) -> None:
        fut: polyloop.Future[None] = self.session.create_future()
        self._waiters.append(fut)
        await fut

    async def until(self, cond: Callable[[], bool], what: str = "") -> None:
        """Wait until ``cond()`` holds; re-tested after every callback of this protocol.

        Fails at once if the connection is lost first (unless ``cond`` became true).
        """
        what = what or "a condition"
        with waiting_for(lambda: f"{what} ({self.describe()})"):
            while not cond():
                assert "lost" not in self.events, (
                    f"connection lost ({self.lost_exc!r}) while waiting for {what};"
                    f" {self.describe()}"
                )
                await self._next_event()

    async def wait_bytes(self, n: int) -> bytes:
        """Wait until ``n`` bytes have arrived in all (fails if the connection ends first)."""
        with waiting_for(lambda: f"{n} bytes on the {self.side} ({self.describe()})"):
            while len(self.data) < n and "lost" not in self.events:
                await self._next_event()
        assert len(self.data) >= n, (
            f"the {self.side} got {len(self.data)} of {n} bytes before the connection ended"
            f" (connection_lost({self.lost_exc!r}); events {compact(self.events)})"
        )
        return bytes(self.data)

    async def wait_lost(self) -> BaseException | None:
        """Wait for ``connection_lost`` and return its argument."""
        with waiting_for(lambda: f"connection_lost on the {self.side} ({self.describe()})"):
            exc: BaseException | None = await self.lost
        return exc

    async def wait_eof(self) -> None:
        """Wait for ``eof_received``."""
        with waiting_for(lambda: f"eof_received on the {self.side} ({self.describe()})"):
            await self.eof


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
        what = f"the server to accept connection #{index + 1} ({len(self.protocols)} so far)"
        with waiting_for(what):
            while len(self.protocols) <= index:
                fut: polyloop.Future[None] = self.session.create_future()
                self._waiters.append(fut)
                await fut
        proto = self.protocols[index]
        if isinstance(proto, Recorder):
            proto.side = "server side"
            with waiting_for("connection_made on the server side of an accepted connection"):
                await proto.made
        return proto


async def made_before_return(session: polyloop.Session, proto: Any, call: str) -> None:
    """Fail unless ``connection_made`` ran on ``proto`` before ``call`` returned.

    Tells "called late" from "never called": it waits a little (loop iterations, then
    up to 0.5 s) before saying which.
    """
    if getattr(proto, "transport", None) is not None:
        return
    start = time.monotonic()
    for i in range(200):
        await session.sleep(0 if i < 100 else 0.005)
        if getattr(proto, "transport", None) is not None:
            late = time.monotonic() - start
            raise AssertionError(
                f"connection_made was called only after {call} returned ({late * 1000:.1f} ms"
                f" later): connect_* must call connection_made before returning"
            )
    raise AssertionError(
        f"connection_made was never called ({call} returned, and nothing came within"
        f" {time.monotonic() - start:.2f} s)"
    )


async def pair(
    session: polyloop.Session, server_proto: Any = None, client_proto: Any = None, **tls: Any
) -> tuple[polyloop.Server, Recorder, Recorder]:
    """A listening server and one connection to it: (server, server side, client side)."""
    accepted = Accepted(session, server_proto)
    client_ssl = tls.get("client_ssl")
    with waiting_for("listen_tcp to return"):
        server = await session.listen_tcp(accepted, "127.0.0.1", 0, ssl=tls.get("server_ssl"))
    with waiting_for(f"connect_tcp to 127.0.0.1:{server.port} to return"):
        _, client = await session.connect_tcp(
            client_proto or (lambda: Recorder(session)), "127.0.0.1", server.port,
            ssl=client_ssl, server_hostname="localhost" if client_ssl else None,
        )  # fmt: skip
    if isinstance(client, Recorder):
        client.side = "client"
    await made_before_return(session, client, "connect_tcp")
    srv = await accepted.get(0)
    return server, srv, client


def write_quietly(transport: polyloop.Transport, data: bytes, when: str) -> None:
    """A write that the contract makes a silent no-op ``when`` (after close ...)."""
    try:
        transport.write(data)
        transport.writelines([data])
    except Exception as exc:
        raise AssertionError(
            f"write() {when} raised {exc!r} (rule: a write {when} is a silent no-op)"
        ) from exc


def transport_of(proto: Recorder) -> polyloop.Transport:
    """The protocol's transport (asserting that ``connection_made`` gave it one)."""
    assert proto.transport is not None, (
        f"connection_made has not been called on the {proto.side} (yet): {proto.describe()}"
    )
    return proto.transport


async def fill_until_paused(session: polyloop.Session, writer: Recorder, never: str = "") -> int:
    """Write ``CHUNK``s until the writer's ``pause_writing`` is called; return bytes written.

    The peer must not be reading. Between writes the loop runs (``sleep(0)``) so a backend
    that only sends from the loop gets to fill the kernel buffers. Returns right after the
    write that paused, so the transport's buffer is above its high-water mark then.
    """
    transport = transport_of(writer)
    pauses = writer.events.count("pause")
    total = 0
    what = lambda: (  # noqa: E731
        f"pause_writing on the {writer.side} ({total} bytes written to a peer that stopped"
        f" reading, write buffer {transport.get_write_buffer_size()} bytes)"
    )
    with waiting_for(what):
        while writer.events.count("pause") == pauses:
            assert total < FILL_LIMIT, (
                f"pause_writing never came after writing {total} bytes to a peer that stopped"
                f" reading (write buffer {transport.get_write_buffer_size()} bytes; "
                + (
                    never
                    or "rule: pause_writing once the buffer grows past the high-water mark, 64 KiB"
                )
                + ")"
            )
            transport.write(b"x" * CHUNK)
            total += CHUNK
            if writer.events.count("pause") == pauses:
                await session.sleep(0)
    return total


async def bounded(session: polyloop.Session, aw: Awaitable[T], seconds: float, failure: str) -> T:
    """Await ``aw``; ``AssertionError(failure)`` if it takes over ``seconds`` of wall-clock
    time (measured by the wall clock too: early timers are named as such).

    The bound cancels ``aw``, so ``aw`` must let that cancellation through: one that
    catches ``Cancelled`` and returns would be returned here as if in time.
    """
    start = time.monotonic()
    try:
        with waiting_for(failure):
            return await polyloop.wait_for(aw, seconds)
    except TimeoutError:
        took = time.monotonic() - start
        if took < seconds * 0.8:
            raise AssertionError(
                f"{failure} -- but wait_for(..., {seconds:g}) timed out after {took:.4f} s of"
                " wall-clock time: timers fire early"
            ) from None
        raise AssertionError(f"{failure} (waited {seconds:g} s)") from None


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
