"""The asyncio backend: a fresh event loop per run (``loop="uvloop"`` for uvloop), or the
application's running loop (host mode).

Rule: this file is the lifecycle (owning or borrowing a loop), scheduling and readiness,
and the adoption of sockets the core bound or connected. Transports live in
``_transport.py``.
"""

from __future__ import annotations

import asyncio
import contextvars
import errno
import socket
import ssl as _ssl
import sys
import time
import weakref
from asyncio import selector_events
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ClassVar, TypeVar

import polyloop
from polyloop.lowlevel import (
    ACCEPT_RESOURCE_ERRORS,
    ACCEPT_RETRY_DELAY,
    AsyncioTask,
    Session,
    end_with_asyncio_loop,
    fd_of,
    in_asyncio_executor,
    set_current,
)

from . import _process
from ._tls import RecordGuard, server_guard, ssl_protocol_class
from ._transport import (
    AsyncioDatagramTransport,
    AsyncioTransport,
    Bridge,
    SelectorSocketTransport,
    UVStreamTransport,
    _still_open,
    abort_native,
)

T = TypeVar("T")

#: The standard selector loop's TCP/Unix transport (private in asyncio: looked up, not
#: imported, so that a Python without it only loses SelectorSocketTransport's shortcut).
_STOCK_SOCKET_TRANSPORT: Any = getattr(selector_events, "_SelectorSocketTransport", None)
#: uvloop's stream transports (their is_closing() returns their _closing).
_UV_STREAMS = ("TCPTransport", "UnixTransport")


class AsyncioBackend(polyloop.Backend):
    """polyloop on asyncio. Options: ``loop="asyncio"`` (default) or ``loop="uvloop"``;
    ``native_tls=false`` runs TLS through the core's MemoryBIO layer (to test that layer)."""

    name = "asyncio"
    native_tls = True
    options: ClassVar[tuple[str, ...]] = ("loop", "native_tls")
    session_class: ClassVar[type[AsyncioSession]]

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
        self.loop_kind = loop
        if isinstance(native_tls, str):
            native_tls = native_tls.lower() not in ("0", "false", "no")
        self.native_tls = native_tls  # type: ignore[misc]

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

    def _new_loop(self) -> asyncio.AbstractEventLoop:
        if self.loop_kind == "uvloop":
            import uvloop

            return uvloop.new_event_loop()
        return asyncio.new_event_loop()

    def own_loop(self, body: Callable[[Session], Coroutine[Any, Any, T]]) -> T:
        # asyncio.Runner cancels leftover tasks, closes async generators, joins the
        # default executor's threads and closes the loop on the way out.
        with asyncio.Runner(loop_factory=self._new_loop) as runner:
            if self.loop_kind == "uvloop":
                runner.get_loop().set_exception_handler(_let_exits_out)
            session = self.session_class(self, runner.get_loop(), owned=True)
            return runner.run(body(session), context=session.context)

    def borrow_loop(self, native: Any) -> Session:
        if not isinstance(native, asyncio.AbstractEventLoop):
            raise TypeError(f"the asyncio backend attaches to an event loop, not {native!r}")
        session = self.session_class(self, native, owned=False)
        end_with_asyncio_loop(session)
        return session

    # --- host mode ---

    detect_order = 40  # after Twisted's and Tornado's, which sit on asyncio loops too

    @classmethod
    def running_native(cls, *, soon: bool = False) -> Any:
        return asyncio._get_running_loop()

    @classmethod
    def detect(cls, *, foreign: bool = False) -> Session | None:
        session = super().detect(foreign=foreign)
        if session is not None:
            # Cached in the caller's context (an asyncio task's, or a callback's copy), so
            # the next call in this task is a plain context-variable lookup. It names a
            # session of the very loop this context runs on, so it cannot mislead.
            set_current(session)
        return session

    def run_hosted(self, main: Callable[[], Awaitable[T]]) -> T:
        # What asyncio.run does (asyncio.Runner: one fresh loop, shut down at the end).
        with asyncio.Runner(loop_factory=self._new_loop) as runner:
            return runner.run(_await(main))


