"""The gevent backend: ``polyloop.run(main, backend="gevent")``, and polyloop code called
from a gevent application's own greenlets (``wait``, ``spawn``).

Coroutines run in greenlets on the thread's hub; nothing is monkey-patched, and it works
the same in a process where ``gevent.monkey.patch_all()`` ran. Importing this package
imports no gevent (the backend class must load for detection in applications that never
use gevent); gevent comes in with the first session or call.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

import polyloop
from polyloop.lowlevel import lazy_attributes

from ._backend import GeventBackend as GeventBackend

if TYPE_CHECKING:
    import gevent

    from ._session import GeventSession as GeventSession

__all__ = ["GeventBackend", "GeventSession", "spawn", "to_greenlet", "wait"]

T = TypeVar("T")


def wait(x: Awaitable[T] | Any, timeout: float | None = None) -> T:
    """Block the calling greenlet, and only it, until ``x`` is done; return its result or
    raise its exception (``polyloop.Cancelled`` if it was cancelled).

    ``x`` is a coroutine (run on the session of this thread's hub, which every caller on
    the hub shares, and which ends on ``wait(session.aclose())``), or anything
    ``polyloop.bridge`` takes: a polyloop, asyncio or ``concurrent.futures`` future (of
    any loop, in any thread), a task, a ``Deferred``. Works from any greenlet but the hub
    (the main greenlet included), patched or not.

    If the greenlet is killed, or ``timeout`` seconds pass (``gevent.Timeout``), ``x`` is
    cancelled and the exception re-raised -- for a coroutine, once it has unwound (it
    sees ``polyloop.Cancelled``). From the hub, or from the greenlet that runs the
    asyncio loop that would have to complete ``x``: ``RuntimeError``.
    """
    if not (inspect.iscoroutine(x) or isinstance(x, polyloop.Future)):
        from ._bridge import wait_future

        return wait_future(x, timeout)  # type: ignore[no-any-return]
    import gevent

    session, task = _start(x)
    with gevent.Timeout(timeout):
        result: T = session.wait(task)
    return result


def spawn(aw: Awaitable[T]) -> gevent.Greenlet:
    """Start ``aw`` on the session of this thread's hub and return a ``gevent.Greenlet``
    whose value (``g.get()``) is its result. Killing the greenlet cancels the coroutine,
    as for ``wait``. From the hub greenlet: ``RuntimeError``."""
    import gevent

    session, task = _start(aw)
    runner = gevent.spawn(session.wait, task)
    runner.link(lambda _: task.cancel())  # killed before it ever ran: cancel it anyway
    return runner


def to_greenlet(x: Any) -> gevent.Greenlet:
    """``x`` (a future, task, coroutine or ``Deferred``) as a ``gevent.Greenlet``, started
    now: its value is ``x``'s result; ``x`` cancelled, it ends killed (its value a
    ``GreenletExit``); killing it cancels ``x``."""
    from ._bridge import to_greenlet as convert

    return convert(x)


def _start(aw: Awaitable[T]) -> tuple[GeventSession, polyloop.Task[T]]:
    if not inspect.isawaitable(aw):
        raise TypeError(f"polyloop_gevent needs an awaitable, not {type(aw).__name__}")
    try:
        session = _session_here()
    except BaseException:
        if inspect.iscoroutine(aw):
            aw.close()  # never started: no "coroutine was never awaited" warning
        raise
    coro = aw if inspect.iscoroutine(aw) else _await(aw)
    return session, session.spawn(coro)


def _session_here() -> GeventSession:
    """The session on this thread's hub for the calling greenlet: the one running the
    caller if it is one, else the hub's borrowed session (made if needed)."""
    import gevent
    from greenlet import getcurrent

    from polyloop.lowlevel import current_or_none

    from ._session import GeventSession

    hub = gevent.get_hub()
    if getcurrent() is hub:
        raise RuntimeError("polyloop_gevent cannot block the hub: call it from a greenlet")
    session = current_or_none()  # gevent's detect attaches to the hub
    if isinstance(session, GeventSession) and session.hub is hub:
        return session
    found = GeventBackend().attach(hub)  # the caller runs on another framework's loop
    assert isinstance(found, GeventSession)
    return found


async def _await(aw: Awaitable[T]) -> T:
    return await aw


__getattr__ = lazy_attributes("polyloop_gevent", {"GeventSession": "._session:GeventSession"})


GeventBackend.__module__ = "polyloop_gevent"
for _fn in (wait, spawn, to_greenlet):
    _fn.__module__ = "polyloop_gevent"
