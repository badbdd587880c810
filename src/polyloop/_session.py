"""A session: one backend bound to one live loop, and everything generic built on it.

Rule: a backend implements the small contract below and nothing generic; the rest of
this class (argument checks, resolution, binding, the connect loop, servers, Unix socket
files, TLS for frameworks without a stdlib-TLS transport, tasks and futures, timeouts,
the record of what is open and its disposal) is written here once.

The contract has two tiers (Twisted's ``IReactorFDSet`` + ``adoptStreamPort`` shape):

- **Tier 1, required**: ``time``, ``call_soon``, ``_call_later``, ``call_soon_threadsafe``,
  readiness (``add_reader``/``remove_reader``/``add_writer``/``remove_writer``). With just
  these, the core runs tasks (``CoroutineTask``), TCP, Unix sockets, UDP and TLS on its
  own socket transports (``polyloop.lowlevel``).
- **Tier 2, optional**: a backend with a framework transport adopts sockets the core
  bound or connected: ``_serve`` (a listening socket), ``_connect_stream`` (a connected
  client socket, with native TLS if ``native_tls``), ``_adopt_stream`` (any connected
  socket), ``_open_datagram`` (a UDP socket), plus ``_new_task`` for a native task
  runner, ``run_in_thread`` for the framework's thread pool, and ``_sock_connect``.

A session is made either by ``Backend.run`` (it *owns* the loop: creates it, runs it,
disposes of it) or by ``Backend.attach`` (it *borrows* a loop the application runs: it
never closes, stops or replaces it, and at its end closes only what polyloop opened).
"""

from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import contextvars
import errno
import itertools
import logging
import math
import socket
import ssl as _ssl
import threading
import types
from collections.abc import Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar, runtime_checkable

from . import _errors, _sockets
from ._context import _session_var, unregister_host
from ._errors import Cancelled
from ._futures import CoroutineTask, Future, Task, _task_var, check_coroutine, current_task
from ._protocols import DatagramProtocol
from ._protocols import Protocol as StreamProtocol
from ._transports import BaseTransport, DatagramTransport, Transport

if TYPE_CHECKING:
    from ._backend import Backend

__all__ = ["Acceptor", "Callback", "Handle", "Server", "Session"]

T = TypeVar("T")
P = TypeVar("P", bound=StreamProtocol)
DP = TypeVar("DP", bound=DatagramProtocol)

log = logging.getLogger("polyloop")

#: How long the end of a session lets the tasks it cancelled unwind.
DISPOSE_GRACE = 1.0

_ids = itertools.count(1)


@runtime_checkable
class Handle(Protocol):
    """A scheduled call (``call_soon``/``call_later``)."""

    def cancel(self) -> None:
        """Don't run it, if it has not run yet."""


@runtime_checkable
class Acceptor(Protocol):
    """For backends: what ``_serve`` returns for one listening socket."""

    def close(self) -> None:
        """Stop accepting and close the listening socket (at once)."""

    async def wait_closed(self) -> None:
        """Wait until the framework has let go of the socket."""


class Callback:
    """For backends: a queued call that is also its ``Handle``. Calling it runs
    ``fn(*args)`` -- in ``context`` if one is given -- unless ``cancel()`` came first, and
    returns ``None`` (Tornado's IOLoop would run an awaitable that a callback returned)."""

    __slots__ = ("args", "cancelled", "context", "fn")

    def __init__(
        self,
        fn: Callable[..., object],
        args: tuple[Any, ...],
        context: contextvars.Context | None = None,
    ) -> None:
        self.fn = fn
        self.args = args
        self.context = context
        self.cancelled = False

    def __repr__(self) -> str:
        return f"<polyloop callback {self.fn!r}{' cancelled' if self.cancelled else ''}>"

    def __call__(self) -> None:
        if not self.cancelled:
            if self.context is None:
                self.fn(*self.args)
            else:
                self.context.run(self.fn, *self.args)

    def cancel(self) -> None:
        """Don't run it, if it has not run yet."""
        self.cancelled = True


class _NeverHandle:
    """``call_later(inf, ...)``: a call that never comes."""

    __slots__ = ()

    def cancel(self) -> None:
        pass


