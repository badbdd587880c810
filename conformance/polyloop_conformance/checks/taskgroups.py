"""Task groups: structured concurrency, the same on every backend (anyio's
tests/test_taskgroups.py and asyncio.TaskGroup's rules as checklist).

Covers waiting for every child, the first error cancelling the siblings and the block's
own code and coming out as an ExceptionGroup (every error in it), the block's own error
stopping the children, cancelling the task that runs the block, tg.cancel(), nesting, and
misuse.
"""

from __future__ import annotations

import contextlib
from typing import Any

import polyloop

from .._registry import check
from ._util import bounded

#: Seconds a check waits for a group to end once nothing in it has anything left to do.
WAIT = 5.0


@check("taskgroups", clauses=["taskgroup.waits"])
async def check_waits_for_every_child(session: polyloop.Session) -> None:
    """The async with block ends only once every child has ended, with its result."""
    done: list[int] = []

    async def child(i: int) -> int:
        await session.sleep(0.001 * i)
        done.append(i)
        return i

    async with polyloop.TaskGroup() as tg:
        tasks = [tg.spawn(child(i)) for i in range(5)]
        tg.start_soon(child, 5)
    assert sorted(done) == list(range(6)), f"the block ended with only {done} done"
    assert [t.result() for t in tasks] == list(range(5))


@check("taskgroups", clauses=["taskgroup.errors"])
async def check_child_error_cancels_the_rest(session: polyloop.Session) -> None:
    """A failing child cancels its siblings and the block's code; the error comes out
    in an ExceptionGroup."""
    rule = "rule: a failing child cancels its siblings and the block's code"
    seen: list[str] = []
    # The sibling and the block wait on this until cancelled: if the group does not
    # cancel them, the check ends them itself (below), so that it can say so.
    release: polyloop.Future[None] = session.create_future()
    ended: polyloop.Future[None] = session.create_future()

    async def failing() -> None:
        await session.sleep(0.001)
        raise LookupError("child failed")

    async def sibling() -> None:
        try:
            await release
        except polyloop.Cancelled:
            seen.append("sibling cancelled")
            raise

    async def run_group() -> list[BaseException]:
        try:
            async with polyloop.TaskGroup() as tg:
                tg.spawn(failing())
                tg.spawn(sibling())
                try:
                    await release
                except polyloop.Cancelled:
                    seen.append("block cancelled")
                    raise
        except ExceptionGroup as group:
            return list(group.exceptions)
        finally:
            if not ended.done():
                ended.set_result(None)
        raise AssertionError(f"a failing child did not make the block raise ({rule})")

    host = session.spawn(run_group())
    try:
        await bounded(
            session, ended, WAIT,
            f"the task group did not end after a child failed ({rule})",
        )  # fmt: skip
    except AssertionError as exc:
        release.set_result(None)  # let what the group did not cancel end
        with contextlib.suppress(Exception):
            await bounded(session, host, WAIT, "the task group did not end once released")
        marks = (("the sibling", "sibling cancelled"), ("the block's code", "block cancelled"))
        missing = [name for name, mark in marks if mark not in seen]
        how = f"not cancelled: {' and '.join(missing)}" if missing else f"seen: {seen}"
        raise AssertionError(f"{exc}; {how}") from None
    errors = await host
    assert len(errors) == 1 and isinstance(errors[0], LookupError), (
        f"the block raised an ExceptionGroup of {errors!r}, not of the child's LookupError"
    )
    assert sorted(seen) == ["block cancelled", "sibling cancelled"], f"{seen} ({rule})"


@check("taskgroups", clauses=["taskgroup.errors"])
async def check_every_error_grouped(session: polyloop.Session) -> None:
    """Children failing at once all appear in the ExceptionGroup."""

    async def fail(exc: Exception) -> None:
        await session.sleep(0)
        raise exc

    errors = [KeyError("a"), ValueError("b")]
    try:
        async with polyloop.TaskGroup() as tg:
            for exc in errors:
                tg.spawn(fail(exc))
    except ExceptionGroup as group:
        got = list(group.exceptions)
    else:
        raise AssertionError("two failing children did not make the block raise")
    assert sorted(map(repr, got)) == sorted(map(repr, errors)), got


