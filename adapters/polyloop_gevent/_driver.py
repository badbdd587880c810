"""Coroutines on greenlets: the gevent backend's futures, tasks and coroutine driver.

Rule: everything that parks or wakes a *task* greenlet lives here, and the one table of
native errors (``NATIVE_ERRORS``) too.

How it works. Each task is a raw greenlet whose parent is the hub. Its driver steps the
coroutine with ``send``/``throw``; what the coroutine yields (through
``GeventFuture.__await__``) is the future it waits for. The driver hangs a waker on that
future and switches to the hub: only this greenlet parks. When the future completes, its
callbacks are scheduled on the hub (never run inline, so that ``set_result`` called from
a protocol callback cannot switch away from it), and the waker switches back in.

A coroutine runs inside its greenlet, so it may also call gevent's blocking API directly
(``gevent.sleep``, a gevent socket): that parks the greenlet *inside* ``coro.send`` --
"a foreign wait". ``cancel()`` then throws ``polyloop.Cancelled`` into the greenlet
where it is parked, which unwinds through gevent's own wait and out of the coroutine.
``GreenletExit`` never reaches user code: a task killed while parked in the driver closes
its coroutine (``GeneratorExit``, as Python does for an abandoned coroutine).
"""

from __future__ import annotations

import asyncio
import logging
import types
from collections.abc import Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import gevent
from greenlet import GreenletExit, getcurrent

from polyloop import Cancelled

if TYPE_CHECKING:
    from ._backend import GeventBackend

__all__ = [
    "NATIVE_ERRORS",
    "GeventFuture",
    "GeventTask",
    "log_callback_error",
    "native_error",
    "yield_once",
]

T = TypeVar("T")
log = logging.getLogger("polyloop.gevent")

_PENDING, _CANCELLED, _FINISHED = 0, 1, 2

#: gevent's own exceptions, as user code sees them (the one table; see ``native_error``).
NATIVE_ERRORS: dict[type[BaseException], Callable[[BaseException], BaseException]] = {
    GreenletExit: lambda exc: Cancelled(),
    gevent.Timeout: lambda exc: TimeoutError(str(exc) or "timed out"),
}


def native_error(exc: BaseException) -> BaseException:
    """``exc`` translated to what polyloop code expects (builtins, ``Cancelled``)."""
    for native, make in NATIVE_ERRORS.items():
        if isinstance(exc, native):
            new = make(exc)
            new.__cause__ = exc
            return new
    return exc


@types.coroutine
def yield_once() -> Generator[None, None, None]:
    """Let every other ready greenlet and callback run once (``sleep(0)``)."""
    yield


class GeventFuture(Generic[T]):
    """A one-shot result that a task on this backend can await (``create_future()``)."""

    __slots__ = ("__weakref__", "_callbacks", "_exception", "_loop", "_result", "_state")

    def __init__(self, loop: Any) -> None:
        self._loop = loop
        self._state = _PENDING
        self._result: Any = None
        self._exception: BaseException | None = None
        self._callbacks: list[Callable[[GeventFuture[T]], object]] = []

    def __repr__(self) -> str:
        state = ("pending", "cancelled", "finished")[self._state]
        return f"<{type(self).__name__} {state}>"

    def done(self) -> bool:
        """True once it has a result or an exception, or was cancelled."""
        return self._state != _PENDING

    def cancelled(self) -> bool:
        """True if ``cancel()`` ended it."""
        return self._state == _CANCELLED

    def result(self) -> T:
        """The result; raises its exception, ``Cancelled``, or ``InvalidStateError``."""
        if self._state == _FINISHED:
            if self._exception is not None:
                raise self._exception
            return self._result  # type: ignore[no-any-return]
        if self._state == _CANCELLED:
            raise Cancelled()
        raise asyncio.InvalidStateError("the result is not set yet")

    def exception(self) -> BaseException | None:
        """The exception it ended with, or None; raises ``Cancelled`` if cancelled."""
        if self._state == _CANCELLED:
            raise Cancelled()
        if self._state == _PENDING:
            raise asyncio.InvalidStateError("the result is not set yet")
        return self._exception

    def set_result(self, result: T) -> None:
        """End it with ``result``; ``InvalidStateError`` if it is already done."""
        if self._state != _PENDING:
            raise asyncio.InvalidStateError(f"{self!r} is already done")
        self._result = result
        self._state = _FINISHED
        self._schedule_callbacks()

    def set_exception(self, exception: BaseException | type[BaseException]) -> None:
        """End it with ``exception`` (a class is instantiated)."""
        if self._state != _PENDING:
            raise asyncio.InvalidStateError(f"{self!r} is already done")
        if isinstance(exception, type):
            exception = exception()
        if isinstance(exception, StopIteration):
            raise TypeError("StopIteration cannot be raised into a future")
        self._exception = exception
        self._state = _FINISHED
        self._schedule_callbacks()

    def cancel(self) -> bool:
        """Cancel it if pending (True); False if it was already done."""
        if self._state != _PENDING:
            return False
        self._state = _CANCELLED
        self._schedule_callbacks()
        return True

    def add_done_callback(self, fn: Callable[[GeventFuture[T]], object]) -> None:
        """Call ``fn(self)`` from the hub once done (soon, if it already is)."""
        if self._state != _PENDING:
            self._loop.run_callback(fn, self)
        else:
            self._callbacks.append(fn)

    def remove_done_callback(self, fn: Callable[[GeventFuture[T]], object]) -> int:
        """Forget ``fn``; returns how many were removed."""
        before = len(self._callbacks)
        self._callbacks = [cb for cb in self._callbacks if cb != fn]
        return before - len(self._callbacks)

    def _schedule_callbacks(self) -> None:
        callbacks, self._callbacks = self._callbacks, []
        run_callback = self._loop.run_callback
        for fn in callbacks:
            run_callback(fn, self)

    def __await__(self) -> Generator[Any, None, T]:
        if self._state == _PENDING:
            yield self  # the driver parks the task until this future is done
        return self.result()

    __iter__ = __await__


