"""The Tornado backend: a fresh IOLoop per run, or the application's own (host mode).

Rule: this file is the lifecycle (owning or borrowing an IOLoop), scheduling and
readiness through the IOLoop, and the adoption of sockets the core bound or connected:
``TCPServer`` accepts, ``IOStream``/``SSLIOStream`` (``_transport.py``) move the bytes
and do TLS with the caller's ``ssl.SSLContext``. Resolution, binding, the connect loop,
Unix socket files and ``Server`` are the core's; UDP is the core's socket transport on
IOLoop readiness (Tornado has no UDP API). Native errors become builtin ones in one
place, ``_ERRORS``.

Every call that makes a Tornado object (``TCPServer.add_sockets``, ``IOStream``) runs on
the session's loop while it runs: Tornado finds its IOLoop with ``IOLoop.current()``.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import socket
import ssl as _ssl
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from tornado.ioloop import IOLoop
from tornado.iostream import StreamClosedError
from tornado.netutil import ssl_wrap_socket
from tornado.platform.asyncio import BaseAsyncIOLoop
from tornado.tcpserver import TCPServer

import polyloop
from polyloop.lowlevel import (
    HANDSHAKE_TIMEOUT,
    AsyncioTask,
    Callback,
    Session,
    accept_connections,
    end_with_asyncio_loop,
    fd_of,
    from_asyncio_future,
    in_asyncio_executor,
    map_exceptions,
    pause_accepting,
    set_nodelay,
)

from ._backend import TornadoBackend
from ._transport import TornadoTransport, _SSLStream, _Stream

T = TypeVar("T")
log = logging.getLogger("polyloop")


def own_ioloop(backend: TornadoBackend, body: Callable[[Session], Coroutine[Any, Any, T]]) -> T:
    """``TornadoBackend.own_loop``.

    A new IOLoop makes its own asyncio loop, which asyncio.Runner drives (the main task in
    session.context). The shutdown is done here, not by the Runner: Runner.close() closes
    the asyncio loop, and IOLoop.close() must come *before* that. It drops Tornado's
    asyncio->IOLoop entry and then closes the loop; in the other order an IOLoop made
    meanwhile in another thread sees the closed loop, drops the entry itself, and our
    close() fails with KeyError (Tornado's comment in BaseAsyncIOLoop.close; measured: 24
    of 960 runs in 8 threads failed so)."""
    ioloop = IOLoop(make_current=False)
    assert isinstance(ioloop, BaseAsyncIOLoop)
    runner = asyncio.Runner(loop_factory=lambda: ioloop.asyncio_loop)
    try:
        session = TornadoSession(backend, ioloop, owned=True)
        return runner.run(body(session), context=session.context)
    finally:
        try:
            runner.run(_wind_down())
        finally:
            ioloop.close(all_fds=True)  # the runner is dropped, never closed


def borrow_ioloop(backend: TornadoBackend, native: Any) -> Session:
    """``TornadoBackend.borrow_loop``: a session on an IOLoop the application runs."""
    if not isinstance(native, BaseAsyncIOLoop):
        raise TypeError(f"the tornado backend attaches to a running IOLoop, not {native!r}")
    session = TornadoSession(backend, native, owned=False)
    end_with_asyncio_loop(session)  # the IOLoop ends with its asyncio loop
    return session


async def _wind_down() -> None:
    """What ``asyncio.Runner.close()`` does before it closes the loop."""
    loop = asyncio.get_running_loop()
    left = asyncio.all_tasks(loop) - {asyncio.current_task()}
    for task in left:
        task.cancel()
    await asyncio.gather(*left, return_exceptions=True)
    for task in left:
        if not task.cancelled() and task.exception() is not None:
            loop.call_exception_handler(
                {"message": "polyloop.run() shutdown", "exception": task.exception()}
            )
    await loop.shutdown_asyncgens()
    await loop.shutdown_default_executor()


class TornadoSession(Session):
    """A session on one Tornado ``IOLoop``."""

    name = "tornado"

    def __init__(self, backend: TornadoBackend, ioloop: BaseAsyncIOLoop, *, owned: bool):
        super().__init__(backend, ioloop, owned=owned)
        #: The Tornado IOLoop.
        self.ioloop = ioloop
        #: The asyncio loop under it (its tasks run polyloop's).
        self.loop = ioloop.asyncio_loop
        self._readers: dict[int, Callable[[], object]] = {}
        self._writers: dict[int, Callable[[], object]] = {}
        self._handshakes: set[_SSLStream] = set()  # accepted, not yet adopted

    def host_gone(self) -> bool:
        return self.loop.is_closed()

    # --- tier 1: scheduling ---

    def time(self) -> float:
        return self.ioloop.time()

    def call_soon(self, fn: Callable[..., object], *args: Any) -> polyloop.Handle:
        handle = Callback(fn, args)
        self.ioloop.add_callback(handle)
        return handle

    def start_timer(
        self, delay: float, fn: Callable[..., object], args: tuple[Any, ...]
    ) -> polyloop.Handle:
        return _Timeout(self.ioloop, self.ioloop.call_later(delay, Callback(fn, args)))

    def call_soon_threadsafe(self, fn: Callable[..., object], *args: Any) -> None:
        # add_callback is Tornado's thread-safe entry. The other thread's context knows
        # no session: run in this one's.
        self.ioloop.add_callback(Callback(self.context.run, (fn, *args)))

    # --- tier 1: readiness (one IOLoop handler per fd, for both directions) ---

    def add_reader(self, fd: Any, fn: Callable[[], object]) -> None:
        self._watch(fd, self._readers, fn)

    def remove_reader(self, fd: Any) -> bool:
        return self._unwatch(fd, self._readers)

    def add_writer(self, fd: Any, fn: Callable[[], object]) -> None:
        self._watch(fd, self._writers, fn)

    def remove_writer(self, fd: Any) -> bool:
        return self._unwatch(fd, self._writers)

    def _events(self, fileno: int) -> int:
        return (IOLoop.READ if fileno in self._readers else 0) | (
            IOLoop.WRITE if fileno in self._writers else 0
        )

    def _watch(self, fd: Any, table: dict[int, Callable[[], object]], fn: Any) -> None:
        fileno = fd_of(fd)
        known = self._events(fileno)
        table[fileno] = fn
        if known:
            self.ioloop.update_handler(fileno, self._events(fileno))
        else:
            # The object itself, so that IOLoop.close(all_fds=True) closes a socket as one.
            handler = functools.partial(self._ready, fileno)
            self.ioloop.add_handler(fd, handler, self._events(fileno))

    def _unwatch(self, fd: Any, table: dict[int, Callable[[], object]]) -> bool:
        fileno = fd_of(fd)
        if table.pop(fileno, None) is None:
            return False
        events = self._events(fileno)
        if events:
            self.ioloop.update_handler(fileno, events)
        else:
            self.ioloop.remove_handler(fileno)
        return True

    def _ready(self, fileno: int, fileobj: Any, events: int) -> None:
        # On asyncio, Tornado calls us once per direction (events is READ or WRITE).
        fn = self._readers.get(fileno) if events & IOLoop.READ else None
        if fn is not None:
            fn()
        fn = self._writers.get(fileno) if events & IOLoop.WRITE else None
        if fn is not None:
            fn()

    # --- tasks and threads ---

    def new_task(self, coro: Coroutine[Any, Any, T], name: str | None) -> polyloop.Task[T]:
        return AsyncioTask(self, coro, name, self.loop)

    async def run_in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        # IOLoop.run_in_executor on an asyncio loop is the asyncio loop's (platform/asyncio.py).
        return await in_asyncio_executor(self, self.loop, fn, *args)

    # --- adopting sockets ---

    async def serve_socket(
        self,
        sock: socket.socket,
        factory: Callable[[], polyloop.Protocol],
        ssl: _ssl.SSLContext | None,
        backlog: int,
        handshake_timeout: float | None = None,
    ) -> polyloop.lowlevel.Acceptor:
        listener = _Listener(self, factory, ssl, handshake_timeout)
        listener.add_sockets([sock])
        return listener

    def adopt_stream(
        self, sock: socket.socket, factory: Callable[[], polyloop.Protocol]
    ) -> polyloop.Transport:
        return TornadoTransport(self, _Stream(sock), factory)

    async def adopt_client_stream(
        self,
        sock: socket.socket,
        factory: Callable[[], polyloop.Protocol],
        ssl: _ssl.SSLContext | None,
        server_hostname: str | None,
    ) -> polyloop.Transport:
        if ssl is None:
            return self.adopt_stream(sock, factory)
        stream = _tls_stream(sock, ssl, server_side=False, server_hostname=server_hostname)
        try:
            with map_exceptions(_ERRORS):
                await from_asyncio_future(self, stream.wait_for_handshake())
        except BaseException:
            stream.close()
            raise
        return TornadoTransport(self, stream, factory)

    def _accepted(
        self,
        sock: socket.socket,
        factory: Callable[[], polyloop.Protocol],
        ssl: _ssl.SSLContext | None,
        handshake_timeout: float | None = None,
    ) -> None:
        """A connection ``TCPServer`` accepted: adopt it (TLS: once it is handshaken)."""
        set_nodelay(sock)
        if ssl is None:
            _adopt_logged(self, _Stream(sock), factory)
            return
        try:
            stream = _tls_stream(sock, ssl, server_side=True, server_hostname=None)
        except OSError:
            return  # reset before we could wrap it (as TCPServer does)
        self._handshakes.add(stream)
        # SSLIOStream has no handshake timeout: a client that never sends its ClientHello
        # would be held for ever. Drop it after the same time the core's layer allows.
        timeout = HANDSHAKE_TIMEOUT if handshake_timeout is None else handshake_timeout
        timer = self.ioloop.call_later(timeout, stream.close)

        def handshaken(done: asyncio.Future[Any]) -> None:
            self.ioloop.remove_timeout(timer)
            self._handshakes.discard(stream)
            if done.cancelled() or done.exception() is not None or stream.closed():
                stream.close()  # failed, or the client left: the protocol never hears of it
            else:
                _adopt_logged(self, stream, factory)

        stream.wait_for_handshake().add_done_callback(handshaken)

    def abort_transports(self) -> None:
        super().abort_transports()
        for stream in list(self._handshakes):
            stream.close()


class _Listener(TCPServer):
    """``TCPServer`` on one listening socket, handing each connection to the session."""

    def __init__(
        self,
        session: TornadoSession,
        factory: Callable[[], polyloop.Protocol],
        ssl: _ssl.SSLContext | None,
        handshake_timeout: float | None,
    ) -> None:
        # No ssl_options here: TCPServer would wrap the socket in a plain SSLIOStream.
        # _accepted wraps it the same way (ssl_wrap_socket), in a _SSLStream.
        super().__init__()
        self._session = session
        self._factory = factory
        self._ssl = ssl
        self._timeout = handshake_timeout

    def add_sockets(self, sockets: Any) -> None:
        """``TCPServer.add_sockets`` with our accept handler instead of Tornado's
        ``netutil.add_accept_handler``, whose ``accept()`` errors other than
        ``BlockingIOError`` escape into the IOLoop: out of descriptors, asyncio's handler
        logged a traceback per call, with the socket still watched (5,700 a second).
        Ours pauses accepting instead, the core's rule (``pause_accepting``)."""
        for sock in sockets:
            self._sockets[sock.fileno()] = sock
            self._handlers[sock.fileno()] = self._watch(sock)

    def _watch(self, sock: socket.socket) -> Callable[[], None]:
        """Accept on ``sock`` from the IOLoop; returns what stops it (``TCPServer.stop``)."""
        ioloop = self._session.ioloop
        state: dict[str, Any] = {"removed": False, "paused": None}

        def resume() -> None:
            state["paused"] = None
            if not state["removed"]:
                ioloop.add_handler(sock, accept, IOLoop.READ)

        def pause(exc: OSError) -> None:
            ioloop.remove_handler(sock)
            state["paused"] = pause_accepting(self._session, sock, exc, resume)

        def accept(fd: Any, events: int) -> None:
            if state["removed"]:
                return
            for connection, address in accept_connections(sock, pause):
                self._handle_connection(connection, address)
                if state["removed"]:
                    return

        def remove() -> None:
            state["removed"] = True
            if state["paused"] is not None:
                state["paused"].cancel()
            else:
                ioloop.remove_handler(sock)

        ioloop.add_handler(sock, accept, IOLoop.READ)
        return remove

    def handle_stream(self, stream: Any, address: Any) -> None:
        # The IOStream TCPServer made has not touched the IOLoop yet: take its socket.
        self._session._accepted(stream.socket, self._factory, self._ssl, self._timeout)

    def close(self) -> None:
        """Stop accepting: ``stop()`` removes the handler and closes the socket at once."""
        self.stop()

    async def wait_closed(self) -> None:
        """Nothing to wait for: ``close()`` closed the socket."""


