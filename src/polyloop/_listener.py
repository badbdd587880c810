"""Listeners of Streams, and the functions that open streams and listeners.

Rule: a ``Listener`` is a ``Server`` whose protocol factory makes ``Stream``s; it queues
them for ``accept()`` or hands each to a task of its own (``serve``). Nothing here knows a
framework: the session's ``connect_*``/``listen_*`` do the networking.
"""

from __future__ import annotations

import logging
import ssl as _ssl
from collections.abc import Awaitable, Callable
from typing import Any

from ._context import current_backend
from ._errors import BusyResourceError, Cancelled, ClosedResourceError
from ._futures import Future, Task
from ._server import Server
from ._session import Session
from ._streams import DEFAULT_LIMIT, Stream, StreamProtocol

__all__ = [
    "Listener",
    "open_tcp_listener",
    "open_tcp_stream",
    "open_unix_listener",
    "open_unix_stream",
]

log = logging.getLogger("polyloop")


Handler = Callable[[Stream], Awaitable[object]]


class Listener:
    """Accepts connections as Streams: ``await accept()`` or ``await serve(handler)``."""

    def __init__(self, session: Session, limit: int) -> None:
        self._session = session
        self._limit = limit
        self._server: Server | None = None
        self._queue: list[Stream] = []
        self._waiter: Future[None] | None = None
        self._handler: Handler | None = None
        self._tasks: set[Task[None]] = set()
        self._closed = False
        self._stopped: Future[None] = session.create_future()

    def _factory(self) -> StreamProtocol:
        return StreamProtocol(self._session, self._limit, self._on_connect)

    def _on_connect(self, stream: Stream) -> None:
        if self._handler is not None:
            self._start(self._handler, stream)
            return
        self._queue.append(stream)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    @property
    def addresses(self) -> list[Any]:
        """The bound addresses (see ``Server.addresses``)."""
        assert self._server is not None
        return self._server.addresses

    @property
    def port(self) -> int:
        """The first bound TCP port."""
        assert self._server is not None
        return self._server.port

    async def accept(self) -> Stream:
        """Wait for the next connection."""
        while not self._queue:
            if self._closed:
                raise ClosedResourceError("the listener was closed")
            self._waiter = self._session.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._queue.pop(0)

    def _start(self, handler: Handler, stream: Stream) -> None:
        me: list[Task[None]] = []
        task = self._session.spawn(self._handle(handler, stream, me))
        if not task.done():  # a backend may run the coroutine's first steps in spawn()
            me.append(task)
            self._tasks.add(task)

    async def _handle(self, handler: Handler, stream: Stream, me: list[Task[None]]) -> None:
        try:
            await handler(stream)
        except Cancelled:
            stream.transport.abort()
            raise
        except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError) as exc:
            # The peer went away: an ordinary event of a network server, not a bug of the
            # handler. One line at DEBUG, not a traceback per connection.
            log.debug("polyloop: stream handler %r: peer gone (%r)", handler, exc)
            stream.transport.abort()
        except Exception:
            log.exception("polyloop: unhandled error in stream handler %r", handler)
            stream.transport.abort()
        else:
            await stream.aclose()
        finally:
            if me:
                self._tasks.discard(me[0])

    async def serve(self, handler: Handler) -> None:
        """Run ``handler(stream)`` in a new task per connection until ``aclose()``.

        The stream is closed when the handler returns, aborted if it raises (the error
        is logged). Cancelling ``serve`` closes the listener and cancels the handlers.
        """
        if self._handler is not None:
            raise BusyResourceError("this listener is already serving")
        self._handler = handler
        queued, self._queue = self._queue, []
        for stream in queued:
            self._start(handler, stream)
        try:
            await self._stopped
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        self._closed = True
        if self._server is not None:
            await self._server.aclose()
        for task in list(self._tasks):
            if not task.done():
                task.cancel()
        self._tasks.clear()

    async def aclose(self) -> None:
        """Stop listening, and stop ``serve``. Open streams stay open."""
        if not self._stopped.done():
            self._stopped.set_result(None)
        self._closed = True
        if self._server is not None:
            await self._server.aclose()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def __aenter__(self) -> Listener:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


async def open_tcp_stream(
    host: str,
    port: int,
    *,
    ssl: _ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> Stream:
    """Connect to ``host:port`` (optionally with TLS) and return a ``Stream``."""
    session = current_backend()
    _, protocol = await session.connect_tcp(
        lambda: StreamProtocol(session, limit, None),
        host, port, ssl=ssl, server_hostname=server_hostname,
    )  # fmt: skip
    assert protocol.stream is not None
    return protocol.stream


async def open_unix_stream(
    path: str,
    *,
    ssl: _ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> Stream:
    """Connect to the Unix socket at ``path`` and return a ``Stream``."""
    session = current_backend()
    _, protocol = await session.connect_unix(
        lambda: StreamProtocol(session, limit, None),
        path, ssl=ssl, server_hostname=server_hostname,
    )  # fmt: skip
    assert protocol.stream is not None
    return protocol.stream


async def open_tcp_listener(
    host: str | None = "127.0.0.1",
    port: int = 0,
    *,
    ssl: _ssl.SSLContext | None = None,
    backlog: int = 128,
    limit: int = DEFAULT_LIMIT,
    ssl_handshake_timeout: float | None = None,
) -> Listener:
    """Listen on ``host:port`` and return a ``Listener`` of Streams."""
    session = current_backend()
    listener = Listener(session, limit)
    listener._server = await session.listen_tcp(
        listener._factory, host, port, ssl=ssl, backlog=backlog,
        ssl_handshake_timeout=ssl_handshake_timeout,
    )  # fmt: skip
    return listener


async def open_unix_listener(
    path: str,
    *,
    ssl: _ssl.SSLContext | None = None,
    backlog: int = 128,
    limit: int = DEFAULT_LIMIT,
) -> Listener:
    """Listen on a Unix socket at ``path`` and return a ``Listener`` of Streams."""
    session = current_backend()
    listener = Listener(session, limit)
    listener._server = await session.listen_unix(listener._factory, path, ssl=ssl, backlog=backlog)
    return listener
