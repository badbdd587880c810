"""Tasks and futures as a library uses them: ``current_task``, done-callbacks,
``exception()``, errors nobody awaits, and misuse -- the same on every backend.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import polyloop

from .._registry import check
from ..referee import expect_logged
from ._util import bounded


@check("taskapi", clauses=["task.api"])
async def check_current_task(session: polyloop.Session) -> None:
    """current_task() is the running polyloop task inside it, with its name."""

    async def child() -> Any:
        return polyloop.current_task()

    task = session.spawn(child(), name="the-child")
    assert await task is task, "current_task() inside a task is not that task"
    assert task.get_name() == "the-child", task.get_name()
    seen: list[Any] = []
    done = session.create_future()
    session.call_soon(lambda: (seen.append(polyloop.current_task()), done.set_result(None)))
    await done
    assert seen == [None], f"current_task() in a plain callback is {seen[0]!r}, not None"


@check("taskapi", clauses=["future.done_callbacks"])
async def check_done_callbacks(session: polyloop.Session) -> None:
    """add_done_callback(fn) calls fn(future) soon after it is done, never inside
    set_result; soon too if it is done already; remove_done_callback forgets it."""
    fut = session.create_future()
    calls: list[Any] = []
    fut.add_done_callback(calls.append)
    assert fut.remove_done_callback(lambda f: None) == 0, (
        "remove_done_callback of a callback never added did not return 0"
    )
    fut.set_result(7)
    assert calls == [], "a done-callback ran inside set_result()"
    for _ in range(3):
        await session.sleep(0)
    assert calls[0] is fut, calls
    late: list[Any] = []
    fut.add_done_callback(late.append)
    for _ in range(3):
        await session.sleep(0)
    assert late == [fut], "a callback added to a done future never ran"
    other = session.create_future()
    gone: list[Any] = []
    other.add_done_callback(gone.append)
    other.add_done_callback(gone.append)
    removed = other.remove_done_callback(gone.append)
    assert removed == 2, f"remove_done_callback removed {removed} of 2 registrations"
    # Callbacks run in the order they were added: once the sentinel has run, a removed
    # callback that was going to run would have.
    sentinel = session.create_future()
    other.add_done_callback(lambda f: sentinel.set_result(None))
    other.cancel()
    await bounded(session, sentinel, 5, "a done-callback of a cancelled future never ran")
    assert gone == [], "a removed callback ran"


@check("taskapi", clauses=["future.outcome"])
async def check_outcome_accessors(session: polyloop.Session) -> None:
    """exception()/result(): InvalidStateError while pending, the error or None when
    done, Cancelled when cancelled; set_result on a done future raises InvalidStateError."""
    fut = session.create_future()
    for call in (fut.result, fut.exception):
        try:
            call()
        except asyncio.InvalidStateError:
            pass
        else:
            raise AssertionError(f"{call.__name__}() of a pending future did not raise")
    err = KeyError("x")
    fut.set_exception(err)
    assert fut.exception() is err
    try:
        fut.set_result(1)
    except asyncio.InvalidStateError:
        pass
    else:
        raise AssertionError("set_result() on a done future did not raise")
    ok = session.create_future()
    ok.set_result(None)
    assert ok.exception() is None
    gone = session.create_future()
    gone.cancel()
    try:
        gone.exception()
    except polyloop.Cancelled:
        pass
    else:
        raise AssertionError("exception() of a cancelled future did not raise Cancelled")


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@check("taskapi", clauses=["task.unretrieved_error_logged"])
async def check_unawaited_error_logged(session: polyloop.Session) -> None:
    """A spawned task that fails and that nobody awaits is logged once, with its
    traceback, on the "polyloop" logger."""
    capture = _Capture()
    logger = logging.getLogger("polyloop")
    logger.addHandler(capture)
    try:
        with expect_logged():

            async def fails() -> None:
                raise ZeroDivisionError("nobody awaits me")

            session.spawn(fails())
            for _ in range(5):
                await session.sleep(0)
            gc.collect()
            await session.sleep(0)
    finally:
        logger.removeHandler(capture)
    mine = [r for r in capture.records if r.exc_info and "nobody awaits me" in str(r.exc_info[1])]
    assert len(mine) == 1, f"{len(mine)} log records of the unawaited failure: {capture.records}"
    assert mine[0].exc_info is not None and mine[0].exc_info[2] is not None, "no traceback"


@check("taskapi", clauses=["task.api"])
async def check_spawn_checks_its_argument(session: polyloop.Session) -> None:
    """spawn() of anything but a coroutine (a number, a function, a future) raises
    TypeError at once, on every backend."""

    async def fn() -> None:
        pass

    for bad in (123, fn, session.create_future()):
        try:
            session.spawn(bad)  # type: ignore[arg-type]
        except TypeError:
            continue
        raise AssertionError(f"spawn({bad!r}) was accepted")
