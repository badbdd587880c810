"""Tasks and cancellation: ``spawn``, ``Task.cancel``, ``wait_for``.

Covers a spawned task's result and exception, ``task.cancel()`` raising
``polyloop.Cancelled`` at the coroutine's current ``await`` (a future, a sleep), cleanup
code running, awaiting a cancelled task raising ``polyloop.Cancelled``, cancelling a
finished task, and ``wait_for`` (result, ``TimeoutError`` with the inner coroutine
cancelled).
"""

from __future__ import annotations

import time
from typing import Any

import polyloop

from .._registry import check
from ..referee import waiting_for


@check("tasks", clauses=["task.outcome"])
async def check_spawn_result(session: polyloop.Session) -> None:
    """spawn(coro) runs it concurrently; awaiting the task gives its result."""
    steps: list[str] = []

    async def child(x: int) -> int:
        steps.append("child started")
        await session.sleep(0)
        steps.append("child done")
        return x * 2

    task = session.spawn(child(21))
    assert isinstance(task, polyloop.Task), f"spawn() returned {task!r}, not a polyloop.Task"
    steps.append("parent")
    with waiting_for("a spawned task to return"):
        got = await task
    assert got == 42, f"awaiting a task whose coroutine returns 42 gave {got!r}"
    assert task.done() and task.result() == 42, f"after it returned: {task!r}"
    assert steps[-1] == "child done" and "parent" in steps, (
        f"steps ran as {steps}: the task's result came before its coroutine finished"
    )


@check("tasks", clauses=["task.outcome"])
async def check_spawn_exception(session: polyloop.Session) -> None:
    """A spawned task that raises: awaiting it raises the same exception object."""
    err = LookupError("from the child")

    async def child() -> None:
        await session.sleep(0)
        raise err

    task = session.spawn(child())
    try:
        with waiting_for("a task that raises to end"):
            got = await task
    except LookupError as exc:
        assert exc is err, f"awaiting the task raised another LookupError object: {exc!r}"
    else:
        raise AssertionError(
            f"awaiting a task whose coroutine raised LookupError returned {got!r}: the task"
            " lost its exception (rule: awaiting a failed task raises its exception)"
        )
    assert task.exception() is err, f"task.exception() is {task.exception()!r}"


@check("tasks", clauses=["task.cancel"])
async def check_cancel_at_await(session: polyloop.Session) -> None:
    """task.cancel() raises polyloop.Cancelled at the task's await; finally blocks run."""
    seen: list[str] = []
    started = session.create_future()
    never = session.create_future()

    async def child() -> None:
        started.set_result(None)
        try:
            await never
        except polyloop.Cancelled:
            seen.append("cancelled at await")
            raise
        finally:
            seen.append("finally")
        seen.append("after await")  # never reached

    task = session.spawn(child())
    with waiting_for("a spawned task to start"):
        await started
    assert task.cancel() is True, "cancel() on a pending task returned False"
    try:
        with waiting_for("a cancelled task to end"):
            got = await task
    except polyloop.Cancelled:
        pass
    except Exception as exc:
        raise AssertionError(
            f"awaiting a cancelled task raised {exc!r}, not polyloop.Cancelled (rule: one"
            " cancellation type on every backend)"
        ) from exc
    else:
        raise AssertionError(f"awaiting a cancelled task returned {got!r}, not Cancelled")
    assert seen == ["cancelled at await", "finally"], (
        f"the cancelled coroutine went through {seen}, expected ['cancelled at await',"
        " 'finally'] (rule: cancel() raises Cancelled at the task's await)"
    )
    assert task.done() and task.cancelled(), f"after its cancellation the task is {task!r}"


@check("tasks", clauses=["task.cancel"])
async def check_cancel_sleeping(session: polyloop.Session) -> None:
    """Cancelling a task in sleep() wakes it at once with polyloop.Cancelled."""
    caught: list[BaseException] = []

    async def child() -> None:
        try:
            await session.sleep(60)
        except BaseException as exc:
            caught.append(exc)
            raise

    task = session.spawn(child())
    await session.sleep(0.01)
    start = time.monotonic()
    task.cancel()
    try:
        with waiting_for("a task cancelled in sleep(60) to end"):
            await task
    except polyloop.Cancelled:
        pass
    took = time.monotonic() - start
    assert len(caught) == 1 and isinstance(caught[0], polyloop.Cancelled), (
        f"a task cancelled in sleep(60) saw {caught}, not one Cancelled"
    )
    assert took < 5, f"cancelling a task in sleep(60) took {took:.2f} s to take effect"


