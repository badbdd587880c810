"""Unmodified asyncio protocols on every backend.

The TCP and UDP echo protocols are the Python documentation's examples ("Protocols" in
the asyncio docs), verbatim but for type annotations; only the code that starts them
uses polyloop instead of ``loop.create_server``. ``tests/test_compat_twisted.py`` runs
the TCP pair across backends (server and client in two processes); the reverse shim
(an asyncio protocol under Twisted's own ``listenTCP``) is tested there too.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from collections.abc import Callable
from typing import Any

import pytest

import polyloop

BACKENDS = ["asyncio", "twisted", "gevent", "tornado"]


# --- From the asyncio documentation: TCP Echo Server / TCP Echo Client ---------------


class EchoServerProtocol(asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:
        peername = transport.get_extra_info("peername")
        print(f"Connection from {peername}")
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        message = data.decode()
        print(f"Data received: {message!r}")

        print(f"Send: {message!r}")
        self.transport.write(data)

        print("Close the client socket")
        self.transport.close()


class EchoClientProtocol(asyncio.Protocol):
    def __init__(self, message: str, on_con_lost: Any) -> None:
        self.message = message
        self.on_con_lost = on_con_lost

    def connection_made(self, transport: Any) -> None:
        transport.write(self.message.encode())
        print(f"Data sent: {self.message!r}")

    def data_received(self, data: bytes) -> None:
        print(f"Data received: {data.decode()!r}")

    def connection_lost(self, exc: BaseException | None) -> None:
        print("The server closed the connection")
        self.on_con_lost.set_result(True)


# --- From the asyncio documentation: UDP Echo Server / UDP Echo Client ---------------


class UDPEchoServerProtocol:
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        message = data.decode()
        print(f"Received {message!r} from {addr}")
        print(f"Send {message!r} to {addr}")
        self.transport.sendto(data, addr)


class UDPEchoClientProtocol:
    def __init__(self, message: str, on_con_lost: Any) -> None:
        self.message = message
        self.on_con_lost = on_con_lost
        self.transport = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        print("Send:", self.message)
        self.transport.sendto(self.message.encode())

    def datagram_received(self, data: bytes, addr: Any) -> None:
        print("Received:", data.decode())

        print("Close the socket")
        self.transport.close()  # type: ignore[attr-defined]

    def error_received(self, exc: Exception) -> None:
        print("Error received:", exc)

    def connection_lost(self, exc: BaseException | None) -> None:
        print("Connection closed")
        self.on_con_lost.set_result(True)


async def serve_tcp_echo() -> tuple[int, Any]:
    server = await polyloop.listen_tcp(EchoServerProtocol, "127.0.0.1", 0)
    return server.port, server.aclose


async def exercise_tcp_echo(port: int) -> None:
    on_con_lost = polyloop.create_future()
    await polyloop.connect_tcp(
        lambda: EchoClientProtocol("Hello World!", on_con_lost), "127.0.0.1", port
    )
    assert await polyloop.wait_for(on_con_lost, 10) is True


async def serve_udp_echo() -> tuple[int, Any]:
    transport, _ = await polyloop.open_udp(UDPEchoServerProtocol, local_addr=("127.0.0.1", 0))

    async def aclose() -> None:
        transport.close()

    return transport.get_extra_info("sockname")[1], aclose


async def exercise_udp_echo(port: int) -> None:
    on_con_lost = polyloop.create_future()
    await polyloop.open_udp(
        lambda: UDPEchoClientProtocol("Hello World!", on_con_lost),
        remote_addr=("127.0.0.1", port),
    )
    assert await polyloop.wait_for(on_con_lost, 10) is True


@pytest.mark.parametrize("backend", BACKENDS)
def test_docs_tcp_echo(backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    async def main() -> None:
        port, aclose = await serve_tcp_echo()
        await exercise_tcp_echo(port)
        await aclose()

    polyloop.run(main, backend=backend)
    out = capsys.readouterr().out.splitlines()
    first, second = sorted(out[:2])  # which side runs first differs by backend
    assert first.startswith("Connection from ('127.0.0.1', ")
    assert second == "Data sent: 'Hello World!'"
    assert out[2:] == [
        "Data received: 'Hello World!'",
        "Send: 'Hello World!'",
        "Close the client socket",
        "Data received: 'Hello World!'",
        "The server closed the connection",
    ]


@pytest.mark.parametrize("backend", BACKENDS)
def test_docs_udp_echo(backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    async def main() -> None:
        port, aclose = await serve_udp_echo()
        await exercise_udp_echo(port)
        await aclose()

    polyloop.run(main, backend=backend)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Send: Hello World!"
    assert out[1].startswith("Received 'Hello World!' from ('127.0.0.1', ")
    assert out[2].startswith("Send 'Hello World!' to ('127.0.0.1', ")
    assert out[3:] == ["Received: Hello World!", "Close the socket", "Connection closed"]


# --- A protocol that uses get_extra_info, pause_reading and write_eof ---------------


class Digest(asyncio.Protocol):
    """Server: hashes what it reads, pausing reading after every chunk (``call_later``
    resumes it: the only thing handed in, as an asyncio protocol gets its loop's), and
    at EOF answers with the digest and the addresses it saw, then half-closes too and
    stays open (the test closes it). What it sees is recorded, not asserted here: an
    exception in a callback is only logged by the backend."""

    def __init__(self, call_later: Callable[..., Any]) -> None:
        self.call_later = call_later
        self.hash = hashlib.sha256()
        self.count = 0
        self.pauses = 0
        self.info: dict[str, Any] = {}
        self.reading_after_pause: list[bool] = []
        self.can_write_eof: bool | None = None
        self.wrote_eof = False
        self.lost: list[BaseException | None] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("socket")
        self.info["socket_type"] = None if sock is None else sock.type
        self.info["sockname"] = transport.get_extra_info("sockname")
        self.info["default"] = transport.get_extra_info("no such key", "default")

    def data_received(self, data: bytes) -> None:
        self.hash.update(data)
        self.count += len(data)
        self.transport.pause_reading()
        self.reading_after_pause.append(self.transport.is_reading())
        self.pauses += 1
        self.call_later(0.001, self.transport.resume_reading)

    def eof_received(self) -> bool:
        reply = f"{self.count} {self.hash.hexdigest()} {self.peer[1]} {self.pauses}"
        self.transport.write(reply.encode())
        self.can_write_eof = self.transport.can_write_eof()
        self.transport.write_eof()
        self.wrote_eof = True
        return True  # half-open: the test closes the transport after the client saw EOF

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.append(exc)


class Upload(asyncio.Protocol):
    """Client: writes 1 MiB, half-closes with write_eof, reads the answer to EOF and
    records whether the server's transport was still open when that EOF came."""

    def __init__(self, payload: bytes, done: Any, server_open: Callable[[], bool]) -> None:
        self.payload = payload
        self.done = done
        self.server_open = server_open
        self.server_open_at_eof: bool | None = None
        self.reply = b""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.port = transport.get_extra_info("sockname")[1]
        transport.write(self.payload)
        transport.write_eof()

    def data_received(self, data: bytes) -> None:
        self.reply += data

    def eof_received(self) -> None:
        self.server_open_at_eof = self.server_open()
        return None  # close

    def connection_lost(self, exc: BaseException | None) -> None:
        self.done.set_result(exc)


@pytest.mark.parametrize("backend", BACKENDS)
def test_extra_info_pause_reading_and_write_eof(backend: str) -> None:
    async def main() -> None:
        digests: list[Digest] = []

        def digest() -> Digest:
            digests.append(Digest(polyloop.call_later))
            return digests[-1]

        def server_open() -> bool:
            (d,) = digests
            return d.wrote_eof and not d.lost and not d.transport.is_closing()

        server = await polyloop.listen_tcp(digest, "127.0.0.1", 0)
        payload = os.urandom(1 << 20)
        done = polyloop.create_future()
        _, client = await polyloop.connect_tcp(
            lambda: Upload(payload, done, server_open), "127.0.0.1", server.port
        )
        assert await polyloop.wait_for(done, 20) is None
        # The client read the server's EOF while the server's transport was still open:
        # that EOF came from write_eof, not from close.
        assert client.server_open_at_eof is True
        count, digest_hex, port, pauses = client.reply.decode().split()
        assert int(count) == len(payload)
        assert digest_hex == hashlib.sha256(payload).hexdigest()
        assert int(port) == client.port  # the server's peername is the client's sockname
        assert int(pauses) >= 2
        (d,) = digests
        assert set(d.info) == {"socket_type", "sockname", "default"}, d.info
        assert d.info["default"] == "default"
        assert d.info["socket_type"] in (None, socket.SOCK_STREAM)
        assert d.info["sockname"][0] == "127.0.0.1"
        assert len(d.reading_after_pause) == d.pauses >= 2
        assert not any(d.reading_after_pause)
        assert d.can_write_eof is True
        assert not d.lost
        d.transport.close()
        for _ in range(200):
            if d.lost:
                break
            await polyloop.sleep(0.01)
        assert d.lost == [None]
        await server.aclose()

    polyloop.run(main, backend=backend)
