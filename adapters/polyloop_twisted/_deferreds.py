"""Where ``Deferred``s meet polyloop's futures, in both directions.

Rule: the core's ``Future`` and ``CoroutineTask`` are the only futures and tasks; this
file holds just the crossings Twisted needs, and a cancellation polyloop makes reaches
polyloop code as ``polyloop.Cancelled``, never as ``defer.CancelledError``:

- ``DeferredWait``: a polyloop task awaits a ``Deferred`` (``Session.wait_native``).
- ``suspend``: Twisted's own runner awaits a polyloop future (``Session.suspend_foreign``).
- ``future_of``: a ``Deferred``'s outcome as a core future, which any runner can await.
- ``start``: a coroutine on Twisted's runner (``as_deferred``, the end of a host session).

Facts about Twisted's runner (``Deferred.fromCoroutine``) and ``Deferred.__await__`` that
shaped this file (``twisted/internet/defer.py``):
- ``await d`` iterates the ``Deferred`` itself: ``send()`` yields ``d`` while it has no
  result, then returns the result or raises the failure's exception; reading a failure
  that way clears its "Unhandled error in Deferred" report. So a callback we add to a
  user's ``Deferred`` must pass the result on unchanged: the coroutine reads it after.
- A failure nobody consumes is logged when the ``Deferred`` is garbage. Every ``Deferred``
  made or cancelled here has its outcome consumed.
- Cancelling the ``Deferred`` that ``fromCoroutine`` returned cancels the one the
  coroutine waits on, which throws ``defer.CancelledError`` in at that ``yield``.
- The runner runs the coroutine in a copy of the context ``fromCoroutine`` was called in.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

import polyloop
from polyloop.lowlevel import context_for

from ._errors import translate

__all__ = ["DeferredWait", "future_of", "start", "suspend"]

T = TypeVar("T")


class DeferredWait:
    """A polyloop task waiting on a ``Deferred``: ``wake()`` when it fires.

    ``cancel()`` (the task was cancelled) cancels the ``Deferred``; the task's next step
    throws ``polyloop.Cancelled`` (the core keeps its ``_must_cancel`` set), and the
    ``CancelledError`` failure, which nobody reads then, is consumed here.
    """

    __slots__ = ("_cancelled", "_d", "_wake")

    def __init__(self, d: Deferred[Any], wake: Callable[[], None]) -> None:
        self._d = d
        self._wake = wake
        self._cancelled = False
        d.addBoth(self._fired)

    def _fired(self, result: object) -> object:
        self._wake()
        if self._cancelled and isinstance(result, Failure):
            return None
        return result  # the coroutine reads it from the Deferred at its next step

    def cancel(self) -> None:
        self._cancelled = True
        self._d.cancel()


def suspend(fut: polyloop.Future[Any]) -> Generator[Any, Any, None]:
    """Wait on ``fut`` the way Twisted's runner waits: on a ``Deferred``.

    If Twisted cancels that ``Deferred`` (the application cancelled the outer one),
    ``fut`` is cancelled too, as an asyncio task cancels what it awaits, and the
    coroutine sees ``polyloop.Cancelled``.
    """
    d: Deferred[None] = Deferred()

    def fire(_: object) -> None:
        if not d.called:
            d.callback(None)

    fut.add_done_callback(fire)
    try:
        yield d
    except defer.CancelledError:
        fut.remove_done_callback(fire)
        fut.cancel()
        raise polyloop.Cancelled() from None


def future_of(
    session: polyloop.Session, d: Deferred[T], *, cancel: bool = True
) -> polyloop.Future[T]:
    """A core future with ``d``'s outcome (Twisted's errors translated); ``d``'s failure
    is consumed. With ``cancel``, cancelling the future cancels ``d``."""
    fut: polyloop.Future[T] = session.create_future()

    def fired(result: object) -> None:
        if fut.done():
            return  # cancelled already: the failure ends here
        if not isinstance(result, Failure):
            fut.set_result(result)  # type: ignore[arg-type]
            return
        exc = translate(result)
        if isinstance(exc, polyloop.Cancelled):
            fut.cancel()
        else:
            fut.set_exception(exc)

    d.addBoth(fired)
    if cancel:
        fut.add_done_callback(lambda f: d.cancel() if f.cancelled() else None)
    return fut


async def _await(aw: Awaitable[T]) -> T:
    return await aw


def _twisted_cancelled(failure: Failure) -> Failure:
    if isinstance(failure.value, polyloop.Cancelled):
        raise defer.CancelledError() from failure.value
    return failure


def start(session: polyloop.Session, aw: Awaitable[T]) -> Deferred[T]:
    """Run ``aw`` on Twisted's runner where ``session`` is current; ``polyloop.Cancelled``
    escaping it becomes ``defer.CancelledError``, as Twisted code expects."""
    if not inspect.isawaitable(aw):
        raise TypeError(f"an awaitable was expected, not {type(aw).__name__}")
    coro: Coroutine[Any, Any, T] = aw if inspect.iscoroutine(aw) else _await(aw)
    d = context_for(session).run(Deferred.fromCoroutine, coro)
    d.addErrback(_twisted_cancelled)
    return d
