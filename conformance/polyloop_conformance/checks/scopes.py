"""Cancel scopes and timeouts: ``CancelScope``, ``move_on_after``, ``fail_after``,
``wait_for``, the same on every backend (anyio's cancel-scope tests as checklist; the
delivery is asyncio's: one ``Cancelled`` per scope).

Covers stopping at the next await and going on after the block, ``TimeoutError``, one
deadline shared by several awaits, nesting both ways, shielding, cancelling from another
task, a scope cancelled before it is entered, moving a deadline, exit-order misuse,
``current_effective_deadline``, ``wait_for`` with any awaitable and bad timeouts, and two
bugs: ``wait_for`` swallowing a cancellation that arrives while the inner coroutine
unwinds from its timeout, and a cancelled task not waiting for the clean-up of the task
it awaits.
"""

from __future__ import annotations

import math
import warnings

import polyloop

from .._registry import check


@check("scopes", clauses=["scope.deadline"])
async def check_move_on_after(session: polyloop.Session) -> None:
    """move_on_after stops the block at its await; the code after the block runs."""
    reached: list[str] = []
    with polyloop.move_on_after(0.01) as scope:
        await session.sleep(60)
        reached.append("after the sleep")  # never
    assert scope.cancelled_caught and scope.cancel_called, scope
    assert reached == [], reached
    with polyloop.move_on_after(30) as quick:
        await session.sleep(0)
    assert not quick.cancelled_caught and not quick.cancel_called, quick


@check("scopes", clauses=["scope.deadline"])
async def check_fail_after(session: polyloop.Session) -> None:
    """fail_after raises TimeoutError out of the block; not when the block is quick."""
    try:
        with polyloop.fail_after(0.01):
            await session.sleep(60)
    except TimeoutError:
        pass
    else:
        raise AssertionError("fail_after(0.01) around sleep(60) did not raise TimeoutError")
    with polyloop.fail_after(30):
        await session.sleep(0)
    with polyloop.fail_after(None):  # no deadline
        await session.sleep(0)


@check("scopes", clauses=["scope.deadline"])
async def check_one_deadline_for_several_awaits(session: polyloop.Session) -> None:
    """A scope's deadline is shared by every await inside it, not restarted by each."""
    done: list[int] = []
    with polyloop.move_on_after(0.05) as scope:
        for i in range(10):
            await session.sleep(0.02)
            done.append(i)
    assert scope.cancelled_caught
    assert len(done) < 5, f"{len(done)} sleeps of 20 ms completed inside a 50 ms scope"


@check("scopes", clauses=["scope.nesting"])
async def check_nesting(session: polyloop.Session) -> None:
    """An inner scope's expiry is caught by the inner scope; an outer one's passes
    through the inner scope and is caught by the outer."""
    with polyloop.move_on_after(30) as outer:
        with polyloop.move_on_after(0.01) as inner:
            await session.sleep(60)
        await session.sleep(0)
    assert inner.cancelled_caught and not outer.cancelled_caught, (inner, outer)
    with polyloop.move_on_after(0.01) as outer:
        with polyloop.move_on_after(30) as inner:
            await session.sleep(60)
        raise AssertionError("the code after the inner scope ran")  # pragma: no cover
    assert outer.cancelled_caught and not inner.cancelled_caught, (inner, outer)


@check("scopes", clauses=["scope.nesting"])
async def check_both_expire(session: polyloop.Session) -> None:
    """When an inner and an outer scope are both cancelled, the outer one catches it."""
    with polyloop.CancelScope() as outer:
        with polyloop.CancelScope() as inner:
            inner.cancel()
            outer.cancel()
            await session.sleep(60)
    assert outer.cancelled_caught and not inner.cancelled_caught, (inner, outer)


@check("scopes", clauses=["scope.shield"])
async def check_shield(session: polyloop.Session) -> None:
    """A shielded scope holds back an outer cancellation until it exits; the code
    inside completes, and the Cancelled comes at the next await after it."""
    events: list[str] = []
    with polyloop.move_on_after(0.01) as outer:
        with polyloop.CancelScope(shield=True):
            await session.sleep(0.05)
            events.append("shielded sleep completed")
        await session.sleep(60)
        events.append("after the shield")  # never
    assert events == ["shielded sleep completed"], (
        f"the code in a shielded scope ran as {events}, not to its end (rule: a shielded"
        " scope holds back an outer cancellation until it exits)"
    )
    assert outer.cancelled_caught, (
        "the outer scope did not catch its cancellation once the shield exited (rule: the"
        " Cancelled held back comes at the next await after the shield)"
    )


