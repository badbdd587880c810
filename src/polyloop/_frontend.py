"""Module-level functions that dispatch to the backend running the caller.

Rule: these are for control operations (connect, listen, sleep, spawn). Nothing on the
data path (``data_received`` -> ``write``) goes through here: transports talk to their
protocols directly.
"""

from __future__ import annotations

import ssl as _ssl
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from ._backend import Backend, Future, Handle, Server, Task
from ._context import current_backend
from ._errors import Cancelled
from ._protocols import DatagramProtocol, Protocol
from ._registry import load_backend
from ._transports import DatagramTransport, Transport

__all__ = [
    "call_later",
    "call_soon",
    "call_soon_threadsafe",
    "connect_tcp",
    "connect_unix",
    "create_future",
    "listen_tcp",
    "listen_unix",
    "open_udp",
    "run",
    "run_in_thread",
    "sleep",
    "spawn",
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
    **options: Any,
) -> T:
    """Run ``main(*args)`` on a fresh instance of ``backend`` and return its result.

    ``backend`` is a name (``"asyncio"``, ``"twisted"``, ``"gevent"``, ``"tornado"``), a
    spec (``"asyncio:loop=uvloop"``, ``"my_pkg:MyBackend"``), a Backend class or instance.
    ``options`` go to the backend (``loop="uvloop"``, ``reactor="select"``).
    """
    if not callable(main):
        raise TypeError(
            "polyloop.run() takes an async function and its arguments, not"
            f" {type(main).__name__}: write run(main, arg), not run(main(arg))"
        )
    return load_backend(backend, **options).run(main, *args)


def time() -> float:
    """The running backend's monotonic clock."""
    return current_backend().time()


def call_soon(fn: Callable[..., object], *args: Any) -> Handle:
    """Schedule ``fn(*args)`` on the running backend."""
    return current_backend().call_soon(fn, *args)


def call_later(delay: float, fn: Callable[..., object], *args: Any) -> Handle:
    """Schedule ``fn(*args)`` after ``delay`` seconds on the running backend."""
    return current_backend().call_later(delay, fn, *args)


def call_soon_threadsafe(fn: Callable[..., object], *args: Any) -> None:
    """From the backend's own thread only: see ``Backend.call_soon_threadsafe``.

    Other threads must hold the backend object (``current_backend()``) and call its
    method: there is no running backend in their context.
    """
    current_backend().call_soon_threadsafe(fn, *args)


def spawn(coro: Coroutine[Any, Any, T]) -> Task[T]:
    """Run ``coro`` concurrently on the running backend."""
    return current_backend().spawn(coro)


def create_future() -> Future[Any]:
    """A future the running backend can await."""
    return current_backend().create_future()


async def sleep(seconds: float) -> None:
    """Suspend the caller for ``seconds``."""
    if seconds < 0:
        raise ValueError("seconds must be >= 0")
    await current_backend().sleep(seconds)


async def run_in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` in the running backend's thread pool."""
    return await current_backend().run_in_thread(fn, *args)


async def wait_for(coro: Coroutine[Any, Any, T], timeout: float) -> T:
    """Run ``coro``; cancel it and raise ``TimeoutError`` after ``timeout`` seconds."""
    backend = current_backend()
    task = backend.spawn(coro)
    timed_out = False

    def expire() -> None:
        nonlocal timed_out
        if not task.done():
            timed_out = True
            task.cancel()

    handle = backend.call_later(timeout, expire)
    try:
        return await task
    except Cancelled:
        if timed_out:
            raise TimeoutError(f"timed out after {timeout} s") from None
        task.cancel()
        raise
    finally:
        handle.cancel()


async def listen_tcp(
    protocol_factory: Callable[[], Protocol],
    host: str | None = "127.0.0.1",
    port: int = 0,
    *,
    ssl: _ssl.SSLContext | None = None,
    backlog: int = 128,
) -> Server:
    """``Backend.listen_tcp`` on the running backend."""
    return await current_backend().listen_tcp(
        protocol_factory, host, port, ssl=ssl, backlog=backlog
    )


async def connect_tcp(
    protocol_factory: Callable[[], P],
    host: str,
    port: int,
    *,
    ssl: _ssl.SSLContext | None = None,
    server_hostname: str | None = None,
) -> tuple[Transport, P]:
    """``Backend.connect_tcp`` on the running backend."""
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
    """``Backend.listen_unix`` on the running backend."""
    return await current_backend().listen_unix(protocol_factory, path, ssl=ssl, backlog=backlog)


async def connect_unix(
    protocol_factory: Callable[[], P],
    path: str,
    *,
    ssl: _ssl.SSLContext | None = None,
    server_hostname: str | None = None,
) -> tuple[Transport, P]:
    """``Backend.connect_unix`` on the running backend."""
    return await current_backend().connect_unix(
        protocol_factory, path, ssl=ssl, server_hostname=server_hostname
    )


async def open_udp(
    protocol_factory: Callable[[], DP],
    local_addr: tuple[str, int] | None = None,
    remote_addr: tuple[str, int] | None = None,
) -> tuple[DatagramTransport, DP]:
    """``Backend.open_udp`` on the running backend."""
    return await current_backend().open_udp(protocol_factory, local_addr, remote_addr)