class _ListeningSocket(socket.socket):
    """A listening socket whose ``accept()``, for half of ``ACCEPT_RETRY_DELAY`` after
    it ran out of a resource (EMFILE, ENFILE, ENOBUFS, ENOMEM), says "nothing waiting".

    asyncio's selector loops (CPython 3.11 to 3.13, ``_accept_connection``) do pause
    accepting for a second on such an error -- but do not stop there: the loop goes on
    calling ``accept()`` up to ``backlog`` times, and each failure logs a traceback and
    schedules one more resume (measured: 1,991 tracebacks in 2.5 s under ``ulimit -n
    64``, 16 MB of stderr). With this socket, the first failure is the only one: one
    log entry and one resume per pause, the core's rule. uvloop accepts in C and never
    calls this ``accept``.
    """

    _paused_until = 0.0

    def accept(self) -> tuple[socket.socket, Any]:
        if self._paused_until and time.monotonic() < self._paused_until:
            raise BlockingIOError(errno.EAGAIN, "accepting is paused")
        try:
            return super().accept()
        except OSError as exc:
            if exc.errno in ACCEPT_RESOURCE_ERRORS:
                self._paused_until = time.monotonic() + ACCEPT_RETRY_DELAY / 2
            raise


def _let_exits_out(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The exception handler of an owned uvloop loop: a SystemExit or KeyboardInterrupt
    leaves ``run()`` as itself, also when a protocol's callback raised it.

    uvloop's read callbacks (``data_received``, ``buffer_updated``, ``eof_received``:
    ``handles/stream.pyx``, uvloop 0.23) catch ``BaseException``, close the transport
    and hand the exception to this handler, where asyncio's loops let it out of
    ``run_forever``. It is raised again here from a plain callback, which uvloop lets
    out as asyncio does; anything else goes to the default handler (a log line)."""
    exc = context.get("exception")
    if isinstance(exc, (SystemExit, KeyboardInterrupt)):
        loop.call_soon(_reraise, exc)
    else:
        loop.default_exception_handler(context)


def _reraise(exc: BaseException) -> None:
    raise exc


async def _await(main: Callable[[], Awaitable[T]]) -> T:
    return await main()


class AsyncioSession(Session):
    """A session on one asyncio event loop."""

    name = "asyncio"
    #: The wrapper of asyncio's stream transports (a subclass may replace it).
    transport_class: ClassVar[type[AsyncioTransport]] = AsyncioTransport

    def __init__(self, backend: AsyncioBackend, loop: asyncio.AbstractEventLoop, *, owned: bool):
        super().__init__(backend, loop, owned=owned)
        #: The event loop.
        self.loop = loop
        # asyncio's own transports, not our wrappers: a wrapper the user dropped is
        # garbage, but the transport under it lives on while the loop watches its socket.
        self._natives: weakref.WeakSet[Any] = weakref.WeakSet()
        # uvloop's TLS transports cannot be weakly referenced: held strongly, pruned of
        # closed ones as more arrive.
        self._unweakable: set[Any] = set()
        # A plain TCP connection our own server accepted on the standard selector loop is
        # not put in _natives: that loop already records each socket transport it makes
        # (BaseSelectorEventLoop._transports, a WeakValueDictionary by fd, CPython 3.11 to
        # 3.13), and each such transport names its asyncio.Server in ``_server`` until its
        # connection_lost has run. Our servers are listed here, weakly (a transport holds
        # its server strongly): at 10,000 idle connections the WeakSet entry was 185 bytes
        # a connection, a tenth of what the connection costs asyncio itself.
        self._servers: weakref.WeakSet[Any] = weakref.WeakSet()
        self._loop_transports: Any = None
        if isinstance(loop, selector_events.BaseSelectorEventLoop):
            found = getattr(loop, "_transports", None)
            if isinstance(found, weakref.WeakValueDictionary):
                self._loop_transports = found
        # The standard loop (3.11) is held to what it does: remove_reader/remove_writer
        # answer, and write() copies what it has to buffer (bytearray.extend). Any other
        # loop (uvloop) gets both done here: see add_reader and AsyncioTransport.write.
        stock = isinstance(loop, asyncio.BaseEventLoop) and sys.version_info < (3, 12)
        #: Copy a non-bytes write before handing it on.
        self.copy_writes = not stock
        # The fds added, where the loop's remove_* does not say (None: it does).
        self._readers: set[int] | None = None if stock else set()
        self._writers: set[int] | None = None if stock else set()

    def host_gone(self) -> bool:
        return self.loop.is_closed()

    # --- tier 1 ---

    def time(self) -> float:
        return self.loop.time()

    def call_soon(self, fn: Callable[..., object], *args: Any) -> polyloop.Handle:
        return self.loop.call_soon(fn, *args)

    def call_soon_in(
        self, context: contextvars.Context | None, fn: Callable[..., object], arg: Any
    ) -> None:
        self.loop.call_soon(fn, arg, context=context)

    def start_timer(
        self, delay: float, fn: Callable[..., object], args: tuple[Any, ...]
    ) -> polyloop.Handle:
        return self.loop.call_later(delay, fn, *args)

    def call_soon_threadsafe(self, fn: Callable[..., object], *args: Any) -> None:
        # The other thread's context knows no session: run in this session's.
        self.loop.call_soon_threadsafe(fn, *args, context=self.context)

    # uvloop's remove_reader()/remove_writer() return None whether or not the fd was
    # watched (uvloop 0.21; asyncio's return a bool): the fds added here are kept, so
    # that remove_* can say, as the contract wants.
    def add_reader(self, fd: Any, fn: Callable[[], object]) -> None:
        self.loop.add_reader(fd, fn)
        if self._readers is not None:
            self._readers.add(fd_of(fd))

    def remove_reader(self, fd: Any) -> bool:
        return _removed(self.loop.remove_reader, fd, self._readers)

    def add_writer(self, fd: Any, fn: Callable[[], object]) -> None:
        self.loop.add_writer(fd, fn)
        if self._writers is not None:
            self._writers.add(fd_of(fd))

    def remove_writer(self, fd: Any) -> bool:
        return _removed(self.loop.remove_writer, fd, self._writers)

    # --- tasks and threads ---

    def new_task(self, coro: Coroutine[Any, Any, T], name: str | None) -> polyloop.Task[T]:
        return AsyncioTask(self, coro, name, self.loop)

    async def run_in_thread(self, fn: Callable[..., T], *args: Any) -> T:
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
        listening = _ListeningSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())
        cls = None if ssl is None else ssl_protocol_class(self.loop)
        if cls is not None:
            # Our own SSLProtocol under a RecordGuard (_tls.py), as create_server(ssl=)
            # would make it: a record cut short is then an error (docs/tls.md).
            timeout = None if handshake_timeout is None else handshake_timeout or 1e-9
            loop = self.loop

            def guarded() -> RecordGuard:
                return server_guard(loop, cls, Bridge(factory, self, None), ssl, timeout)

            server = await loop.create_server(guarded, sock=listening, backlog=backlog)
            return _Acceptor(server)
        tls: dict[str, Any] = {"ssl": ssl}
        if ssl is not None and handshake_timeout is not None:
            tls["ssl_handshake_timeout"] = handshake_timeout or 1e-9  # asyncio wants > 0
        server = await self.loop.create_server(
            lambda: Bridge(factory, self, None), sock=listening, backlog=backlog, **tls
        )
        if ssl is None and self._loop_transports is not None:
            self._servers.add(server)  # its connections are found in loop._transports
        return _Acceptor(server)

    async def adopt_client_stream(
        self,
        sock: socket.socket,
        factory: Callable[[], polyloop.Protocol],
        ssl: _ssl.SSLContext | None,
        server_hostname: str | None,
    ) -> polyloop.Transport:
        failed: list[BaseException] = []
        create = (
            self.loop.create_unix_connection
            if sock.family == socket.AF_UNIX
            else (self.loop.create_connection)
        )
        cls = None if ssl is None else ssl_protocol_class(self.loop)
        if cls is not None:
            # What create_connection(ssl=) does, with a RecordGuard (see serve_socket).
            bridge = Bridge(factory, self, failed)
            guard = RecordGuard(
                cls, self.loop, bridge, sslcontext=ssl, server_hostname=server_hostname
            )
            try:
                raw, _ = await create(lambda: guard, sock=sock)
            except BaseException:
                sock.close()
                raise
            try:
                await guard.waiter
            except BaseException:
                raw.close()
                raise
        else:
            kwargs: dict[str, Any] = {"sock": sock}
            if ssl is not None:
                kwargs.update(ssl=ssl, server_hostname=server_hostname)
            try:
                _, bridge = await create(lambda: Bridge(factory, self, failed), **kwargs)
            except BaseException:
                sock.close()
                raise
        if failed:
            raise failed[0]  # connection_made raised: aborted, and the caller is told
        assert bridge.transport is not None
        return bridge.transport  # type: ignore[no-any-return]

    async def adopt_datagram(
        self, sock: socket.socket, protocol: polyloop.DatagramProtocol, remote: Any
    ) -> polyloop.DatagramTransport:
        try:
            _, bridge = await self.loop.create_datagram_endpoint(
                lambda: Bridge(lambda: protocol, self, None, remote=remote), sock=sock
            )
        except BaseException:
            sock.close()
            raise
        transport: AsyncioDatagramTransport = bridge.transport
        return transport

    # --- pipes and child processes: asyncio's own (_process.py) ---

    async def adopt_read_pipe(self, pipe: Any, protocol: Any) -> polyloop.ReadTransport:
        return await _process.adopt_read_pipe(self, pipe, protocol)

    async def adopt_write_pipe(self, pipe: Any, protocol: Any) -> polyloop.WriteTransport:
        return await _process.adopt_write_pipe(self, pipe, protocol)

    async def subprocess(
        self,
        protocol: Any,
        args: Any,
        shell: bool,
        stdin: Any,
        stdout: Any,
        stderr: Any,
        popen_kwargs: dict[str, Any],
    ) -> polyloop.SubprocessTransport:
        return await _process.spawn(
            self, protocol, args, shell, stdin, stdout, stderr, popen_kwargs
        )

    def _wrap_stream(self, transport: Any) -> AsyncioTransport:
        """The polyloop transport over one of asyncio's stream transports."""
        cls = self.transport_class
        if cls is AsyncioTransport:
            kind = type(transport)
            if kind is _STOCK_SOCKET_TRANSPORT and self._loop_transports is not None:
                cls = SelectorSocketTransport
            elif kind.__module__ == "uvloop.loop" and kind.__name__ in _UV_STREAMS:
                cls = UVStreamTransport
        return cls(transport, self)

    # --- what is open ---

    def _keep_native(self, transport: Any) -> None:
        if self._servers and getattr(transport, "_server", None) in self._servers:
            return  # the loop keeps it (see __init__)
        try:
            self._natives.add(transport)
        except TypeError:
            if len(self._unweakable) >= 64:
                self._unweakable = {t for t in self._unweakable if not t.is_closing()}
            self._unweakable.add(transport)

    def _accepted(self) -> list[Any]:
        """The open connections our plain servers accepted that the loop keeps for us."""
        if not self._servers:
            return []
        servers = self._servers
        return [
            t for t in list(self._loop_transports.values())
            if getattr(t, "_server", None) in servers  # None once connection_lost ran
        ]  # fmt: skip

    def open_streams(self) -> list[Any]:
        return [
            t for t in [*self._natives, *self._unweakable, *self._accepted()]
            if hasattr(t, "write_eof") and _still_open(t)  # uvloop's are no asyncio.Transport
        ]  # fmt: skip

    def abort_transports(self) -> None:
        left = [*self._natives, *self._unweakable, *self._accepted()]
        self._unweakable.clear()
        for transport in left:
            abort_native(transport)


class _Acceptor:
    """An ``asyncio.Server`` on one of our listening sockets."""

    def __init__(self, server: asyncio.AbstractServer) -> None:
        self._server = server

    def close(self) -> None:
        self._server.close()

    async def wait_closed(self) -> None:
        # On Python 3.12+ asyncio's wait_closed() also waits for every connection to
        # end; the contract only waits for the listening sockets, which close() shut.
        pass


#: The session class each run or attach makes (a subclass may replace it).
AsyncioBackend.session_class = AsyncioSession


def _removed(remove: Callable[[Any], Any], fd: Any, added: set[int] | None) -> bool:
    """``remove(fd)``, and whether ``fd`` was watched: the loop's answer, or ``added``'s."""
    if added is None:
        return bool(remove(fd))
    n = fd_of(fd)
    watched = n in added
    added.discard(n)
    remove(fd)
    return watched
