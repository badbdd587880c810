"""Native asyncio servers: ``python asyncio_server.py echo|streams|resp|http|http-h11 [--uvloop]``.

echo: an ``asyncio.Protocol``. streams: ``asyncio.start_server`` with StreamReader and
StreamWriter (the Stream API's anchor). resp: a Protocol over the shared sans-io store.
http (and http-h11, the same): a Protocol running ``_common.H11``, the polyloop HTTP
app's own sans-io request handling (``apps/_http.py``: h11, its routes, its response
bytes), as asyncio has no HTTP server of its own.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from _common import H11, READ_SIZE, Resp, announce


class Echo(asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def eof_received(self) -> None:
        self.transport.close()


async def stream_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(READ_SIZE):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    writer.close()


class RespServer(asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.resp = Resp()

    def data_received(self, data: bytes) -> None:
        self.transport.write(self.resp.feed(data))
        if self.resp.quit:
            self.transport.close()


class HTTPServer(asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.http = H11()

    def data_received(self, data: bytes) -> None:
        self.transport.write(self.http.feed(data))
        if self.http.closed:
            self.transport.close()


async def main(app: str) -> None:
    loop = asyncio.get_running_loop()
    if app == "streams":
        server = await asyncio.start_server(stream_echo, "127.0.0.1", 0)
    else:
        factory = {"echo": Echo, "resp": RespServer, "http": HTTPServer, "http-h11": HTTPServer}[
            app
        ]
        server = await loop.create_server(factory, "127.0.0.1", 0)
    announce(server.sockets[0].getsockname()[1])
    await asyncio.Event().wait()


if __name__ == "__main__":
    if "--uvloop" in sys.argv:
        import uvloop

        uvloop.run(main(sys.argv[1]))
    else:
        asyncio.run(main(sys.argv[1]))
