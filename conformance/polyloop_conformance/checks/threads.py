"""Threads: ``call_soon_threadsafe`` from real OS threads, and ``run_in_thread``.

Covers waking the loop from another thread (the callback runs on the loop's thread, with
the current backend set), many threads at once, and ``run_in_thread`` running the
function in a worker thread and giving back its result or its exception.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

import polyloop

from .._registry import check


def _os_threads() -> tuple[Callable[..., Any], Callable[[], int], Callable[[], Any]]:
    """``start_new_thread``, ``get_ident`` and ``allocate_lock`` of real OS threads.

    After ``gevent.monkey.patch_all()`` the ``threading`` module makes greenlets and
    ``get_ident`` names greenlets, so these checks would test nothing (and a greenlet
    on the loop's own OS thread has another ident). The originals are kept by gevent;
    we only look at ``gevent.monkey`` if the process already imported it.
    """
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("threading"):
        names = ["start_new_thread", "get_ident", "allocate_lock"]
        start, ident, lock = monkey.get_original("_thread", names)
        return start, ident, lock
    import _thread

    return _thread.start_new_thread, _thread.get_ident, _thread.allocate_lock


start_os_thread, os_thread_ident, os_lock = _os_threads()


@check("threads")
async def check_call_soon_threadsafe(session: polyloop.Session) -> None:
    """call_soon_threadsafe from an OS thread wakes the loop; fn runs on the loop's thread."""
    loop_thread = os_thread_ident()
    done = session.create_future()
    seen: list[object] = []

    def on_loop(value: str) -> None:
        seen.append(os_thread_ident())
        seen.append(polyloop.current_backend())
        done.set_result(value)

    def worker() -> None:
        session.call_soon_threadsafe(on_loop, "from a thread")

    start_os_thread(worker, ())
    assert await done == "from a thread"
    assert seen[0] == loop_thread, "the callback ran off the loop's thread"
    assert seen[1] is session, f"current_backend() in the callback was {seen[1]!r}"


@check("threads")
async def check_call_soon_threadsafe_many(session: polyloop.Session) -> None:
    """8 threads x 50 call_soon_threadsafe each: every call runs, each thread's in order."""
    done = session.create_future()
    got: dict[int, list[int]] = {k: [] for k in range(8)}
    remaining = [8 * 50]

    def record(k: int, i: int) -> None:
        got[k].append(i)
        remaining[0] -= 1
        if remaining[0] == 0:
            done.set_result(None)

    def worker(k: int) -> None:
        for i in range(50):
            session.call_soon_threadsafe(record, k, i)

    for k in range(8):
        start_os_thread(worker, (k,))
    await done  # every call has run: the threads are done but for returning
    for k, values in got.items():
        assert values == list(range(50)), f"thread {k}'s calls ran as {values[:10]}..."


@check("threads")
async def check_run_in_thread_result(session: polyloop.Session) -> None:
    """run_in_thread(fn, *args) runs fn in another thread and returns its result."""
    loop_thread = os_thread_ident()

    def work(a: int, b: int) -> tuple[int, int]:
        return a + b, os_thread_ident()

    total, ident = await session.run_in_thread(work, 2, 3)
    assert total == 5
    assert ident != loop_thread, "run_in_thread ran fn on the loop's thread"
    assert await polyloop.run_in_thread(sum, [1, 2, 3]) == 6


@check("threads")
async def check_run_in_thread_exception(session: polyloop.Session) -> None:
    """run_in_thread re-raises fn's exception (the same object) in the caller."""
    err = ZeroDivisionError("in the worker")

    def fail() -> None:
        raise err

    try:
        await session.run_in_thread(fail)
    except ZeroDivisionError as exc:
        assert exc is err, f"a different exception object: {exc!r}"
    else:
        raise AssertionError("run_in_thread returned although fn raised")


@check("threads")
async def check_run_in_thread_concurrent(session: polyloop.Session) -> None:
    """Several run_in_thread calls run at once (they meet at a barrier) and the loop runs."""
    barrier = threading.Barrier(3, timeout=10)

    def meet(i: int) -> int:
        barrier.wait()
        return i

    tasks = [session.spawn(session.run_in_thread(meet, i)) for i in range(3)]
    ticks = 0
    while not all(t.done() for t in tasks):
        await session.sleep(0.001)  # the loop stays responsive while the threads block
        ticks += 1
        assert ticks < 10_000, "run_in_thread calls never finished"
    assert [t.result() for t in tasks] == [0, 1, 2]


@check("threads")
async def check_thread_wakes_future(session: polyloop.Session) -> None:
    """A thread that finishes via call_soon_threadsafe(fut.set_result) wakes an awaiting task."""
    fut = session.create_future()
    gate = os_lock()
    gate.acquire()

    def worker() -> None:
        gate.acquire(True, 10)  # blocks this OS thread until the loop opens the gate
        session.call_soon_threadsafe(fut.set_result, "woken")

    start_os_thread(worker, ())
    session.call_later(0.01, gate.release)
    assert await fut == "woken"
