"""Module-level functions that dispatch to the session running the caller.

Rule: these are for control operations (connect, listen, sleep, spawn). Nothing on the
data path (``data_received`` -> ``write``) goes through here: transports talk to their
protocols directly. Arguments are checked before anything is spawned or scheduled.
"""

from __future__ import annotations

import inspect
import math
import ssl as _ssl
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from . import _context
from ._backend import Backend
from ._cancel import CancelScope
from ._context import current_backend
from ._errors import check_timeout
from ._futures import Future, Task
from ._protocols import DatagramProtocol, Protocol
from ._registry import load_backend
from ._session import Handle, Server
from ._transports import DatagramTransport, Transport

__all__ = [
    "call_later",
    "call_soon",
    "call_soon_threadsafe",
    "connect_tcp",
    "connect_unix",
    "create_future",
    "getaddrinfo",
    "getsockopt",
    "listen_tcp",
    "listen_unix",
    "open_udp",
    "run",
    "run_in_thread",
    "setsockopt",
    "sleep",
    "spawn",
    "start_tls",
    "time",
    "wait_for",
]

T = TypeVar("T")
P = TypeVar("P", bound=Protocol)
DP = TypeVar("DP", bound=DatagramProtocol)


def run(
    main: Callable[..., Awaitable[T]],
    *args: Any,
    backend: str | Backend | type[Backend] = "asyncio",
    handle_sigterm: bool = False,
    **options: Any,
) -> T:
    """Run ``main(*args)`` on a fresh loop of ``backend`` and return its result.

    ``backend`` is a name (``"asyncio"``, ``"twisted"``, ``"gevent"``, ``"tornado"``), a
    spec (``"asyncio:loop=uvloop"``, ``"my_pkg:MyBackend"``), a Backend class or instance.
    ``options`` go to the backend (``loop="uvloop"``, ``reactor="select"``). Inside a loop
    that is already running, await ``main`` instead: polyloop uses that loop (host mode).
    ``handle_sigterm=True``: SIGTERM cancels ``main`` so that its clean-up runs, then
    ``run`` raises ``SystemExit(143)`` (see ``Backend.run``).
    """
    if not callable(main):
        raise TypeError(
            "polyloop.run() takes an async function and its arguments, not"
            f" {type(main).__name__}: write run(main, arg), not run(main(arg))"
        )
    return load_backend(backend, **options).run(main, *args, handle_sigterm=handle_sigterm)


def time() -> float:
    """The running session's monotonic clock."""
    return current_backend().time()


def call_soon(fn: Callable[..., object], *args: Any) -> Handle:
    """Schedule ``fn(*args)`` on the running session."""
    return current_backend().call_soon(fn, *args)


def call_later(delay: float, fn: Callable[..., object], *args: Any) -> Handle:
    """Schedule ``fn(*args)`` after ``delay`` seconds on the running session."""
    return current_backend().call_later(delay, fn, *args)


def call_soon_threadsafe(fn: Callable[..., object], *args: Any) -> None:
    """Schedule ``fn(*args)`` on the caller's session, from its loop's thread or from a
    worker thread of ``run_in_thread`` (which runs in a copy of the caller's context).

    Any other thread has no session of its own: it calls the method of a session object
    it was given (``session.call_soon_threadsafe``), or uses ``polyloop.from_thread``.
    """
    session = _context._session_var.get(None)
    if session is None or session.closed:
        session = _context.current_or_none()
    if session is None:
        raise RuntimeError(
            "no polyloop session is known in this thread: call the method of the session"
            " object instead (session.call_soon_threadsafe(...), where session is"
            " polyloop.current_backend() taken on the loop's thread)"
        )
    session.call_soon_threadsafe(fn, *args)


def spawn(coro: Coroutine[Any, Any, T], *, name: str | None = None) -> Task[T]:
    """Run ``coro`` concurrently on the running session."""
    return current_backend().spawn(coro, name=name)


def create_future() -> Future[Any]:
    """A future that coroutines on any session can await."""
    return current_backend().create_future()


async def sleep(seconds: float) -> None:
    """Suspend the caller for ``seconds`` (see ``Session.sleep``)."""
    await current_backend().sleep(seconds)


