"""Module-level functions that dispatch to the session running the caller.

Rule: these are for control operations (connect, listen, sleep, spawn). Nothing on the
data path (``data_received`` -> ``write``) goes through here: transports talk to their
protocols directly. Each function that is a ``Session`` method on the running session is
made from that method (``on_current``): one signature, one docstring, written once.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Awaitable, Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

from ._backend import Backend
from ._cancel import CancelScope
from ._context import current_backend, current_or_none
from ._errors import check_timeout
from ._registry import load_backend
from ._session import Session

__all__ = [
    "adopt_connection",
    "adopt_udp",
    "call_later",
    "call_soon",
    "call_soon_threadsafe",
    "connect_read_pipe",
    "connect_tcp",
    "connect_unix",
    "connect_write_pipe",
    "create_future",
    "getaddrinfo",
    "getsockopt",
    "listen_sockets",
    "listen_tcp",
    "listen_unix",
    "open_udp",
    "run",
    "run_in_thread",
    "setsockopt",
    "sleep",
    "spawn",
    "start_tls",
    "subprocess_exec",
    "subprocess_shell",
    "time",
    "wait_for",
]

T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")


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


def on_current(method: Callable[Concatenate[Session, P], R]) -> Callable[P, R]:
    """The front-end function of a ``Session`` method: the same call on the session
    running the caller (``current_backend()``), with the method's name, docstring and
    signature (less ``self``)."""
    name = method.__name__
    call: Callable[P, Any]
    if inspect.iscoroutinefunction(method):

        async def call(*args: P.args, **kwargs: P.kwargs) -> Any:
            return await getattr(current_backend(), name)(*args, **kwargs)

    else:

        def call(*args: P.args, **kwargs: P.kwargs) -> Any:
            return getattr(current_backend(), name)(*args, **kwargs)

    functools.update_wrapper(call, method)
    del call.__wrapped__  # type: ignore[union-attr]
    signature = inspect.signature(method)
    call.__signature__ = signature.replace(  # type: ignore[union-attr]
        parameters=list(signature.parameters.values())[1:]
    )
    call.__qualname__ = call.__name__ = name
    call.__module__ = __name__
    return call  # type: ignore[return-value]


time = on_current(Session.time)
call_soon = on_current(Session.call_soon)
call_later = on_current(Session.call_later)
create_future = on_current(Session.create_future)
spawn = on_current(Session.spawn)
sleep = on_current(Session.sleep)
run_in_thread = on_current(Session.run_in_thread)
getaddrinfo = on_current(Session.getaddrinfo)
listen_tcp = on_current(Session.listen_tcp)
listen_unix = on_current(Session.listen_unix)
connect_tcp = on_current(Session.connect_tcp)
connect_unix = on_current(Session.connect_unix)
open_udp = on_current(Session.open_udp)
start_tls = on_current(Session.start_tls)
listen_sockets = on_current(Session.listen_sockets)
adopt_connection = on_current(Session.adopt_connection)
adopt_udp = on_current(Session.adopt_udp)
connect_read_pipe = on_current(Session.connect_read_pipe)
connect_write_pipe = on_current(Session.connect_write_pipe)
subprocess_exec = on_current(Session.subprocess_exec)
subprocess_shell = on_current(Session.subprocess_shell)


def call_soon_threadsafe(fn: Callable[..., object], *args: Any) -> None:
    """Schedule ``fn(*args)`` on the caller's session, from its loop's thread or from a
    worker thread of ``run_in_thread`` (which runs in a copy of the caller's context).

    Any other thread has no session of its own: it calls the method of a session object
    it was given (``session.call_soon_threadsafe``), or uses ``polyloop.from_thread``.
    """
    session = current_or_none()
    if session is None:
        raise RuntimeError(
            "no polyloop session is known in this thread: call the method of the session"
            " object instead (session.call_soon_threadsafe(...), where session is"
            " polyloop.current_backend() taken on the loop's thread)"
        )
    session.call_soon_threadsafe(fn, *args)


async def wait_for(aw: Awaitable[T], timeout: float | None) -> T:
    """Await ``aw`` (any awaitable) in the calling task; after ``timeout`` seconds cancel
    it and raise ``TimeoutError``. ``None`` (or ``inf``) waits for ever.

    A ``timeout`` of 0 lets ``aw`` run up to its first suspension: a result it has by then
    is returned, else it is cancelled there and ``TimeoutError`` raised, on every backend
    (asyncio's own ``wait_for(coro, 0)`` never even starts the coroutine).

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
    scope = CancelScope(deadline=current_backend().time() + seconds)
    if seconds <= 0:
        # No timer: a scope cancelled before it is entered delivers its cancellation at
        # the first suspension, the same on every loop (a zero-delay timer and the step
        # after a sleep(0) come in a framework-dependent order).
        scope.cancel()
    with scope:
        result = await aw
    if scope.cancelled_caught:
        raise TimeoutError(f"timed out after {timeout} s")
    return result


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
