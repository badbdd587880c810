"""Mutants of futures, tasks and cancellation: one bug each in the core's ``Future`` or
``CoroutineTask``, run on the worked example (its sessions make them).
"""

from __future__ import annotations

import contextvars
from typing import Any

import polyloop
from polyloop.lowlevel import AsyncioTask, CoroutineTask
from polyloop_asyncio import AsyncioSession

from . import mutant

# CoroutineTask keeps its outcome as ``_Raised`` for an exception; the mutants below get
# at it through a finished task's own accessors only where they can.


def _is_error(value: Any) -> bool:
    return type(value).__name__ == "Raised"


# --- tasks ---


@mutant(
    "tasks",
    "awaiting a failed task raises its exception",
    clauses=["task.outcome"],
    checks=["tasks.spawn_exception"],
    expect=["lost its exception"],
)
class TaskSwallowsErrors(CoroutineTask[Any]):
    def _finish(self, outcome: int, value: Any) -> None:
        super()._finish(outcome, None if _is_error(value) else value)


@mutant(
    "tasks",
    "awaiting a task gives its coroutine's result",
    clauses=["task.outcome"],
    checks=["tasks.spawn_result"],
    expect=["whose coroutine returns 42 gave None"],
)
class TaskLosesResult(CoroutineTask[Any]):
    def _finish(self, outcome: int, value: Any) -> None:
        super()._finish(outcome, value if _is_error(value) else None)


@mutant(
    "tasks",
    "a task's coroutine runs in the task's context (current_task() is it)",
    clauses=["task.api"],
    checks=["taskapi.current_task", "session.current_backend"],
    expect=["current_task"],
)
class TaskContextNotEntered(CoroutineTask[Any]):
    def __init__(self, session: Any, coro: Any, name: Any) -> None:
        super().__init__(session, coro, name)
        self._context = contextvars.copy_context()  # the spawner's, without the task


@mutant(
    "cancellation",
    "cancel() delivers Cancelled at the task's current await",
    clauses=["task.cancel"],
    checks=["tasks.cancel_at_await", "tasks.cancel_sleeping"],
    expect=["a cancelled task", "cancelled in sleep(60)"],
)
class TaskCancelIgnored(CoroutineTask[Any]):
    def cancel(self, msg: Any = None, **kwargs: Any) -> bool:
        return not self.done()  # says yes, does nothing


@mutant(
    "cancellation",
    "cancel() wakes a task waiting on a future at once",
    clauses=["task.cancel"],
    checks=["tasks.cancel_sleeping"],
    expect=["cancelled in sleep(60)"],
)
class TaskCancelWaitsForWakeUp(CoroutineTask[Any]):
    def cancel(self, msg: Any = None, **kwargs: Any) -> bool:
        if self.done():
            return False
        self._num_cancels += 1
        self._must_cancel = True  # read at the next step: only once the future completes
        return True


@mutant(
    "cancellation",
    "cancel() of a pending task returns True",
    clauses=["task.cancel"],
    checks=["tasks.cancel_at_await"],
    expect=["cancel() on a pending task returned False"],
)
class TaskCancelReturnsFalse(CoroutineTask[Any]):
    def cancel(self, msg: Any = None, **kwargs: Any) -> bool:
        super().cancel(msg, **kwargs)
        return False


@mutant(
    "cancellation",
    "cancel() of a finished task returns False and keeps its result",
    clauses=["task.cancel_caught"],
    checks=["tasks.cancel_done_task"],
    expect=["cancel() on a finished task returned True"],
)
class TaskCancelDoneSaysTrue(CoroutineTask[Any]):
    def cancel(self, msg: Any = None, **kwargs: Any) -> bool:
        return super().cancel(msg, **kwargs) or True