@check("taskgroups", clauses=["taskgroup.errors"])
async def check_block_error_cancels_children(session: polyloop.Session) -> None:
    """An error raised by the block's own code cancels the children and is grouped."""
    seen: list[str] = []

    async def child() -> None:
        try:
            await session.sleep(60)
        except polyloop.Cancelled:
            seen.append("child cancelled")
            raise

    try:
        async with polyloop.TaskGroup() as tg:
            tg.spawn(child())
            await session.sleep(0)
            raise ArithmeticError("from the block")
    except ExceptionGroup as group:
        got = list(group.exceptions)
    else:
        raise AssertionError("the block's error did not come out")
    assert seen == ["child cancelled"], seen
    assert len(got) == 1 and isinstance(got[0], ArithmeticError), got


@check("taskgroups", clauses=["taskgroup.cancel"])
async def check_cancelling_the_host_cancels_children(session: polyloop.Session) -> None:
    """Cancelling the task that runs the block cancels every child, waits for their
    clean-up, and the task then ends cancelled."""
    seen: list[str] = []
    started = session.create_future()

    async def child() -> None:
        try:
            await session.sleep(60)
        finally:
            await session.sleep(0.001)  # clean-up that takes a turn
            seen.append("child cleaned up")

    async def host() -> None:
        async with polyloop.TaskGroup() as tg:
            tg.spawn(child())
            tg.spawn(child())
            started.set_result(None)
        seen.append("after the block")  # never reached

    task = session.spawn(host())
    await started
    await session.sleep(0)
    task.cancel()
    try:
        await task
    except polyloop.Cancelled:
        pass
    else:
        raise AssertionError("the cancelled host returned normally")
    assert seen == ["child cleaned up", "child cleaned up"], seen


@check("taskgroups", clauses=["taskgroup.cancel"])
async def check_group_cancel(session: polyloop.Session) -> None:
    """tg.cancel() cancels the children and the block's code; the block ends quietly."""
    async with polyloop.TaskGroup() as tg:
        child = tg.spawn(session.sleep(60))
        tg.cancel()
        await session.sleep(60)  # cancelled here
    assert child.cancelled(), "tg.cancel() did not cancel the child"


@check("taskgroups", clauses=["taskgroup.errors"])
async def check_nested_groups(session: polyloop.Session) -> None:
    """An error in an inner group cancels the outer group's other children too."""
    seen: list[str] = []

    async def inner() -> None:
        async with polyloop.TaskGroup() as tg:
            tg.spawn(_fail_soon(session))
            tg.spawn(session.sleep(60))

    async def bystander() -> None:
        try:
            await session.sleep(60)
        except polyloop.Cancelled:
            seen.append("bystander cancelled")
            raise

    try:
        async with polyloop.TaskGroup() as tg:
            tg.spawn(inner())
            tg.spawn(bystander())
    except ExceptionGroup as group:
        leaves = _leaves(group)
    else:
        raise AssertionError("the inner group's error did not come out")
    assert [type(e) for e in leaves] == [OSError], leaves
    assert seen == ["bystander cancelled"], seen


async def _fail_soon(session: polyloop.Session) -> None:
    await session.sleep(0.001)
    raise OSError("inner failure")


