"""Real Twisted servers in a process of their own, for tests/test_twisted_servers.py.

``python tests/_twisted_servers.py SERVER BACKEND DIR`` serves SERVER (``dns``, ``smtp``,
``web``, ``ftp``) on 127.0.0.1, prints one JSON line with its ports, and serves until its
stdin closes. DIR holds the files it serves (web, ftp) or writes (the mail it got).

- ``dns`` and ``smtp`` run inside ``polyloop.run(main, backend=BACKEND)`` with
  ``get_reactor()``: Twisted's protocols on polyloop, no global reactor needed.
- ``web`` (``static.File``: its producer runs on ``task.cooperate``) and ``ftp``
  (``twisted.protocols.ftp`` calls the global reactor) need the global reactor: the
  script calls ``polyloop_twisted.compat.install(backend=BACKEND)`` first, then runs the
  application as a Twisted program would, with ``reactor.run()``.
- BACKEND ``native`` is Twisted's own default reactor (epoll), for the baseline.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any

HOST = "127.0.0.1"
ZONE = "example.test"
# Records enough for a zone transfer (AXFR) over several TCP messages.
HOSTS = 128

ZONE_SOURCE = f"""
zone = [
    SOA("{ZONE}", mname="ns1.{ZONE}", rname="admin.{ZONE}", serial=2026120601,
        refresh=3600, retry=600, expire=86400, minimum=300, ttl=300),
    NS("{ZONE}", "ns1.{ZONE}"),
    A("{ZONE}", "192.0.2.1"),
    A("ns1.{ZONE}", "192.0.2.2"),
    AAAA("www.{ZONE}", "2001:db8::80"),
    A("www.{ZONE}", "192.0.2.80"),
    MX("{ZONE}", 10, "mail.{ZONE}"),
    TXT("{ZONE}", b"polyloop served this"),
] + [A(f"host{{i}}.{ZONE}", f"198.51.100.{{i}}") for i in range({HOSTS})]
"""


def announce(**ports: int) -> None:
    print(json.dumps(ports), flush=True)


def dns_server(reactor: Any, root: str) -> list[Any]:
    """twisted.names' authoritative server on UDP and TCP, one port number for both."""
    from twisted.names import authority, dns, server

    path = os.path.join(root, "zone.py")
    with open(path, "w") as f:
        f.write(ZONE_SOURCE)
    factory = server.DNSServerFactory(authorities=[authority.PySourceAuthority(path)])
    # DNSServerFactory builds dns.DNSProtocol(self), which takes the global reactor
    # unless it is given one: the one running the server is passed.
    factory.protocol = lambda controller: dns.DNSProtocol(controller, reactor=reactor)
    from twisted.internet import error

    # One number for both: a free UDP port may be taken for TCP (another process's
    # client connection), so a few tries.
    for _ in range(50):
        udp = reactor.listenUDP(
            0, dns.DNSDatagramProtocol(factory, reactor=reactor), interface=HOST
        )
        number = udp.getHost().port
        try:
            tcp = reactor.listenTCP(number, factory, interface=HOST)
        except error.CannotListenError:
            udp.stopListening()
            continue
        announce(port=number)
        return [udp, tcp]
    raise RuntimeError("no port number free for both UDP and TCP")


def smtp_server(reactor: Any, root: str) -> list[Any]:
    """twisted.mail's SMTP server; each message is written to DIR/mail-N."""
    from twisted.internet import defer
    from twisted.mail import smtp
    from zope.interface import implementer

    count = [0]

    @implementer(smtp.IMessage)
    class Message:
        def __init__(self) -> None:
            self.lines: list[bytes] = []

        def lineReceived(self, line: bytes) -> None:
            self.lines.append(line)

        def eomReceived(self) -> Any:
            count[0] += 1
            with open(os.path.join(root, f"mail-{count[0]}"), "wb") as f:
                f.write(b"\n".join(self.lines) + b"\n")
            return defer.succeed(None)

        def connectionLost(self) -> None:
            self.lines = []

    @implementer(smtp.IMessageDelivery)
    class Delivery:
        def receivedHeader(self, helo: Any, origin: Any, recipients: Any) -> bytes:
            return b"Received: by polyloop's compat reactor"

        def validateFrom(self, helo: Any, origin: Any) -> Any:
            return origin

        def validateTo(self, user: Any) -> Any:
            if user.dest.domain == ZONE.encode():
                return Message
            raise smtp.SMTPBadRcpt(user)

    class Factory(smtp.SMTPFactory):
        protocol = smtp.ESMTP  # EHLO

        def buildProtocol(self, addr: Any) -> Any:
            server = super().buildProtocol(addr)
            server.delivery = Delivery()  # the factory hands its protocols no delivery
            return server

    factory = Factory()
    port = reactor.listenTCP(0, factory, interface=HOST)
    announce(port=port.getHost().port)
    return [port]


def web_server(reactor: Any, root: str) -> list[Any]:
    """twisted.web serving DIR with static.File."""
    from twisted.web import server, static

    port = reactor.listenTCP(0, server.Site(static.File(root)), interface=HOST)
    announce(port=port.getHost().port)
    return [port]


def ftp_server(reactor: Any, root: str) -> list[Any]:
    """twisted.protocols.ftp: anonymous (read-only) and user ``alice`` (password
    ``secret``), both in DIR."""
    from twisted.cred import checkers, portal
    from twisted.protocols import ftp
    from twisted.python import filepath

    realm = ftp.BaseFTPRealm(root)
    realm.getHomeDirectory = lambda avatarId: filepath.FilePath(root)  # type: ignore[method-assign]
    users = checkers.InMemoryUsernamePasswordDatabaseDontUse()
    users.addUser("alice", "secret")  # FTP passes str credentials (the line, decoded)
    factory = ftp.FTPFactory(portal.Portal(realm, [checkers.AllowAnonymousAccess(), users]))
    factory.allowAnonymous = True
    port = reactor.listenTCP(0, factory, interface=HOST)
    announce(port=port.getHost().port)
    return [port]


SERVERS = {"dns": dns_server, "smtp": smtp_server, "web": web_server, "ftp": ftp_server}
GLOBAL = {"web", "ftp"}  # need the global reactor: install() it


def main(name: str, backend: str, root: str) -> None:
    if name in GLOBAL or backend == "native":
        run_global(name, backend, root)
        return
    import polyloop
    from polyloop_twisted import compat

    async def serve() -> None:
        ports = SERVERS[name](compat.get_reactor(), root)
        await polyloop.run_in_thread(sys.stdin.read)  # until the test closes stdin
        for port in ports:
            await compat.from_deferred(port.stopListening())

    polyloop.run(serve, backend=backend)


def run_global(name: str, backend: str, root: str) -> None:
    """As a Twisted program: the global reactor (installed on ``backend`` unless
    ``native``), ``reactor.run()``, stopped from a thread once stdin closes."""
    if backend != "native":
        from polyloop_twisted import compat

        compat.install(backend=backend)
    from twisted.internet import reactor

    SERVERS[name](reactor, root)

    def stop_at_eof() -> None:
        sys.stdin.read()
        reactor.callFromThread(reactor.stop)  # type: ignore[attr-defined]

    threading.Thread(target=stop_at_eof, daemon=True).start()
    reactor.run(installSignalHandlers=False)  # type: ignore[attr-defined]


if __name__ == "__main__":
    main(*sys.argv[1:4])
