"""The gevent backend: ``polyloop.run(main, backend="gevent")``, and polyloop code called
from a gevent application's own greenlets (``wait``, ``spawn``).

Coroutines run in greenlets on the thread's hub; nothing is monkey-patched, and it works
the same in a process where ``gevent.monkey.patch_all()`` ran.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable
from typing import TypeVar

import gevent
from greenlet import getcurrent

import polyloop
from polyloop.lowlevel import current_or_none

from ._session import GeventBackend as GeventBackend
from ._session import GeventSession as GeventSession

__all__ = ["GeventBackend", "GeventSession", "spawn", "wait"]

T = TypeVar("T")


def wait(aw: Awaitable[T]) -> T:
    """Run ``aw`` (a coroutine, or a polyloop future or task) to completion on the session
    of this thread's hub, blocking only the calling greenlet; return its result or raise
    its exception.

    Works from any greenlet but the hub (the main greenlet included), patched or not.
    Every caller on one hub shares one session (``polyloop.current_backend()``), which
    ends on ``wait(session.aclose())``. If the waiting greenlet is killed or gets a
    ``gevent.Timeout`` while waiting, the coroutine is cancelled (it sees
    ``polyloop.Cancelled``) and allowed to unwind, and then the greenlet's exception is
    re-raised. From the hub greenlet: ``RuntimeError``.
    """
    session, task = _start(aw)
    return session._wait(task)


def spawn(aw: Awaitable[T]) -> gevent.Greenlet:
    """Start ``aw`` on the session of this thread's hub and return a ``gevent.Greenlet``
    whose value (``g.get()``) is its result. Killing the greenlet cancels the coroutine,
    as for ``wait``. From the hub greenlet: ``RuntimeError``."""
    session, task = _start(aw)
    runner = gevent.spawn(session._wait, task)
    runner.link(lambda _: task.cancel())  # killed before it ever ran: cancel it anyway
    return runner


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
    hub = gevent.get_hub()
    if getcurrent() is hub:
        raise RuntimeError("polyloop_gevent cannot block the hub: call it from a greenlet")
    session = current_or_none()  # step 4 of the detection attaches to the hub
    if isinstance(session, GeventSession) and session.hub is hub:
        return session
    found = GeventBackend().attach(hub)  # the caller runs on another framework's loop
    assert isinstance(found, GeventSession)
    return found


async def _await(aw: Awaitable[T]) -> T:
    return await aw


GeventBackend.__module__ = GeventSession.__module__ = "polyloop_gevent"
