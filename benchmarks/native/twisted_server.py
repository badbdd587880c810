"""Native Twisted servers: ``python twisted_server.py echo|resp|http|http-h11 [--reactor epoll]``.

echo and resp: a ``Protocol`` on a private reactor (epoll unless told otherwise). http:
``twisted.web`` (``Site`` with a ``Resource``) answering ``GET /``. http-h11: a ``Protocol``
running ``_common.H11``, the polyloop HTTP app's own sans-io request handling.
"""

from __future__ import annotations

import sys
from typing import Any

from _common import H11, HELLO, Resp, announce


def make_reactor(name: str) -> Any:
    if name == "epoll":
        from twisted.internet.epollreactor import EPollReactor

        return EPollReactor()  # type: ignore[no-untyped-call]
    if name == "poll":
        from twisted.internet.pollreactor import PollReactor

        return PollReactor()  # type: ignore[no-untyped-call]
    from twisted.internet.selectreactor import SelectReactor

    return SelectReactor()  # type: ignore[no-untyped-call]


def main(app: str, reactor_name: str) -> None:
    reactor = make_reactor(reactor_name)
    from twisted.internet.protocol import Factory, Protocol

    class Echo(Protocol):
        def dataReceived(self, data: bytes) -> None:
            self.transport.write(data)  # type: ignore[union-attr]

    class RespServer(Protocol):
        def connectionMade(self) -> None:
            self.resp = Resp()

        def dataReceived(self, data: bytes) -> None:
            self.transport.write(self.resp.feed(data))  # type: ignore[union-attr]
            if self.resp.quit:
                self.transport.loseConnection()  # type: ignore[union-attr]

    class H11Server(Protocol):
        def connectionMade(self) -> None:
            self.http = H11()

        def dataReceived(self, data: bytes) -> None:
            self.transport.write(self.http.feed(data))  # type: ignore[union-attr]
            if self.http.closed:
                self.transport.loseConnection()  # type: ignore[union-attr]

    if app == "http":
        from twisted.web import resource, server

        class Hello(resource.Resource):
            isLeaf = True

            def render_GET(self, request: Any) -> bytes:
                request.setHeader(b"content-type", b"text/plain")
                return HELLO

        factory: Any = server.Site(Hello())
        factory.log = lambda request: None  # no access log
    else:
        factory = Factory.forProtocol(
            {"echo": Echo, "resp": RespServer, "http-h11": H11Server}[app]
        )
    factory.noisy = False
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    announce(port.getHost().port)
    reactor.run(installSignalHandlers=False)


if __name__ == "__main__":
    args = sys.argv[1:]
    reactor = args[args.index("--reactor") + 1] if "--reactor" in args else "epoll"
    main(args[0], reactor)
