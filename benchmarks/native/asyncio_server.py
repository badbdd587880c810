"""Native asyncio servers: ``python asyncio_server.py echo|streams|resp|http [--uvloop]``.

echo: an ``asyncio.Protocol``. streams: ``asyncio.start_server`` with StreamReader and
StreamWriter (the Stream API's anchor). resp: a Protocol over the shared sans-io store.
http: a Protocol with ``h11``, the same parser as the polyloop HTTP app (asyncio has no
HTTP server of its own), answering ``GET /``.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from _common import HELLO, READ_SIZE, Resp, announce


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
        import h11

        self.h11 = h11
        self.transport = transport
        self.conn = h11.Connection(h11.SERVER)

    def data_received(self, data: bytes) -> None:
        h11, conn = self.h11, self.conn
        conn.receive_data(data)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                return
            if event is h11.PAUSED:
                conn.start_next_cycle()
            elif isinstance(event, h11.EndOfMessage):
                headers = [
                    (b"content-type", b"text/plain"),
                    (b"content-length", b"%d" % len(HELLO)),
                ]
                out = conn.send(h11.Response(status_code=200, headers=headers))
                out += conn.send(h11.Data(data=HELLO)) + conn.send(h11.EndOfMessage())
                self.transport.write(out)
            elif isinstance(event, h11.ConnectionClosed):
                self.transport.close()
                return


async def main(app: str) -> None:
    loop = asyncio.get_running_loop()
    if app == "streams":
        server = await asyncio.start_server(stream_echo, "127.0.0.1", 0)
    else:
        factory = {"echo": Echo, "resp": RespServer, "http": HTTPServer}[app]
        server = await loop.create_server(factory, "127.0.0.1", 0)
    announce(server.sockets[0].getsockname()[1])
    await asyncio.Event().wait()


if __name__ == "__main__":
    if "--uvloop" in sys.argv:
        import uvloop

        uvloop.run(main(sys.argv[1]))
    else:
        asyncio.run(main(sys.argv[1]))
