"""The backend contract: what a backend's session implements, in one file.

Rule: every name a backend defines is here, public, with its promise and its default;
nothing else in the core may be overridden (``Session.__init_subclass__`` refuses it, and
names the hook to use instead). A backend subclasses ``polyloop.lowlevel.Session``, which
is this contract plus what the core builds on it (tasks, futures, timeouts, networking,
the session's lifecycle).

- **Tier 1, required** (Twisted's ``IReactorFDSet`` shape): ``time``, ``call_soon``,
  ``start_timer``, ``call_soon_threadsafe``, ``add_reader``/``remove_reader``/
  ``add_writer``/``remove_writer``. With these alone the core runs tasks
  (``CoroutineTask``), TCP, Unix sockets, UDP and TLS on its own socket transports.
- **Tier 2, optional**: a framework with transports of its own adopts the sockets the core
  bound or connected (``serve_socket``, ``adopt_stream``, ``adopt_client_stream``,
  ``adopt_datagram``); a framework with its own task runner, thread pool, resolver or
  awaitables plugs them in (``new_task``, ``run_in_thread``, ``resolve``,
  ``wait_native``, ``suspend_foreign``, ``native_error``, ``driver_class``); a session
  that keeps its own record of transports reports it (``open_streams``,
  ``abort_transports``); pipes and child processes (``adopt_read_pipe``,
  ``adopt_write_pipe``, ``subprocess``: the core's run on readiness); and the end of a
  session releases what it holds (``dispose``).
"""

from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import contextvars
import errno
import socket
import ssl as _ssl
from collections.abc import Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar, runtime_checkable

from . import _sockets
from ._acceptor import SocketAcceptor
from ._context import session_var
from ._errors import Cancelled
from ._futures import Future, Task
from ._pipes import PipeReadTransport, PipeWriteTransport, ReadTransport, WriteTransport
from ._protocols import DatagramProtocol
from ._protocols import Protocol as StreamProtocol
from ._sockettransport import SocketDatagramTransport, SocketTransport
from ._subprocess import SubprocessProtocol, SubprocessTransport, spawn_core
from ._tasks import CoroutineTask, TaskDriver
from ._transports import DatagramTransport, Transport

if TYPE_CHECKING:
    from ._backend import Backend
    from ._lifecycle import Resources

__all__ = ["Acceptor", "Callback", "Handle", "SessionContract"]

T = TypeVar("T")


@runtime_checkable
class Handle(Protocol):
    """A scheduled call (``call_soon``/``call_later``)."""

    def cancel(self) -> None:
        """Don't run it, if it has not run yet."""


@runtime_checkable
class Acceptor(Protocol):
    """For backends: what ``serve_socket`` returns for one listening socket."""

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


