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
async def check_call_soon_fifo(backend: polyloop.Backend) -> None:
    """call_soon callbacks run in the order they were scheduled, with their arguments."""
    order: list[int] = []
    done = backend.create_future()
    for i in range(200):
        backend.call_soon(order.append, i)
    backend.call_soon(done.set_result, "last")
    assert await done == "last"
    assert order == list(range(200)), f"call_soon order: {order[:20]}..."


@check("timers")
async def check_call_soon_not_inline(backend: polyloop.Backend) -> None:
    """call_soon never runs the callback before it returns."""
    ran: list[int] = []
    done = backend.create_future()
    backend.call_soon(ran.append, 1)
    assert ran == [], "call_soon ran the callback synchronously"
    backend.call_soon(done.set_result, None)
    await done
    assert ran == [1]


@check("timers")
async def check_call_soon_cancel(backend: polyloop.Backend) -> None:
    """A call_soon handle cancelled before the loop gets to it never runs."""
    ran: list[str] = []
    done = backend.create_future()
    handle = backend.call_soon(ran.append, "cancelled")
    assert isinstance(handle, polyloop.Handle)
    handle.cancel()
    backend.call_soon(done.set_result, None)
    await done
    assert ran == [], f"a cancelled call_soon ran: {ran}"


@check("timers")
async def check_call_later_order(backend: polyloop.Backend) -> None:
    """call_later callbacks fire in deadline order, not scheduling order."""
    order: list[float] = []
    done = backend.create_future()
    for delay in (0.03, 0.01, 0.02, 0.0, 0.015):
        backend.call_later(delay, order.append, delay)
    backend.call_later(0.04, done.set_result, None)
    await done
    assert order == [0.0, 0.01, 0.015, 0.02, 0.03], f"call_later fired in order {order}"


@check("timers")
async def check_call_later_delay(backend: polyloop.Backend) -> None:
    """call_later(d, fn) runs fn no sooner than d seconds later, by backend.time()."""
    done = backend.create_future()
    start = backend.time()
    backend.call_later(0.05, lambda: done.set_result(backend.time()))
    fired = await done
    assert fired - start >= 0.05 - EPS, f"fired after {fired - start:.4f} s, not 0.05 s"


@check("timers")
async def check_call_later_cancel(backend: polyloop.Backend) -> None:
    """A cancelled call_later never fires (checked after a later timer has fired)."""
    ran: list[str] = []
    done = backend.create_future()
    h1 = backend.call_later(0.01, ran.append, "cancelled early")
    h2 = backend.call_later(0.02, ran.append, "cancelled late")
    backend.call_later(0.015, h2.cancel)
    backend.call_later(0.01, ran.append, "kept")
    h1.cancel()
    backend.call_later(0.03, done.set_result, None)
    await done
    assert ran == ["kept"], f"callbacks that ran: {ran}"
    h1.cancel()  # cancelling again, or after the fact, is harmless


@check("timers")
async def check_sleep_zero_yields(backend: polyloop.Backend) -> None:
    """sleep(0) yields to the loop: a callback scheduled just before it has run after it."""
    ran: list[int] = []
    backend.call_soon(ran.append, 1)
    await backend.sleep(0)
    assert ran == [1], "sleep(0) did not let the loop run a pending call_soon"


@check("timers")
async def check_sleep_duration(backend: polyloop.Backend) -> None:
    """sleep(d) (and polyloop.sleep) returns no sooner than d seconds later."""
    start = backend.time()
    await backend.sleep(0.03)
    mid = backend.time()
    await polyloop.sleep(0.02)
    end = backend.time()
    assert mid - start >= 0.03 - EPS, f"sleep(0.03) took {mid - start:.4f} s"
    assert end - mid >= 0.02 - EPS, f"polyloop.sleep(0.02) took {end - mid:.4f} s"
    try:
        await polyloop.sleep(-1)
    except ValueError:
        pass
    else:
        raise AssertionError("polyloop.sleep(-1) did not raise ValueError")


@check("timers")
async def check_future_result(backend: polyloop.Backend) -> None:
    """create_future: set_result wakes the awaiter; done()/result() agree."""
    fut = backend.create_future()
    assert isinstance(fut, polyloop.Future)
    assert not fut.done()
    backend.call_soon(fut.set_result, 42)
    assert await fut == 42
    assert fut.done() and fut.result() == 42 and not fut.cancelled()


@check("timers")
async def check_future_exception(backend: polyloop.Backend) -> None:
    """create_future: set_exception raises that exception (the same object) at the await."""
    fut = backend.create_future()
    err = KeyError("from the future")
    backend.call_soon(fut.set_exception, err)
    try:
        await fut
    except KeyError as exc:
        assert exc is err, f"got a different exception object: {exc!r}"
    else:
        raise AssertionError("awaiting a future with an exception returned")


@check("timers")
async def check_future_cancel(backend: polyloop.Backend) -> None:
    """A cancelled future raises polyloop.Cancelled when awaited; cancelled() is True."""
    fut = backend.create_future()
    backend.call_soon(fut.cancel)
    try:
        await fut
    except polyloop.Cancelled:
        pass
    else:
        raise AssertionError("awaiting a cancelled future returned")
    assert fut.cancelled() and fut.done()