class _Timer:
    """A ``call_later`` handle the session knows of until it fires or is cancelled: at
    its end a session cancels the timers it set, also on a loop that runs on after it."""

    __slots__ = ("args", "fn", "handle", "session")

    def __init__(self, session: Session, fn: Callable[..., object], args: tuple[Any, ...]):
        self.session = session
        self.fn = fn
        self.args = args
        self.handle: Handle | None = None

    def fire(self) -> None:
        self.session._timers.discard(self)
        self.fn(*self.args)

    def cancel(self) -> None:
        self.session._timers.discard(self)
        if self.handle is not None:
            self.handle.cancel()


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
        self._session._servers.discard(self)

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


def _safe_factory(factory: Callable[[], StreamProtocol]) -> Callable[[], StreamProtocol]:
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


class Session(abc.ABC):
    """One backend bound to one live loop: what ``polyloop.current_backend()`` returns.

    Every polyloop call on one loop goes to the same session, so a library may key its
    connection pools on it, and ``on_close`` tells it when the session ends: at the end of
    ``polyloop.run``, when the host loop shuts down, or on ``aclose()``.
    """

    #: The backend's name, as in ``backend="asyncio"``.
    name: ClassVar[str] = "?"

    def __init__(self, backend: Backend, native: Any, *, owned: bool) -> None:
        #: The backend (type and options) this session belongs to.
        self.backend = backend
        #: The live framework object: an event loop, an IOLoop, a reactor or a hub.
        self.native = native
        #: True if ``polyloop.run`` made the loop (and disposes of it).
        self.owned = owned
        #: A number unique in this process (``repr`` shows it).
        self.id = next(_ids)
        self.native_tls = backend.native_tls
        self._ending = False
        self._closed = False
        self._close_hooks: list[Callable[[Session], object]] = []
        self._tasks: set[Task[Any]] = set()
        self._servers: set[Server] = set()
        self._transports: set[BaseTransport] = set()
        self._timers: set[_Timer] = set()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._thread_id = threading.get_native_id()  # the OS thread, also after patch_all()
        self._sentinel: Any = None
        #: A context in which this session is current: an owned loop runs inside it, and
        #: callbacks from other threads run in a copy of it (``self.context.copy().run``:
        #: a context cannot be entered twice at once).
        self.context = contextvars.copy_context()
        self.context.run(_session_var.set, self)
        self.context.run(_task_var.set, None)  # the creator's task is not ours

    def __repr__(self) -> str:
        how = "owned" if self.owned else "borrowed"
        state = " closed" if self._closed else ""
        return f"<polyloop {self.name} session #{self.id}, {how}{state}>"

    # --- identity and lifecycle ---

    @property
    def closed(self) -> bool:
        """True once the session has ended (its ``on_close`` hooks have run)."""
        return self._closed

    def on_close(self, fn: Callable[[Session], object]) -> None:
        """Call ``fn(session)`` once, when the session ends (at once if it has)."""
        if self._closed:
            fn(self)
        else:
            self._close_hooks.append(fn)

    async def aclose(self) -> None:
        """End a borrowed session: cancel its tasks, close its servers and connections,
        run the ``on_close`` hooks. The host's loop keeps running; the next polyloop call
        on it gets a new session. (An owned session ends when ``run`` does.)"""
        if self.owned:
            raise RuntimeError("an owned session ends when polyloop.run returns")
        await self._end()

    async def shutdown(self, grace: float = 5.0) -> None:
        """Wind down gracefully: stop accepting (close every server), let the open
        connections end by themselves for up to ``grace`` seconds, then close the rest
        cleanly -- flushed, the peer reads EOF, not a reset -- and give them one more
        second to flush. Tasks are left alone; the session stays open. For a server's
        SIGTERM (``polyloop serve``)."""
        grace = _errors.check_sleep(grace)
        for server in list(self._servers):
            server.close()
        for server in list(self._servers):
            await server.wait_closed()
        deadline = self.time() + grace
        while self._open_streams() and self.time() < deadline:
            await self.sleep(min(0.01, max(0.0, deadline - self.time())))
        for transport in self._open_streams():
            if not transport.is_closing():
                transport.close()
        deadline = self.time() + 1.0
        while self._open_streams() and self.time() < deadline:
            await self.sleep(0.01)

    def _open_streams(self) -> list[Any]:
        """Stream connections not yet lost, as objects with ``close``/``is_closing`` (a
        backend that does not track its transports here overrides this)."""
        return [t for t in self._transports if isinstance(t, Transport)]

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self!r} has ended: use polyloop.current_backend() again")

    async def _end(self) -> None:
        """Dispose of what this session opened, while the loop still runs.

        Tasks first, so that a handler sees ``Cancelled`` rather than its connection
        vanishing under it; then servers; then every connection still open (aborted: the
        peer sees a reset); then the hooks.
        """
        if self._ending:
            return
        self._ending = True
        me = current_task()
        tasks = [t for t in self._tasks if t is not me]
        for task in tasks:
            task.cancel()
        deadline = self.time() + DISPOSE_GRACE
        while any(not t.done() for t in tasks) and self.time() < deadline:
            await self.sleep(0.001)
        for task in tasks:
            if not task.done():
                self._task_kill(task)
        for server in list(self._servers):
            server.close()
        for server in list(self._servers):
            await server.wait_closed()
        self._abort_transports()
        for _ in range(20):  # connection_lost callbacks come on later iterations
            await self.sleep(0)
            if not self._transports and not self._tasks - {me}:
                break
        await self.sleep(0)
        for timer in list(self._timers):
            timer.cancel()
        self._finish_end()

    def _finish_end(self) -> None:
        """The last of ``_end``, also reached when a loop dies under us."""
        self._ending = True
        self._closed = True
        if not self.owned:
            unregister_host(self)
        if self._pool is not None:
            self._pool.shutdown(wait=self.owned, cancel_futures=True)
            self._pool = None
        hooks, self._close_hooks = self._close_hooks, []
        for fn in hooks:
            try:
                fn(self)
            except Exception:
                log.exception("polyloop: on_close hook %r raised", fn)

    # --- tier 1: what every backend implements ---

    @abc.abstractmethod
    def time(self) -> float:
        """The loop's monotonic clock, in seconds."""

    @abc.abstractmethod
    def call_soon(self, fn: Callable[..., object], *args: Any) -> Handle:
        """Call ``fn(*args)`` on the next loop iteration, in FIFO order. An exception it
        raises is logged; the loop goes on.

        It runs in a copy of the caller's context, as asyncio's ``call_soon`` does (the
        same holds for ``call_later`` and readiness callbacks): an owned loop runs inside
        ``self.context``, so there every callback finds this session; on a borrowed loop
        the callback finds it by detection."""

    @abc.abstractmethod
    def _call_later(
        self, delay: float, fn: Callable[..., object], args: tuple[Any, ...]
    ) -> Handle:
        """``call_later`` with ``delay`` checked: finite and >= 0."""

    @abc.abstractmethod
    def call_soon_threadsafe(self, fn: Callable[..., object], *args: Any) -> None:
        """``call_soon`` from any thread; wakes the loop."""

    @abc.abstractmethod
    def add_reader(self, fd: Any, fn: Callable[[], object]) -> None:
        """Call ``fn()`` whenever ``fd`` (a socket or file descriptor) is readable."""

    @abc.abstractmethod
    def remove_reader(self, fd: Any) -> bool:
        """Stop watching ``fd`` for reading; True if it was watched."""

    @abc.abstractmethod
    def add_writer(self, fd: Any, fn: Callable[[], object]) -> None:
        """Call ``fn()`` whenever ``fd`` is writable."""

    @abc.abstractmethod
    def remove_writer(self, fd: Any) -> bool:
        """Stop watching ``fd`` for writing; True if it was watched."""

    # --- scheduling ---

    def call_later(self, delay: float, fn: Callable[..., object], *args: Any) -> Handle:
        """Call ``fn(*args)`` after ``delay`` seconds (negative: as soon as possible;
        infinite: never). ``ValueError`` for NaN, ``TypeError`` for a non-number."""
        delay = _errors.check_delay(delay)
        if delay == math.inf:
            return _NeverHandle()
        timer = _Timer(self, fn, args)
        timer.handle = self._call_later(delay, timer.fire, ())
        self._timers.add(timer)
        return timer

    def _callback_context(self) -> contextvars.Context:
        """For backends whose framework does not copy contexts: what a callback scheduled
        now runs in -- a copy of the caller's context, naming this session (a borrowed
        loop's callbacks run where detection may not find it: gevent's hub)."""
        ctx = contextvars.copy_context()
        if ctx.get(_session_var) is not self:
            ctx.run(_session_var.set, self)
        return ctx

    def _call_soon_in(
        self, context: contextvars.Context | None, fn: Callable[..., object], arg: Any
    ) -> None:
        # Future callbacks: in the registrant's context if it gave one.
        if context is None:
            self.call_soon(fn, arg)
        else:
            self.call_soon(context.run, fn, arg)

    # --- tasks and futures ---

    def create_future(self) -> Future[Any]:
        """A future that any coroutine on any session can await."""
        return Future(self)

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str | None = None) -> Task[T]:
        """Start running ``coro`` concurrently; ``TypeError`` unless it is a coroutine."""
        check_coroutine(coro)
        self._check_open()
        task = self._new_task(coro, name)
        if not task.done():
            self._tasks.add(task)
        return task

    def _new_task(self, coro: Coroutine[Any, Any, T], name: str | None) -> Task[T]:
        """Tier 2: a task on the framework's own runner (default: the core's driver)."""
        return CoroutineTask(self, coro, name)

    # CoroutineTask's hooks; a backend whose coroutines must run elsewhere (gevent's
    # greenlets) overrides them.

    def _task_start(self, task: CoroutineTask[Any]) -> None:
        """Schedule the first step of a new task."""
        self.call_soon(task._step)

    def _task_wake(self, task: CoroutineTask[Any]) -> None:
        """Schedule the next step of a task whose wait is over."""
        self.call_soon(task._step)

    def _task_interrupt(self, task: CoroutineTask[Any]) -> None:
        """``cancel()`` came while ``task`` is inside a step: it is cancelling itself (the
        flag is read at its next step), or it is parked inside a framework call made from
        its coroutine (gevent), which only the backend can interrupt."""
        return  # nothing to do where coroutines only ever wait on what the core knows

    def _task_kill(self, task: Task[Any]) -> None:
        """A task ignored cancellation at the end of the session: stop it for good."""
        task._kill()

    def _wait_foreign(self, yielded: Any, wake: Callable[[], None]) -> Any:
        """A task's coroutine yielded ``yielded``, not a polyloop future: wait on it and
        call ``wake()`` when done; return an object with ``cancel()``. ``TypeError`` if the
        backend cannot wait on it (the error is raised at the coroutine's ``await``)."""
        raise TypeError(
            f"the {self.name} backend cannot await {yielded!r}: await polyloop awaitables"
            " (futures, tasks, polyloop.sleep) or the framework's own"
        )

    def _suspend_foreign(self, fut: Future[Any]) -> Generator[Any, Any, None]:
        """Suspend a coroutine driven by the framework's own runner until ``fut`` is done
        (the Twisted session yields a ``Deferred``). See ``polyloop._futures``, Rule 2."""
        raise RuntimeError(
            f"{fut!r} was awaited by a coroutine runner the {self.name} backend does not"
            " know; run it with spawn() or the framework's own task API"
        )

    def _native_error(self, exc: BaseException) -> BaseException:
        """A framework's exception as polyloop code should see it (``Cancelled`` ...)."""
        return exc

    async def sleep(self, seconds: float) -> None:
        """Suspend the caller for ``seconds`` (0 yields to the loop once; ``inf``: for
        ever). ``ValueError`` for a negative or NaN delay, ``TypeError`` for a non-number."""
        seconds = _errors.check_sleep(seconds)
        if not seconds and _known_runner():
            # A bare yield is one turn of the loop for asyncio's Task and for the core's
            # driver, without a future and a callback (Twisted's runner would not
            # suspend on it: there the future below is used).
            await _bare_yield()
            return
        fut = self.create_future()
        handle = self.call_later(seconds, _set_none, fut) if seconds else None
        if handle is None:
            self.call_soon(_set_none, fut)
        try:
            await fut
        finally:
            if handle is not None:
                handle.cancel()

    async def run_in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in a worker thread and return its result (or raise its error).

        The worker runs in a copy of the caller's context, so ``polyloop.from_thread``
        and ``polyloop.call_soon_threadsafe`` there reach this session.
        """
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="polyloop")
        fut = self.create_future()
        ctx = self._callback_context()  # names this session: from_thread reaches it
        work = self._pool.submit(ctx.run, fn, *args)
        work.add_done_callback(lambda w: self.call_soon_threadsafe(_deliver, fut, w))
        try:
            return await fut  # type: ignore[no-any-return]
        except Cancelled:
            work.cancel()
            raise

    # --- resolution ---

    async def getaddrinfo(
        self,
        host: str | None,
        port: int | str | None,
        *,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[tuple[Any, Any, int, str, Any]]:
        """``socket.getaddrinfo`` without blocking the loop: a numeric host is resolved
        at once, a name by the framework's resolver or in a worker thread."""
        args = (host, port, family, type, proto, flags)
        found = _sockets.numeric_getaddrinfo(*args)  # type: ignore[arg-type]
        if found is not None:
            return found
        return await self._resolve(*args)  # type: ignore[arg-type]

    async def _resolve(
        self, host: str | None, port: int, family: int, type_: int, proto: int, flags: int
    ) -> list[tuple[Any, Any, int, str, Any]]:
        """Tier 2: resolve a name (default: ``getaddrinfo`` in a worker thread)."""
        return await self.run_in_thread(
            _sockets.blocking_getaddrinfo, host, port, family, type_, proto, flags
        )

    # --- networking: the public methods check and do the generic work ---

    async def listen_tcp(
        self,
        protocol_factory: Callable[[], StreamProtocol],
        host: str | None = "127.0.0.1",
        port: int = 0,
        *,
        ssl: _ssl.SSLContext | None = None,
        backlog: int = 128,
        ssl_handshake_timeout: float | None = None,
    ) -> Server:
        """Listen on ``host:port`` (``None``: all interfaces); ``port=0`` picks one.

        Every address ``host`` resolves to is bound, all on one port. ``OSError`` with
        ``errno.EADDRINUSE`` if the address is taken. With ``ssl``, a client whose TLS
        handshake is not done within ``ssl_handshake_timeout`` seconds (default 60) is
        dropped, before the protocol is made.
        """
        _errors.check_callable("protocol_factory", protocol_factory)
        _errors.check_host(host, allow_none=True)
        _errors.check_port(port, allow_zero=True)
        _errors.check_ssl(ssl, server_side=True)
        backlog = _errors.check_backlog(backlog)
        self._check_open()
        infos = await self.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        socks = _sockets.bind_tcp(infos, backlog)
        return await self._start_server(
            socks, protocol_factory, ssl, None, backlog, ssl_handshake_timeout
        )

    async def listen_unix(
        self,
        protocol_factory: Callable[[], StreamProtocol],
        path: str,
        *,
        ssl: _ssl.SSLContext | None = None,
        backlog: int = 128,
        ssl_handshake_timeout: float | None = None,
    ) -> Server:
        """Listen on a Unix socket at ``path``; ``close()`` removes the socket file.

        A stale socket file at ``path`` (nothing accepts on it) is removed first; one that
        a live server listens on gives ``OSError`` with ``errno.EADDRINUSE``.
        """
        _errors.check_callable("protocol_factory", protocol_factory)
        path = _errors.check_path(path)
        _errors.check_ssl(ssl, server_side=True)
        backlog = _errors.check_backlog(backlog)
        self._check_open()
        _errors.clear_stale_unix_socket(path)
        sock = _sockets.bind_unix(path, backlog)
        return await self._start_server(
            [sock], protocol_factory, ssl, path, backlog, ssl_handshake_timeout
        )

    async def _start_server(
        self,
        socks: list[socket.socket],
        protocol_factory: Callable[[], StreamProtocol],
        ssl: _ssl.SSLContext | None,
        path: str | None,
        backlog: int,
        handshake_timeout: float | None = None,
    ) -> Server:
        if handshake_timeout is not None:
            handshake_timeout = _errors.check_sleep(handshake_timeout)
        factory = self._tls_factory(
            _safe_factory(protocol_factory), ssl, server_side=True, timeout=handshake_timeout
        )
        # Read now: each acceptor owns its socket, and may close it when it likes.
        addresses: list[Any] = [path] if path is not None else [s.getsockname() for s in socks]
        acceptors: list[Acceptor] = []
        try:
            for sock in socks:
                acceptors.append(
                    await self._serve(sock, factory, self._native(ssl), backlog, handshake_timeout)
                )
        except BaseException:
            for acceptor in acceptors:
                acceptor.close()
            for sock in socks[len(acceptors) :]:
                sock.close()
            raise
        server = Server(self, addresses, acceptors, path)
        self._servers.add(server)
        return server

    async def connect_tcp(
        self,
        protocol_factory: Callable[[], P],
        host: str,
        port: int,
        *,
        ssl: _ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> tuple[Transport, P]:
        """Connect to ``host:port``; returns once connected (and TLS handshaken).

        Each address ``host`` resolves to is tried in turn. ``ConnectionRefusedError`` if
        nothing listens; ``ssl.SSLCertVerificationError`` if the server's certificate does
        not verify. The protocol is made, and its ``connection_made`` called, before this
        returns; if either raises, the connection is aborted and the error raised here.
        """
        _errors.check_callable("protocol_factory", protocol_factory)
        _errors.check_host(host, allow_none=False)
        _errors.check_port(port, allow_zero=False)
        _errors.check_ssl(ssl, server_hostname, server_side=False)
        self._check_open()
        hostname = server_hostname if server_hostname is not None else host
        infos = await self.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        errors: list[OSError] = []
        for family, type_, proto, _, addr in _sockets.unique(infos):
            try:
                sock = socket.socket(family, type_, proto)
            except OSError as exc:
                errors.append(exc)
                continue
            try:
                sock.setblocking(False)
                _sockets.set_nodelay(sock)
                await self._sock_connect(sock, addr)
            except OSError as exc:
                sock.close()
                errors.append(exc)
                continue
            except BaseException:
                sock.close()
                raise
            return await self._connected(sock, protocol_factory, ssl, hostname)
        raise _sockets.pick_connect_error(errors)

    async def connect_unix(
        self,
        protocol_factory: Callable[[], P],
        path: str,
        *,
        ssl: _ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> tuple[Transport, P]:
        """Connect to the Unix socket at ``path``.

        ``FileNotFoundError`` if there is no such file, ``ConnectionRefusedError`` if
        nothing listens on it.
        """
        _errors.check_callable("protocol_factory", protocol_factory)
        path = _errors.check_path(path)
        _errors.check_ssl(ssl, server_hostname, server_side=False)
        if ssl is not None and server_hostname is None and ssl.check_hostname:
            raise ValueError("server_hostname is required for TLS over a Unix socket")
        self._check_open()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await self._sock_connect(sock, path)
        except BaseException:
            sock.close()
            raise
        return await self._connected(sock, protocol_factory, ssl, server_hostname)

    async def _connected(
        self,
        sock: socket.socket,
        protocol_factory: Callable[[], P],
        ssl: _ssl.SSLContext | None,
        server_hostname: str | None,
    ) -> tuple[Transport, P]:
        try:
            protocol = protocol_factory()
        except BaseException:
            sock.close()
            raise
        if ssl is None or self.native_tls:
            transport = await self._connect_stream(sock, lambda: protocol, ssl, server_hostname)
            return transport, protocol
        from ._tls import TLSProtocol

        tls = TLSProtocol(self, protocol, ssl, False, server_hostname)
        raw = await self._connect_stream(sock, lambda: tls, None, None)
        try:
            await tls.handshake_done
        except BaseException:
            raw.abort()
            raise
        return tls.app_transport, protocol

    async def open_udp(
        self,
        protocol_factory: Callable[[], DP],
        local_addr: tuple[str, int] | None = None,
        remote_addr: tuple[str, int] | None = None,
    ) -> tuple[DatagramTransport, DP]:
        """Open a UDP endpoint bound to ``local_addr`` and/or connected to ``remote_addr``."""
        _errors.check_callable("protocol_factory", protocol_factory)
        if local_addr is None and remote_addr is None:
            raise ValueError("open_udp needs local_addr, remote_addr or both")
        for addr, zero in ((local_addr, True), (remote_addr, False)):
            if addr is not None:
                if not isinstance(addr, tuple) or len(addr) != 2:
                    raise TypeError("addresses must be (host, port) tuples")
                _errors.check_host(addr[0], allow_none=False)
                _errors.check_port(addr[1], allow_zero=zero)
        self._check_open()
        family = 0
        remote = local = None
        if remote_addr is not None:
            infos = await self.getaddrinfo(*remote_addr, type=socket.SOCK_DGRAM)
            if local_addr is not None:
                local_infos = await self.getaddrinfo(*local_addr, type=socket.SOCK_DGRAM)
                families = {i[0] for i in local_infos}
                infos = [i for i in infos if i[0] in families] or infos
            family, remote = infos[0][0], infos[0][4]
        if local_addr is not None:
            infos = await self.getaddrinfo(
                *local_addr, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
            )
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
                remote = sock.getpeername()
            protocol = protocol_factory()
        except BaseException:
            sock.close()
            raise
        transport = await self._open_datagram(sock, protocol, remote)
        return transport, protocol

    # --- TLS on a live connection ---

    async def start_tls(
        self,
        transport: Transport,
        protocol: StreamProtocol,
        sslcontext: _ssl.SSLContext,
        *,
        server_side: bool = False,
        server_hostname: str | None = None,
        ssl_handshake_timeout: float | None = None,
        _leftover: bytes = b"",
    ) -> Transport:
        """Upgrade a plain connection to TLS (STARTTLS) and return the TLS transport.

        ``protocol`` (the connection's) keeps its identity: it is driven by the new
        transport from now on, and its ``connection_made`` is not called again. Raises
        the handshake's ``ssl.SSLError`` (the connection is then aborted), or
        ``TimeoutError`` after ``ssl_handshake_timeout`` seconds (default 60). The same
        on every backend: the core's TLS layer runs over the backend's transport.
        """
        _errors.check_ssl(sslcontext, server_hostname, server_side=server_side)
        if sslcontext is None:
            raise TypeError("start_tls needs an ssl.SSLContext")
        if not server_side and server_hostname is None and sslcontext.check_hostname:
            raise ValueError("server_hostname is required to verify the server")
        from ._tls import TLSProtocol

        tls = TLSProtocol(
            self, protocol, sslcontext, server_side, server_hostname,
            handshake_timeout=ssl_handshake_timeout, call_connection_made=False,
        )  # fmt: skip
        transport.set_protocol(tls)
        tls.connection_made(transport)
        if _leftover:
            tls.data_received(_leftover)
        try:
            await tls.handshake_done
        except BaseException:
            transport.abort()
            raise
        return tls.app_transport

    # --- tier 2: adopting sockets (defaults: the core's socket transports) ---

    async def _sock_connect(self, sock: socket.socket, addr: Any) -> None:
        """Connect a non-blocking socket; raise the builtin ``OSError`` subclass."""
        code = sock.connect_ex(addr)
        if code in (errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
            fut = self.create_future()
            self.add_writer(sock, lambda: _set_none(fut))
            try:
                await fut
            finally:
                self.remove_writer(sock)
            code = _sockets.connect_error(sock)
        if code:
            raise _sockets.oserror(code)

    async def _serve(
        self,
        sock: socket.socket,
        factory: Callable[[], StreamProtocol],
        ssl: _ssl.SSLContext | None,
        backlog: int,
        handshake_timeout: float | None = None,
    ) -> Acceptor:
        """Accept connections on ``sock`` (listening already, with ``backlog``; the acceptor
        now owns it), each adopted with ``factory()`` as its protocol. ``ssl`` only if
        ``native_tls``, with ``handshake_timeout`` (``None``: 60 s) for each handshake. An
        error in ``connection_made`` is logged and the connection aborted; the acceptor
        goes on."""
        from ._sockettransport import SocketAcceptor

        return SocketAcceptor(self, sock, factory)

    def _adopt_stream(
        self, sock: socket.socket, factory: Callable[[], StreamProtocol]
    ) -> Transport:
        """Wrap a connected stream socket; ``connection_made`` is called before it returns."""
        from ._sockettransport import SocketTransport

        return SocketTransport(self, sock, factory)

    async def _connect_stream(
        self,
        sock: socket.socket,
        factory: Callable[[], StreamProtocol],
        ssl: _ssl.SSLContext | None,
        server_hostname: str | None,
    ) -> Transport:
        """A connected client socket: its transport, connected (and, with ``ssl``, which
        only a ``native_tls`` backend gets, handshaken). The transport owns ``sock``."""
        return self._adopt_stream(sock, factory)

    async def _open_datagram(
        self, sock: socket.socket, protocol: DatagramProtocol, remote: Any
    ) -> DatagramTransport:
        """Wrap a bound (and, if ``remote``, connected) UDP socket."""
        from ._sockettransport import SocketDatagramTransport

        return SocketDatagramTransport(self, sock, protocol, remote)

    # --- what is open (for the end of the session) ---

    def _abort_transports(self) -> None:
        """Abort every connection still open: also one flushing to a peer that does not
        read (a backend whose transports are not tracked here overrides this)."""
        for transport in list(self._transports):
            transport.abort()

    def _native_gone(self) -> bool:
        """For a borrowed session: whether its host object died without telling us (an
        asyncio loop closed without ``shutdown_asyncgens``)."""
        return False

    def _track(self, transport: BaseTransport) -> None:
        """For transports: open, until ``_untrack`` when ``connection_lost`` has run."""
        self._transports.add(transport)

    def _untrack(self, transport: BaseTransport) -> None:
        self._transports.discard(transport)

    # --- TLS plumbing ---

    def _native(self, ssl: _ssl.SSLContext | None) -> _ssl.SSLContext | None:
        return ssl if self.native_tls else None

    def _tls_factory(
        self,
        factory: Callable[[], StreamProtocol],
        ssl: _ssl.SSLContext | None,
        *,
        server_side: bool,
        timeout: float | None = None,
    ) -> Callable[[], StreamProtocol]:
        if ssl is None or self.native_tls:
            return factory
        from ._tls import TLSProtocol

        def make() -> StreamProtocol:
            return TLSProtocol(
                self, None, ssl, server_side, None, handshake_timeout=timeout, app_factory=factory
            )

        return make


def end_with_asyncio_loop(session: Session) -> None:
    """For a session borrowing an asyncio loop: end it when the loop shuts down.

    asyncio has no "loop closing" hook, but ``loop.shutdown_asyncgens()`` (called by
    ``asyncio.run``, ``asyncio.Runner``, uvloop and pytest-asyncio, while the loop still
    runs) closes every async generator first iterated on the loop. So the session keeps
    one, suspended, and ends in its ``finally``: the session's connections are closed
    while the loop can still deliver ``connection_lost``. Must be called on the loop's
    thread while it runs (its ``firstiter`` hook registers the generator).
    """

    async def sentinel() -> Any:
        try:
            yield
        finally:
            await session._end()

    agen = sentinel()
    try:
        agen.asend(None).send(None)
    except StopIteration:
        pass
    session._sentinel = agen  # the loop only holds it weakly


@types.coroutine
def _bare_yield() -> Generator[None, None, None]:
    yield


def _known_runner() -> bool:
    """Whether a polyloop task or an asyncio task runs the caller (not a foreign runner)."""
    if current_task() is not None:
        return True
    loop = asyncio._get_running_loop()
    return loop is not None and asyncio.current_task(loop) is not None


def _set_none(fut: Future[Any]) -> None:
    if not fut.done():
        fut.set_result(None)


def _deliver(fut: Future[Any], work: concurrent.futures.Future[Any]) -> None:
    if fut.done():
        return
    if work.cancelled():
        fut.cancel()
        return
    exc = work.exception()
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(work.result())


def in_thread(session: Session) -> bool:
    """Whether the caller runs on ``session``'s loop thread (for ``from_thread``)."""
    return session._thread_id == threading.get_native_id()
