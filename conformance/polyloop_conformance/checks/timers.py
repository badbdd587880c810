"""Timers and scheduling: ``call_soon``, ``call_later``, handles, ``sleep``, futures.

Covers FIFO order of ``call_soon``, arguments passed through, ``call_later`` firing in
deadline order and not before its delay, ``Handle.cancel()`` for both, ``sleep(0)``
yielding to the loop, the argument rules of ``call_later``/``sleep`` (negative, NaN,
infinite, not a number), callbacks running in a copy of the caller's context, an
exception in a callback being logged while the loop goes on, and ``create_future``
results, exceptions and cancellation.

Every duration is confirmed by the wall clock (``time.monotonic``), the referee's clock:
a backend whose ``time()`` runs fast, or whose timers fire early, is told so.
"""

from __future__ import annotations

import contextvars
import math
import time

import polyloop

from .._registry import check
from ..referee import expect_logged, settle, waiting_for

#: Clock tolerance for "not before the delay": loops compare deadlines against a clock
#: read a little earlier, and asyncio adds its clock resolution.
EPS = 0.002

_probe: contextvars.ContextVar[str] = contextvars.ContextVar("polyloop_conformance_probe")


@check("scheduling", clauses=["loop.call_soon.fifo"])
async def check_call_soon_fifo(session: polyloop.Session) -> None:
    """call_soon callbacks run in the order they were scheduled, with their arguments."""
    order: list[int] = []
    done = session.create_future()
    for i in range(200):
        session.call_soon(order.append, i)
    session.call_soon(lambda: done.set_result(len(order)))
    with waiting_for(lambda: f"200 call_soon callbacks to run ({len(order)} ran)"):
        before = await done
    assert before == 200, (
        f"the call_soon scheduled last ran when {before} of the 200 scheduled before it had"
        " run (rule: call_soon callbacks run in FIFO order)"
    )
    if order != list(range(200)):
        first = next((i for i, v in enumerate(order) if v != i), len(order))
        raise AssertionError(
            f"call_soon ran 200 callbacks as {order[:8]}... (first out of place at #{first}):"
            " rule: call_soon callbacks run in FIFO order"
        )


@check("scheduling", clauses=["loop.call_soon.never_inline"])
async def check_call_soon_not_inline(session: polyloop.Session) -> None:
    """call_soon never runs the callback before it returns."""
    ran: list[int] = []
    done = session.create_future()
    session.call_soon(ran.append, 1)
    assert ran == [], "call_soon ran the callback before returning (rule: never inline)"
    session.call_soon(done.set_result, None)
    with waiting_for("a call_soon callback to run"):
        await done
    assert ran == [1], f"after the loop ran, the first call_soon callback had run {ran}"


@check("scheduling", clauses=["loop.call_soon.cancel"])
async def check_call_soon_cancel(session: polyloop.Session) -> None:
    """A call_soon handle cancelled before the loop gets to it never runs."""
    ran: list[str] = []
    done = session.create_future()
    handle = session.call_soon(ran.append, "cancelled")
    assert isinstance(handle, polyloop.Handle), f"call_soon returned {handle!r}, not a Handle"
    handle.cancel()
    session.call_soon(done.set_result, None)
    with waiting_for("a call_soon callback to run"):
        await done
    assert ran == [], "a call_soon handle cancelled before it ran still ran"


@check("timers", clauses=["loop.call_later.deadline_order"])
async def check_call_later_order(session: polyloop.Session) -> None:
    """call_later callbacks fire in deadline order, not scheduling order."""
    order: list[float] = []
    done = session.create_future()
    for delay in (0.03, 0.01, 0.02, 0.0, 0.015):
        session.call_later(delay, order.append, delay)
    session.call_later(0.04, done.set_result, None)
    with waiting_for(lambda: f"call_later(0.04) (fired so far: {order})"):
        await done
    assert order == [0.0, 0.01, 0.015, 0.02, 0.03], (
        f"call_later callbacks with delays 0.03, 0.01, 0.02, 0, 0.015 fired in the order"
        f" {order} (rule: in deadline order)"
    )


@check("timers", clauses=["loop.call_later.not_early"])
async def check_call_later_delay(session: polyloop.Session) -> None:
    """call_later(d, fn) runs fn no sooner than d seconds later, by backend.time()
    and by the wall clock."""
    done = session.create_future()
    start, wall = session.time(), time.monotonic()
    session.call_later(0.05, lambda: done.set_result((session.time(), time.monotonic())))
    with waiting_for("call_later(0.05) to fire"):
        fired, fired_wall = await done
    by_wall = fired_wall - wall
    assert by_wall >= 0.05 - EPS, (
        f"call_later(0.05) fired after {by_wall:.4f} s of wall-clock time"
        f" ({fired - start:.4f} s by session.time()): timers fire early"
    )
    assert fired - start >= 0.05 - EPS, (
        f"call_later(0.05) fired after {fired - start:.4f} s by session.time()"
        f" ({by_wall:.4f} s of wall-clock time): time() and the timers disagree"
    )
    # Each pair of readings is taken back to back, so the two clocks must agree closely.
    drift = abs((fired - start) - by_wall)
    assert drift <= 0.02 + 0.25 * by_wall, (
        f"session.time() advanced {fired - start:.4f} s while the wall clock advanced"
        f" {by_wall:.4f} s: time() is not the monotonic clock in seconds that the timers use"
    )


