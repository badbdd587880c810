"""The server object ``listen_tcp``/``listen_unix`` return, and the accept-side policy.

Rule: a ``Server`` is a list of acceptors (one per bound address, made by the backend's
``serve_socket``) and the record its session keeps of it; what an acceptor does with a
connection is the backend's, what happens when the user's factory fails is decided here,
once for every backend.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _sockets
from ._contract import Acceptor
from ._protocols import Protocol as StreamProtocol
from ._transports import Transport

if TYPE_CHECKING:
    from ._session import Session

__all__ = ["Server", "safe_factory"]

log = logging.getLogger("polyloop")


class Server:
    """A listening endpoint returned by ``listen_tcp``/``listen_unix``."""

    def __init__(
        self,
        session: Session,
        addresses: list[Any],
        acceptors: list[Acceptor],
        path: str | None,
    ) -> None:
        self._session = session
        self._addresses = addresses
        self._acceptors = acceptors
        self._path = path
        self._closing: list[Acceptor] = []

    def __repr__(self) -> str:
        return f"<polyloop.Server {self._addresses} on {self._session!r}>"

    @property
    def addresses(self) -> list[Any]:
        """Bound addresses: ``(host, port, ...)`` tuples, or paths for Unix sockets."""
        return list(self._addresses)

    @property
    def port(self) -> int:
        """The first bound TCP port (handy after listening on port 0)."""
        for addr in self._addresses:
            if isinstance(addr, tuple):
                return int(addr[1])
        raise ValueError("this server has no TCP address")

    def is_serving(self) -> bool:
        """True until ``close()``."""
        return bool(self._acceptors)

    def close(self) -> None:
        """Stop accepting. Open connections are left alone. A Unix socket file is removed."""
        acceptors, self._acceptors = self._acceptors, []
        for acceptor in acceptors:
            acceptor.close()
        self._closing += acceptors
        if self._path is not None and acceptors:
            _sockets.unlink_socket_file(self._path)
        self._session.resources.servers.discard(self)

    async def wait_closed(self) -> None:
        """Wait until the listening sockets are closed."""
        closing, self._closing = self._closing, []
        for acceptor in closing:
            await acceptor.wait_closed()

    async def aclose(self) -> None:
        """``close()``, then ``wait_closed()``."""
        self.close()
        await self.wait_closed()


class _AbortOnConnect(StreamProtocol):
    """Stands in for a protocol whose factory raised: the connection is dropped."""

    def connection_made(self, transport: Transport) -> None:  # type: ignore[override]
        transport.abort()


def safe_factory(factory: Callable[[], StreamProtocol]) -> Callable[[], StreamProtocol]:
    """A server's protocol factory that never raises into the framework's accept path.

    The policy, the same on every backend: the error is logged with its traceback, the
    accepted connection is aborted (the client sees a reset), and the server goes on.
    """

    def make() -> StreamProtocol:
        try:
            return factory()
        except Exception:
            log.exception("polyloop: protocol factory %r raised; connection dropped", factory)
            return _AbortOnConnect()

    return make
