"""Futures and tasks that ``Deferred.fromCoroutine``'s runner can wait on.

Rule: an ``await`` on anything this backend hands out ends in ``yield <Deferred>``:
that is the only thing Twisted's coroutine runner knows how to wait for (it sends
anything else straight back, and cannot wait on an asyncio future at all). And every
await point turns ``twisted.internet.defer.CancelledError`` into ``polyloop.Cancelled``.

Facts about the runner that shaped this file:
- Cancelling the ``Deferred`` that ``fromCoroutine`` returned cancels the ``Deferred``
  the coroutine is waiting on, which throws ``defer.CancelledError`` in at that
  ``yield``. A coroutine that is *running* (cancelling itself) waits on nothing, so
  the cancellation would be lost: we keep it and deliver it at the next await.
- A ``Deferred``'s callbacks pass its result along, so two coroutines awaiting one
  ``Deferred`` would not both see it. Each awaiter gets its own waiter ``Deferred``.
- Waiters are woken through the backend's ``call_soon`` queue, as asyncio does: a
  ``set_result`` inside ``data_received`` never runs the awaiting coroutine inside
  ``data_received``.
"""

from __future__ import annotations

import abc
import contextvars
import inspect
from collections.abc import Coroutine, Generator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from polyloop import Cancelled

if TYPE_CHECKING:
    from ._backend import TwistedBackend

__all__ = ["TwistedFuture", "TwistedTask", "wait"]

T = TypeVar("T")

_PENDING, _DONE, _FAILED, _CANCELLED = range(4)

#: The task whose coroutine runs in this context (set in each task's own context).
_current_task: contextvars.ContextVar[TwistedTask[Any]] = contextvars.ContextVar(
    "polyloop_twisted_task"
)


def _check_pending_cancel() -> None:
    task = _current_task.get(None)
    if task is not None and task._cancel_pending:
        task._cancel_pending = False
        raise Cancelled()


def wait(d: Deferred[T]) -> Generator[Any, Any, T]:
    """``await``-able body: wait for ``d`` on the runner, with polyloop's cancellation.

    Use as ``await Wait(d)``; a ``Failure`` comes out as its exception, never as itself.
    """
    _check_pending_cancel()
    try:
        return (yield from d)
    except defer.CancelledError:
        raise Cancelled() from None


class Wait(Generic[T]):
    """Awaitable wrapper of a Deferred (see ``wait``)."""

    __slots__ = ("_d",)

    def __init__(self, d: Deferred[T]) -> None:
        self._d = d

    def __await__(self) -> Generator[Any, Any, T]:
        return wait(self._d)


class _Outcome(abc.ABC, Generic[T]):
    """What a future and a task share: an outcome, and the coroutines waiting for it."""

    __slots__ = ("_backend", "_state", "_value", "_waiters")

    def __init__(self, backend: TwistedBackend) -> None:
        self._backend = backend
        self._state = _PENDING
        self._value: Any = None
        self._waiters: list[Deferred[None]] = []

    def _resolve(self, state: int, value: Any) -> None:
        self._state = state
        self._value = value
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            self._backend.call_soon(_fire, d)

    def done(self) -> bool:
        return self._state != _PENDING

    def cancelled(self) -> bool:
        return self._state == _CANCELLED

    def result(self) -> T:
        state = self._state
        if state == _DONE:
            return self._value  # type: ignore[no-any-return]
        if state == _FAILED:
            raise self._value
        if state == _CANCELLED:
            raise Cancelled()
        raise RuntimeError("result is not ready")

    def exception(self) -> BaseException | None:
        """The exception it ended with (None if it has a result)."""
        if self._state == _CANCELLED:
            raise Cancelled()
        if self._state == _PENDING:
            raise RuntimeError("result is not ready")
        return self._value if self._state == _FAILED else None

    def _waiter_cancelled(self) -> None:
        # The awaiting coroutine was cancelled. As in asyncio, that cancels what it awaited.
        self.cancel()

    @abc.abstractmethod
    def cancel(self) -> bool:
        """Cancel; subclasses say what that means (a future settles, a task is thrown into)."""

    def __await__(self) -> Generator[Any, Any, T]:
        _check_pending_cancel()
        if self._state == _PENDING:
            d: Deferred[None] = Deferred()
            self._waiters.append(d)
            try:
                yield d
            except defer.CancelledError:
                if d in self._waiters:
                    self._waiters.remove(d)
                self._waiter_cancelled()
                raise Cancelled() from None
        return self.result()


