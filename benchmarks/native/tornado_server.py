"""Native Tornado servers: ``python tornado_server.py echo|resp|http|http-h11``.

echo and resp: a ``TCPServer`` whose ``handle_stream`` reads with
``IOStream.read_bytes(partial=True)`` and writes back. http: ``HTTPServer`` on a
``tornado.web.Application`` with one ``RequestHandler`` answering ``GET /``. http-h11:
the same ``TCPServer`` loop as resp, running ``_common.H11`` (the polyloop HTTP app's
own sans-io request handling).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from _common import H11, HELLO, READ_SIZE, Resp, announce
from tornado.httpserver import HTTPServer
from tornado.iostream import StreamClosedError
from tornado.netutil import bind_sockets
from tornado.tcpserver import TCPServer
from tornado.web import Application, RequestHandler


class Echo(TCPServer):
    async def handle_stream(self, stream: Any, address: Any) -> None:
        try:
            while True:
                stream.write(await stream.read_bytes(READ_SIZE, partial=True))
        except StreamClosedError:
            pass


class RespServer(TCPServer):
    async def handle_stream(self, stream: Any, address: Any) -> None:
        r = Resp()
        try:
            while True:
                stream.write(r.feed(await stream.read_bytes(READ_SIZE, partial=True)))
                if r.quit:
                    stream.close()
                    return
        except StreamClosedError:
            pass


class H11Server(TCPServer):
    async def handle_stream(self, stream: Any, address: Any) -> None:
        http = H11()
        try:
            while True:
                stream.write(http.feed(await stream.read_bytes(READ_SIZE, partial=True)))
                if http.closed:
                    stream.close()
                    return
        except StreamClosedError:
            pass


class Hello(RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/plain")
        self.write(HELLO)


async def main(app: str) -> None:
    sockets = bind_sockets(0, "127.0.0.1")
    server: Any
    if app == "http":
        server = HTTPServer(Application([("/", Hello)]))
    else:
        server = {"echo": Echo, "resp": RespServer, "http-h11": H11Server}[app]()
    server.add_sockets(sockets)
    announce(sockets[0].getsockname()[1])
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
