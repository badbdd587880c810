"""The Tornado backend: a fresh IOLoop per run; TCPServer, TCPClient and IOStream do the I/O.

Rule: Tornado does the work -- the IOLoop schedules, ``TCPServer`` accepts, ``TCPClient``
(with Tornado's ``Resolver`` and its happy-eyeballs connector) connects, ``IOStream`` and
``SSLIOStream`` move the bytes and do TLS with the caller's ``ssl.SSLContext``. Native
errors become builtin ones in one place, ``_CONNECT_ERRORS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import errno
import logging
import os
import socket
import ssl as _ssl
import stat
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar, cast

from tornado import gen
from tornado.concurrent import Future as TornadoFuture
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream, StreamClosedError
from tornado.netutil import Resolver, is_valid_ip, ssl_wrap_socket
from tornado.platform.asyncio import BaseAsyncIOLoop
from tornado.tcpclient import TCPClient
from tornado.tcpserver import TCPServer

import polyloop
from polyloop import _context
from polyloop._errors import map_exceptions

from ._transport import TornadoDatagramTransport, TornadoTransport, _SSLStream, _Stream

log = logging.getLogger("polyloop")

T = TypeVar("T")
DP = TypeVar("DP", bound=polyloop.DatagramProtocol)


def _real_error(exc: BaseException) -> BaseException:
    # StreamClosedError wraps the socket's own error (ConnectionRefusedError,
    # FileNotFoundError, ssl.SSLCertVerificationError ...) as real_error.
    real = cast(StreamClosedError, exc).real_error
    if isinstance(real, OSError):
        return real
    return ConnectionResetError(errno.ECONNRESET, "connection closed while connecting")


#: Tornado's errors -> the builtin types every backend raises. (``tornado.util.TimeoutError``
#: is the builtin ``TimeoutError`` already, and ``ssl.SSLError`` comes through unchanged.)
_CONNECT_ERRORS: dict[type[BaseException], Callable[[BaseException], BaseException]] = {
    StreamClosedError: _real_error,
}


class _Client(TCPClient):
    """``TCPClient`` that builds polyloop's ``IOStream`` subclasses.

    Why: TCPClient makes plain ``IOStream`` objects, which close themselves on read EOF
    (see ``_transport``), and its ``start_tls`` can only verify ``host`` itself, while
    polyloop lets the caller connect to ``127.0.0.1`` and verify ``localhost``. So the one
    factory hook, ``_create_stream``, makes a ``_Stream`` or a ``_SSLStream`` whose
    ``connect`` also runs the handshake; resolving, trying each address (RFC 6555) and
    cancelling stay Tornado's.
    """

    def __init__(
        self, resolver: Resolver, ssl: _ssl.SSLContext | None, server_hostname: str | None
    ) -> None:
        super().__init__(resolver=resolver)
        self._ssl = ssl
        self._server_hostname = server_hostname

    def _create_stream(
        self,
        max_buffer_size: int | None,
        af: socket.AddressFamily,
        addr: tuple[Any, ...],
        source_ip: str | None = None,
        source_port: int | None = None,
    ) -> tuple[IOStream, TornadoFuture[IOStream]]:
        sock = socket.socket(af, socket.SOCK_STREAM)
        try:
            if self._ssl is None:
                stream: IOStream = _Stream(sock, max_buffer_size=max_buffer_size)
                return stream, stream.connect(addr)
            tls = _SSLStream(sock, ssl_options=self._ssl, max_buffer_size=max_buffer_size)
            return tls, cast(
                "TornadoFuture[IOStream]", tls.connect(addr, server_hostname=self._server_hostname)
            )
        except BaseException:
            sock.close()
            raise


class _Acceptor(TCPServer):
    """``TCPServer`` handing each accepted socket to the backend."""

    def __init__(
        self,
        backend: TornadoBackend,
        factory: Callable[[], polyloop.Protocol],
        ssl: _ssl.SSLContext | None,
    ) -> None:
        # No ssl_options here: TCPServer would wrap the socket in a plain SSLIOStream.
        # _accept wraps it the same way (ssl_wrap_socket), in a _SSLStream.
        super().__init__()
        self._backend = backend
        self._factory = factory
        self._ssl = ssl

    def handle_stream(self, stream: IOStream, address: Any) -> None:
        # The stream TCPServer made has not touched the IOLoop yet: take its socket.
        self._backend._accept(stream.socket, self._factory, self._ssl)


class TornadoServer(polyloop.Server):
    """A listening ``TCPServer``; its addresses are read when it starts."""

    def __init__(self, acceptor: _Acceptor, sockets: list[socket.socket], path: str | None):
        self._acceptor = acceptor
        self._path = path
        self._addresses: list[Any] = [s.getsockname() for s in sockets]
        self._closed = False

    @property
    def addresses(self) -> list[Any]:
        return list(self._addresses)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._acceptor.stop()  # removes the accept handlers and closes the sockets
        if self._path is not None:
            _unlink_socket(self._path)

    async def wait_closed(self) -> None:
        await asyncio.sleep(0)  # stop() closed the sockets synchronously


def _unlink_socket(path: str) -> None:
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    except OSError:
        pass


def _bind_tcp(infos: list[Any], backlog: int) -> list[socket.socket]:
    """Listening sockets for each address, all on one port (as ``netutil.bind_sockets``).

    Why not ``bind_sockets`` itself: when ``bind`` fails (``EADDRINUSE``), it leaves the
    socket it made open -- a ``ResourceWarning`` in the caller's process.
    """
    sockets: list[socket.socket] = []
    port = None
    try:
        for family, type_, proto, _, addr in dict.fromkeys(infos):
            sock = socket.socket(family, type_, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if addr[1] == 0 and port is not None:
                addr = (addr[0], port, *addr[2:])
            sock.setblocking(False)
            sock.bind(addr)
            sock.listen(backlog)
            port = sock.getsockname()[1]
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _bind_unix(path: str, backlog: int) -> socket.socket:
    """``netutil.bind_unix_socket`` without its leak on failure (and with the umask's mode).

    A stale socket file was removed by the core already (``Backend.listen_unix``); a live
    one makes ``bind`` fail with ``EADDRINUSE``, as it should.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.bind(path)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


class _Callback:
    """The handle of a ``call_soon``: ``IOLoop.add_callback`` itself returns none."""

    __slots__ = ("args", "cancelled", "fn")

    def __init__(self, fn: Callable[..., object], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.cancelled = False

    def __call__(self) -> None:
        if not self.cancelled:
            self.fn(*self.args)

    def cancel(self) -> None:
        self.cancelled = True


class _Timeout:
    """The handle of a ``call_later``: ``IOLoop.call_later`` returns an opaque timeout."""

    __slots__ = ("ioloop", "timeout")

    def __init__(self, ioloop: IOLoop, timeout: object) -> None:
        self.ioloop = ioloop
        self.timeout = timeout

    def cancel(self) -> None:
        self.ioloop.remove_timeout(self.timeout)


class _HandshakeErrorFilter(logging.Filter):
    """Drops SSLIOStream's "SSL Error on <fd>" warnings.

    Tornado logs every failed TLS handshake on ``tornado.general``; polyloop reports the
    same failure as ``ssl.SSLError`` to the client that connected and, as asyncio does,
    says nothing of a server-side failure. Installed only while a run is active.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("SSL Error on")


@contextlib.contextmanager
def _quiet_handshake_errors() -> Iterator[None]:
    log = logging.getLogger("tornado.general")
    quiet = _HandshakeErrorFilter()
    log.addFilter(quiet)
    try:
        yield
    finally:
        log.removeFilter(quiet)


class TornadoBackend(polyloop.Backend):
    """polyloop on Tornado: ``polyloop.run(main, backend="tornado")``. No options."""

    name = "tornado"
    native_tls = True

    def __init__(self) -> None:
        super().__init__()
        self._ioloop: IOLoop | None = None
        self._context: contextvars.Context | None = None
        self._resolver: Resolver | None = None
        self._servers: list[TornadoServer] = []
        self._handshakes: set[_SSLStream] = set()
        self._transports: weakref.WeakSet[Any] = weakref.WeakSet()
        self._tasks: set[asyncio.Task[Any]] = set()

    @classmethod
    def framework_version(cls) -> str:
        import tornado

        return f"Tornado {tornado.version}"

    @property
    def ioloop(self) -> IOLoop:
        """The running Tornado ``IOLoop``."""
        if self._ioloop is None:
            raise RuntimeError("this backend is not running")
        return self._ioloop

    # --- lifecycle ---

    def run(self, main: Callable[..., Awaitable[T]], *args: Any) -> T:
        if self._ioloop is not None:
            raise RuntimeError("this backend instance is already running")
        # A new IOLoop makes a new asyncio loop of its own; asyncio.Runner drives it (and
        # on the way out cancels leftover tasks, closes async generators and joins the
        # executor's threads). IOLoop.close() then drops Tornado's asyncio->IOLoop entry
        # and any fd still registered, so nothing outlives the run.
        ioloop = IOLoop(make_current=False)
        assert isinstance(ioloop, BaseAsyncIOLoop)
        self._ioloop = ioloop
        try:
            with (
                _quiet_handshake_errors(),
                _context.running(self),
                asyncio.Runner(loop_factory=lambda: ioloop.asyncio_loop) as runner,
            ):
                self._context = contextvars.copy_context()
                return runner.run(self._main(main, args), context=self._context)
        finally:
            ioloop.close(all_fds=True)
            self._ioloop = None
            self._context = None
            self._resolver = None

    async def _main(self, main: Callable[..., Awaitable[T]], args: tuple[Any, ...]) -> T:
        self._resolver = Resolver()
        try:
            return await main(*args)
        finally:
            await self._dispose()

    async def _dispose(self) -> None:
        """Close what the user left open, while the loop still runs.

        Tasks first, so that a handler sees ``Cancelled`` rather than its connection
        vanishing under it (and the Listener logging that as an error); then servers,
        handshakes and transports.
        """
        pending = [t for t in self._tasks if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        for server in self._servers:
            server.close()
        self._servers.clear()
        for stream in list(self._handshakes):
            stream.close()
        self._handshakes.clear()
        for transport in list(self._transports):  # tracked until connection_lost
            transport.abort()
        for _ in range(3):  # connection_lost callbacks are scheduled with add_callback
            await asyncio.sleep(0)
        if self._resolver is not None:
            self._resolver.close()

    def _track(self, transport: Any) -> None:
        self._transports.add(transport)

    def _untrack(self, transport: Any) -> None:
        self._transports.discard(transport)

    # --- scheduling ---

    def time(self) -> float:
        return self.ioloop.time()

    def call_soon(self, fn: Callable[..., object], *args: Any) -> polyloop.Handle:
        handle = _Callback(fn, args)
        self.ioloop.add_callback(handle)
        return handle

    def call_later(self, delay: float, fn: Callable[..., object], *args: Any) -> polyloop.Handle:
        ioloop = self.ioloop
        return _Timeout(ioloop, ioloop.call_later(delay, fn, *args))

    def call_soon_threadsafe(self, fn: Callable[..., object], *args: Any) -> None:
        # add_callback is Tornado's thread-safe entry point. The other thread's context
        # knows no backend: run in the one run() set up.
        ctx = self._context
        if ctx is None:
            raise RuntimeError("this backend is not running")
        self.ioloop.add_callback(ctx.run, fn, *args)

    def spawn(self, coro: Coroutine[Any, Any, T]) -> polyloop.Task[T]:
        # convert_yielded wraps a coroutine in an asyncio Task on the IOLoop's loop, so
        # cancel() delivers asyncio.CancelledError (polyloop.Cancelled) at its await.
        # asyncio holds tasks weakly (a pending task nobody references can be collected
        # mid-await), and spawn promises to run it: hold it until it is done.
        task = cast("asyncio.Task[T]", gen.convert_yielded(coro))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def create_future(self) -> polyloop.Future[Any]:
        return cast(BaseAsyncIOLoop, self.ioloop).asyncio_loop.create_future()

    async def sleep(self, seconds: float) -> None:
        await gen.sleep(seconds)

    async def run_in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await self.ioloop.run_in_executor(None, fn, *args)

    # --- networking ---

    def _adopt(
        self, stream: _Stream | _SSLStream, factory: Callable[[], polyloop.Protocol]
    ) -> tuple[TornadoTransport, polyloop.Protocol]:
        try:
            protocol = factory()
        except BaseException:
            stream.close()
            raise
        transport = TornadoTransport(stream, self, protocol)
        transport._start()
        return transport, protocol

    def _accept(
        self,
        sock: socket.socket,
        factory: Callable[[], polyloop.Protocol],
        ssl: _ssl.SSLContext | None,
    ) -> None:
        if ssl is None:
            try:
                self._adopt(_Stream(sock), factory)
            except Exception:
                log.exception("protocol factory failed; connection dropped")
            return
        try:
            tls_sock = ssl_wrap_socket(sock, ssl, server_side=True, do_handshake_on_connect=False)
        except OSError:
            sock.close()  # reset before we could wrap it (as TCPServer does)
            return
        stream = _SSLStream(tls_sock, ssl_options=ssl)
        self._handshakes.add(stream)

        def handshaken(fut: asyncio.Future[Any]) -> None:
            self._handshakes.discard(stream)
            if fut.cancelled() or fut.exception() is not None:
                stream.close()  # a failed handshake: nobody was told of this connection
                return
            try:
                self._adopt(stream, factory)
            except Exception:
                log.exception("protocol factory failed; connection dropped")

        cast("asyncio.Future[Any]", stream.wait_for_handshake()).add_done_callback(handshaken)

    async def _listen_tcp(
        self,
        protocol_factory: Callable[[], polyloop.Protocol],
        host: str | None,
        port: int,
        *,
        ssl: _ssl.SSLContext | None,
        backlog: int,
    ) -> polyloop.Server:
        args = (host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
        if host is None or is_valid_ip(host):
            infos = socket.getaddrinfo(*args)  # numeric: no lookup, no thread
        else:
            infos = await self.ioloop.run_in_executor(None, socket.getaddrinfo, *args)
        sockets = _bind_tcp(infos, backlog)
        return self._serve(protocol_factory, sockets, ssl, None)

    def _serve(
        self,
        factory: Callable[[], polyloop.Protocol],
        sockets: list[socket.socket],
        ssl: _ssl.SSLContext | None,
        path: str | None,
    ) -> TornadoServer:
        acceptor = _Acceptor(self, factory, ssl)
        server = TornadoServer(acceptor, sockets, path)
        acceptor.add_sockets(sockets)
        self._servers.append(server)
        return server

    async def _connect_tcp(
        self,
        protocol_factory: Callable[[], polyloop.Protocol],
        host: str,
        port: int,
        *,
        ssl: _ssl.SSLContext | None,
        server_hostname: str | None,
    ) -> tuple[polyloop.Transport, polyloop.Protocol]:
        assert self._resolver is not None
        client = _Client(self._resolver, ssl, server_hostname)
        with map_exceptions(_CONNECT_ERRORS):
            stream = await client.connect(host, port)
        return self._adopt(cast("_Stream | _SSLStream", stream), protocol_factory)

    async def _listen_unix(
        self,
        protocol_factory: Callable[[], polyloop.Protocol],
        path: str,
        *,
        ssl: _ssl.SSLContext | None,
        backlog: int,
    ) -> polyloop.Server:
        sock = _bind_unix(path, backlog)
        return self._serve(protocol_factory, [sock], ssl, path)

    async def _connect_unix(
        self,
        protocol_factory: Callable[[], polyloop.Protocol],
        path: str,
        *,
        ssl: _ssl.SSLContext | None,
        server_hostname: str | None,
    ) -> tuple[polyloop.Transport, polyloop.Protocol]:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stream: _Stream | _SSLStream
        connected: Awaitable[Any]
        try:
            if ssl is None:
                stream = _Stream(sock)
                connected = stream.connect(path)
            else:
                stream = _SSLStream(sock, ssl_options=ssl)
                # SSLIOStream.connect is typed for (host, port) but takes any socket address.
                connected = stream.connect(path, server_hostname=server_hostname)  # type: ignore[arg-type]
        except BaseException:
            sock.close()
            raise
        try:
            with map_exceptions(_CONNECT_ERRORS):
                await connected
        except BaseException:
            stream.close()
            raise
        return self._adopt(stream, protocol_factory)

    async def _open_udp(
        self,
        protocol_factory: Callable[[], DP],
        local_addr: tuple[str, int] | None,
        remote_addr: tuple[str, int] | None,
    ) -> tuple[polyloop.DatagramTransport, DP]:
        assert self._resolver is not None
        family = socket.AF_UNSPEC
        remote = local = None
        if remote_addr is not None:
            found, remote = (await self._resolver.resolve(*remote_addr))[0]
            family = socket.AddressFamily(found)
        if local_addr is not None:
            found, local = (await self._resolver.resolve(*local_addr, family))[0]
            family = socket.AddressFamily(found)
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            if local is not None:
                sock.bind(local)
            if remote is not None:
                sock.connect(remote)
                remote = sock.getpeername()
            protocol = protocol_factory()
        except BaseException:
            sock.close()
            raise
        transport = TornadoDatagramTransport(sock, self, protocol, remote)
        transport._start()
        return transport, protocol