def _fire(d: Deferred[None]) -> None:
    if not d.called:  # a cancelled waiter was already fired with CancelledError
        d.callback(None)


class TwistedFuture(_Outcome[T]):
    """``backend.create_future()``: a ``polyloop.Future`` the Twisted runner can await."""

    __slots__ = ()

    def set_result(self, result: T) -> None:
        if self._state != _PENDING:
            raise RuntimeError("the future is already done")
        self._resolve(_DONE, result)

    def set_exception(self, exception: BaseException) -> None:
        if self._state != _PENDING:
            raise RuntimeError("the future is already done")
        self._resolve(_FAILED, exception)

    def cancel(self) -> bool:
        if self._state != _PENDING:
            return False
        self._resolve(_CANCELLED, None)
        return True

    def __repr__(self) -> str:
        return f"<TwistedFuture {('pending', 'done', 'failed', 'cancelled')[self._state]}>"


class TwistedTask(_Outcome[T]):
    """``backend.spawn(coro)``: a coroutine run by ``Deferred.fromCoroutine``.

    It starts on the next reactor iteration (as an asyncio task does, so ``spawn``
    never runs foreign code inside the caller); ``cancel()`` delivers
    ``polyloop.Cancelled`` at the coroutine's current await.
    """

    __slots__ = ("_cancel_pending", "_context", "_coro", "_d")

    def __init__(self, backend: TwistedBackend, coro: Coroutine[Any, Any, T]) -> None:
        if not inspect.iscoroutine(coro):
            # Fail here, as asyncio.create_task does, not later inside the reactor.
            raise TypeError(f"a coroutine was expected, got {coro!r}")
        super().__init__(backend)
        self._coro: Coroutine[Any, Any, T] | None = coro
        self._d: Deferred[T] | None = None
        self._cancel_pending = False
        self._context = contextvars.copy_context()
        self._context.run(_current_task.set, self)
        backend.call_soon(self._start)

    def _start(self) -> None:
        coro, self._coro = self._coro, None
        assert coro is not None
        if self._cancel_pending:
            # Cancelled before its first step: as in asyncio, the body never runs.
            try:
                coro.throw(Cancelled())
            except BaseException:
                pass
            self._backend._tasks.discard(self)
            self._resolve(_CANCELLED, None)
            return
        d = self._context.run(Deferred.fromCoroutine, coro)
        self._d = d
        d.addBoth(self._finished)

    def _finished(self, result: object) -> None:
        # Consuming the result here is what keeps "Unhandled error in Deferred" away.
        self._d = None
        self._backend._tasks.discard(self)
        if isinstance(result, Failure):
            exc = result.value
            if isinstance(exc, Cancelled):
                self._resolve(_CANCELLED, None)
            else:
                self._resolve(_FAILED, exc)
        else:
            self._resolve(_DONE, result)

    def cancel(self) -> bool:
        if self._state != _PENDING:
            return False
        if self._d is None or _current_task.get(None) is self:
            # Not started yet, or cancelling itself: nothing is awaited to cancel.
            self._cancel_pending = True
        else:
            self._d.cancel()
        return True

    def __repr__(self) -> str:
        return f"<TwistedTask {('pending', 'done', 'failed', 'cancelled')[self._state]}>"
