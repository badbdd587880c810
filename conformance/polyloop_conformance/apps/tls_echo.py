"""TLS echo on a ``trustme`` CA, with a client that verifies the server.

What it proves: a stdlib ``ssl.SSLContext`` works on every backend, as server and as
client (natively or through the core's MemoryBIO layer). The server greets each
connection with the TLS version its own transport reports (``ssl_object``); the client
checks that it matches its side, that the peer certificate (``peercert``) is the
localhost one, that 4 MiB echo back intact, and that a client which does not trust
the test CA is refused with ``ssl.SSLCertVerificationError``.
"""

from __future__ import annotations

import hashlib
import ssl

import polyloop

from ._base import App, AppConfig, Running, register
from ._util import aclose_within, within
from .echo import chunks

__all__ = ["TLSEchoProtocol", "exercise", "serve"]

#: Bytes the exercise sends through the TLS echo.
TOTAL = 4 * 1024 * 1024


class TLSEchoProtocol(polyloop.Protocol):
    """Greets with ``TLS <version>``, then writes back what it reads."""

    def connection_made(self, transport: polyloop.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        ssl_object = transport.get_extra_info("ssl_object")
        version = ssl_object.version() if ssl_object is not None else "none"
        transport.write(b"TLS %s\n" % str(version).encode())

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def pause_writing(self) -> None:
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()


async def serve(config: AppConfig) -> Running:
    """Start the TLS echo server with ``config.server_ssl``."""
    assert config.server_ssl is not None, "the tls app needs config.server_ssl"
    server = await polyloop.listen_tcp(
        TLSEchoProtocol, config.host, config.port, ssl=config.server_ssl
    )
    return Running((config.host, server.port), server.aclose)


async def exercise(config: AppConfig, address: tuple[str, int]) -> None:
    """Verified handshake, version and certificate checks, 4 MiB echo, refused stranger."""
    assert config.client_ssl is not None, "the tls app needs config.client_ssl"
    await within(20, _echo(config, address), "tls echo")
    await within(10, _stranger(config, address), "tls refusal")


async def _echo(config: AppConfig, address: tuple[str, int]) -> None:
    stream = await polyloop.open_tcp_stream(
        address[0], address[1], ssl=config.client_ssl, server_hostname=config.server_hostname
    )
    sender: polyloop.Task[None] | None = None
    try:
        ssl_object = stream.get_extra_info("ssl_object")
        assert ssl_object is not None, "a TLS stream without ssl_object"
        version = ssl_object.version()
        assert version in ("TLSv1.2", "TLSv1.3"), f"negotiated {version!r}"
        cert = stream.get_extra_info("peercert")
        assert cert, "a verified TLS connection without peercert"
        names = {v for k, v in cert.get("subjectAltName", ()) if k == "DNS"}
        assert config.server_hostname in names, f"peer certificate is for {names}"
        greeting = await stream.receive_until(b"\n")
        assert greeting == b"TLS %s\n" % version.encode(), (
            f"server side reports {greeting!r}, client side {version!r}"
        )

        parts = chunks(TOTAL, seed=address[1])
        sent = hashlib.sha256()

        async def send_all() -> None:
            for part in parts:
                sent.update(part)
                await stream.send(part)

        sender = polyloop.spawn(send_all())
        got = hashlib.sha256()
        n = 0
        while n < TOTAL:
            data = await stream.receive(1 << 20)
            assert data, f"EOF after {n} of {TOTAL} echoed bytes"
            got.update(data)
            n += len(data)
        await sender
        assert got.hexdigest() == sent.hexdigest(), "echoed bytes differ from those sent"
    finally:
        if sender is not None:
            sender.cancel()
        await aclose_within(stream)


async def _stranger(config: AppConfig, address: tuple[str, int]) -> None:
    stranger = ssl.create_default_context()  # the system's CAs: not the test CA
    try:
        stream = await polyloop.open_tcp_stream(
            address[0], address[1], ssl=stranger, server_hostname=config.server_hostname
        )
    except ssl.SSLCertVerificationError:
        return
    await aclose_within(stream)
    raise AssertionError("a client that does not trust the test CA completed the handshake")


APP = register(
    App(
        "tls",
        "TLS echo (trustme CA): verified client, ssl_object/peercert, 4 MiB, refusal",
        serve,
        exercise,
        tls=True,
    )
)