def _tls_stream(
    sock: socket.socket, ssl: _ssl.SSLContext, *, server_side: bool, server_hostname: str | None
) -> _SSLStream:
    """Wrap a connected socket; the stream handshakes from the next IOLoop iteration."""
    try:
        tls = ssl_wrap_socket(
            sock,
            ssl,
            server_hostname=server_hostname,
            server_side=server_side,
            do_handshake_on_connect=False,
        )
    except BaseException:
        sock.close()
        raise
    return _SSLStream(tls, ssl)


def _adopt_logged(
    session: TornadoSession, stream: _Stream | _SSLStream, factory: Callable[[], Any]
) -> None:
    # The server side: the core's factory never raises, but connection_made may.
    try:
        TornadoTransport(session, stream, factory)
    except Exception:
        log.exception("polyloop: a protocol's connection_made raised; connection aborted")


class _Timeout:
    """The handle of a ``call_later``: ``IOLoop.call_later`` returns an opaque timeout."""

    __slots__ = ("ioloop", "timeout")

    def __init__(self, ioloop: IOLoop, timeout: object) -> None:
        self.ioloop = ioloop
        self.timeout = timeout

    def cancel(self) -> None:
        self.ioloop.remove_timeout(self.timeout)


def _real_error(exc: BaseException) -> BaseException:
    # StreamClosedError wraps the socket's own error (ConnectionResetError ...) as
    # real_error; a handshake's own failure (ssl.SSLCertVerificationError ...) comes
    # out of wait_for_handshake() unwrapped already.
    real = exc.real_error if isinstance(exc, StreamClosedError) else None
    if isinstance(real, OSError):
        return real
    return ConnectionResetError(errno.ECONNRESET, "connection closed during the TLS handshake")


#: Tornado's errors -> the builtin types every backend raises.
_ERRORS: dict[type[BaseException], Callable[[BaseException], BaseException]] = {
    StreamClosedError: _real_error,
}