async def run_in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` in a worker thread of the running session."""
    return await current_backend().run_in_thread(fn, *args)


async def wait_for(aw: Awaitable[T], timeout: float | None) -> T:
    """Await ``aw`` (any awaitable) in the calling task; after ``timeout`` seconds cancel
    it and raise ``TimeoutError``. ``None`` (or ``inf``) waits for ever.

    It is ``fail_after`` around one await (as ``asyncio.wait_for`` is ``asyncio.timeout``
    since Python 3.12): a cancellation of the caller that arrives while ``aw`` unwinds
    from the timeout is delivered (``Cancelled``), not turned into ``TimeoutError``.
    """
    try:
        seconds = check_timeout(timeout)
        if not inspect.isawaitable(aw):
            raise TypeError(f"wait_for() needs an awaitable, not {type(aw).__name__}")
    except (TypeError, ValueError):
        if inspect.iscoroutine(aw):
            aw.close()  # never started: no "coroutine was never awaited" warning
        raise
    if seconds is None or seconds == math.inf:
        return await aw
    with CancelScope(deadline=current_backend().time() + seconds) as scope:
        result = await aw
    if scope.cancelled_caught:
        raise TimeoutError(f"timed out after {timeout} s")
    return result


async def getaddrinfo(
    host: str | None,
    port: int | str | None,
    *,
    family: int = 0,
    type: int = 0,
    proto: int = 0,
    flags: int = 0,
) -> list[tuple[Any, Any, int, str, Any]]:
    """``socket.getaddrinfo`` without blocking the loop (``Session.getaddrinfo``)."""
    return await current_backend().getaddrinfo(
        host, port, family=family, type=type, proto=proto, flags=flags
    )


def setsockopt(connection: Any, level: int, option: int, value: int | bytes) -> None:
    """Set a socket option of a ``Transport``'s, ``DatagramTransport``'s or ``Stream``'s
    socket (``socket.setsockopt``), on every backend and over TLS too. ``ValueError`` if
    it has no socket (any more)."""
    sock = connection.get_extra_info("socket")
    if sock is None:
        raise ValueError(f"{connection!r} has no socket (closed, or not a socket transport)")
    sock.setsockopt(level, option, value)


def getsockopt(connection: Any, level: int, option: int) -> int:
    """Read an integer socket option of a transport's or stream's socket."""
    sock = connection.get_extra_info("socket")
    if sock is None:
        raise ValueError(f"{connection!r} has no socket (closed, or not a socket transport)")
    return int(sock.getsockopt(level, option))


async def start_tls(
    transport: Transport,
    protocol: Protocol,
    sslcontext: _ssl.SSLContext,
    *,
    server_side: bool = False,
    server_hostname: str | None = None,
    ssl_handshake_timeout: float | None = None,
) -> Transport:
    """``Session.start_tls`` on the running session: upgrade a connection to TLS."""
    return await current_backend().start_tls(
        transport, protocol, sslcontext, server_side=server_side,
        server_hostname=server_hostname, ssl_handshake_timeout=ssl_handshake_timeout,
    )  # fmt: skip


async def listen_tcp(
    protocol_factory: Callable[[], Protocol],
    host: str | None = "127.0.0.1",
    port: int = 0,
    *,
    ssl: _ssl.SSLContext | None = None,
    backlog: int = 128,
    ssl_handshake_timeout: float | None = None,
) -> Server:
    """``Session.listen_tcp`` on the running session."""
    return await current_backend().listen_tcp(
        protocol_factory, host, port, ssl=ssl, backlog=backlog,
        ssl_handshake_timeout=ssl_handshake_timeout,
    )  # fmt: skip


async def connect_tcp(
    protocol_factory: Callable[[], P],
    host: str,
    port: int,
    *,
    ssl: _ssl.SSLContext | None = None,
    server_hostname: str | None = None,
) -> tuple[Transport, P]:
    """``Session.connect_tcp`` on the running session."""
    return await current_backend().connect_tcp(
        protocol_factory, host, port, ssl=ssl, server_hostname=server_hostname
    )


async def listen_unix(
    protocol_factory: Callable[[], Protocol],
    path: str,
    *,
    ssl: _ssl.SSLContext | None = None,
    backlog: int = 128,
) -> Server:
    """``Session.listen_unix`` on the running session."""
    return await current_backend().listen_unix(protocol_factory, path, ssl=ssl, backlog=backlog)


async def connect_unix(
    protocol_factory: Callable[[], P],
    path: str,
    *,
    ssl: _ssl.SSLContext | None = None,
    server_hostname: str | None = None,
) -> tuple[Transport, P]:
    """``Session.connect_unix`` on the running session."""
    return await current_backend().connect_unix(
        protocol_factory, path, ssl=ssl, server_hostname=server_hostname
    )


async def open_udp(
    protocol_factory: Callable[[], DP],
    local_addr: tuple[str, int] | None = None,
    remote_addr: tuple[str, int] | None = None,
) -> tuple[DatagramTransport, DP]:
    """``Session.open_udp`` on the running session."""
    return await current_backend().open_udp(protocol_factory, local_addr, remote_addr)