@check("scopes", clauses=["scope.shield"])
async def check_shield_holds_task_cancel(session: polyloop.Session) -> None:
    """Task.cancel() of a task inside a shielded scope waits for the scope to exit."""
    events: list[str] = []
    inside = session.create_future()

    async def child() -> None:
        with polyloop.CancelScope(shield=True):
            inside.set_result(None)
            await session.sleep(0.03)
            events.append("shielded work done")
        await session.sleep(60)

    task = session.spawn(child())
    await inside
    task.cancel()
    try:
        await task
    except polyloop.Cancelled:
        pass
    else:
        raise AssertionError("the task was never cancelled")
    assert events == ["shielded work done"], events


@check("scopes", clauses=["scope.cancel"])
async def check_cancel_from_another_task(session: polyloop.Session) -> None:
    """scope.cancel() from another task stops the scope's own task, not the caller."""
    scope = polyloop.CancelScope()
    entered = session.create_future()

    async def child() -> str:
        with scope:
            entered.set_result(None)
            await session.sleep(60)
        return "went on after the scope"

    task = session.spawn(child())
    await entered
    scope.cancel()
    assert await task == "went on after the scope"
    assert scope.cancelled_caught
    await session.sleep(0)  # the canceller itself was not cancelled


@check("scopes", clauses=["scope.cancel"])
async def check_cancelled_before_entering(session: polyloop.Session) -> None:
    """A scope cancelled before it is entered cancels its first await; code before the
    first await runs."""
    scope = polyloop.CancelScope()
    scope.cancel()
    ran: list[str] = []
    with scope:
        ran.append("before the await")
        await session.sleep(60)
    assert ran == ["before the await"] and scope.cancelled_caught


@check("scopes", clauses=["scope.cancel"])
async def check_no_stray_cancellation(session: polyloop.Session) -> None:
    """A scope cancelled and exited before any await inside it leaves no Cancelled for
    the awaits after it."""
    with polyloop.CancelScope() as scope:
        scope.cancel()
    assert not scope.cancelled_caught
    with polyloop.move_on_after(0):
        pass
    await session.sleep(0.002)  # must not be cancelled
    await session.sleep(0)


@check("scopes", clauses=["scope.deadline"])
async def check_deadline_moves(session: polyloop.Session) -> None:
    """Moving a scope's deadline while inside it applies at once; current_effective_
    deadline() is the nearest active deadline, hidden by a shield."""
    assert polyloop.current_effective_deadline() == math.inf
    with polyloop.CancelScope() as scope:
        scope.deadline = session.time() + 0.01
        near = polyloop.current_effective_deadline()
        assert near == scope.deadline, (near, scope.deadline)
        with polyloop.CancelScope(shield=True):
            assert polyloop.current_effective_deadline() == math.inf
        await session.sleep(60)
    assert scope.cancelled_caught


@check("scopes", clauses=["scope.nesting"])
async def check_exit_order_misuse(session: polyloop.Session) -> None:
    """Exiting scopes in the wrong order raises RuntimeError."""
    outer = polyloop.CancelScope()
    inner = polyloop.CancelScope()
    outer.__enter__()
    inner.__enter__()
    try:
        outer.__exit__(None, None, None)
    except RuntimeError:
        pass
    else:
        raise AssertionError("exiting the outer scope first did not raise RuntimeError")
    inner.__exit__(None, None, None)
    outer.__exit__(None, None, None)


@check("scopes", clauses=["task.wait_for"])
async def check_wait_for_any_awaitable(session: polyloop.Session) -> None:
    """wait_for takes any awaitable (coroutine, future, task); bad timeouts raise before
    anything runs, and close the coroutine (no "never awaited" warning)."""
    fut = session.create_future()
    session.call_soon(fut.set_result, "future")
    assert await polyloop.wait_for(fut, 5) == "future"
    task = session.spawn(_value("task"))
    assert await polyloop.wait_for(task, 5) == "task"
    assert await polyloop.wait_for(_value("coroutine"), None) == "coroutine"
    for bad, kind in ((-1, ValueError), (math.nan, ValueError), ("1", TypeError)):
        coro = _value("never")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                await polyloop.wait_for(coro, bad)  # type: ignore[arg-type]
            except kind:
                pass
            else:
                raise AssertionError(f"wait_for(coro, {bad!r}) did not raise {kind.__name__}")
        assert coro.cr_frame is None, f"wait_for(coro, {bad!r}) left the coroutine open"
    try:
        await polyloop.wait_for(session.sleep(60), 0)
    except TimeoutError:
        pass
    else:
        raise AssertionError("wait_for(sleep(60), 0) did not time out")


