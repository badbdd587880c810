"""The gevent backend: polyloop on the thread's hub, with no monkey patching.

Rule: this file is the lifecycle (``run`` and its clean-up), scheduling, and the
listeners and connectors. Tasks live in ``_driver.py``, connections in ``_transport.py``.

Facts that shaped it (measured here, gevent 26.9, libev):
- The library never patches, and works in a process that did (``patch_all()``): it uses
  plain non-blocking sockets from the ``socket`` module (gevent's own class when patched,
  which behaves the same with a timeout of 0) and waits on its own ``hub.loop.io``
  watchers, so it never depends on which ``socket`` class it got.
- ``gevent.socket.getaddrinfo`` resolves in the *hub's* threadpool, whose threads outlive
  ``run``. Numeric hosts are resolved inline (``AI_NUMERICHOST``, with the C ``_socket``
  module, never patched); names go to this run's own pool, which ``run`` kills at the end.
- A hub whose loop has no referenced watcher left raises ``LoopExit`` into the waiting
  greenlet. A future completed only by ``call_soon_threadsafe`` from an OS thread leaves
  nothing referenced, so each run keeps its own (referenced) ``async_`` watcher started:
  it is also the wake-up path for other threads (``send()`` is thread-safe).
- ``ThreadPool`` reports a task's exception through ``hub.handle_error`` (a traceback on
  stderr) before handing it over: ``run_in_thread`` catches it in the worker instead.
"""

from __future__ import annotations

import _socket
import collections
import contextvars
import errno
import os
import socket
import ssl as _ssl
import stat
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ClassVar, TypeVar

import gevent
from gevent.hub import Waiter
from greenlet import getcurrent, greenlet

import polyloop
from polyloop import _context
from polyloop._errors import pick_connect_error

from ._driver import GeventFuture, GeventTask, log_callback_error, yield_once
from ._transport import GeventDatagramTransport, GeventTransport, set_nodelay

T = TypeVar("T")
DP = TypeVar("DP", bound=polyloop.DatagramProtocol)

#: How long ``run`` lets tasks that it cancelled at the end finish, before killing them.
DISPOSE_GRACE = 1.0


def _set_none(fut: GeventFuture[Any]) -> None:
    if not fut.done():
        fut.set_result(None)


class _Handle:
    """``call_soon``/``call_later`` handle around a gevent callback or timer watcher."""

    __slots__ = ("_backend", "_w")

    def __init__(self, backend: GeventBackend | None, watcher: Any) -> None:
        self._backend = backend
        self._w = watcher

    def cancel(self) -> None:
        """Don't run it, if it has not run yet."""
        w, self._w = self._w, None
        if w is not None:
            if self._backend is None:
                w.stop()
            else:
                w.close()
                self._backend._timers.discard(self)


class GeventServer(polyloop.Server):
    """Listening sockets, accepted from a read watcher's callback in the hub."""

    def __init__(
        self,
        backend: GeventBackend,
        socks: list[socket.socket],
        factory: Callable[[], polyloop.Protocol],
        path: str | None = None,
    ) -> None:
        self._backend = backend
        self._factory = factory
        self._path = path
        self._addresses = [s.getsockname() for s in socks]  # gone after close()
        self._socks = socks
        self._watchers = []
        for sock in socks:
            watcher = backend._loop.io(sock.fileno(), 1)
            watcher.start(backend._context.run, self._accept, sock)
            self._watchers.append(watcher)

    @property
    def addresses(self) -> list[Any]:
        return list(self._addresses)

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(64):  # then let the others run; the watcher fires again
            try:
                conn, _addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                    continue
                # EMFILE and friends: log, and keep the listener (asyncio does the same).
                log_callback_error(self._accept, exc)
                return
            conn.setblocking(False)
            set_nodelay(conn)
            GeventTransport(self._backend, conn, None, self._factory)

    def close(self) -> None:
        for watcher in self._watchers:
            watcher.close()  # before the fd goes: libev must not watch a closed fd
        for sock in self._socks:
            sock.close()
        self._watchers, self._socks = [], []
        self._backend._servers.discard(self)
        if self._path is not None:
            _unlink_socket(self._path)
            self._path = None

    async def wait_closed(self) -> None:
        await yield_once()


