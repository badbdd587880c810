"""Futures and tasks: the rules of ``polyloop.Future`` and ``polyloop.Task`` not covered
by ``timers`` (results), ``tasks`` (spawn, cancel) and ``taskapi`` (callbacks, accessors).

Covers ``set_exception`` with a class or with ``StopIteration``, ``cancel()``'s return
value, a future's exception nobody retrieved being logged, a task refusing
``set_result``/``set_exception``, ``get_coro()``/``get_name()``, ``cancelling()`` and
``uncancel()`` counting requests, a task cancelling itself, and a task's own result when
it catches ``Cancelled`` from an awaited future.
"""

from __future__ import annotations

import gc

import polyloop

from .._registry import check
from ..referee import expect_logged, waiting_for


@check("futures", clauses=["future.outcome"])
async def check_set_exception_rules(session: polyloop.Session) -> None:
    """set_exception(SomeError) instantiates the class; StopIteration is a TypeError."""
    fut = session.create_future()
    fut.set_exception(LookupError)
    exc = fut.exception()
    assert isinstance(exc, LookupError), (
        f"set_exception(LookupError) left exception() = {exc!r}, not a LookupError instance"
    )
    other = session.create_future()
    try:
        other.set_exception(StopIteration())
    except TypeError:
        pass
    else:
        raise AssertionError("set_exception(StopIteration()) was accepted, not TypeError")
    assert not other.done(), "a refused set_exception completed the future anyway"
    other.cancel()


@check("futures", clauses=["future.cancel"])
async def check_cancel_return_value(session: polyloop.Session) -> None:
    """Future.cancel() is True on a pending future, False once done (result kept)."""
    fut = session.create_future()
    assert fut.cancel() is True, "cancel() of a pending future did not return True"
    assert fut.cancel() is False, "cancel() of a cancelled future did not return False"
    done = session.create_future()
    done.set_result("kept")
    assert done.cancel() is False, "cancel() of a finished future did not return False"
    assert done.result() == "kept" and not done.cancelled(), (
        f"cancel() of a finished future changed it: {done!r}"
    )


@check("futures", clauses=["task.unretrieved_error_logged"])
async def check_unretrieved_exception_logged(session: polyloop.Session) -> None:
    """A future whose exception nobody retrieves is logged when it is garbage; one
    whose exception was retrieved is not."""
    with expect_logged() as logged:
        lost = session.create_future()
        lost.set_exception(ZeroDivisionError("nobody retrieves me"))
        seen = session.create_future()
        seen.set_exception(ZeroDivisionError("retrieved"))
        seen.exception()
        del lost, seen
        gc.collect()
        await session.sleep(0)
    mine = [t for t in logged if "nobody retrieves me" in t]
    assert len(mine) == 1, (
        f"{len(mine)} log records for a future's unretrieved exception, expected 1; records:"
        f" {logged}"
    )
    assert not [t for t in logged if "retrieved" in t and "nobody" not in t], (
        f"a retrieved exception was logged: {logged}"
    )


@check("futures", clauses=["task.api"])
async def check_task_outcome_is_its_coroutine(session: polyloop.Session) -> None:
    """A task refuses set_result/set_exception (RuntimeError); get_coro() is None once
    it is done; get_name() is the name given to spawn."""
    gate = session.create_future()

    async def child() -> str:
        await gate
        return "mine"

    task = session.spawn(child(), name="named-child")
    assert task.get_name() == "named-child", f"get_name() is {task.get_name()!r}"
    for call, arg in ((task.set_result, "forged"), (task.set_exception, KeyError("forged"))):
        try:
            call(arg)  # type: ignore[operator]
        except RuntimeError:
            pass
        else:
            raise AssertionError(f"Task.{call.__name__}() was accepted (rule: RuntimeError)")
    assert task.get_coro() is not None, "get_coro() of a running task is None"
    gate.set_result(None)
    with waiting_for("a spawned task to return"):
        result = await task
    assert result == "mine", f"the task's result is {result!r}, not its coroutine's 'mine'"
    assert task.get_coro() is None, f"get_coro() of a finished task is {task.get_coro()!r}"


@check("futures", clauses=["task.cancelling_counts"])
async def check_cancelling_counts(session: polyloop.Session) -> None:
    """cancelling() counts cancel requests not undone by uncancel(); a task that catches
    Cancelled and returns has its result."""
    entered = session.create_future()

    async def child() -> tuple[int, int]:
        entered.set_result(None)
        try:
            await session.create_future()
        except polyloop.Cancelled:
            me = polyloop.current_task()
            assert me is not None
            seen = me.cancelling()
            return seen, me.uncancel()
        return -1, -1

    task = session.spawn(child())
    with waiting_for("a spawned task to start"):
        await entered
    assert task.cancelling() == 0, f"cancelling() before any cancel() is {task.cancelling()}"
    task.cancel()
    task.cancel()
    with waiting_for("a cancelled task that catches Cancelled to return"):
        seen, left = await task
    assert seen == 2, f"cancelling() inside the task after two cancel() calls was {seen}"
    assert left == 1, f"uncancel() after two cancel() calls returned {left}, not 1"


@check("futures", clauses=["task.cancel"])
async def check_task_cancels_itself(session: polyloop.Session) -> None:
    """A task that calls cancel() on itself gets Cancelled at its next await."""
    steps: list[str] = []

    async def child() -> None:
        me = polyloop.current_task()
        assert me is not None
        me.cancel()
        steps.append("after cancel()")
        try:
            await session.sleep(0)
        except polyloop.Cancelled:
            steps.append("Cancelled at the next await")
            raise
        steps.append("not cancelled")

    task = session.spawn(child())
    try:
        with waiting_for("a task that cancelled itself to end"):
            await task
    except polyloop.Cancelled:
        pass
    assert steps == ["after cancel()", "Cancelled at the next await"], (
        f"a task that cancelled itself went through {steps} (rule: Cancelled at its next await)"
    )
    assert task.cancelled(), f"the task is {task!r}, not cancelled"