async def _value(value: str) -> str:
    return value


@check("scopes", clauses=["task.wait_for"])
async def check_wait_for_delivers_late_cancellation(session: polyloop.Session) -> None:
    """A cancellation of the caller that arrives while wait_for's coroutine unwinds from
    its timeout is delivered: the task ends cancelled, not with TimeoutError or a value."""
    unwinding = session.create_future()

    async def slow_to_unwind() -> None:
        try:
            await session.sleep(60)
        finally:
            with polyloop.CancelScope(shield=True):
                unwinding.set_result(None)
                await session.sleep(0.05)

    async def caller() -> str:
        try:
            await polyloop.wait_for(slow_to_unwind(), 0.01)
        except TimeoutError:
            return "TimeoutError"
        return "returned"

    task = session.spawn(caller())
    await unwinding
    assert task.cancel() is True, "cancel() of the waiting caller returned False"
    try:
        outcome = await task
    except polyloop.Cancelled:
        return
    raise AssertionError(
        f"the cancellation was lost: the task ended with {outcome!r} (rule: a cancellation"
        " that arrives while wait_for's coroutine unwinds from its timeout is delivered)"
    )


@check("scopes", clauses=["task.awaits_inner_cleanup"])
async def check_cancel_waits_for_awaited_task(session: polyloop.Session) -> None:
    """Cancelling a task that awaits another task cancels the inner one and waits for its
    clean-up, once, before the outer sees Cancelled."""
    events: list[str] = []
    started = session.create_future()

    async def inner() -> None:
        started.set_result(None)
        try:
            await session.sleep(60)
        except polyloop.Cancelled:
            events.append("inner cancelled")
            await session.sleep(0.02)  # clean-up that takes a while
            events.append("inner cleaned up")
            raise

    async def outer() -> None:
        try:
            await session.spawn(inner())
        except polyloop.Cancelled:
            events.append("outer cancelled")
            raise

    task = session.spawn(outer())
    await started
    task.cancel()
    try:
        await task
    except polyloop.Cancelled:
        pass
    assert events == ["inner cancelled", "inner cleaned up", "outer cancelled"], events


@check("scopes", clauses=["task.wait_for"])
async def check_wait_for_zero(session: polyloop.Session) -> None:
    """wait_for(aw, 0): aw runs up to its first suspension; a result it has by then is
    returned, else TimeoutError -- the same on every backend."""

    async def at_once() -> str:
        return "at once"

    async def after_one_yield() -> str:
        await polyloop.sleep(0)
        return "after a sleep(0)"

    got = await polyloop.wait_for(at_once(), 0)
    assert got == "at once", f"wait_for(coro, 0) of a coroutine that never waits gave {got!r}"
    try:
        got = await polyloop.wait_for(after_one_yield(), 0)
    except TimeoutError:
        pass
    else:
        raise AssertionError(
            f"wait_for(coro, 0) of a coroutine that waits once returned {got!r}: rule: a zero"
            " timeout expires at the first suspension, on every backend"
        )


@check("scopes", clauses=["scope.shield"])
async def check_shield_holds_until_it_ends(session: polyloop.Session) -> None:
    """A cancellation that one shield held back is delivered after it, at the next await
    outside any shield -- never inside the next shield entered right after."""
    for how in ("Task.cancel()", "an outer scope's cancel()"):
        log: list[str] = []
        outer: list[polyloop.CancelScope] = []

        async def body(log: list[str], outer: list[polyloop.CancelScope]) -> None:
            with polyloop.CancelScope() as scope:
                outer.append(scope)
                for i in range(2):
                    with polyloop.CancelScope(shield=True):
                        try:
                            await polyloop.sleep(0.05)
                        except polyloop.Cancelled:
                            log.append(f"cancelled inside shield {i}")
                            raise
                        log.append(f"shield {i} done")
                await polyloop.sleep(5)
                log.append("not cancelled after the shields")

        task = session.spawn(body(log, outer))
        await session.sleep(0.01)
        if how == "Task.cancel()":
            task.cancel()
        else:
            outer[0].cancel()
        try:
            await task
        except polyloop.Cancelled:
            pass
        assert log == ["shield 0 done", "shield 1 done"], (
            f"cancelled with {how} during the first of two shields: {log} (rule: a shield"
            " holds back every cancellation from outside it until it ends, including one an"
            " earlier shield held)"
        )
