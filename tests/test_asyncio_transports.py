"""The asyncio adapter's bookkeeping of the connections its servers accept.

On the standard selector loop, a plain TCP connection a polyloop server accepted is not
recorded by the adapter: the loop's own record (``_transports``) is read instead (see
``AsyncioSession.__init__``). These tests hold that record to the two jobs the adapter's
own list did: a connection left open when the run ends is aborted (the peer reads a
reset; this test), and ``shutdown`` closes the open ones cleanly (the peer reads EOF;
the conformance check ``session.graceful_shutdown``). It runs on uvloop too, where the
adapter still keeps its own list.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from typing import Any

import pytest

import polyloop

LOOPS = ["asyncio", "asyncio:loop=uvloop"]


class Holder(polyloop.Protocol):
    """Keeps its transport and never closes it."""

    made: list[Holder] = []

    def connection_made(self, transport: polyloop.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        Holder.made.append(self)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def _serve_one(client: list[socket.socket]) -> Any:
    """A server with one accepted connection whose client socket is ``client[0]``."""
    Holder.made.clear()
    server = await polyloop.listen_tcp(Holder, "127.0.0.1", 0)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    client.append(sock)
    for _ in range(500):
        if Holder.made:
            break
        await polyloop.sleep(0.01)
    assert Holder.made, "the server never made its protocol"
    return server


@pytest.mark.parametrize("spec", LOOPS)
def test_an_accepted_connection_left_open_is_reset_when_the_run_ends(spec: str) -> None:
    if "uvloop" in spec:
        pytest.importorskip("uvloop")  # an optional extra
    client: list[socket.socket] = []

    async def main() -> None:
        await _serve_one(client)  # neither the server nor the connection is closed

    try:
        polyloop.run(main, backend=spec)
        with pytest.raises(ConnectionResetError):
            client[0].recv(1)  # times out (5 s) if the connection was left open
    finally:
        for sock in client:
            sock.close()


class WritesAfterLoss(polyloop.Protocol):
    """Writes ten times from connection_lost, when the peer has reset the connection."""

    lost: list[BaseException | None] = []

    def connection_made(self, transport: polyloop.Transport) -> None:  # type: ignore[override]
        self.transport = transport

    def connection_lost(self, exc: BaseException | None) -> None:
        for _ in range(10):  # asyncio's own write logs a warning from the fifth on
            self.transport.write(b"late")
        WritesAfterLoss.lost.append(exc)


@pytest.mark.parametrize("spec", LOOPS)
def test_writes_after_the_peer_reset_are_silent_no_ops(
    spec: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The wrapper itself must see that asyncio closed the transport (the shortcut of
    SelectorSocketTransport reads the loop transport's own flag for it)."""
    if "uvloop" in spec:
        pytest.importorskip("uvloop")  # an optional extra
    WritesAfterLoss.lost.clear()

    async def main() -> None:
        server = await polyloop.listen_tcp(WritesAfterLoss, "127.0.0.1", 0)
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await polyloop.sleep(0.05)
        sock.close()  # a reset
        for _ in range(500):
            if WritesAfterLoss.lost:
                break
            await polyloop.sleep(0.01)
        await server.aclose()

    polyloop.run(main, backend=spec)
    assert len(WritesAfterLoss.lost) == 1, "connection_lost did not run once"
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


class Collect(asyncio.BufferedProtocol):
    """A buffered protocol (no ``data_received``) that keeps what it reads."""

    def __init__(self) -> None:
        self.buffer = bytearray(1024)
        self.got = b""

    def get_buffer(self, sizehint: int) -> bytearray:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.got += bytes(self.buffer[:nbytes])


class SwitchesToBuffered(polyloop.Protocol):
    """On its first bytes, hands the connection to a ``Collect``."""

    made: list[SwitchesToBuffered] = []

    def connection_made(self, transport: polyloop.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        self.first = b""
        self.collect = Collect()
        SwitchesToBuffered.made.append(self)

    def data_received(self, data: bytes) -> None:
        self.first = data
        self.transport.set_protocol(self.collect)


@pytest.mark.parametrize("spec", LOOPS)
def test_set_protocol_to_a_buffered_protocol_while_reading(spec: str) -> None:
    """The standard loop's reader calls the transport's read method directly (see
    ``_read_directly``): after set_protocol it must call the buffered one."""
    if "uvloop" in spec:
        pytest.importorskip("uvloop")  # an optional extra
    SwitchesToBuffered.made.clear()

    async def main() -> tuple[bytes, bytes]:
        server = await polyloop.listen_tcp(SwitchesToBuffered, "127.0.0.1", 0)
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        try:
            sock.sendall(b"first")
            for _ in range(500):
                if SwitchesToBuffered.made and SwitchesToBuffered.made[0].first:
                    break
                await polyloop.sleep(0.01)
            sock.sendall(b"second")
            made = SwitchesToBuffered.made[0]
            for _ in range(500):
                if made.collect.got == b"second":
                    break
                await polyloop.sleep(0.01)
            return made.first, made.collect.got
        finally:
            sock.close()
            await server.aclose()

    assert polyloop.run(main, backend=spec) == (b"first", b"second")


@pytest.mark.parametrize("spec", LOOPS)
def test_a_write_of_what_is_not_bytes_raises_the_contract_text(spec: str) -> None:
    """The same TypeError text on every backend (``check_bytes``), open or closed,
    although the standard loop's write() is left to do the type check itself."""
    if "uvloop" in spec:
        pytest.importorskip("uvloop")  # an optional extra

    async def main() -> list[str]:
        server = await polyloop.listen_tcp(polyloop.Protocol, "127.0.0.1", 0)
        transport, _ = await polyloop.connect_tcp(polyloop.Protocol, "127.0.0.1", server.port)
        texts: list[str] = []
        for data in ("text", None, 1, "text"):
            if len(texts) == 3:
                transport.close()
            with pytest.raises(TypeError) as caught:
                transport.write(data)  # type: ignore[arg-type]
            texts.append(str(caught.value))
        await server.aclose()
        return texts

    assert polyloop.run(main, backend=spec) == [
        "data must be bytes-like, not str",
        "data must be bytes-like, not NoneType",
        "data must be bytes-like, not int",
        "data must be bytes-like, not str",
    ]


class Remembers(polyloop.Protocol):
    """Keeps its transport; notes connection_lost."""

    made: list[Remembers] = []

    def connection_made(self, transport: polyloop.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        self.lost = False
        Remembers.made.append(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = True


@pytest.mark.parametrize("spec", LOOPS)
def test_writes_after_connection_lost_returned_are_silent_no_ops(
    spec: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Once the loop has closed the transport itself (here after the peer's EOF), a
    later write is a no-op: uvloop's own raises RuntimeError, asyncio's warns from the
    fifth on. The wrappers read the transport's ``_closing`` flag for it."""
    if "uvloop" in spec:
        pytest.importorskip("uvloop")  # an optional extra
    Remembers.made.clear()

    async def main() -> None:
        server = await polyloop.listen_tcp(Remembers, "127.0.0.1", 0)
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        sock.close()  # EOF: eof_received returns None, so the transport closes itself
        for _ in range(500):
            if Remembers.made and Remembers.made[0].lost:
                break
            await polyloop.sleep(0.01)
        transport = Remembers.made[0].transport
        assert Remembers.made[0].lost and transport.is_closing()
        for _ in range(10):
            transport.write(b"late")
        await server.aclose()

    polyloop.run(main, backend=spec)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
