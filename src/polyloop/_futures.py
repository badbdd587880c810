"""Futures, written once for every backend; the task type that runs coroutines on them.

Rule 1: a ``Future`` knows no framework. It completes on its session's thread, and its
done-callbacks never run inside ``set_result``: they are scheduled with the owning
session's ``call_soon_in``, as asyncio schedules them with its loop's.

Rule 2: awaiting a ``Future`` works under every runner that drives coroutines here. When
the core's driver or an asyncio ``Task`` runs the caller, ``yield self`` hands the future
to it (asyncio takes it as a future-like object: ``_asyncio_future_blocking``,
``get_loop()``, ``add_done_callback``). Any other runner is a *foreign* one, and the
session that knows it suspends the coroutine its own way
(``Session.suspend_foreign``, see ``docs/writing-a-backend.md``, "Foreign runners"):

- a runner that throws into a coroutine that yields what it does not know, or that only
  understands its own yields (trio's), is never handed the future: with no known task
  running the caller, the session's hook is asked first;
- a runner that *sends back* what it does not know (Twisted's ``Deferred.fromCoroutine``
  and ``inlineCallbacks``: "your generator will be resumed with the same object sent
  back") may be met inside a known task's step (``Deferred.fromCoroutine`` runs the first
  step of the new coroutine at once, in the caller's context): ``yield self`` then comes
  back with ``self`` while the future is pending, and the hook is asked then.

Rule 3: a ``Task`` is cancelled the way asyncio cancels one, on every backend (see
``_tasks``, where the two kinds of task live).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
from collections.abc import Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ._context import foreign_runner_session, session_var
from ._errors import Cancelled
from ._scopes import foreign_task, hold_if_shielded

if TYPE_CHECKING:
    from ._session import Session

__all__ = [
    "Future",
    "Task",
    "current_task",
    "enter_task",
    "known_runner",
    "task_var",
]

T = TypeVar("T")
log = logging.getLogger("polyloop")

PENDING, FINISHED, CANCELLED = 0, 1, 2
_STATES = ("pending", "finished", "cancelled")

#: The polyloop task whose coroutine runs in this context (set in each task's context).
task_var: contextvars.ContextVar[Task[Any] | None] = contextvars.ContextVar("polyloop_task")

InvalidStateError = asyncio.InvalidStateError


def current_task() -> Task[Any] | None:
    """The polyloop task running the caller, or ``None`` (a host application's own
    coroutine, a callback)."""
    task = task_var.get(None)
    # The context variable is inherited by whatever the task's code starts natively (an
    # asyncio.create_task, a Deferred.fromCoroutine): check that the task runs now.
    if task is None or not task.running_now():
        return None
    return task


def known_runner() -> bool:
    """Whether the core's driver or an asyncio task runs the caller (Rule 2): either one
    takes a polyloop future that the coroutine yields."""
    if current_task() is not None:
        return True
    loop = asyncio._get_running_loop()
    return loop is not None and asyncio.current_task(loop) is not None


class Future(Generic[T]):
    """A one-shot result that any coroutine of any session can await.

    ``result()``/``exception()`` on a pending future raise ``asyncio.InvalidStateError``,
    as do ``set_result``/``set_exception`` on a done one. ``cancel()`` makes awaiting it
    raise ``polyloop.Cancelled``. Done-callbacks run soon after it completes, never inside
    ``set_result``. Not thread-safe: complete it from another thread through
    ``call_soon_threadsafe``. An exception that nobody retrieves is logged when the
    future is garbage.
    """

    __slots__ = (
        "__weakref__",
        "_asyncio_future_blocking",
        "_callbacks",
        "_cancel_msg",
        "_log_exception",
        "_result",
        "_session",
        "_state",
    )

    def __init__(self, session: Session) -> None:
        self._session = session
        self._state = PENDING
        self._result: Any = None
        self._cancel_msg: Any = None
        self._callbacks: list[tuple[Callable[[Any], object], contextvars.Context | None]] = []
        # asyncio's Task treats an object with this attribute as a future it can wait
        # on (asyncio.isfuture); it sets it False once it has taken the future.
        self._asyncio_future_blocking = False
        self._log_exception = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {_STATES[self._state]}>"

    def __del__(self) -> None:
        if self._log_exception:
            exc = self._result.exc
            log.error("polyloop: %r failed and nobody retrieved its exception", self, exc_info=exc)

    @property
    def session(self) -> Session:
        """The session that made it (its callbacks run there)."""
        return self._session

    def get_loop(self) -> asyncio.AbstractEventLoop:
        """For asyncio's ``Task``: the running loop (the one of the task awaiting it)."""
        return asyncio.get_running_loop()

    def done(self) -> bool:
        """True once it has a result or an exception, or was cancelled."""
        return self._state != PENDING

    def cancelled(self) -> bool:
        """True if it was cancelled."""
        return self._state == CANCELLED

    def result(self) -> T:
        """The result; raises its exception, ``Cancelled``, or ``InvalidStateError``."""
        state = self._state
        if state == FINISHED:
            self._log_exception = False
            result = self._result
            if isinstance(result, Raised):
                raise result.exc
            return result  # type: ignore[no-any-return]
        if state == CANCELLED:
            raise self._make_cancelled()
        raise InvalidStateError("the result is not ready yet")

    def exception(self) -> BaseException | None:
        """The exception it ended with, or None; raises ``Cancelled`` if cancelled."""
        state = self._state
        if state == FINISHED:
            self._log_exception = False
            result = self._result
            return result.exc if isinstance(result, Raised) else None
        if state == CANCELLED:
            raise self._make_cancelled()
        raise InvalidStateError("the result is not ready yet")

    def _make_cancelled(self) -> BaseException:
        msg = self._cancel_msg
        return Cancelled() if msg is None else Cancelled(msg)

    def set_result(self, result: T) -> None:
        """Complete it with ``result``."""
        if self._state != PENDING:
            raise InvalidStateError(f"{self!r} is already done")
        self._result = result
        self._state = FINISHED
        if self._callbacks:
            self._schedule_callbacks()

    def set_exception(self, exception: BaseException | type[BaseException]) -> None:
        """Complete it with ``exception`` (a class is instantiated)."""
        if self._state != PENDING:
            raise InvalidStateError(f"{self!r} is already done")
        if isinstance(exception, type):
            exception = exception()
        if not isinstance(exception, BaseException):
            raise TypeError(f"an exception was expected, not {type(exception).__name__}")
        if isinstance(exception, StopIteration):
            raise TypeError("StopIteration cannot be raised into a future")
        self._result = Raised(exception)
        self._state = FINISHED
        self._log_exception = True
        if self._callbacks:
            self._schedule_callbacks()

    def cancel(self, msg: Any = None) -> bool:
        """Cancel it if pending (True); False if it was already done."""
        if self._state != PENDING:
            return False
        self._state = CANCELLED
        self._cancel_msg = msg
        if self._callbacks:
            self._schedule_callbacks()
        return True

    def add_done_callback(
        self, fn: Callable[[Any], object], *, context: contextvars.Context | None = None
    ) -> None:
        """Call ``fn(self)`` soon after it is done (soon, if it already is)."""
        if self._state != PENDING:
            session = self._session
            if session.closed:
                session = _adoptive(session)
            session.call_soon_in(context, fn, self)
        else:
            self._callbacks.append((fn, context))

    def remove_done_callback(self, fn: Callable[[Any], object]) -> int:
        """Forget ``fn``; returns how many registrations were removed."""
        before = len(self._callbacks)
        self._callbacks = [cb for cb in self._callbacks if cb[0] != fn]
        return before - len(self._callbacks)

    def _schedule_callbacks(self) -> None:
        callbacks, self._callbacks = self._callbacks, []
        session = self._session
        if session.closed:
            session = _adoptive(session)
        call = session.call_soon_in
        for fn, context in callbacks:
            call(context, fn, self)

    def __await__(self) -> Generator[Any, Any, T]:
        if self._state == PENDING:
            if not known_runner():
                yield from self._suspend_foreign()  # a foreign runner (Rule 2)
            else:
                self._asyncio_future_blocking = True
                echo = yield self
                if echo is self and self._state == PENDING:
                    # A runner that cannot wait on us sent us back (Rule 2).
                    self._asyncio_future_blocking = False
                    yield from self._suspend_foreign()
        return self.result()

    __iter__ = __await__

    def _suspend_foreign(self) -> Generator[Any, Any, None]:
        # The coroutine's "task" here is a ForeignTask (polyloop._scopes): a cancel scope
        # cancels the futures it awaits.
        task = foreign_task()
        assert task is not None
        if task.must_cancel:
            task.must_cancel = False
            raise Cancelled()
        task.waiting.add(self)
        try:
            yield from foreign_runner_session().suspend_foreign(self)
        finally:
            task.waiting.discard(self)


