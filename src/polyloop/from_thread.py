"""Calling into a live session from another thread, synchronously (anyio's ``from_thread``).

Rule: these functions block the *calling* thread, never a loop. From the session's own
loop thread they refuse (that would deadlock the loop); await instead.

A worker of ``run_in_thread`` runs in a copy of its caller's context, so there the
session is found by itself; any other thread passes ``session=`` (an object it was
handed, such as ``polyloop.current_backend()`` taken on the loop's thread).
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from . import _context
from ._errors import Cancelled
from ._futures import Future
from ._session import Session

__all__ = ["run", "run_sync"]

T = TypeVar("T")


def _target(session: Session | None) -> Session:
    if session is None:
        session = _context.session_var.get(None)
    if session is None:
        raise RuntimeError(
            "no polyloop session is known in this thread: pass session= (for example"
            " polyloop.current_backend(), taken on the loop's thread)"
        )
    if session.closed:
        raise RuntimeError(f"{session!r} has ended")
    if session.in_loop_thread():
        raise RuntimeError(
            "polyloop.from_thread was called on the session's own loop thread: it would"
            " block the loop. Await the coroutine instead"
        )
    return session


def _copy_outcome(task: Future[Any], done: concurrent.futures.Future[Any]) -> None:
    if task.cancelled():
        done.set_exception(Cancelled())
        return
    exc = task.exception()
    if exc is not None:
        done.set_exception(exc)
    else:
        done.set_result(task.result())


def run(async_fn: Callable[..., Awaitable[T]], *args: Any, session: Session | None = None) -> T:
    """Run ``async_fn(*args)`` as a task of ``session`` and wait, in this thread, for its
    result (or its exception, raised here)."""
    target = _target(session)
    done: concurrent.futures.Future[T] = concurrent.futures.Future()

    async def call() -> T:
        return await async_fn(*args)

    def start() -> None:
        try:
            task = target.spawn(call())
        except BaseException as exc:
            done.set_exception(exc)
            return
        task.add_done_callback(lambda t: _copy_outcome(t, done))

    target.call_soon_threadsafe(start)
    return done.result()


def run_sync(fn: Callable[..., T], *args: Any, session: Session | None = None) -> T:
    """Call ``fn(*args)`` on ``session``'s loop thread and wait for its result here."""
    target = _target(session)
    done: concurrent.futures.Future[T] = concurrent.futures.Future()

    def call() -> None:
        try:
            done.set_result(fn(*args))
        except BaseException as exc:
            done.set_exception(exc)

    target.call_soon_threadsafe(call)
    return done.result()