def _socket_is_live(path: str) -> bool:
    """Whether a server listens on the Unix socket file at ``path`` (never blocks)."""
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            return False
    except OSError:
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.setblocking(False)
        # 0: accepted into its backlog; EAGAIN: its backlog is full. Both mean live.
        return probe.connect_ex(path) in (0, errno.EAGAIN, errno.EWOULDBLOCK)
    finally:
        probe.close()


def _unlink_socket(path: str) -> None:
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    except OSError:
        pass


class GeventBackend(polyloop.Backend):
    """polyloop on gevent greenlets and the thread's hub. No options.

    Works whether or not ``gevent.monkey.patch_all()`` ran, and never patches anything.
    """

    name = "gevent"
    native_tls = False  # stdlib contexts go through the core's MemoryBIO layer
    options: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        super().__init__()
        self._hub: Any = None
        self._loop: Any = None
        self._context: contextvars.Context = contextvars.copy_context()
        self._async: Any = None
        self._threadsafe: collections.deque[tuple[Callable[..., object], tuple[Any, ...]]] = (
            collections.deque()
        )
        self._pool: Any = None
        self._tasks: set[GeventTask[Any]] = set()
        self._greenlets: weakref.WeakSet[greenlet] = weakref.WeakSet()  # helpers
        self._timers: set[_Handle] = set()
        self._servers: set[GeventServer] = set()
        self._transports: set[GeventTransport | GeventDatagramTransport] = set()

    @classmethod
    def framework_version(cls) -> str:
        import greenlet as greenlet_module

        return f"gevent {gevent.__version__}, greenlet {greenlet_module.__version__}"

    # --- lifecycle ---

    def run(self, main: Callable[..., Awaitable[T]], *args: Any) -> T:
        if self._hub is not None:
            raise RuntimeError("this backend instance is already running")
        hub = gevent.get_hub()
        if getcurrent() is hub:
            raise RuntimeError(
                "polyloop.run() cannot block the gevent hub: call it from a greenlet"
            )
        self._hub, self._loop = hub, hub.loop
        self._async = self._loop.async_()
        self._async.start(self._run_threadsafe)
        try:
            with _context.running(self):
                self._context = contextvars.copy_context()
                task = GeventTask(self, self._main(main, args))
                try:
                    self._wait(task)  # parks this greenlet; the hub runs everything else
                except BaseException:  # KeyboardInterrupt, or this greenlet was killed
                    if task.cancel():  # as asyncio.Runner does: clean up, then re-raise
                        self._wait(task)
                    raise
                return task.result()
        finally:
            self._close_leftovers()

    def _wait(self, task: GeventTask[Any]) -> None:
        waiter = Waiter(self._hub)
        task.add_done_callback(waiter.switch)
        waiter.get()

    async def _main(self, main: Callable[..., Awaitable[T]], args: tuple[Any, ...]) -> T:
        try:
            return await main(*args)
        finally:
            await self._dispose()

    async def _dispose(self) -> None:
        """Close what the user left open, while the hub still runs for us."""
        for server in list(self._servers):
            server.close()
        for transport in [t for t in self._transports if not t.is_closing()]:
            transport.abort()
        me = getcurrent()
        left = [t for t in self._tasks if t._gr is not me]
        for task in left:
            task.cancel()
        deadline = self.time() + DISPOSE_GRACE
        while any(not t.done() for t in left) and self.time() < deadline:
            await self.sleep(0.001)
        for task in left:
            if not task.done() and not task._gr.dead:
                self._loop.run_callback(task._gr.throw)  # GreenletExit: closes its coroutine
        for _ in range(3):  # connection_lost and the kills above run from the hub
            await yield_once()
        for gr in list(self._greenlets):
            if not gr.dead:
                self._loop.run_callback(gr.throw)
        await yield_once()

    def _close_leftovers(self) -> None:
        for handle in list(self._timers):
            handle.cancel()
        if self._async is not None:
            self._async.close()
        if self._pool is not None:
            self._pool.kill()
        self._async = self._pool = None
        self._hub = self._loop = None
        self._threadsafe.clear()
        self._greenlets.clear()

    def _new_greenlet(self, fn: Callable[..., object]) -> greenlet:
        """A greenlet under the hub that sees this backend as the current one."""
        gr = greenlet(fn, parent=self._hub)
        # Greenlets do not inherit contextvars: give each a copy that names this backend.
        ctx = contextvars.copy_context()
        ctx.run(_context.set_current, self)
        gr.gr_context = ctx
        return gr

    def _spawn_greenlet(self, fn: Callable[..., object], *args: Any) -> greenlet:
        gr = self._new_greenlet(fn)
        self._greenlets.add(gr)
        self._loop.run_callback(gr.switch, *args)
        return gr

    def _park(self, watcher: Any) -> None:
        """Park the current (helper) greenlet until ``watcher`` fires or a wake-up."""
        if watcher is not None:
            watcher.start(getcurrent().switch)
        try:
            self._hub.switch()
        finally:
            if watcher is not None:
                watcher.stop()

    # --- scheduling ---

    def _call(self, fn: Callable[..., object], *args: Any) -> None:
        try:
            self._context.run(fn, *args)
        except Exception as exc:
            log_callback_error(fn, exc)

    def time(self) -> float:
        import time

        return time.monotonic()

    def call_soon(self, fn: Callable[..., object], *args: Any) -> polyloop.Handle:
        return _Handle(None, self._loop.run_callback(self._call, fn, *args))

    def call_later(self, delay: float, fn: Callable[..., object], *args: Any) -> polyloop.Handle:
        timer = self._loop.timer(max(0.0, delay))
        handle = _Handle(self, timer)
        self._timers.add(handle)
        # update=True: measure the delay from now, not from the loop's cached time.
        timer.start(self._fire, handle, fn, args, update=True)
        return handle

    def _fire(self, handle: _Handle, fn: Callable[..., object], args: tuple[Any, ...]) -> None:
        handle.cancel()  # closes the one-shot watcher
        self._call(fn, *args)

    def call_soon_threadsafe(self, fn: Callable[..., object], *args: Any) -> None:
        wake = self._async
        if wake is None:
            raise RuntimeError("the gevent backend is not running")
        self._threadsafe.append((fn, args))  # deque.append is atomic
        wake.send()

    def _run_threadsafe(self) -> None:
        queue = self._threadsafe
        while queue:
            fn, args = queue.popleft()
            self._call(fn, *args)

    def spawn(self, coro: Coroutine[Any, Any, T]) -> polyloop.Task[T]:
        return GeventTask(self, coro)

    def create_future(self) -> polyloop.Future[Any]:
        return GeventFuture(self._loop)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await yield_once()
            return
        fut: GeventFuture[None] = GeventFuture(self._loop)
        timer = self._loop.timer(seconds)
        timer.start(_set_none, fut, update=True)
        try:
            await fut
        finally:
            timer.close()

    async def run_in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        if self._pool is None:
            from gevent.threadpool import ThreadPool

            self._pool = ThreadPool(min(32, (os.cpu_count() or 1) + 4), hub=self._hub)

        def work() -> tuple[bool, Any]:
            try:
                return True, fn(*args)
            except BaseException as exc:  # handed back to the caller
                return False, exc

        fut: GeventFuture[tuple[bool, Any]] = GeventFuture(self._loop)

        def deliver(result: Any) -> None:
            if not fut.done():
                fut.set_result(result.value)

        self._pool.spawn(work).rawlink(deliver)
        ok, value = await fut
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    # --- networking ---

    async def _getaddrinfo(
        self, host: str | None, port: int, type_: int, flags: int = 0
    ) -> list[tuple[Any, ...]]:
        try:
            return _socket.getaddrinfo(host, port, 0, type_, 0, flags | _socket.AI_NUMERICHOST)
        except _socket.gaierror:
            pass  # a name: resolve it in a worker thread, not on the hub's thread
        return await self.run_in_thread(_socket.getaddrinfo, host, port, 0, type_, 0, flags)

    async def _sock_connect(self, sock: socket.socket, addr: Any) -> None:
        err = sock.connect_ex(addr)
        if err in (errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK):
            fut: GeventFuture[None] = GeventFuture(self._loop)
            watcher = self._loop.io(sock.fileno(), 2)
            watcher.start(_set_none, fut)
            try:
                await fut
            finally:
                watcher.close()
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, os.strerror(err))  # OSError picks the builtin subclass

    async def _listen_tcp(
        self,
        protocol_factory: Callable[[], polyloop.Protocol],
        host: str | None,
        port: int,
        *,
        ssl: _ssl.SSLContext | None,
        backlog: int,
    ) -> polyloop.Server:
        infos = await self._getaddrinfo(host, port, socket.SOCK_STREAM, socket.AI_PASSIVE)
        socks: list[socket.socket] = []
        try:
            for family, type_, proto, _, addr in dict.fromkeys(infos):
                sock = socket.socket(family, type_, proto)
                socks.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                if port == 0 and len(socks) > 1:  # one port for every family
                    addr = (addr[0], socks[0].getsockname()[1], *addr[2:])
                sock.bind(addr)
                sock.listen(backlog)
                sock.setblocking(False)
        except BaseException:
            for sock in socks:
                sock.close()
            raise
        return self._keep(GeventServer(self, socks, protocol_factory))

    def _keep(self, server: GeventServer) -> GeventServer:
        self._servers.add(server)
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
        infos = await self._getaddrinfo(host, port, socket.SOCK_STREAM)
        errors: list[OSError] = []
        for family, type_, proto, _, addr in infos:
            sock = socket.socket(family, type_, proto)
            try:
                sock.setblocking(False)
                await self._sock_connect(sock, addr)
            except OSError as exc:
                sock.close()
                errors.append(exc)
                continue
            except BaseException:
                sock.close()
                raise
            set_nodelay(sock)
            return self._connected(sock, protocol_factory)
        raise pick_connect_error(errors)

    def _connected(
        self, sock: socket.socket, protocol_factory: Callable[[], polyloop.Protocol]
    ) -> tuple[polyloop.Transport, polyloop.Protocol]:
        try:
            protocol = protocol_factory()
        except BaseException:
            sock.close()
            raise
        transport = GeventTransport(self, sock, protocol, None)
        return transport, protocol

    async def _listen_unix(
        self,
        protocol_factory: Callable[[], polyloop.Protocol],
        path: str,
        *,
        ssl: _ssl.SSLContext | None,
        backlog: int,
    ) -> polyloop.Server:
        if _socket_is_live(path):
            raise OSError(errno.EADDRINUSE, f"a server is listening on {path!r}")
        _unlink_socket(path)  # a stale socket file from an earlier run, as asyncio does
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            sock.listen(backlog)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return self._keep(GeventServer(self, [sock], protocol_factory, path))

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
            await self._sock_connect(sock, path)
        except BaseException:
            sock.close()
            raise
        return self._connected(sock, protocol_factory)

    async def _open_udp(
        self,
        protocol_factory: Callable[[], DP],
        local_addr: tuple[str, int] | None,
        remote_addr: tuple[str, int] | None,
    ) -> tuple[polyloop.DatagramTransport, DP]:
        local = remote = None
        family = 0
        if remote_addr is not None:
            infos = await self._getaddrinfo(*remote_addr, socket.SOCK_DGRAM)
            if local_addr is not None:
                local_family = (await self._getaddrinfo(*local_addr, socket.SOCK_DGRAM))[0][0]
                infos = [i for i in infos if i[0] == local_family] or infos
            family, remote = infos[0][0], infos[0][4]
        if local_addr is not None:
            infos = await self._getaddrinfo(*local_addr, socket.SOCK_DGRAM, socket.AI_PASSIVE)
            if family:
                infos = [i for i in infos if i[0] == family] or infos
            family, local = infos[0][0], infos[0][4]
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            if local is not None:
                sock.bind(local)
            if remote is not None:
                sock.connect(remote)
            protocol = protocol_factory()
        except BaseException:
            sock.close()
            raise
        transport = GeventDatagramTransport(self, sock, protocol, remote)
        return transport, protocol
