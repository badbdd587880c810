"""Task groups: structured concurrency on every backend (``asyncio.TaskGroup``'s rules).

Rule: the ``async with`` block does not end before every task started in it has ended.
The first task to fail cancels the others and the block's own code, and every error
comes out together as one ``ExceptionGroup`` (a ``BaseExceptionGroup`` if one is not an
``Exception``) -- always a group, also for a single error, as asyncio and anyio do, so
``except*`` handles them. ``Cancelled`` in a child is not an error. Cancelling the task
that runs the block cancels the children, waits for them, and then lets its
``Cancelled`` through.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

from ._cancel import CancelScope
from ._context import current_backend
from ._errors import Cancelled
from ._futures import Future, Task, check_coroutine
from ._session import Session

__all__ = ["TaskGroup"]

T = TypeVar("T")


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

    def cancel(self) -> None:
        """Cancel every child and the block's own code (the block then ends quietly)."""
        self._abort()

    def _abort(self) -> None:
        self._aborting = True
        for task in list(self._tasks):
            task.cancel()
        if not self._exiting and self._scope is not None:
            self._scope.cancel()

    def _child_done(self, task: Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
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