@check("timers", clauses=["loop.call_later.cancel"])
async def check_call_later_cancel(session: polyloop.Session) -> None:
    """A cancelled call_later never fires (checked after a later timer has fired)."""
    ran: list[str] = []
    done = session.create_future()
    h1 = session.call_later(0.01, ran.append, "cancelled early")
    h2 = session.call_later(0.02, ran.append, "cancelled late")
    session.call_later(0.015, h2.cancel)
    session.call_later(0.01, ran.append, "kept")
    h1.cancel()
    session.call_later(0.03, done.set_result, None)
    with waiting_for(lambda: f"call_later(0.03) (fired so far: {ran})"):
        await done
    assert ran == ["kept"], (
        f"callbacks that ran: {ran}; expected only ['kept'] (rule: a cancelled call_later"
        " handle never fires)"
    )
    h1.cancel()  # cancelling again, or after the fact, is harmless


@check("timers", clauses=["loop.call_later.arguments"])
async def check_call_later_arguments(session: polyloop.Session) -> None:
    """call_later: a negative delay runs as soon as possible, inf never; NaN is
    ValueError and a non-number TypeError."""
    ran: list[str] = []
    done = session.create_future()
    session.call_later(-5, ran.append, "negative")
    never = session.call_later(math.inf, ran.append, "infinite")
    session.call_later(0.01, done.set_result, None)
    with waiting_for("call_later(0.01) to fire"):
        await done
    assert ran == ["negative"], (
        f"after call_later(-5) and call_later(inf), these ran: {ran} (rule: a negative delay"
        " runs as soon as possible, an infinite one never)"
    )
    never.cancel()
    for bad, kind in ((math.nan, ValueError), ("1", TypeError), (None, TypeError)):
        try:
            handle = session.call_later(bad, ran.append, "bad")  # type: ignore[arg-type]
        except kind:
            continue
        except Exception as exc:
            raise AssertionError(
                f"call_later({bad!r}, ...) raised {exc!r}, not {kind.__name__}"
            ) from exc
        handle.cancel()
        raise AssertionError(f"call_later({bad!r}, ...) was accepted, not {kind.__name__}")


@check("scheduling", clauses=["loop.sleep_zero.yields"])
async def check_sleep_zero_yields(session: polyloop.Session) -> None:
    """sleep(0) yields to the loop: a callback scheduled just before it has run after it."""
    ran: list[int] = []
    session.call_soon(ran.append, 1)
    with waiting_for("sleep(0) to return"):
        await session.sleep(0)
    assert ran == [1], "sleep(0) returned before the loop ran a call_soon made just before it"


@check("timers", clauses=["loop.call_later.not_early"])
async def check_sleep_duration(session: polyloop.Session) -> None:
    """sleep(d) (and polyloop.sleep) returns no sooner than d seconds later, by
    backend.time() and by the wall clock."""
    start, wall = session.time(), time.monotonic()
    with waiting_for("sleep(0.03) to return"):
        await session.sleep(0.03)
    mid, mid_wall = session.time(), time.monotonic()
    with waiting_for("polyloop.sleep(0.02) to return"):
        await polyloop.sleep(0.02)
    end, end_wall = session.time(), time.monotonic()
    for what, took, wall_took, want in (
        ("session.sleep(0.03)", mid - start, mid_wall - wall, 0.03),
        ("polyloop.sleep(0.02)", end - mid, end_wall - mid_wall, 0.02),
    ):
        assert wall_took >= want - EPS, (
            f"{what} returned after {wall_took:.4f} s of wall-clock time ({took:.4f} s by"
            " session.time()): timers fire early"
        )
        assert took >= want - EPS, (
            f"{what} took {took:.4f} s by session.time() but {wall_took:.4f} s of wall-clock"
            " time: time() and the timers disagree"
        )


@check("timers", clauses=["loop.call_later.arguments"])
async def check_sleep_arguments(session: polyloop.Session) -> None:
    """sleep: a negative or NaN delay is ValueError, a non-number TypeError; sleep(inf)
    waits until cancelled (it has not returned after loop turns and 10 ms)."""
    for bad, kind in ((-1, ValueError), (math.nan, ValueError), ("1", TypeError)):
        try:
            await polyloop.sleep(bad)  # type: ignore[arg-type]
        except kind:
            continue
        except Exception as exc:
            raise AssertionError(f"sleep({bad!r}) raised {exc!r}, not {kind.__name__}") from exc
        raise AssertionError(f"sleep({bad!r}) returned instead of raising {kind.__name__}")
    forever = session.spawn(session.sleep(math.inf))
    for _ in range(5):
        await session.sleep(0)
    assert not forever.done(), f"sleep(inf) ended by itself: {forever!r}"
    await settle(session, 0.01)
    assert not forever.done(), (
        f"sleep(inf) ended by itself within 10 ms: {forever!r} (rule: sleep(inf) waits"
        " until cancelled)"
    )
    forever.cancel()
    try:
        with waiting_for("a cancelled sleep(inf) to end"):
            await forever
    except polyloop.Cancelled:
        pass
    else:
        raise AssertionError("a cancelled sleep(inf) returned normally instead of Cancelled")


