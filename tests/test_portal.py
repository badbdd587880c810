"""``polyloop.from_thread.start_blocking_portal``: a loop in a thread of its own, called
from plain threads (anyio's tests/test_from_thread.py, its portal part, as checklist).

Every test runs on each installed backend and on the mixed one (gevent's hub in a
thread that is not the main one: one hub per thread).
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import os
import threading
from typing import Any

import pytest

import polyloop
from polyloop.from_thread import BlockingPortal, start_blocking_portal

BACKENDS = [b.name for b in polyloop.available_backends(composite=True) if b.error is None]
#: Seconds a test waits for something that happens at once when the code is right.
WAIT = 10.0


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _open_fds() -> set[int]:
    return set(map(int, os.listdir("/proc/self/fd")))


async def _add(a: int, b: int) -> tuple[int, str, bool]:
    await polyloop.sleep(0)
    session = polyloop.current_backend()
    return a + b, session.name, threading.current_thread() is threading.main_thread()


def test_call_async_and_sync(backend: str) -> None:
    with start_blocking_portal(backend) as portal:
        total, name, on_main = portal.call(_add, 1, 2)
        assert total == 3 and not on_main
        assert name == (backend if backend != "mixed" else "asyncio")
        assert portal.call(lambda: polyloop.current_backend().name) == name
        loop_thread = portal.call(threading.get_ident)
    assert loop_thread != threading.get_ident()


def test_error_raised_in_the_callers_thread(backend: str) -> None:
    async def fails() -> None:
        await polyloop.sleep(0)
        raise LookupError("from the loop")

    with start_blocking_portal(backend) as portal:
        with pytest.raises(LookupError, match="from the loop"):
            portal.call(fails)
        # One failed call does not end the portal.
        assert portal.call(_add, 2, 2)[0] == 4


def test_call_from_the_loop_thread_refused(backend: str) -> None:
    with start_blocking_portal(backend) as portal:

        def nested() -> None:
            portal.call(_add, 1, 1)

        with pytest.raises(RuntimeError, match="portal's own loop thread"):
            portal.call(nested)


def test_start_task_soon_and_cancel(backend: str) -> None:
    seen: list[str] = []

    async def forever(started: threading.Event) -> None:
        started.set()
        try:
            await polyloop.sleep(3600)
        except polyloop.Cancelled:
            seen.append("cancelled")
            raise

    with start_blocking_portal(backend) as portal:
        future = portal.start_task_soon(_add, 5, 6)
        assert isinstance(future, concurrent.futures.Future)
        assert future.result(WAIT)[0] == 11
        started = threading.Event()
        future = portal.start_task_soon(forever, started, name="forever")
        assert started.wait(WAIT)
        assert future.cancel()
        # The task's cancellation is seen on the loop: wait for it there.
        portal.call(polyloop.sleep, 0)
        portal.call(polyloop.sleep, 0)
    assert seen == ["cancelled"]


def test_exit_waits_for_started_tasks(backend: str) -> None:
    ended: list[str] = []

    async def takes_a_while() -> None:
        for _ in range(5):
            await polyloop.sleep(0.001)
        ended.append("ended")

    with start_blocking_portal(backend) as portal:
        future = portal.start_task_soon(takes_a_while)
    assert ended == ["ended"] and future.done()


def test_stop_cancel_remaining_and_calls_after_stop(backend: str) -> None:
    started = threading.Event()

    async def forever() -> None:
        started.set()
        await polyloop.sleep(3600)

    with start_blocking_portal(backend) as portal:
        future = portal.start_task_soon(forever)
        assert started.wait(WAIT)
        portal.stop(cancel_remaining=True)
        assert future.cancelled()
        with pytest.raises(RuntimeError, match="not running"):
            portal.call(_add, 1, 1)
        with pytest.raises(RuntimeError, match="not running"):
            portal.start_task_soon(_add, 1, 1)


def test_error_in_the_block_cancels_remaining_tasks(backend: str) -> None:
    started = threading.Event()
    with pytest.raises(KeyError):
        with start_blocking_portal(backend) as portal:
            future = portal.start_task_soon(_forever, started)
            assert started.wait(WAIT)
            raise KeyError("in the block")
    assert future.cancelled()


async def _forever(started: threading.Event) -> None:
    started.set()
    await polyloop.sleep(3600)


def test_calls_from_many_threads(backend: str) -> None:
    with start_blocking_portal(backend) as portal:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda i: portal.call(_add, i, i)[0], range(20)))
    assert results == [2 * i for i in range(20)]


def test_nothing_left_running_or_open(backend: str) -> None:
    before_threads = set(threading.enumerate())
    with start_blocking_portal(backend) as portal:
        portal.call(_add, 1, 1)  # warms up what the backend caches process-wide
    before_fds = _open_fds()
    with start_blocking_portal(backend) as portal:
        portal.call(_add, 1, 1)
        assert isinstance(portal, BlockingPortal)
    assert set(threading.enumerate()) <= before_threads
    assert _open_fds() == before_fds


def test_bad_backend_raises_before_any_thread() -> None:
    count = threading.active_count()
    with pytest.raises(LookupError, match="unknown backend 'nope'"):
        with start_blocking_portal("nope"):
            pass  # pragma: no cover
    with pytest.raises(TypeError, match="unknown option"):
        with start_blocking_portal("asyncio", bogus=1):
            pass  # pragma: no cover
    assert threading.active_count() == count


def test_loop_error_raised_at_start() -> None:
    class Broken(polyloop.load_backend("asyncio").__class__):  # type: ignore[misc]
        def run(self, main: Any, *args: Any, handle_sigterm: bool = False) -> Any:
            raise OSError("no loop today")

    with pytest.raises(OSError, match="no loop today"):
        with start_blocking_portal(Broken):
            pass  # pragma: no cover


def test_context_variables_come_along(backend: str) -> None:
    var: contextvars.ContextVar[int] = contextvars.ContextVar("var", default=1)
    var.set(6)

    async def get_var() -> int:
        await polyloop.sleep(0)
        return var.get()

    with start_blocking_portal(backend) as portal:
        assert portal.call(var.get) == 6
        assert portal.call(get_var) == 6
        # The caller's context names another session (one that has ended): in there,
        # the portal's session is current all the same.
        ended = polyloop.run(_current)
        context = contextvars.copy_context()
        context.run(polyloop.lowlevel.set_current, ended)
        inside = context.run(portal.call, polyloop.current_backend)
        assert inside is not ended and not inside.closed
        assert inside is portal.call(polyloop.current_backend)


async def _current() -> polyloop.Session:
    return polyloop.current_backend()


def test_cancel_before_it_starts_never_runs(backend: str) -> None:
    ran: list[str] = []

    async def record() -> None:
        ran.append("ran")

    with start_blocking_portal(backend) as portal:
        # The loop is held busy (a plain function blocks its thread) until the second
        # task has been cancelled: the loop sees the cancellation before the task.
        gate, holding = threading.Event(), threading.Event()
        held = portal.start_task_soon(lambda: holding.set() or gate.wait(WAIT))
        assert holding.wait(WAIT)
        future = portal.start_task_soon(record)
        assert future.cancel()
        gate.set()
        held.result(WAIT)
        portal.call(polyloop.sleep, 0)
    assert future.cancelled() and ran == []


def test_base_exception_reaches_the_caller_only(backend: str) -> None:
    async def fatal() -> None:
        raise BaseException("fatal error")

    with start_blocking_portal(backend) as portal:
        with pytest.raises(BaseException, match="fatal error") as caught:
            portal.call(fatal)
        assert caught.value.__context__ is None
        assert portal.call(_add, 1, 1)[0] == 2  # the portal goes on
    # ... and closing it raised nothing more.


def test_start_task(backend: str) -> None:
    async def server(
        greeting: str, *, task_status: polyloop.TaskStatus[str] = polyloop.TASK_STATUS_IGNORED
    ) -> str:
        await polyloop.sleep(0)
        task_status.started(greeting + " ready")
        await polyloop.sleep(0)
        return greeting + " done"

    async def crashes_before(*, task_status: polyloop.TaskStatus[None]) -> None:
        raise LookupError("before started")

    async def crashes_after(*, task_status: polyloop.TaskStatus[None]) -> None:
        task_status.started()
        raise KeyError("after started")

    async def never_started(*, task_status: polyloop.TaskStatus[None]) -> None:
        await polyloop.sleep(0)

    with start_blocking_portal(backend) as portal:
        future, value = portal.start_task(server, "hello")
        assert value == "hello ready"
        assert future.result(WAIT) == "hello done"
        with pytest.raises(LookupError, match="before started"):
            portal.start_task(crashes_before)
        future, value = portal.start_task(crashes_after)
        assert value is None
        with pytest.raises(KeyError, match="after started"):
            future.result(WAIT)
        with pytest.raises(RuntimeError, match=r"without calling task_status\.started"):
            portal.start_task(never_started)
        assert portal.call(_add, 1, 2)[0] == 3  # none of it ended the portal


@pytest.mark.parametrize("outer", ["asyncio", "twisted", "gevent", "tornado"])
def test_from_inside_another_loop(outer: str, backend: str) -> None:
    """A portal started and called from code that a loop runs (blocking that loop while
    it waits, as from_thread does) does not deadlock."""
    if outer not in BACKENDS:
        pytest.skip(f"backend {outer} is not installed here")

    async def main() -> int:
        with start_blocking_portal(backend) as portal:
            return int(portal.call(_add, 20, 22)[0])

    assert polyloop.run(main, backend=outer) == 42
