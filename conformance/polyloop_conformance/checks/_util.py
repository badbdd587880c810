"""Small protocols and helpers the checks share."""

from __future__ import annotations

from typing import Any

import polyloop


class Recorder(polyloop.Protocol):
    """Records every callback, in order, and can await the connection's end."""

    def __init__(self, backend: polyloop.Backend, keep_open_on_eof: bool = False) -> None:
        self.backend = backend
        self.events: list[str] = []
        self.data = bytearray()
        self.transport: polyloop.Transport | None = None
        self.lost_exc: BaseException | None = None
        self.keep_open_on_eof = keep_open_on_eof
        self.made = backend.create_future()
        self.lost = backend.create_future()
        self.eof = backend.create_future()
        self._want: tuple[int, Any] | None = None

    def connection_made(self, transport: polyloop.Transport) -> None:  # type: ignore[override]
        self.events.append("made")
        self.transport = transport
        self.made.set_result(transport)

    def data_received(self, data: bytes) -> None:
        self.events.append("data")
        self.data += data
        if self._want is not None and len(self.data) >= self._want[0]:
            fut = self._want[1]
            self._want = None
            if not fut.done():
                fut.set_result(None)

    def eof_received(self) -> bool:
        self.events.append("eof")
        if not self.eof.done():
            self.eof.set_result(None)
        return self.keep_open_on_eof

    def connection_lost(self, exc: BaseException | None) -> None:
        self.events.append("lost")
        self.lost_exc = exc
        if not self.lost.done():
            self.lost.set_result(exc)
        if self._want is not None and not self._want[1].done():
            self._want[1].set_result(None)

    def pause_writing(self) -> None:
        self.events.append("pause")

    def resume_writing(self) -> None:
        self.events.append("resume")

    async def wait_bytes(self, n: int) -> bytes:
        """Wait until ``n`` bytes have arrived in all (or the connection is lost)."""
        if len(self.data) < n and not self.lost.done():
            fut = self.backend.create_future()
            self._want = (n, fut)
            await fut
        assert len(self.data) >= n, f"got {len(self.data)} of {n} bytes before the connection ended"
        return bytes(self.data)


async def pair(
    backend: polyloop.Backend, server_proto: Any = None, client_proto: Any = None, **tls: Any
) -> tuple[polyloop.Server, Recorder, Recorder]:
    """A listening server and one connection to it: (server, server side, client side)."""
    accepted: list[Recorder] = []

    def make_server() -> Recorder:
        proto = server_proto() if server_proto else Recorder(backend)
        accepted.append(proto)
        return proto

    server = await backend.listen_tcp(make_server, "127.0.0.1", 0, ssl=tls.get("server_ssl"))
    _, client = await backend.connect_tcp(
        client_proto or (lambda: Recorder(backend)), "127.0.0.1", server.port,
        ssl=tls.get("client_ssl"), server_hostname="localhost" if tls.get("client_ssl") else None,
    )  # fmt: skip
    while not accepted:
        await backend.sleep(0.001)
    await accepted[0].made
    return server, accepted[0], client
