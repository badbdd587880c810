"""Timers and scheduling: ``call_soon``, ``call_later``, handles, ``sleep``, futures.

Covers FIFO order of ``call_soon``, arguments passed through, ``call_later`` firing in
deadline order and not before its delay, ``Handle.cancel()`` for both, ``sleep(0)``
yielding to the loop, and ``create_future`` results, exceptions and cancellation.
"""

from __future__ import annotations

import polyloop

from .._registry import check

#: Clock tolerance for "not before the delay": loops compare deadlines against a clock
#: read a little earlier, and asyncio adds its clock resolution.
EPS = 0.002


@check("timers")
async def check_call_soon_fifo(session: polyloop.Session) -> None:
    """call_soon callbacks run in the order they were scheduled, with their arguments."""
    order: list[int] = []
    done = session.create_future()
    for i in range(200):
        session.call_soon(order.append, i)
    session.call_soon(done.set_result, "last")
    assert await done == "last"
    assert order == list(range(200)), f"call_soon order: {order[:20]}..."


@check("timers")
async def check_call_soon_not_inline(session: polyloop.Session) -> None:
    """call_soon never runs the callback before it returns."""
    ran: list[int] = []
    done = session.create_future()
    session.call_soon(ran.append, 1)
    assert ran == [], "call_soon ran the callback synchronously"
    session.call_soon(done.set_result, None)
    await done
    assert ran == [1]


@check("timers")
async def check_call_soon_cancel(session: polyloop.Session) -> None:
    """A call_soon handle cancelled before the loop gets to it never runs."""
    ran: list[str] = []
    done = session.create_future()
    handle = session.call_soon(ran.append, "cancelled")
    assert isinstance(handle, polyloop.Handle)
    handle.cancel()
    session.call_soon(done.set_result, None)
    await done
    assert ran == [], f"a cancelled call_soon ran: {ran}"


@check("timers")
async def check_call_later_order(session: polyloop.Session) -> None:
    """call_later callbacks fire in deadline order, not scheduling order."""
    order: list[float] = []
    done = session.create_future()
    for delay in (0.03, 0.01, 0.02, 0.0, 0.015):
        session.call_later(delay, order.append, delay)
    session.call_later(0.04, done.set_result, None)
    await done
    assert order == [0.0, 0.01, 0.015, 0.02, 0.03], f"call_later fired in order {order}"


@check("timers")
async def check_call_later_delay(session: polyloop.Session) -> None:
    """call_later(d, fn) runs fn no sooner than d seconds later, by backend.time()."""
    done = session.create_future()
    start = session.time()
    session.call_later(0.05, lambda: done.set_result(session.time()))
    fired = await done
    assert fired - start >= 0.05 - EPS, f"fired after {fired - start:.4f} s, not 0.05 s"


@check("timers")
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
    await done
    assert ran == ["kept"], f"callbacks that ran: {ran}"
    h1.cancel()  # cancelling again, or after the fact, is harmless


@check("timers")
async def check_sleep_zero_yields(session: polyloop.Session) -> None:
    """sleep(0) yields to the loop: a callback scheduled just before it has run after it."""
    ran: list[int] = []
    session.call_soon(ran.append, 1)
    await session.sleep(0)
    assert ran == [1], "sleep(0) did not let the loop run a pending call_soon"


@check("timers")
async def check_sleep_duration(session: polyloop.Session) -> None:
    """sleep(d) (and polyloop.sleep) returns no sooner than d seconds later."""
    start = session.time()
    await session.sleep(0.03)
    mid = session.time()
    await polyloop.sleep(0.02)
    end = session.time()
    assert mid - start >= 0.03 - EPS, f"sleep(0.03) took {mid - start:.4f} s"
    assert end - mid >= 0.02 - EPS, f"polyloop.sleep(0.02) took {end - mid:.4f} s"
    try:
        await polyloop.sleep(-1)
    except ValueError:
        pass
    else:
        raise AssertionError("polyloop.sleep(-1) did not raise ValueError")


@check("timers")
async def check_future_result(session: polyloop.Session) -> None:
    """create_future: set_result wakes the awaiter; done()/result() agree."""
    fut = session.create_future()
    assert isinstance(fut, polyloop.Future)
    assert not fut.done()
    session.call_soon(fut.set_result, 42)
    assert await fut == 42
    assert fut.done() and fut.result() == 42 and not fut.cancelled()


@check("timers")
async def check_future_exception(session: polyloop.Session) -> None:
    """create_future: set_exception raises that exception (the same object) at the await."""
    fut = session.create_future()
    err = KeyError("from the future")
    session.call_soon(fut.set_exception, err)
    try:
        await fut
    except KeyError as exc:
        assert exc is err, f"got a different exception object: {exc!r}"
    else:
        raise AssertionError("awaiting a future with an exception returned")


@check("timers")
async def check_future_cancel(session: polyloop.Session) -> None:
    """A cancelled future raises polyloop.Cancelled when awaited; cancelled() is True."""
    fut = session.create_future()
    session.call_soon(fut.cancel)
    try:
        await fut
    except polyloop.Cancelled:
        pass
    else:
        raise AssertionError("awaiting a cancelled future returned")
    assert fut.cancelled() and fut.done()
