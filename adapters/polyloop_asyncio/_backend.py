"""The asyncio backend: a fresh event loop per run (``loop="uvloop"`` for uvloop)."""

from __future__ import annotations

import asyncio
import contextvars
import errno
import socket
import ssl as _ssl
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ClassVar, TypeVar

import polyloop
from polyloop import _context
from polyloop._errors import pick_connect_error

from ._transport import Adopt, AsyncioDatagramTransport, AsyncioTransport, abort_native

T = TypeVar("T")
DP = TypeVar("DP", bound=polyloop.DatagramProtocol)


class AsyncioServer(polyloop.Server):
    def __init__(self, *servers: asyncio.AbstractServer, path: str | None = None) -> None:
        self._servers = servers
        self._path = path
        self._addresses = [
            s.getsockname() for server in servers for s in getattr(server, "sockets", ())
        ]  # read now: they are gone after close()

    @property
    def addresses(self) -> list[Any]:
        return list(self._addresses)

    def close(self) -> None:
        for server in self._servers:
            server.close()
        if self._path is not None:
            _unlink_socket(self._path)
            self._path = None

    async def wait_closed(self) -> None:
        # On Python 3.12+ asyncio's wait_closed() also waits for every connection to
        # end; the contract only waits for the listening sockets, which close() shut.
        await asyncio.sleep(0)


def _unlink_socket(path: str) -> None:
    import os
    import stat

    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    except OSError:
        pass