class SessionContract(abc.ABC):
    """The hooks of a session, tier 1 (abstract) and tier 2 (with defaults)."""

    #: The backend's name, as in ``backend="asyncio"``.
    name: ClassVar[str] = "?"
    #: Where the steps of the core's tasks run (gevent: a greenlet per task).
    driver_class: ClassVar[type[TaskDriver]] = TaskDriver

    # Set by Session.__init__ (``polyloop._session``).
    backend: Backend
    context: contextvars.Context
    resources: Resources
    driver: TaskDriver
    native_tls: bool
    _pool: concurrent.futures.ThreadPoolExecutor | None

    # --- tier 1: required ---

    @abc.abstractmethod
    def time(self) -> float:
        """The loop's monotonic clock, in seconds (the one ``start_timer`` uses)."""

    @abc.abstractmethod
    def call_soon(self, fn: Callable[..., object], *args: Any) -> Handle:
        """Call ``fn(*args)`` on the next loop iteration, in FIFO order, never inline;
        return a handle with ``cancel()``. An exception it raises is logged; the loop goes
        on.

        It runs in a copy of the caller's context, as asyncio's ``call_soon`` does (the
        same holds for ``start_timer`` and readiness callbacks): an owned loop runs inside
        ``self.context``, so there every callback finds this session; on a borrowed loop
        the callback finds it by detection."""

    @abc.abstractmethod
    def start_timer(
        self, delay: float, fn: Callable[..., object], args: tuple[Any, ...]
    ) -> Handle:
        """Call ``fn(*args)`` after ``delay`` seconds, which the core has checked (finite and
        >= 0) -- the core's ``call_later`` keeps its own record of the timers it sets."""

    @abc.abstractmethod
    def call_soon_threadsafe(self, fn: Callable[..., object], *args: Any) -> None:
        """``call_soon`` from any thread; wakes the loop (also one blocked in its poll).
        Calls from one thread run in the order made, in a copy of ``self.context``. After
        the session's end the core raises ``RuntimeError`` before this is reached (and
        for an error this raises while the session ends)."""

    @abc.abstractmethod
    def add_reader(self, fd: Any, fn: Callable[[], object]) -> None:
        """Call ``fn()`` whenever ``fd`` (an int, or an object with ``fileno()``) is
        readable, until removed; one callback per fd and direction. ``ValueError`` for what
        is not an open fd (``lowlevel.fd_of``)."""

    @abc.abstractmethod
    def remove_reader(self, fd: Any) -> bool:
        """Stop watching ``fd`` for reading -- the callback never runs again, also if the
        loop saw the fd ready in this round; True if it was watched."""

    @abc.abstractmethod
    def add_writer(self, fd: Any, fn: Callable[[], object]) -> None:
        """Call ``fn()`` whenever ``fd`` is writable (as ``add_reader``)."""

    @abc.abstractmethod
    def remove_writer(self, fd: Any) -> bool:
        """Stop watching ``fd`` for writing (as ``remove_reader``)."""

    # --- tier 2: sockets the core bound or connected ---

    async def serve_socket(
        self,
        sock: socket.socket,
        factory: Callable[[], StreamProtocol],
        ssl: _ssl.SSLContext | None,
        backlog: int,
        handshake_timeout: float | None,
    ) -> Acceptor:
        """Accept connections on ``sock`` (listening already, with ``backlog``; the acceptor
        now owns it), each adopted with ``factory()`` as its protocol. ``ssl`` only if
        ``native_tls``, with ``handshake_timeout`` (``None``: 60 s) for each handshake. An
        error in ``connection_made`` is logged and the connection aborted; the acceptor
        goes on. Default: the core's ``SocketAcceptor`` on ``add_reader``."""
        return SocketAcceptor(self, sock, factory)  # type: ignore[arg-type]

    def adopt_stream(
        self, sock: socket.socket, factory: Callable[[], StreamProtocol]
    ) -> Transport:
        """Wrap a connected stream socket (the transport owns it); make the protocol and
        call its ``connection_made`` before returning; if that raises, abort and re-raise.
        Default: the core's ``SocketTransport``."""
        return SocketTransport(self, sock, factory)  # type: ignore[arg-type]

    async def adopt_client_stream(
        self,
        sock: socket.socket,
        factory: Callable[[], StreamProtocol],
        ssl: _ssl.SSLContext | None,
        server_hostname: str | None,
    ) -> Transport:
        """A connected client socket: its transport, connected (and, with ``ssl``, which
        only a ``native_tls`` backend gets, handshaken). Default: ``adopt_stream``."""
        return self.adopt_stream(sock, factory)

    async def adopt_datagram(
        self, sock: socket.socket, protocol: DatagramProtocol, remote: Any
    ) -> DatagramTransport:
        """Wrap a bound (and, if ``remote``, connected) UDP socket. Default: the core's
        ``SocketDatagramTransport``."""
        return SocketDatagramTransport(self, sock, protocol, remote)  # type: ignore[arg-type]

    async def sock_connect(self, sock: socket.socket, addr: Any) -> None:
        """Connect a non-blocking socket; raise the builtin ``OSError`` subclass.
        Default: ``connect_ex`` and ``add_writer``."""
        code = sock.connect_ex(addr)
        if code in (errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
            fut: Future[None] = Future(self)  # type: ignore[arg-type]
            self.add_writer(sock, lambda: None if fut.done() else fut.set_result(None))
            try:
                await fut
            finally:
                self.remove_writer(sock)
            code = _sockets.connect_error(sock)
        if code:
            raise _sockets.oserror(code)

    async def resolve(
        self, host: str | None, port: int, family: int, type_: int, proto: int, flags: int
    ) -> list[tuple[Any, Any, int, str, Any]]:
        """Resolve a *name* (numeric hosts never get here). Default: ``getaddrinfo`` in
        ``run_in_thread``."""
        return await self.run_in_thread(
            _sockets.blocking_getaddrinfo, host, port, family, type_, proto, flags
        )

    # --- tier 2: pipes and child processes ---

    async def adopt_read_pipe(self, pipe: Any, protocol: Any) -> ReadTransport:
        """Read from ``pipe`` (a file object or an int fd of a pipe, socket or character
        device, checked by the core; the transport owns it now) into ``protocol``: call
        its ``connection_made`` before returning (if it raises, abort and re-raise), then
        ``data_received``, ``eof_received`` and ``connection_lost(None)`` at EOF. Default:
        the core's ``PipeReadTransport`` on ``add_reader``."""
        return PipeReadTransport(self, pipe, protocol)  # type: ignore[arg-type]

    async def adopt_write_pipe(self, pipe: Any, protocol: Any) -> WriteTransport:
        """Write to ``pipe`` through ``protocol``'s transport, with flow control and
        ``write_eof``; ``connection_lost`` when the reader closes its end. Default: the
        core's ``PipeWriteTransport`` on ``add_writer``/``add_reader``."""
        return PipeWriteTransport(self, pipe, protocol)  # type: ignore[arg-type]

    async def subprocess(
        self,
        protocol: SubprocessProtocol,
        args: Any,
        shell: bool,
        stdin: Any,
        stdout: Any,
        stderr: Any,
        popen_kwargs: dict[str, Any],
    ) -> SubprocessTransport:
        """Start a child (``args`` as ``subprocess.Popen`` takes them, with ``shell``; the
        core has checked them) driving ``protocol`` in the order ``SubprocessProtocol``
        documents; ``connection_made`` before returning. Raise ``Popen``'s errors
        (``FileNotFoundError``). Default: the core's, on ``subprocess.Popen``, the pipe
        hooks above and a pidfd (or a ``waitpid`` thread) to reap the child."""
        return await spawn_core(
            self,  # type: ignore[arg-type]
            protocol, args, shell, stdin, stdout, stderr, popen_kwargs,
        )  # fmt: skip

    # --- tier 2: tasks, threads, foreign awaitables ---

    def new_task(self, coro: Coroutine[Any, Any, T], name: str | None) -> Task[T]:
        """A task on the framework's own runner. Default: the core's ``CoroutineTask``
        (sessions on an asyncio loop use ``lowlevel.AsyncioTask``)."""
        return CoroutineTask(self, coro, name)  # type: ignore[arg-type]

    async def run_in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in a worker thread and return its result (or raise its error).

        The worker runs in a copy of the caller's context that names this session, so
        ``polyloop.from_thread`` and ``polyloop.call_soon_threadsafe`` there reach it.
        Default: a thread pool of the session's own, shut down by ``dispose()``."""
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="polyloop")
        fut: Future[T] = Future(self)  # type: ignore[arg-type]
        work = self._pool.submit(self.callback_context().run, fn, *args)
        work.add_done_callback(lambda w: self.call_soon_threadsafe(_deliver, fut, w))
        try:
            return await fut
        except Cancelled:
            work.cancel()
            raise

    def wait_native(self, awaitable: Any, wake: Callable[[], None]) -> Any:
        """A core task's coroutine yielded ``awaitable``, not a polyloop future (it awaited
        a framework's own awaitable): wait on it, call ``wake()`` when it is done (inline
        is allowed), and return an object with ``cancel()``. ``TypeError`` if the backend
        cannot wait on it: it is raised at the coroutine's ``await``."""
        raise TypeError(
            f"the {self.name} backend cannot await {awaitable!r}: await polyloop awaitables"
            " (futures, tasks, polyloop.sleep) or the framework's own"
        )

    def suspend_foreign(self, fut: Future[Any]) -> Generator[Any, Any, None]:
        """Suspend a coroutine that the framework's *own* runner drives until ``fut`` is
        done: yield what that runner waits on (the Twisted session yields a ``Deferred``).
        If the runner cancels that wait, cancel ``fut`` and raise ``polyloop.Cancelled``.

        The core calls it when neither its own driver nor an asyncio task runs the
        caller (a runner that throws into, or does not understand, foreign yields, such as
        trio's, never sees the future), and when a runner sent the future back unawaited
        (Twisted's). See ``docs/writing-a-backend.md``, "Foreign runners"."""
        raise RuntimeError(
            f"{fut!r} was awaited by a coroutine runner the {self.name} backend does not"
            " know; run it with spawn() or the framework's own task API"
        )

    def knows_foreign_runners(self) -> bool:
        """Whether this backend implements ``suspend_foreign``."""
        return type(self).suspend_foreign is not SessionContract.suspend_foreign

    def native_error(self, exc: BaseException) -> BaseException:
        """A framework's exception as polyloop code should see it (``Cancelled`` for the
        framework's cancellation, builtin ``OSError`` subclasses, ...). Default: as is."""
        return exc

    def call_soon_in(
        self, context: contextvars.Context | None, fn: Callable[..., object], arg: Any
    ) -> None:
        """A future's done-callback ``fn(arg)``, in ``context`` if one is given (else as
        ``call_soon``). A backend may do it without a handle (asyncio passes ``context``
        to its loop)."""
        if context is None:
            self.call_soon(fn, arg)
        else:
            self.call_soon(context.run, fn, arg)

    # --- tier 2: what is open, and the end ---

    def asyncio_loop(self) -> asyncio.AbstractEventLoop | None:
        """The asyncio loop whose callbacks run this session's transport callbacks, if
        any: a ``Stream`` read by an asyncio task then waits on that loop's C-accelerated
        future. Default: ``native`` when it is an asyncio loop (sessions over one, like
        Tornado's, return theirs)."""
        loop = self.native  # type: ignore[attr-defined]
        return loop if isinstance(loop, asyncio.AbstractEventLoop) else None

    def host_gone(self) -> bool:
        """For a borrowed session: whether its host loop died without telling us (an
        asyncio loop closed without ``shutdown_asyncgens``)."""
        return False

    def open_streams(self) -> list[Any]:
        """Stream connections not yet lost, as objects with ``close``/``is_closing``
        (``shutdown`` closes them). Default: the transports in ``resources``."""
        return [t for t in self.resources.transports if isinstance(t, Transport)]

    def abort_transports(self) -> None:
        """Abort every connection still open: also one flushing to a peer that does not
        read. Default: the transports in ``resources``."""
        for transport in list(self.resources.transports):
            transport.abort()

    def dispose(self) -> None:
        """Release what the session itself holds, once, when it ends (after the core
        closed what users left open, before the ``on_close`` hooks). Extend it, and call
        ``super().dispose()``: the default shuts the default thread pool down."""
        if self._pool is not None:
            self._pool.shutdown(wait=getattr(self, "owned", True), cancel_futures=True)
            self._pool = None

    # --- for backends: not hooks ---

    def callback_context(self) -> contextvars.Context:
        """For backends whose framework does not copy contexts: what a callback scheduled
        now runs in -- a copy of the caller's context, naming this session (a borrowed
        loop's callbacks run where detection may not find it: gevent's hub)."""
        ctx = contextvars.copy_context()
        if ctx.get(session_var) is not self:
            ctx.run(session_var.set, self)  # type: ignore[arg-type]
        return ctx


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