@check("scheduling", clauses=["loop.callback.context"])
async def check_callback_context(session: polyloop.Session) -> None:
    """call_soon and call_later callbacks run in a copy of the caller's context: they
    see its variables, and what they set stays theirs."""
    token = _probe.set("caller")
    seen: list[str] = []
    done = session.create_future()

    def callback(which: str) -> None:
        seen.append(f"{which}:{_probe.get('<unset>')}")
        _probe.set(f"set by {which}")

    try:
        session.call_soon(callback, "call_soon")
        session.call_later(0.001, callback, "call_later")
        session.call_later(0.01, done.set_result, None)
        with waiting_for("call_later(0.01) to fire"):
            await done
        assert sorted(seen) == ["call_later:caller", "call_soon:caller"], (
            f"callbacks saw the context variable as {seen}, expected 'caller' in both (rule:"
            " callbacks run in a copy of the caller's context)"
        )
        value = _probe.get("<unset>")
        assert value == "caller", (
            f"after the callbacks ran, the caller's context variable is {value!r}: a callback"
            " ran in the caller's own context, not a copy"
        )
    finally:
        _probe.reset(token)


@check("scheduling", clauses=["loop.callback.error_logged"])
async def check_callback_error_logged(session: polyloop.Session) -> None:
    """An exception raised by a call_soon/call_later callback is logged, and the loop
    goes on running the next callbacks."""
    ran: list[str] = []
    done = session.create_future()

    def boom() -> None:
        raise RuntimeError("deliberate callback failure (expected by this check)")

    with expect_logged() as logged:
        session.call_soon(boom)
        session.call_soon(ran.append, "after call_soon's error")
        session.call_later(0.001, boom)
        session.call_later(0.002, ran.append, "after call_later's error")
        session.call_later(0.01, done.set_result, None)
        with waiting_for(lambda: f"the callbacks after two failing ones (ran {ran})"):
            await done
        await session.sleep(0)
    assert ran == ["after call_soon's error", "after call_later's error"], (
        f"after a failing callback, these ran: {ran} (rule: an exception in a callback is"
        " logged and the loop goes on)"
    )
    mine = [t for t in logged if "deliberate callback failure" in t]
    assert len(mine) == 2, (
        f"{len(mine)} of 2 callback errors were logged (rule: an exception a callback raises"
        f" is logged); records: {logged}"
    )


@check("futures", name="result", clauses=["future.outcome"])
async def check_future_result(session: polyloop.Session) -> None:
    """create_future: set_result wakes the awaiter; done()/result() agree."""
    fut = session.create_future()
    assert isinstance(fut, polyloop.Future), f"create_future() returned {fut!r}"
    assert not fut.done(), "a new future is done() already"
    session.call_soon(fut.set_result, 42)
    with waiting_for("a future completed by call_soon(fut.set_result, 42)"):
        got = await fut
    assert got == 42, f"awaiting a future set to 42 gave {got!r}"
    assert fut.done() and fut.result() == 42 and not fut.cancelled(), (
        f"after set_result(42): done()={fut.done()}, cancelled()={fut.cancelled()}"
    )


@check("futures", name="exception", clauses=["future.outcome"])
async def check_future_exception(session: polyloop.Session) -> None:
    """create_future: set_exception raises that exception (the same object) at the await."""
    fut = session.create_future()
    err = KeyError("from the future")
    session.call_soon(fut.set_exception, err)
    try:
        with waiting_for("a future failed by call_soon(fut.set_exception, ...)"):
            got = await fut
    except KeyError as exc:
        assert exc is err, f"awaiting it raised another KeyError object: {exc!r}"
    else:
        raise AssertionError(
            f"awaiting a future with an exception returned {got!r} instead of raising it"
        )


@check("futures", name="cancel", clauses=["future.cancel"])
async def check_future_cancel(session: polyloop.Session) -> None:
    """A cancelled future raises polyloop.Cancelled when awaited; cancelled() is True."""
    fut = session.create_future()
    session.call_soon(fut.cancel)
    try:
        with waiting_for("a future cancelled by call_soon(fut.cancel)"):
            got = await fut
    except polyloop.Cancelled:
        pass
    else:
        raise AssertionError(f"awaiting a cancelled future returned {got!r}, not Cancelled")
    assert fut.cancelled() and fut.done(), (
        f"after cancel(): cancelled()={fut.cancelled()}, done()={fut.done()}"
    )