class AsyncioBackend(polyloop.Backend):
    """polyloop on asyncio. Options: ``loop="asyncio"`` (default) or ``loop="uvloop"``."""

    name = "asyncio"
    native_tls = True
    options: ClassVar[tuple[str, ...]] = ("loop", "native_tls")

    def __init__(self, *, loop: str = "asyncio", native_tls: bool | str = True) -> None:
        super().__init__()
        if loop not in ("asyncio", "uvloop"):
            raise ValueError(f"loop must be 'asyncio' or 'uvloop', not {loop!r}")
        if loop == "uvloop":
            try:
                import uvloop  # noqa: F401
            except ImportError:
                raise polyloop.BackendUnavailable(
                    "loop='uvloop' needs uvloop: pip install 'polyloop[uvloop]'"
                ) from None
        self._loop_kind = loop
        # native_tls=False runs TLS through the core's MemoryBIO layer instead of
        # asyncio's sslproto: the conformance suite uses it to test that layer.
        if isinstance(native_tls, str):
            native_tls = native_tls.lower() not in ("0", "false", "no")
        self.native_tls = native_tls  # type: ignore[misc]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._context: contextvars.Context | None = None
        self._servers: list[AsyncioServer] = []
        # asyncio's own transports, not our wrappers: a wrapper the user dropped is
        # garbage, but the transport under it lives on while the loop watches its socket.
        self._transports: weakref.WeakSet[Any] = weakref.WeakSet()
        # uvloop's TLS transports cannot be weakly referenced: held strongly, pruned of
        # closed ones as more arrive.
        self._unweakable: set[Any] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    @classmethod
    def framework_version(cls) -> str:
        import platform

        version = f"asyncio (Python {platform.python_version()})"
        try:
            import uvloop

            version += f", uvloop {getattr(uvloop, '__version__', '?')}"
        except ImportError:
            pass
        return version

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running event loop."""
        if self._loop is None:
            raise RuntimeError("this backend is not running")
        return self._loop

    def _new_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop_kind == "uvloop":
            import uvloop

            return uvloop.new_event_loop()
        return asyncio.new_event_loop()

    def run(self, main: Callable[..., Awaitable[T]], *args: Any) -> T:
        if self._loop is not None:
            raise RuntimeError("this backend instance is already running")
        with asyncio.Runner(loop_factory=self._new_loop) as runner:
            self._loop = runner.get_loop()
            try:
                with _context.running(self):
                    self._context = contextvars.copy_context()
                    return runner.run(self._main(main, args), context=self._context)
            finally:
                self._loop = None
                self._context = None

    async def _main(self, main: Callable[..., Awaitable[T]], args: tuple[Any, ...]) -> T:
        try:
            return await main(*args)
        finally:
            await self._dispose()

    async def _dispose(self) -> None:
        """Close what the user left open, while the loop still runs.

        Tasks first, so that a handler sees ``Cancelled`` rather than its connection
        vanishing under it; then servers; then every transport still open -- also one
        that is closing but still flushing to a peer that does not read.
        """
        pending = [t for t in self._tasks if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        for server in self._servers:
            server.close()
        self._servers.clear()
        left = [*self._transports, *self._unweakable]
        self._unweakable.clear()
        for transport in left:
            abort_native(transport)
        if left:
            for _ in range(3):  # connection_lost callbacks are scheduled with call_soon
                await asyncio.sleep(0)

    def _track(self, transport: Any) -> None:
        try:
            self._transports.add(transport)
        except TypeError:
            if len(self._unweakable) >= 64:
                self._unweakable = {t for t in self._unweakable if not t.is_closing()}
            self._unweakable.add(transport)

    # --- scheduling ---

    def time(self) -> float:
        return self.loop.time()

    def call_soon(self, fn: Callable[..., object], *args: Any) -> polyloop.Handle:
        return self.loop.call_soon(fn, *args)

    def call_later(self, delay: float, fn: Callable[..., object], *args: Any) -> polyloop.Handle:
        return self.loop.call_later(delay, fn, *args)

    def call_soon_threadsafe(self, fn: Callable[..., object], *args: Any) -> None:
        # The other thread's context knows no backend: run in the one run() set up.
        self.loop.call_soon_threadsafe(fn, *args, context=self._context)

    def spawn(self, coro: Coroutine[Any, Any, T]) -> polyloop.Task[T]:
        # asyncio holds tasks weakly: a task that nobody references, waiting on a future
        # nobody else references, is garbage collected mid-await ("Task was destroyed
        # but it is pending!"). spawn promises to run it, so hold it until it is done.
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def create_future(self) -> polyloop.Future[Any]:
        return self.loop.create_future()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def run_in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await self.loop.run_in_executor(None, fn, *args)

    # --- networking ---

    def _adopt(self, factory: Callable[[], Any]) -> Callable[[], Adopt]:
        return lambda: Adopt(factory, self, AsyncioTransport)

    async def _listen_tcp(
        self,
        protocol_factory: Callable[[], polyloop.Protocol],
        host: str | None,
        port: int,
        *,
        ssl: _ssl.SSLContext | None,
        backlog: int,
    ) -> polyloop.Server:
        if host is None and port == 0:
            return self._keep(await self._listen_any(protocol_factory, ssl, backlog))
        server = await self.loop.create_server(
            self._adopt(protocol_factory), host, port, ssl=ssl, backlog=backlog
        )
        return self._keep(AsyncioServer(server))

    async def _listen_any(
        self,
        protocol_factory: Callable[[], polyloop.Protocol],
        ssl: _ssl.SSLContext | None,
        backlog: int,
    ) -> AsyncioServer:
        # asyncio binds each address of host=None (0.0.0.0 and ::) to its own port 0,
        # so the IPv4 and IPv6 sockets would get different ports and Server.port would
        # name only one of them. Bind the first, then the others to the port it got.
        infos = await self.loop.getaddrinfo(
            None, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        hosts = list(dict.fromkeys(str(info[4][0]) for info in infos))
        for attempt in range(5):
            servers: list[asyncio.AbstractServer] = []
            port = 0
            try:
                for host in hosts:
                    try:
                        server = await self.loop.create_server(
                            self._adopt(protocol_factory), host, port, ssl=ssl, backlog=backlog
                        )
                    except OSError as exc:
                        if servers and exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                            continue  # no such family here (no IPv6), as asyncio skips it
                        raise
                    servers.append(server)
                    port = port or server.sockets[0].getsockname()[1]
            except OSError as exc:
                for opened in servers:
                    opened.close()
                if exc.errno != errno.EADDRINUSE or attempt == 4 or not servers:
                    raise
                continue  # the port was free for one family only: pick another
            return AsyncioServer(*servers)
        raise AssertionError("unreachable")

    def _keep(self, server: AsyncioServer) -> AsyncioServer:
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
        # Resolve here and try each address ourselves: asyncio folds several failures
        # into a bare OSError("Multiple exceptions ...") that has lost the errno.
        infos = await self.loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        errors: list[OSError] = []
        for family, type_, proto, _, addr in infos:
            try:
                sock = socket.socket(family, type_, proto)
            except OSError as exc:
                errors.append(exc)
                continue
            try:
                sock.setblocking(False)
                await self.loop.sock_connect(sock, addr)
            except OSError as exc:
                sock.close()
                errors.append(exc)
                continue
            except BaseException:
                sock.close()
                raise
            return await self._adopt_connection(
                self.loop.create_connection, protocol_factory, sock, ssl, server_hostname
            )
        raise pick_connect_error(errors)

    async def _adopt_connection(
        self,
        create: Callable[..., Awaitable[tuple[Any, Any]]],
        protocol_factory: Callable[[], polyloop.Protocol],
        sock: socket.socket,
        ssl: _ssl.SSLContext | None,
        server_hostname: str | None,
    ) -> tuple[polyloop.Transport, polyloop.Protocol]:
        kwargs: dict[str, Any] = {"sock": sock}
        if ssl is not None:
            kwargs.update(ssl=ssl, server_hostname=server_hostname)
        _, adopt = await create(self._adopt(protocol_factory), **kwargs)
        return adopt.transport, adopt.protocol

    async def _listen_unix(
        self,
        protocol_factory: Callable[[], polyloop.Protocol],
        path: str,
        *,
        ssl: _ssl.SSLContext | None,
        backlog: int,
    ) -> polyloop.Server:
        server = await self.loop.create_unix_server(
            self._adopt(protocol_factory), path, ssl=ssl, backlog=backlog
        )
        return self._keep(AsyncioServer(server, path=path))

    async def _connect_unix(
        self,
        protocol_factory: Callable[[], polyloop.Protocol],
        path: str,
        *,
        ssl: _ssl.SSLContext | None,
        server_hostname: str | None,
    ) -> tuple[polyloop.Transport, polyloop.Protocol]:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await self.loop.sock_connect(sock, path)
        except BaseException:
            sock.close()
            raise
        return await self._adopt_connection(
            self.loop.create_unix_connection, protocol_factory, sock, ssl, server_hostname
        )

    async def _open_udp(
        self,
        protocol_factory: Callable[[], DP],
        local_addr: tuple[str, int] | None,
        remote_addr: tuple[str, int] | None,
    ) -> tuple[polyloop.DatagramTransport, DP]:
        _, adopt = await self.loop.create_datagram_endpoint(
            lambda: Adopt(protocol_factory, self, AsyncioDatagramTransport),
            local_addr=local_addr,
            remote_addr=remote_addr,
        )
        return adopt.transport, adopt.protocol
