"""The coroutine entries (``listen_tcp``, ``connect_tcp`` ...) and the reverse shim.

Rule: the entries here are thin: they open a polyloop server or connection with the
adapter of ``_twisted_transport.py`` and call the factory's hooks around it. The reverse
shim (a polyloop protocol under a Twisted application's own reactor) reuses the Twisted
backend's connection bridge, the one the conformance suite checks.
"""

from __future__ import annotations

import ssl as _ssl
from collections.abc import Callable
from typing import Any

# Twisted at module level, on purpose: loaded only through polyloop_twisted.compat's lazy
# names, by Twisted code (see _twisted_transport.py); installs no reactor.
from twisted.internet import protocol

import polyloop

from .. import attach
from .._transport import TwistedTransport as BridgeTransport
from ._twisted_reactor import Reactor, get_reactor
from ._twisted_tcp import Port, as_factory
from ._twisted_transport import ProtocolAdapter, twisted_address

__all__ = [
    "PolyloopFactory",
    "connect_tcp",
    "connect_unix",
    "install",
    "listen_tcp",
    "listen_unix",
]


async def listen_tcp(
    factory: Any,
    host: str | None = "127.0.0.1",
    port: int = 0,
    *,
    ssl: _ssl.SSLContext | None = None,
    backlog: int = 128,
) -> Port:
    """Serve the Twisted ``factory`` (or ``Protocol`` class) on ``host:port`` on the
    running session, as ``polyloop.listen_tcp`` does (names resolved, every address
    bound, TLS with a stdlib ``ssl`` context). Returns a ``Port``; ``factory.doStart()``
    now, ``doStop()`` when it stops (``await port.aclose()``)."""
    from ._twisted_reactor import protocol_factory

    reactor = get_reactor()
    twisted_factory = as_factory(factory)
    server = await polyloop.listen_tcp(
        protocol_factory(twisted_factory, reactor), host, port, ssl=ssl, backlog=backlog
    )
    return Port(reactor, twisted_factory, twisted_address(server.addresses[0]), server=server)


async def listen_unix(
    factory: Any, path: str, *, ssl: _ssl.SSLContext | None = None, backlog: int = 128
) -> Port:
    """``listen_tcp`` on a Unix socket at ``path`` (removed when the port stops)."""
    from ._twisted_reactor import protocol_factory

    reactor = get_reactor()
    twisted_factory = as_factory(factory)
    server = await polyloop.listen_unix(
        protocol_factory(twisted_factory, reactor), path, ssl=ssl, backlog=backlog
    )
    return Port(reactor, twisted_factory, twisted_address(path, "UNIX"), server=server)


async def _connect(factory: Any, opening: Callable[[Callable[[], Any]], Any]) -> Any:
    twisted_factory = as_factory(factory)
    twisted_factory.doStart()
    adapter = ProtocolAdapter(
        twisted_factory.buildProtocol, get_reactor(), lambda p, r: twisted_factory.doStop()
    )
    try:
        await opening(lambda: adapter)
    except BaseException:
        if adapter.protocol is None:
            twisted_factory.doStop()
        raise
    if adapter.protocol is None:
        twisted_factory.doStop()
        raise ConnectionAbortedError("the factory's buildProtocol returned None")
    return adapter.protocol


async def connect_tcp(
    factory: Any,
    host: str,
    port: int,
    *,
    ssl: _ssl.SSLContext | None = None,
    server_hostname: str | None = None,
) -> Any:
    """Connect to ``host:port`` on the running session and return the Twisted protocol
    that ``factory.buildProtocol(addr)`` made (``factory`` may be a ``Protocol`` class),
    once its ``connectionMade`` ran. Errors are polyloop's (``ConnectionRefusedError``
    ...); for a ``ClientFactory``'s ``clientConnectionFailed``/``Lost`` use
    ``get_reactor().connectTCP``."""
    return await _connect(
        factory,
        lambda make: polyloop.connect_tcp(
            make, host, port, ssl=ssl, server_hostname=server_hostname
        ),
    )


async def connect_unix(
    factory: Any,
    path: str,
    *,
    ssl: _ssl.SSLContext | None = None,
    server_hostname: str | None = None,
) -> Any:
    """``connect_tcp`` to the Unix socket at ``path``."""
    return await _connect(
        factory,
        lambda make: polyloop.connect_unix(make, path, ssl=ssl, server_hostname=server_hostname),
    )


class PolyloopFactory(protocol.Factory):
    """The reverse shim: an ``IProtocolFactory`` for Twisted's own ``listenTCP``,
    ``connectTCP``, endpoints..., whose connections run *polyloop* protocols.

    ``protocol_factory`` makes the polyloop (or ``asyncio.Protocol``) protocol of each
    connection; it sees a polyloop ``Transport`` that keeps the whole polyloop contract,
    and ``polyloop.current_backend()`` inside its callbacks is the session of
    ``reactor`` (default: the global reactor, which the application installed). So a
    Twisted application adopts polyloop protocols one at a time, on the reactor it runs.
    """

    noisy = False

    def __init__(self, protocol_factory: Callable[[], Any], reactor: Any = None) -> None:
        self.protocol_factory = protocol_factory
        #: The reactor the connections run on (``None``: the global one).
        self.reactor = reactor
        self._session: polyloop.Session | None = None

    def session(self) -> polyloop.Session:
        """The polyloop session on ``reactor`` (made at the first connection)."""
        if self._session is None or self._session.closed:
            self._session = attach(self.reactor)
        return self._session

    def buildProtocol(self, addr: Any) -> Any:
        """The Twisted protocol of one connection: the Twisted backend's bridge, which
        drives a protocol from ``protocol_factory``."""
        # The bridge is the Twisted backend's own (polyloop_twisted._transport: the same
        # distribution), the one every conformance check runs through.
        return BridgeTransport(self.session(), self.protocol_factory, None)  # type: ignore[arg-type]


def install(backend: Any = "asyncio", **options: Any) -> Reactor:
    """Install a reactor that owns a loop of ``backend`` as ``twisted.internet.reactor``
    (in the spirit of ``twisted.internet.asyncioreactor.install()``) and return it.

    ``backend`` is a polyloop backend name or spec (``"asyncio"``, ``"gevent"`` -- no
    monkey patching --, ``"tornado"``, ``"my_pkg:MyBackend"``), a Backend class or
    instance, with its ``options``. Call it before anything imports
    ``twisted.internet.reactor``; ``ReactorAlreadyInstalledError`` otherwise. Then code
    written against the global reactor (``task.cooperate``, ``static.File``,
    ``deferToThread``, ``HostnameEndpoint``, ``reactor.run()``) runs unchanged on that
    backend. polyloop never calls this itself: without it the global reactor is never
    installed.
    """
    from twisted.internet.main import installReactor

    reactor = Reactor.for_backend(backend, **options)
    installReactor(reactor)  # type: ignore[no-untyped-call]
    return reactor