class GeventTask(GeventFuture[T]):
    """A coroutine running in its own greenlet (``spawn()``); await it or cancel it."""

    __slots__ = ("_backend", "_coro", "_gr", "_must_cancel", "_parked", "_waiting")

    def __init__(self, backend: GeventBackend, coro: Coroutine[Any, Any, T]) -> None:
        super().__init__(backend._loop)
        self._backend = backend
        self._coro: Coroutine[Any, Any, T] | None = coro
        self._must_cancel = False
        self._parked = True  # "parked in the driver": waiting to start counts
        self._waiting: GeventFuture[Any] | None = None
        self._gr = backend._new_greenlet(self._drive)
        backend._tasks.add(self)
        self._loop.run_callback(self._gr.switch)

    def __repr__(self) -> str:
        coro = self._coro
        name = getattr(coro, "__qualname__", "?") if coro is not None else "-"
        return f"<GeventTask {name} {('pending', 'cancelled', 'finished')[self._state]}>"

    def cancel(self) -> bool:
        """Deliver ``polyloop.Cancelled`` at the task's current ``await``.

        Returns False if the task is already done. The coroutine may catch it.
        """
        if self._state != _PENDING:
            return False
        self._must_cancel = True
        if self._gr is not getcurrent():
            self._deliver_cancel()
        return True

    def _deliver_cancel(self) -> None:
        waiting = self._waiting
        if waiting is not None:
            # As asyncio does: cancel what it awaits; the awaiting coroutine then gets
            # Cancelled from that future's result(). If that future is already done (its
            # wake-up is on the way), the flag throws Cancelled at the wake-up instead.
            if waiting.cancel():
                self._must_cancel = False
        elif not self._parked and not self._gr.dead:
            # Parked in a foreign wait (gevent's own API): throw it in from the hub.
            self._loop.run_callback(self._throw_cancel)

    def _throw_cancel(self) -> None:
        # Runs in the hub; the task may have moved on since cancel() was called.
        if self._state != _PENDING or not self._must_cancel or self._gr.dead:
            return
        if self._waiting is not None or self._parked:
            self._deliver_cancel()
            return
        self._must_cancel = False
        self._gr.throw(Cancelled())

    def _wake(self, _: object = None) -> None:
        # A done-callback, run by the hub: resume the parked driver.
        if self._parked and not self._gr.dead:
            self._gr.switch()

    def _drive(self) -> None:
        """The greenlet's body: step the coroutine until it returns or raises."""
        coro = self._coro
        assert coro is not None
        hub_switch = self._backend._hub.switch
        exc: BaseException | None = None
        self._parked = False
        while True:
            if self._must_cancel:
                self._must_cancel = False
                exc = Cancelled()
            try:
                if exc is None:
                    yielded = coro.send(None)
                else:
                    yielded = coro.throw(exc)
                    exc = None
            except StopIteration as stop:
                self._finish(stop.value, None)
                return
            except Cancelled:
                self._finish(None, None, cancelled=True)
                return
            except BaseException as error:  # the task's outcome
                self._finish(None, native_error(error))
                return
            if yielded is None:  # a bare yield: go round the loop once
                self._loop.run_callback(self._wake)
            elif isinstance(yielded, GeventFuture):
                if yielded._state != _PENDING:
                    continue
                self._waiting = yielded
                yielded._callbacks.append(self._wake)
            else:
                exc = TypeError(
                    f"the gevent backend cannot await {yielded!r}: await polyloop"
                    " awaitables (backend.create_future(), polyloop.sleep(), a task)"
                )
                continue
            self._parked = True
            try:
                hub_switch()
            except GreenletExit:
                # Killed while parked (run() disposing of a task that ignored
                # cancellation): close the coroutine, never show it GreenletExit.
                coro.close()
                self._finish(None, None, cancelled=True)
                return
            finally:
                self._parked = False
                self._waiting = None

    def _finish(self, result: Any, exc: BaseException | None, cancelled: bool = False) -> None:
        self._coro = None
        self._backend._tasks.discard(self)
        if cancelled:
            GeventFuture.cancel(self)
        elif exc is not None:
            self.set_exception(exc)
        else:
            self.set_result(result)


def log_callback_error(fn: object, exc: BaseException) -> None:
    """Report an exception that escaped a scheduled callback (asyncio logs them too)."""
    log.error("polyloop: exception in callback %r", fn, exc_info=exc)