@mutant(
    "cancellation",
    "one cancellation type: awaiting a cancelled task raises Cancelled",
    clauses=["task.cancel"],
    checks=["tasks.cancel_at_await"],
    expect=["not polyloop.Cancelled"],
)
class TaskCancelledIsRuntimeError(CoroutineTask[Any]):
    def _finish(self, outcome: int, value: Any) -> None:
        if outcome == 2:  # cancelled: reported as a failure of the framework's own kind
            from polyloop._futures import Raised as _Raised

            super()._finish(1, _Raised(RuntimeError("task was cancelled")))
            return
        super()._finish(outcome, value)


@mutant(
    "cancellation",
    "cancelling() counts the cancel() requests",
    clauses=["task.cancelling_counts"],
    checks=["futures.cancelling_counts"],
    expect=["two cancel() calls"],
)
class TaskCancellingNotCounted(CoroutineTask[Any]):
    def cancelling(self) -> int:
        return 1 if self._num_cancels else 0


# --- futures ---


@mutant(
    "futures",
    "done-callbacks run soon after completion, never inside set_result",
    clauses=["future.done_callbacks"],
    checks=["taskapi.done_callbacks"],
    expect=["inside set_result"],
)
class FutureCallbacksInline(polyloop.Future[Any]):
    __slots__ = ()

    def _schedule_callbacks(self) -> None:
        callbacks, self._callbacks = self._callbacks, []
        for fn, context in callbacks:
            (context.run(fn, self) if context is not None else fn(self))


@mutant(
    "futures",
    "awaiting a future with an exception raises it",
    clauses=["future.outcome"],
    checks=["futures.exception"],
    expect=["instead of raising it"],
)
class FutureLosesException(polyloop.Future[Any]):
    __slots__ = ()

    def set_exception(self, exception: Any) -> None:
        self.set_result(None)  # "done" is all that matters


@mutant(
    "futures",
    "cancel() makes awaiting the future raise Cancelled (and wakes it)",
    clauses=["future.cancel"],
    checks=["futures.cancel"],
    expect=["a future cancelled by call_soon(fut.cancel)"],
)
class FutureCancelNoWakeUp(polyloop.Future[Any]):
    __slots__ = ()

    def cancel(self, msg: Any = None, **kwargs: Any) -> bool:
        if self.done():
            return False
        self._state = 2
        self._cancel_msg = msg
        return True  # the callbacks are never told


@mutant(
    "futures",
    "an exception nobody retrieves is logged when the future is garbage",
    clauses=["task.unretrieved_error_logged"],
    checks=["futures.unretrieved_exception_logged"],
    expect=["log records"],
)
class FutureForgetsErrors(polyloop.Future[Any]):
    __slots__ = ()

    def __del__(self) -> None:
        pass


@mutant(
    "futures",
    "set_exception(cls) stores an instance of cls",
    clauses=["future.outcome"],
    checks=["futures.set_exception_rules"],
    expect=["not a LookupError instance"],
)
class FutureKeepsExceptionClass(polyloop.Future[Any]):
    __slots__ = ()

    def set_exception(self, exception: Any) -> None:
        if isinstance(exception, type):
            from polyloop._futures import Raised as _Raised

            self._result = _Raised(exception)  # type: ignore[arg-type]
            self._state = 1
            self._log_exception = True
            if self._callbacks:
                self._schedule_callbacks()
            return
        super().set_exception(exception)


# --- the asyncio backend's tasks (also usable in host mode, where a spec with options
# makes the harness attach this backend to the host's loop) ---


class _SwallowingAsyncioTask(AsyncioTask[Any]):
    async def _run(self, coro: Any) -> None:
        try:
            await super()._run(coro)
        finally:
            if self._state == 1 and _is_error(self._result):
                self._result = None  # the failure becomes a result of None
                self._log_exception = False


class _SwallowingAsyncioSession(AsyncioSession):
    def new_task(self, coro: Any, name: Any) -> Any:
        return _SwallowingAsyncioTask(self, coro, name, self.loop)


@mutant(
    "tasks",
    "awaiting a failed task raises its exception (asyncio backend)",
    clauses=["task.outcome"],
    checks=["tasks.spawn_exception"],
    expect=["lost its exception"],
)
class AsyncioTaskSwallowsErrors(_SwallowingAsyncioSession):
    pass
