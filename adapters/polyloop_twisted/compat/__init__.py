"""Twisted protocols, unmodified, on every polyloop backend -- and the reverse.

Rule: this module only re-exports, and lazily: ``import polyloop_twisted`` does not load
this package, and importing it loads none of its modules until a name is first used.
(Twisted itself is loaded by ``polyloop_twisted`` already; without it, importing this
package fails there.)

Forward (a Twisted ``IProtocolFactory`` or ``Protocol`` class on asyncio, gevent, Tornado
or Twisted, inside ``polyloop.run`` or in host mode):

- ``await listen_tcp(factory, host, port)`` / ``listen_unix`` -> a ``Port``;
  ``await connect_tcp(factory, host, port)`` / ``connect_unix`` -> the Twisted protocol;
  ``protocol_factory(factory)`` -> a polyloop protocol factory for any polyloop call.
- Each connection's ``transport`` is a ``TwistedTransport``: ``ITransport``,
  ``ITCPTransport``, ``IConsumer``, ``IPushProducer``, ``ISystemHandle`` (and
  ``ISSLTransport`` under TLS), over the polyloop transport.
- ``get_reactor()`` -> the session's ``Reactor``, for Twisted code that takes a
  ``reactor`` or ``clock``: a full Twisted reactor (``IReactorCore``, ``IReactorTime``,
  ``IReactorFDSet``, ``IReactorTCP``, ``IReactorUNIX``, ``IReactorSSL``,
  ``IReactorSocket``, ``IReactorThreads``, ``IReactorPluggableNameResolver``) on the
  running session.
- ``install(backend=...)`` -> a ``Reactor`` that owns a loop of that backend, installed
  as ``twisted.internet.reactor`` (only when the application calls it).
- ``to_deferred(aw)`` / ``from_deferred(d)``: between polyloop awaitables and Deferreds,
  on any backend.

Reverse: ``PolyloopFactory(protocol_factory, reactor)`` is an ``IProtocolFactory`` for
Twisted's own ``listenTCP`` whose connections run polyloop (or asyncio) protocols.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

try:
    import twisted.internet  # noqa: F401  (this package is Twisted's own API, re-told)
except ImportError as exc:
    raise ImportError(
        f"polyloop_twisted.compat needs Twisted ({exc}): pip install 'polyloop[twisted]'",
        name=exc.name,
    ) from exc

if TYPE_CHECKING:
    from ._twisted_api import PolyloopFactory as PolyloopFactory
    from ._twisted_api import connect_tcp as connect_tcp
    from ._twisted_api import connect_unix as connect_unix
    from ._twisted_api import install as install
    from ._twisted_api import listen_tcp as listen_tcp
    from ._twisted_api import listen_unix as listen_unix
    from ._twisted_reactor import Reactor as Reactor
    from ._twisted_reactor import from_deferred as from_deferred
    from ._twisted_reactor import get_reactor as get_reactor
    from ._twisted_reactor import to_deferred as to_deferred
    from ._twisted_tcp import Connector as Connector
    from ._twisted_tcp import Port as Port
    from ._twisted_tcp import protocol_factory as protocol_factory
    from ._twisted_transport import ProtocolAdapter as ProtocolAdapter
    from ._twisted_transport import TwistedTransport as TwistedTransport

__all__ = [
    "Connector",
    "PolyloopFactory",
    "Port",
    "ProtocolAdapter",
    "Reactor",
    "TwistedTransport",
    "connect_tcp",
    "connect_unix",
    "from_deferred",
    "get_reactor",
    "install",
    "listen_tcp",
    "listen_unix",
    "protocol_factory",
    "to_deferred",
]

_WHERE = {
    "Connector": "_twisted_tcp",
    "PolyloopFactory": "_twisted_api",
    "Port": "_twisted_tcp",
    "ProtocolAdapter": "_twisted_transport",
    "Reactor": "_twisted_reactor",
    "TwistedTransport": "_twisted_transport",
    "connect_tcp": "_twisted_api",
    "connect_unix": "_twisted_api",
    "from_deferred": "_twisted_reactor",
    "get_reactor": "_twisted_reactor",
    "install": "_twisted_api",
    "listen_tcp": "_twisted_api",
    "listen_unix": "_twisted_api",
    "protocol_factory": "_twisted_tcp",
    "to_deferred": "_twisted_reactor",
}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{where}")
    for export, home in _WHERE.items():
        if home == where:
            value = getattr(module, export)
            try:
                value.__module__ = __name__
            except (AttributeError, TypeError):
                pass
            globals()[export] = value
    return globals()[name]


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