def _leaves(group: BaseExceptionGroup[Any]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out += _leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return out


@check("taskgroups", clauses=["taskgroup.misuse"])
async def check_misuse(session: polyloop.Session) -> None:
    """spawn() on a group that has ended raises RuntimeError (the coroutine is closed,
    so no "never awaited" warning); spawn() of a non-coroutine raises TypeError."""
    async with polyloop.TaskGroup() as tg:
        pass
    try:
        tg.spawn(session.sleep(0))
    except RuntimeError:
        pass
    else:
        raise AssertionError("spawn() on an ended group did not raise RuntimeError")
    async with polyloop.TaskGroup() as tg:
        try:
            tg.spawn(session.sleep)  # type: ignore[arg-type]
        except TypeError:
            pass
        else:
            raise AssertionError("spawn() of a function, not a coroutine, was accepted")


@check("taskgroups", clauses=["taskgroup.start"])
async def check_start_returns_the_started_value(session: polyloop.Session) -> None:
    """await tg.start(fn) returns what fn passed to task_status.started(); the task
    goes on as a child of the group (the block waits for it); started() twice raises
    RuntimeError; with TASK_STATUS_IGNORED the same fn runs under start_soon."""
    seen: list[str] = []

    async def server(
        port: int, *, task_status: polyloop.TaskStatus[int] = polyloop.TASK_STATUS_IGNORED
    ) -> None:
        await session.sleep(0)
        task_status.started(port + 1)
        try:
            task_status.started(port + 2)
        except RuntimeError:
            seen.append("second started() refused")
        await session.sleep(0.001)
        seen.append(f"served {port}")

    async with polyloop.TaskGroup() as tg:
        value = await tg.start(server, 41, name="server")
        assert value == 42, f"start() returned {value!r}, not the value passed to started()"
        assert "served 41" not in seen, "start() waited for the whole task, not started()"
        tg.start_soon(server, 7)
    assert seen.count("second started() refused") == 1, seen
    assert "served 41" in seen and "served 7" in seen, f"the group did not wait: {seen}"


@check("taskgroups", clauses=["taskgroup.start"])
async def check_start_error_before_started(session: polyloop.Session) -> None:
    """An error raised before started() is raised to the caller of start(), as it is
    (not in a group), and does not cancel the group; a task that returns without
    calling started() makes start() raise RuntimeError. After started(), an error goes
    into the group like a spawned child's."""
    sibling_done: list[str] = []

    async def fails(*, task_status: polyloop.TaskStatus[None]) -> None:
        await session.sleep(0)
        raise LookupError("before started")

    async def returns(*, task_status: polyloop.TaskStatus[None]) -> None:
        await session.sleep(0)

    async def sibling() -> None:
        await session.sleep(0.001)
        sibling_done.append("done")

    async with polyloop.TaskGroup() as tg:
        tg.spawn(sibling())
        try:
            await tg.start(fails)
        except LookupError:
            pass
        else:
            raise AssertionError("an error before started() did not reach start()'s caller")
        try:
            await tg.start(returns)
        except RuntimeError as exc:
            assert "started" in str(exc), exc
        else:
            raise AssertionError("a task that never called started(): start() did not raise")
    assert sibling_done == ["done"], "an error before started() cancelled the group"

    async def fails_later(*, task_status: polyloop.TaskStatus[None]) -> None:
        task_status.started()
        await session.sleep(0)
        raise KeyError("after started")

    try:
        async with polyloop.TaskGroup() as tg:
            await tg.start(fails_later)
            await session.sleep(60)  # cancelled by the child's error
    except ExceptionGroup as group:
        assert [type(e) for e in _leaves(group)] == [KeyError], group
    else:
        raise AssertionError("an error after started() did not come out of the group")


@check("taskgroups", clauses=["taskgroup.start"])
async def check_start_caller_cancelled(session: polyloop.Session) -> None:
    """Cancelling the caller of start() while it waits cancels the starting task, and
    start() raises Cancelled only once that task has ended."""
    seen: list[str] = []
    waiting = session.create_future()

    async def slow_start(*, task_status: polyloop.TaskStatus[None]) -> None:
        waiting.set_result(None)
        try:
            await session.sleep(60)
        finally:
            await session.sleep(0.001)  # clean-up that takes a turn
            seen.append("starting task ended")
        task_status.started()

    async def caller(tg: polyloop.TaskGroup) -> None:
        try:
            await tg.start(slow_start)
        except polyloop.Cancelled:
            seen.append("start() cancelled")
            raise

    async with polyloop.TaskGroup() as tg:
        task = tg.spawn(caller(tg))
        await bounded(session, waiting, WAIT, "the starting task never ran")
        task.cancel()
    assert task.cancelled(), "the caller of start() was not cancelled"
    assert seen == ["starting task ended", "start() cancelled"], (
        f"rule: cancelling start()'s caller cancels the starting task first; saw {seen}"
    )
