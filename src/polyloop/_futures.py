"""Futures and tasks, written once for every backend.

Rule 1: a ``Future`` knows no framework. It completes on its session's thread, and its
done-callbacks never run inside ``set_result``: they are scheduled with the owning
session's ``call_soon``, as asyncio schedules them with its loop's.

Rule 2: awaiting a ``Future`` works under every runner that drives coroutines here, and
the runner is found out by the protocol itself, not guessed from the context:

- ``yield self`` hands the future to the runner. An asyncio ``Task`` (asyncio and
  Tornado sessions, and any asyncio application's own tasks) takes it as a future-like
  object (``_asyncio_future_blocking``, ``get_loop()``, ``add_done_callback``), as it
  takes any asyncio-compatible future; polyloop's own ``CoroutineTask`` and the gevent
  driver take it as the future it is.
- Twisted's coroutine runner (``Deferred.fromCoroutine``, ``ensureDeferred``) waits
  only for ``Deferred`` objects and *sends anything else straight back* ("things that
  are not Deferreds may also be yielded, and your generator will be resumed with the
  same object sent back", ``twisted.internet.defer.inlineCallbacks``). So when ``yield
  self`` comes back with ``self`` while the future is still pending, the runner did not
  understand it, and the session running the caller is asked for a native suspension
  (``Session._suspend_foreign``: the Twisted session yields a ``Deferred``).

Which task runs the caller is therefore never needed to suspend correctly, also when a
framework's runner was started from inside another's (``Deferred.fromCoroutine`` called
in a polyloop task runs the new coroutine's first step at once, in the caller's context).

Rule 3: a ``Task`` is cancelled the way asyncio cancels one, on every backend: a task
waiting on a future cancels that future and stays parked until the wake-up delivers
``Cancelled`` (so a task awaiting another task waits for the inner one's clean-up); a
task that cancels itself, or is cancelled before it starts, gets ``Cancelled`` at its
next step; ``cancelling()``/``uncancel()`` count the requests.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
from collections.abc import Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ._errors import Cancelled

if TYPE_CHECKING:
    from ._session import Session

__all__ = [
    "AsyncioTask",
    "CoroutineTask",
    "Future",
    "Task",
    "current_task",
    "from_asyncio_future",
    "in_asyncio_executor",
]

T = TypeVar("T")
log = logging.getLogger("polyloop")

_PENDING, _FINISHED, _CANCELLED = 0, 1, 2
_STATES = ("pending", "finished", "cancelled")

#: The polyloop task whose coroutine runs in this context (set in each task's context).
_task_var: contextvars.ContextVar[Task[Any] | None] = contextvars.ContextVar("polyloop_task")

InvalidStateError = asyncio.InvalidStateError


def current_task() -> Task[Any] | None:
    """The polyloop task running the caller, or ``None`` (a host application's own
    coroutine, a callback)."""
    task = _task_var.get(None)
    if task is None:
        return None
    # The context variable is inherited by whatever the task's code starts natively (an
    # asyncio.create_task, a Deferred.fromCoroutine): check that the task runs now.
    if isinstance(task, AsyncioTask):
        loop = asyncio._get_running_loop()
        if loop is None or asyncio.current_task(loop) is not task.native:
            return None
    elif isinstance(task, CoroutineTask) and not task._stepping:
        return None
    return task


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
        self._state = _PENDING
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
        return self._state != _PENDING

    def cancelled(self) -> bool:
        """True if it was cancelled."""
        return self._state == _CANCELLED

    def result(self) -> T:
        """The result; raises its exception, ``Cancelled``, or ``InvalidStateError``."""
        state = self._state
        if state == _FINISHED:
            self._log_exception = False
            result = self._result
            if isinstance(result, _Raised):
                raise result.exc
            return result  # type: ignore[no-any-return]
        if state == _CANCELLED:
            raise self._make_cancelled()
        raise InvalidStateError("the result is not ready yet")

    def exception(self) -> BaseException | None:
        """The exception it ended with, or None; raises ``Cancelled`` if cancelled."""
        state = self._state
        if state == _FINISHED:
            self._log_exception = False
            result = self._result
            return result.exc if isinstance(result, _Raised) else None
        if state == _CANCELLED:
            raise self._make_cancelled()
        raise InvalidStateError("the result is not ready yet")

    def _make_cancelled(self) -> BaseException:
        msg = self._cancel_msg
        return Cancelled() if msg is None else Cancelled(msg)

    def set_result(self, result: T) -> None:
        """Complete it with ``result``."""
        if self._state != _PENDING:
            raise InvalidStateError(f"{self!r} is already done")
        self._result = result
        self._state = _FINISHED
        if self._callbacks:
            self._schedule_callbacks()

    def set_exception(self, exception: BaseException | type[BaseException]) -> None:
        """Complete it with ``exception`` (a class is instantiated)."""
        if self._state != _PENDING:
            raise InvalidStateError(f"{self!r} is already done")
        if isinstance(exception, type):
            exception = exception()
        if not isinstance(exception, BaseException):
            raise TypeError(f"an exception was expected, not {type(exception).__name__}")
        if isinstance(exception, StopIteration):
            raise TypeError("StopIteration cannot be raised into a future")
        self._result = _Raised(exception)
        self._state = _FINISHED
        self._log_exception = True
        if self._callbacks:
            self._schedule_callbacks()

    def cancel(self, msg: Any = None) -> bool:
        """Cancel it if pending (True); False if it was already done."""
        if self._state != _PENDING:
            return False
        self._state = _CANCELLED
        self._cancel_msg = msg
        if self._callbacks:
            self._schedule_callbacks()
        return True

    def add_done_callback(
        self, fn: Callable[[Any], object], *, context: contextvars.Context | None = None
    ) -> None:
        """Call ``fn(self)`` soon after it is done (soon, if it already is)."""
        if self._state != _PENDING:
            session = self._session
            if session._closed:
                session = _adoptive(session)
            session._call_soon_in(context, fn, self)
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
        if session._closed:
            session = _adoptive(session)
        call = session._call_soon_in
        for fn, context in callbacks:
            call(context, fn, self)

    def __await__(self) -> Generator[Any, Any, T]:
        if self._state == _PENDING:
            self._asyncio_future_blocking = True
            echo = yield self
            if echo is self and self._state == _PENDING:
                # A runner that cannot wait on us sent us back: Twisted's (see Rule 2).
                self._asyncio_future_blocking = False
                yield from self._suspend_foreign()
        return self.result()

    __iter__ = __await__

    def _suspend_foreign(self) -> Generator[Any, Any, None]:
        # The coroutine's "task" here is its context's _ForeignTask: a cancel scope
        # cancels the futures it awaits (polyloop._cancel).
        from ._cancel import foreign_task
        from ._context import foreign_runner_session

        task = foreign_task()
        if task.must_cancel:
            task.must_cancel = False
            raise Cancelled()
        task.waiting.add(self)
        try:
            yield from foreign_runner_session()._suspend_foreign(self)
        finally:
            task.waiting.discard(self)


class _Raised:
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

    def cancel(self, msg: Any = None, *, _checked: bool = False) -> bool:
        """Ask the coroutine to stop: ``Cancelled`` at its current await (True), or False
        if it is already done. A shielded cancel scope in the task holds the request
        back until it exits."""
        raise NotImplementedError

    def cancelling(self) -> int:
        """Cancellation requests not yet matched by ``uncancel()``."""
        return self._num_cancels

    def uncancel(self) -> int:
        """Undo one cancellation request (for cancel scopes); returns the count left."""
        if self._num_cancels > 0:
            self._num_cancels -= 1
        return self._num_cancels

    def _kill(self) -> None:
        """It ignored cancellation at the end of its session: stop it for good."""
        coro = self._coro
        if coro is not None:
            try:
                coro.close()
            except BaseException:
                log.exception("polyloop: closing %r at the end of its session raised", self)
        if self._state == _PENDING:
            self._finish(_CANCELLED, None)

    def _finish(self, outcome: int, value: Any) -> None:
        """End the task: ``_FINISHED`` with a result or a ``_Raised``, or ``_CANCELLED``."""
        self._coro = None
        self._session._tasks.discard(self)
        if outcome == _CANCELLED:
            Future.cancel(self)
            return
        self._state = _FINISHED
        self._result = value
        if isinstance(value, _Raised):
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


class CoroutineTask(Task[T]):
    """The core's own coroutine driver, on any session (asyncio's ``Task``, re-told).

    Each step runs ``coro.send``/``coro.throw`` in the task's context. What the coroutine
    yields decides how it waits: a ``Future`` (it parks until the future is done), a
    bare ``yield`` (it goes round the loop once), or anything else, which the session may
    know how to wait for (``Session._wait_foreign``: the Twisted session waits on a
    ``Deferred``). Steps are scheduled through ``Session._task_wake``: ``call_soon`` by
    default, a switch into the task's greenlet on gevent.
    """

    __slots__ = (
        "_context",
        "_foreign",
        "_must_cancel",
        "_stepping",
        "_throw",
        "_waiting",
        "native",
    )

    def __init__(self, session: Session, coro: Coroutine[Any, Any, T], name: str | None) -> None:
        super().__init__(session, coro, name)
        self._must_cancel = False
        self._stepping = False
        self._waiting: Future[Any] | None = None
        self._foreign: Any = None  # what the session waits on for us (has cancel())
        self._throw: BaseException | None = None  # to deliver at the next step
        #: The session's own handle for this task (the gevent greenlet), if it has one.
        self.native: Any = None
        self._context = contextvars.copy_context()
        self._context.run(_enter, self)
        session._task_start(self)

    def cancel(self, msg: Any = None, *, _checked: bool = False) -> bool:
        if self._state != _PENDING:
            return False
        if not _checked and _held(self, msg):
            return True
        self._num_cancels += 1
        self._cancel_msg = msg
        waiting = self._waiting
        if waiting is not None and waiting.cancel(msg):
            # The wake-up brings Cancelled (from waiting.result()). A task that is awaited
            # stays pending until its own coroutine has unwound, so we wait for it too.
            return True
        self._must_cancel = True
        foreign = self._foreign
        if foreign is not None:
            self._foreign = None
            foreign.cancel()  # its wake-up comes; the step then throws Cancelled
        elif self._stepping:
            self._session._task_interrupt(self)  # parked inside a step (gevent's own API)
        return True

    def uncancel(self) -> int:
        left = super().uncancel()
        if left == 0:
            self._must_cancel = False  # a request never delivered is taken back too
        return left

    def _wake(self, _: object = None) -> None:
        # A done-callback of the future we wait on, or a foreign wait's end.
        self._waiting = None
        self._foreign = None
        self._session._task_wake(self)

    def _step(self) -> None:
        """Run the coroutine up to its next suspension (the session calls this)."""
        if self._state != _PENDING:
            return
        coro = self._coro
        assert coro is not None
        exc, self._throw = self._throw, None
        if exc is None and self._must_cancel:
            self._must_cancel = False
            exc = self._make_cancelled()
        self._stepping = True
        try:
            if exc is None:
                yielded = self._context.run(coro.send, None)
            else:
                yielded = self._context.run(coro.throw, exc)
        except StopIteration as stop:
            self._finish(_FINISHED, stop.value)
            return
        except Cancelled:
            self._finish(_CANCELLED, None)
            return
        except (KeyboardInterrupt, SystemExit) as error:
            self._finish(_FINISHED, _Raised(error))
            raise
        except BaseException as error:
            error = self._session._native_error(error)
            if isinstance(error, Cancelled):
                self._finish(_CANCELLED, None)
            else:
                self._finish(_FINISHED, _Raised(error))
            return
        finally:
            self._stepping = False
        self._park(yielded)

    def _park(self, yielded: Any) -> None:
        if yielded is None:  # a bare yield (sleep(0)): once round the loop
            self._session._task_wake(self)
            return
        if isinstance(yielded, Future):
            yielded._asyncio_future_blocking = False
            if yielded._state != _PENDING:
                self._session._task_wake(self)
                return
            self._waiting = yielded
            yielded._callbacks.append((self._wake, None))
            if self._must_cancel and yielded.cancel(self._cancel_msg):
                self._must_cancel = False
            return
        try:
            self._foreign = self._session._wait_foreign(yielded, self._wake)
        except TypeError as error:
            self._throw = error  # "cannot await that", raised at the await
            self._session._task_wake(self)
            return
        if self._must_cancel and self._foreign is not None:
            foreign, self._foreign = self._foreign, None
            foreign.cancel()


class AsyncioTask(Task[T]):
    """A task on an asyncio loop's own ``Task`` (the asyncio and Tornado sessions).

    Why not ``CoroutineTask`` there: asyncio code inside a polyloop task must find itself
    in an asyncio task (``asyncio.current_task()``, ``asyncio.timeout``, anyio, sniffio),
    as it would in any asyncio program. Cancellation is asyncio's, which Rule 3 copies.
    """

    __slots__ = ("native",)

    def __init__(
        self,
        session: Session,
        coro: Coroutine[Any, Any, T],
        name: str | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__(session, coro, name)
        context = contextvars.copy_context()
        context.run(_enter, self)
        #: The asyncio task that runs the coroutine.
        self.native = loop.create_task(self._run(coro), name=self._name, context=context)
        # Cancelled before its first step, the native task never enters _run's body.
        self.native.add_done_callback(self._native_done)

    async def _run(self, coro: Coroutine[Any, Any, T]) -> None:
        try:
            result = await coro
        except Cancelled:
            self._finish(_CANCELLED, None)
            raise
        except (KeyboardInterrupt, SystemExit) as error:
            self._finish(_FINISHED, _Raised(error))
            raise
        except BaseException as error:
            self._finish(_FINISHED, _Raised(error))
        else:
            self._finish(_FINISHED, result)

    def _native_done(self, native: asyncio.Task[None]) -> None:
        if self._state == _PENDING:
            coro = self._coro
            self._finish(_CANCELLED, None)
            if coro is not None:
                coro.close()  # never started: no "coroutine was never awaited" warning

    def cancel(self, msg: Any = None, *, _checked: bool = False) -> bool:
        if self._state != _PENDING:
            return False
        if not _checked and _held(self, msg):
            return True
        return self.native.cancel(msg)

    def _kill(self) -> None:
        self.native.cancel()  # asyncio's task owns the coroutine: ask it once more

    def cancelling(self) -> int:
        return self.native.cancelling()

    def uncancel(self) -> int:
        return self.native.uncancel()


def from_asyncio_future(session: Session, native: asyncio.Future[T]) -> Future[T]:
    """For backends on asyncio: a polyloop ``Future`` with ``native``'s outcome, so that any
    runner can await it. Cancelling the polyloop future cancels ``native``."""
    fut: Future[T] = Future(session)

    def copy(native: asyncio.Future[T]) -> None:
        if fut.done():
            return
        if native.cancelled():
            fut.cancel()
        elif (exc := native.exception()) is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(native.result())

    def back(fut: Future[T]) -> None:
        if fut.cancelled():
            native.cancel()

    native.add_done_callback(copy)
    fut.add_done_callback(back)
    return fut


def in_asyncio_executor(
    session: Session, loop: asyncio.AbstractEventLoop, fn: Callable[..., T], *args: Any
) -> Future[T]:
    """For backends on asyncio: ``fn(*args)`` in ``loop``'s default executor (the end of
    the loop joins its threads), in a context that names ``session`` whatever the caller's
    names, so that ``from_thread`` in the worker reaches the session."""
    ctx = session._callback_context()
    return from_asyncio_future(session, loop.run_in_executor(None, ctx.run, fn, *args))


def _adoptive(ended: Session) -> Session:
    """A future outlived its session (made in one ``polyloop.run``, used in a later one):
    its callbacks go to the live session whose code completes it or awaits it instead, so
    awaiting it works as on a live session. Only the context says so, never detection:
    while an owned session ends, its loop still runs its last callbacks."""
    from ._context import _session_var

    current = _session_var.get(None)
    return current if current is not None and not current.closed else ended


def _held(task: Task[Any], msg: Any) -> bool:
    from ._cancel import hold_if_shielded

    return hold_if_shielded(task, msg)


def _enter(task: Task[Any]) -> None:
    from ._context import _session_var

    _task_var.set(task)
    _session_var.set(task._session)
