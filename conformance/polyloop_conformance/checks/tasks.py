"""Tasks and cancellation: ``spawn``, ``Task.cancel``, ``wait_for``.

Covers a spawned task's result and exception, ``task.cancel()`` raising
``polyloop.Cancelled`` at the coroutine's current ``await`` (a future, a sleep), cleanup
code running, awaiting a cancelled task raising ``polyloop.Cancelled``, cancelling a
finished task, and ``wait_for`` (result, ``TimeoutError`` with the inner coroutine
cancelled).
"""

from __future__ import annotations

from typing import Any

import polyloop

from .._registry import check


@check("tasks")
async def check_spawn_result(session: polyloop.Session) -> None:
    """spawn(coro) runs it concurrently; awaiting the task gives its result."""
    steps: list[str] = []

    async def child(x: int) -> int:
        steps.append("child started")
        await session.sleep(0)
        steps.append("child done")
        return x * 2

    task = session.spawn(child(21))
    assert isinstance(task, polyloop.Task)
    steps.append("parent")
    assert await task == 42
    assert task.done() and task.result() == 42
    assert steps[-1] == "child done", steps


@check("tasks")
async def check_spawn_exception(session: polyloop.Session) -> None:
    """A spawned task that raises: awaiting it raises the same exception object."""
    err = LookupError("from the child")

    async def child() -> None:
        await session.sleep(0)
        raise err

    task = session.spawn(child())
    try:
        await task
    except LookupError as exc:
        assert exc is err, f"a different exception object: {exc!r}"
    else:
        raise AssertionError("awaiting a failed task returned")


@check("tasks")
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
    await started
    assert task.cancel() is True, "cancel() on a pending task returned False"
    try:
        await task
    except polyloop.Cancelled:
        pass
    else:
        raise AssertionError("awaiting a cancelled task returned")
    assert seen == ["cancelled at await", "finally"], seen
    assert task.done()


@check("tasks")
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
    task.cancel()
    try:
        await task
    except polyloop.Cancelled:
        pass
    assert len(caught) == 1 and isinstance(caught[0], polyloop.Cancelled), caught


@check("tasks")
async def check_cancel_before_start(session: polyloop.Session) -> None:
    """A task cancelled right after spawn never completes normally; awaiting raises Cancelled."""
    ran: list[str] = []

    async def child() -> None:
        await session.sleep(0)
        ran.append("completed")

    task = session.spawn(child())
    task.cancel()
    try:
        await task
    except polyloop.Cancelled:
        pass
    else:
        raise AssertionError("awaiting a task cancelled at once returned")
    assert ran == [], ran


@check("tasks")
async def check_cancel_done_task(session: polyloop.Session) -> None:
    """cancel() on a finished task returns False and keeps its result."""

    async def child() -> str:
        return "result"

    task = session.spawn(child())
    assert await task == "result"
    assert task.cancel() is False, "cancel() on a finished task returned True"
    assert task.result() == "result"


@check("tasks")
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
    await started
    task.cancel()
    assert await task == "cleaned up"


@check("tasks")
async def check_wait_for_result(session: polyloop.Session) -> None:
    """polyloop.wait_for returns the result of a coroutine that finishes in time."""

    async def quick() -> str:
        await session.sleep(0)
        return "in time"

    assert await polyloop.wait_for(quick(), 5) == "in time"


@check("tasks")
async def check_wait_for_timeout(session: polyloop.Session) -> None:
    """polyloop.wait_for raises TimeoutError and the slow coroutine sees Cancelled."""
    seen: list[Any] = []

    async def slow() -> None:
        try:
            await session.sleep(60)
        except polyloop.Cancelled:
            seen.append("cancelled")
            raise

    start = session.time()
    try:
        await polyloop.wait_for(slow(), 0.02)
    except TimeoutError:
        pass
    else:
        raise AssertionError("wait_for did not time out")
    assert seen == ["cancelled"], f"the inner coroutine saw {seen}"
    assert session.time() - start < 30, "wait_for waited for the coroutine instead"


@check("tasks")
async def check_many_tasks(session: polyloop.Session) -> None:
    """500 concurrent tasks all complete, each with its own result."""

    async def child(i: int) -> int:
        await session.sleep(0)
        await session.sleep(0.001)
        return i

    tasks = [session.spawn(child(i)) for i in range(500)]
    results = [await t for t in tasks]
    assert results == list(range(500))
