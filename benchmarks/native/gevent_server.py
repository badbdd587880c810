"""Native gevent servers: ``python gevent_server.py echo|resp|http|http-h11``.

echo and resp: a ``StreamServer`` handler (a greenlet per connection, ``recv`` and
``sendall``). http: ``gevent.pywsgi.WSGIServer`` with a WSGI app answering ``GET /``,
with TCP_NODELAY (see ``NoDelayWSGIServer``). http-h11: a ``StreamServer`` handler running
``_common.H11`` (the polyloop HTTP app's own sans-io request handling). No monkey
patching.
"""

from __future__ import annotations

import socket
import sys
from typing import Any

from _common import H11, HELLO, READ_SIZE, Resp, announce
from gevent.pywsgi import WSGIServer
from gevent.server import StreamServer


def echo(sock: Any, address: Any) -> None:
    while data := sock.recv(READ_SIZE):
        sock.sendall(data)


def resp(sock: Any, address: Any) -> None:
    r = Resp()
    while data := sock.recv(READ_SIZE):
        sock.sendall(r.feed(data))
        if r.quit:
            return


def http_h11(sock: Any, address: Any) -> None:
    http = H11()
    while data := sock.recv(READ_SIZE):
        sock.sendall(http.feed(data))
        if http.closed:
            return


def hello(environ: Any, start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(HELLO)))])
    return [HELLO]


class NoDelayWSGIServer(WSGIServer):  # type: ignore[misc]
    """``WSGIServer`` with TCP_NODELAY on each connection, as polyloop (and asyncio) set it.

    pywsgi sends a reply's headers and its body in two ``sendall`` calls: without
    TCP_NODELAY Nagle holds the body until the client ACKs the headers, and the client
    delays that ACK ~40 ms. Measured with wrk: 23 req/s per connection (43 ms latency),
    so the "native" figure was the client's ACK timer, not gevent.
    """

    def handle(self, sock: Any, address: Any) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().handle(sock, address)


def main(app: str) -> None:
    server: Any
    if app == "http":
        server = NoDelayWSGIServer(("127.0.0.1", 0), hello, log=None)
    else:
        handlers = {"echo": echo, "resp": resp, "http-h11": http_h11}
        server = StreamServer(("127.0.0.1", 0), handlers[app])
    server.start()
    announce(server.server_port)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1])