class Raised:
    """An exception held as a future's outcome (so a result may itself be an exception)."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Task(Future[T]):
    """A coroutine running concurrently, made by ``spawn``: await it, or cancel it.

    ``cancel()`` delivers ``polyloop.Cancelled`` at the coroutine's current ``await``;
    the coroutine may catch it. Awaiting a cancelled task raises ``polyloop.Cancelled``.
    ``cancelling()`` counts the cancellation requests not yet undone by ``uncancel()``
    (what cancel scopes use to tell their own cancellation from an outer one).
    """

    __slots__ = ("_coro", "_name", "_num_cancels")

    _counter = 0

    def __init__(self, session: Session, coro: Coroutine[Any, Any, T], name: str | None) -> None:
        super().__init__(session)
        self._coro: Coroutine[Any, Any, T] | None = coro
        self._num_cancels = 0
        if name is None:
            Task._counter += 1
            name = f"Task-{Task._counter}"
        self._name = str(name)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._name!r} {_STATES[self._state]}>"

    def get_name(self) -> str:
        """The task's name (``spawn(coro, name=...)``, else ``Task-N``)."""
        return self._name

    def get_coro(self) -> Coroutine[Any, Any, T] | None:
        """The coroutine it runs (None once done)."""
        return self._coro

    def set_result(self, result: T) -> None:
        raise RuntimeError("a Task's result is its coroutine's: set_result() is not allowed")

    def set_exception(self, exception: BaseException | type[BaseException]) -> None:
        raise RuntimeError("a Task's outcome is its coroutine's: set_exception() is not allowed")

    def cancel(self, msg: Any = None) -> bool:
        """Ask the coroutine to stop: ``Cancelled`` at its current await (True), or False
        if it is already done. A shielded cancel scope in the task holds the request
        back until it exits."""
        if self._state != PENDING:
            return False
        if hold_if_shielded(self, msg):
            return True
        return self.request_cancel(msg)

    def request_cancel(self, msg: Any = None) -> bool:
        """``cancel()`` past the shields: what a cancel scope uses to deliver its own."""
        raise NotImplementedError  # each kind of task (polyloop._tasks) has its own

    def running_now(self) -> bool:
        """Whether this task's coroutine is the one running the caller."""
        return False

    def cancelling(self) -> int:
        """Cancellation requests not yet matched by ``uncancel()``."""
        return self._num_cancels

    def uncancel(self) -> int:
        """Undo one cancellation request (for cancel scopes); returns the count left."""
        if self._num_cancels > 0:
            self._num_cancels -= 1
        return self._num_cancels

    def kill(self) -> None:
        """For the end of a session: the task ignored cancellation; stop it for good
        (its coroutine is closed, as a generator's is)."""
        coro = self._coro
        if coro is not None:
            try:
                coro.close()
            except BaseException:
                log.exception("polyloop: closing %r at the end of its session raised", self)
        if self._state == PENDING:
            self._finish(CANCELLED, None)

    def _finish(self, outcome: int, value: Any) -> None:
        """End the task: ``FINISHED`` with a result or a ``Raised``, or ``CANCELLED``."""
        self._coro = None
        self._session.resources.tasks.discard(self)
        if outcome == CANCELLED:
            Future.cancel(self)
            return
        self._state = FINISHED
        self._result = value
        if isinstance(value, Raised):
            self._log_exception = True
        if self._callbacks:
            self._schedule_callbacks()


def check_coroutine(coro: object) -> None:
    """``TypeError`` unless ``coro`` is a coroutine object (what ``spawn`` takes)."""
    if not inspect.iscoroutine(coro):
        hint = ""
        if inspect.iscoroutinefunction(coro):
            hint = ": call it, spawn(fn(...)), not spawn(fn)"
        elif isinstance(coro, Future):
            hint = ": a future is already running; await it instead"
        raise TypeError(f"spawn() needs a coroutine object, not {type(coro).__name__}{hint}")


def _adoptive(ended: Session) -> Session:
    """A future outlived its session (made in one ``polyloop.run``, used in a later one):
    its callbacks go to the live session whose code completes it or awaits it instead, so
    awaiting it works as on a live session. Only the context says so, never detection:
    while an owned session ends, its loop still runs its last callbacks."""
    current = session_var.get(None)
    return current if current is not None and not current.closed else ended


def enter_task(task: Task[Any]) -> None:
    """For drivers, in a task's own context: name it (and its session) as current."""
    task_var.set(task)
    session_var.set(task.session)
