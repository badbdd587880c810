"""Task groups: structured concurrency on every backend (``asyncio.TaskGroup``'s rules).

Rule: the ``async with`` block does not end before every task started in it has ended.
The first task to fail cancels the others and the block's own code, and every error
comes out together as one ``ExceptionGroup`` (a ``BaseExceptionGroup`` if one is not an
``Exception``) -- always a group, also for a single error, as asyncio and anyio do, so
``except*`` handles them. ``Cancelled`` in a child is not an error. Cancelling the task
that runs the block cancels the children, waits for them, and then lets its
``Cancelled`` through.

Rule 2 (``start``, anyio's semantics): a task started with ``await tg.start(fn)`` is
the caller's until it calls ``task_status.started(value)``: what it raises before then
is raised to the caller (not into the group), and cancelling the caller cancels it.
From ``started()`` on it is a child like any other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any, Generic, TypeVar

from ._cancel import CancelScope
from ._context import current_backend
from ._errors import Cancelled
from ._futures import Future, Task, check_coroutine
from ._session import Session

__all__ = ["TASK_STATUS_IGNORED", "TaskGroup", "TaskStatus"]

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)


class TaskStatus(Generic[T_contra]):
    """What ``TaskGroup.start`` passes as ``task_status=``: the started task calls
    ``task_status.started(value)`` once it is ready, and ``start()`` returns ``value``."""

    def __init__(self, future: Future[Any] | None, on_started: Callable[[], None]) -> None:
        self._future = future
        self._on_started = on_started

    def __repr__(self) -> str:
        state = "waiting" if self._future is None or not self._future.done() else "started"
        return f"<polyloop.TaskStatus {state}>"

    def started(self, value: T_contra | None = None) -> None:
        """Report that the task is ready: the caller of ``start()`` gets ``value`` back,
        and the task becomes a child of the group. ``RuntimeError`` if called twice.
        After the caller of ``start()`` was cancelled it does nothing (the task is being
        cancelled too)."""
        future = self._future
        if future is None:
            return
        if future.done():
            if future.cancelled():
                return  # the caller of start() was cancelled: nothing to report to
            raise RuntimeError("called 'started' twice on the same task status")
        future.set_result(value)
        self._on_started()


class _Ignored(TaskStatus[object]):
    """The default for a ``task_status`` parameter, so the function also runs under
    ``start_soon`` (``started()`` then does nothing)."""

    def __init__(self) -> None:
        super().__init__(None, lambda: None)

    def __repr__(self) -> str:
        return "polyloop.TASK_STATUS_IGNORED"


#: The default for a ``task_status`` parameter, so that a function written for
#: ``tg.start`` can also be spawned with ``start_soon`` (``started()`` then does nothing).
TASK_STATUS_IGNORED: TaskStatus[Any] = _Ignored()


class TaskGroup:
    """``async with polyloop.TaskGroup() as tg: tg.spawn(coro)``: run children, wait for
    all of them; the first error cancels the rest and comes out as an ``ExceptionGroup``."""

    def __init__(self) -> None:
        self._session: Session | None = None
        self._tasks: set[Task[Any]] = set()
        self._errors: list[BaseException] = []
        self._scope: CancelScope | None = None
        self._entered = self._exiting = self._aborting = False
        self._all_done: Future[None] | None = None
        #: Tasks of start() that have not called started() yet, with their start future.
        self._starting: dict[Task[Any], Future[Any]] = {}

    def __repr__(self) -> str:
        return f"<polyloop.TaskGroup tasks={len(self._tasks)} errors={len(self._errors)}>"

    async def __aenter__(self) -> TaskGroup:
        if self._entered:
            raise RuntimeError("a TaskGroup can be entered only once")
        self._entered = True
        self._session = current_backend()
        # The block's own code, so that a failing child can cancel it.
        self._scope = CancelScope()
        self._scope.__enter__()
        return self

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str | None = None) -> Task[T]:
        """Start ``coro`` as a child task of the group, and return it."""
        check_coroutine(coro)
        if not self._entered or (self._exiting and not self._tasks):
            coro.close()
            raise RuntimeError("this TaskGroup is not active: spawn inside its async with")
        assert self._session is not None
        task = self._session.spawn(coro, name=name)
        if task.done():
            self._child_done(task)
            return task
        self._tasks.add(task)
        task.add_done_callback(self._child_done)
        if self._aborting:
            task.cancel()
        return task

    def start_soon(
        self, fn: Callable[..., Awaitable[Any]], *args: Any, name: str | None = None
    ) -> None:
        """``spawn(fn(*args))``, as anyio spells it."""
        coro = fn(*args)
        if not isinstance(coro, Coroutine):
            raise TypeError(f"start_soon() needs an async function, not {fn!r}")
        self.spawn(coro, name=name)

    async def start(
        self, fn: Callable[..., Awaitable[Any]], *args: Any, name: str | None = None
    ) -> Any:
        """Run ``fn(*args, task_status=status)`` as a task and wait until it calls
        ``status.started(value)``; return ``value`` (``None`` if it passed none).

        Until ``started()`` the task belongs to the caller: an error it raises before
        then is raised here, not into the group, and does not cancel the group;
        cancelling the caller cancels the task and waits for it to end. If the task
        returns without calling ``started()``, ``RuntimeError``. After ``started()`` it
        is a child of the group like one from ``spawn``; calling ``started()`` twice
        raises ``RuntimeError`` in the task. ``RuntimeError`` if the group is not active.
        """
        if not self._entered or (self._exiting and not self._tasks):
            raise RuntimeError("this TaskGroup is not active: start inside its async with")
        assert self._session is not None
        future: Future[Any] = self._session.create_future()
        status: TaskStatus[Any] = TaskStatus(future, lambda: self._promote(task))
        coro = fn(*args, task_status=status)
        if not isinstance(coro, Coroutine):
            raise TypeError(f"start() needs an async function, not {fn!r}")
        task = self._session.spawn(coro, name=name)
        self._starting[task] = future
        self._tasks.add(task)
        task.add_done_callback(self._child_done)
        try:
            return await future
        except BaseException:
            future.cancel()  # a started() from now on reports to no one
            if not task.done():
                # The caller was cancelled (or the start failed): the starting task is
                # the caller's, so it ends with it, before start() lets the error out.
                task.cancel()
                with CancelScope(shield=True):
                    done: Future[None] = self._session.create_future()
                    task.add_done_callback(lambda _: _resolve(done))
                    await done
            raise

    def _promote(self, task: Task[Any]) -> None:
        """``started()`` was called: ``task`` is a child of the group from now on."""
        self._starting.pop(task, None)
        if self._aborting:
            task.cancel()

    def cancel(self) -> None:
        """Cancel every child and the block's own code (the block then ends quietly)."""
        self._abort()

    def _abort(self) -> None:
        self._aborting = True
        for task in list(self._tasks):
            if task not in self._starting:  # the caller of start() cancels those
                task.cancel()
        if not self._exiting and self._scope is not None:
            self._scope.cancel()

    def _child_done(self, task: Task[Any]) -> None:
        self._tasks.discard(task)
        future = self._starting.pop(task, None)
        if future is not None:
            # Ended before started(): the outcome is the caller's, not the group's.
            if future.done():
                pass  # the caller was cancelled meanwhile
            elif task.cancelled():
                future.set_exception(Cancelled())
            elif task.exception() is not None:
                future.set_exception(task.exception())  # type: ignore[arg-type]
            else:
                future.set_exception(
                    RuntimeError("the task ended without calling task_status.started()")
                )
        elif not task.cancelled():
            exc = task.exception()
            if exc is not None:
                self._errors.append(exc)
                if not self._aborting:
                    self._abort()
        if not self._tasks and self._all_done is not None and not self._all_done.done():
            self._all_done.set_result(None)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        self._exiting = True
        assert self._session is not None and self._scope is not None
        if exc is not None and not isinstance(exc, Cancelled):
            self._errors.append(exc)  # the block's own error counts, and stops the rest
        if exc is not None and not self._aborting:
            self._abort()
        cancelled: BaseException | None = None
        while self._tasks:
            self._all_done = self._session.create_future()
            try:
                await self._all_done
            except Cancelled as error:  # the task running the block was cancelled
                cancelled = error
                if not self._aborting:
                    self._abort()
        ending = cancelled or exc
        scope_swallowed = self._scope.__exit__(
            None if ending is None else type(ending), ending, None
        )
        if self._errors:
            errors, self._errors = self._errors, []
            if all(isinstance(e, Exception) for e in errors):
                raise ExceptionGroup("errors in a polyloop TaskGroup", errors)  # type: ignore[type-var]
            raise BaseExceptionGroup("errors in a polyloop TaskGroup", errors)
        if cancelled is not None and not scope_swallowed:
            raise cancelled
        if isinstance(exc, Cancelled) and scope_swallowed:
            return True  # our own cancellation of the block, after cancel()
        return False


def _resolve(future: Future[None]) -> None:
    if not future.done():
        future.set_result(None)