@check("tasks", clauses=["task.cancel"])
async def check_cancel_before_start(session: polyloop.Session) -> None:
    """A task cancelled right after spawn never completes normally; awaiting raises Cancelled."""
    ran: list[str] = []

    async def child() -> None:
        await session.sleep(0)
        ran.append("completed")

    task = session.spawn(child())
    task.cancel()
    try:
        with waiting_for("a task cancelled before it started to end"):
            got = await task
    except polyloop.Cancelled:
        pass
    else:
        raise AssertionError(f"awaiting a task cancelled at once returned {got!r}")
    assert ran == [], f"a task cancelled right after spawn() ran to completion: {ran}"


@check("tasks", clauses=["task.cancel_caught"])
async def check_cancel_done_task(session: polyloop.Session) -> None:
    """cancel() on a finished task returns False and keeps its result."""

    async def child() -> str:
        return "result"

    task = session.spawn(child())
    with waiting_for("a spawned task to return"):
        got = await task
    assert got == "result", f"awaiting the task gave {got!r}, not 'result'"
    assert task.cancel() is False, "cancel() on a finished task returned True"
    assert task.result() == "result", f"cancel() on a finished task changed it: {task!r}"


@check("tasks", clauses=["task.cancel_caught"])
async def check_cancel_swallowed(session: polyloop.Session) -> None:
    """A task may catch Cancelled and return a value: awaiting it gives that value."""
    started = session.create_future()

    async def child() -> str:
        started.set_result(None)
        try:
            await session.create_future()
        except polyloop.Cancelled:
            return "cleaned up"
        return "not cancelled"

    task = session.spawn(child())
    with waiting_for("a spawned task to start"):
        await started
    task.cancel()
    with waiting_for("a task that catches Cancelled to return"):
        got = await task
    assert got == "cleaned up", (
        f"a task that caught Cancelled and returned 'cleaned up' gave {got!r}"
    )


@check("tasks", clauses=["task.wait_for"])
async def check_wait_for_result(session: polyloop.Session) -> None:
    """polyloop.wait_for returns the result of a coroutine that finishes in time."""

    async def quick() -> str:
        await session.sleep(0)
        return "in time"

    start = time.monotonic()
    try:
        got = await polyloop.wait_for(quick(), 5)
    except TimeoutError:
        took = time.monotonic() - start
        raise AssertionError(
            f"wait_for(quick(), 5) raised TimeoutError after {took:.4f} s of wall-clock time"
            " for a coroutine that returns at once" + (": timers fire early" if took < 4 else "")
        ) from None
    assert got == "in time", f"wait_for returned {got!r}, not the coroutine's 'in time'"


@check("tasks", clauses=["task.wait_for"])
async def check_wait_for_timeout(session: polyloop.Session) -> None:
    """polyloop.wait_for raises TimeoutError and the slow coroutine sees Cancelled."""
    seen: list[Any] = []

    async def slow() -> None:
        try:
            await session.sleep(60)
        except polyloop.Cancelled:
            seen.append("cancelled")
            raise

    start = time.monotonic()
    try:
        with waiting_for("wait_for(slow(), 0.02) to time out"):
            await polyloop.wait_for(slow(), 0.02)
    except TimeoutError:
        pass
    else:
        raise AssertionError("wait_for(sleep(60), 0.02) returned instead of TimeoutError")
    took = time.monotonic() - start
    assert seen == ["cancelled"], f"on the timeout the inner coroutine saw {seen}, not Cancelled"
    assert took >= 0.02 - 0.002, (
        f"wait_for(..., 0.02) timed out after {took:.4f} s of wall-clock time: timers fire early"
    )
    assert took < 30, "wait_for waited for the coroutine instead"


@check("tasks", clauses=["task.outcome"])
async def check_many_tasks(session: polyloop.Session) -> None:
    """500 concurrent tasks all complete, each with its own result."""

    async def child(i: int) -> int:
        await session.sleep(0)
        await session.sleep(0.001)
        return i

    tasks = [session.spawn(child(i)) for i in range(500)]
    with waiting_for(lambda: f"500 tasks ({sum(t.done() for t in tasks)} done)"):
        results = [await t for t in tasks]
    wrong = [(i, r) for i, r in enumerate(results) if r != i]
    assert not wrong, f"{len(wrong)} of 500 tasks gave another result, first {wrong[:3]}"
