"""Threads: ``call_soon_threadsafe`` from real OS threads, and ``run_in_thread``.

Covers waking the loop from another thread (the callback runs on the loop's thread, with
the current backend set), many threads at once, and ``run_in_thread`` running the
function in a worker thread and giving back its result or its exception.
"""

from __future__ import annotations

import threading

import polyloop

from .._registry import check


@check("threads")
async def check_call_soon_threadsafe(backend: polyloop.Backend) -> None:
    """call_soon_threadsafe from an OS thread wakes the loop; fn runs on the loop's thread."""
    loop_thread = threading.get_ident()
    done = backend.create_future()
    seen: list[object] = []

    def on_loop(value: str) -> None:
        seen.append(threading.get_ident())
        seen.append(polyloop.current_backend())
        done.set_result(value)

    def worker() -> None:
        backend.call_soon_threadsafe(on_loop, "from a thread")

    thread = threading.Thread(target=worker, name="polyloop-check")
    thread.start()
    try:
        assert await done == "from a thread"
    finally:
        thread.join()
    assert seen[0] == loop_thread, "the callback ran off the loop's thread"
    assert seen[1] is backend, f"current_backend() in the callback was {seen[1]!r}"


@check("threads")
async def check_call_soon_threadsafe_many(backend: polyloop.Backend) -> None:
    """8 threads x 50 call_soon_threadsafe each: every call runs, each thread's in order."""
    done = backend.create_future()
    got: dict[int, list[int]] = {k: [] for k in range(8)}
    remaining = [8 * 50]

    def record(k: int, i: int) -> None:
        got[k].append(i)
        remaining[0] -= 1
        if remaining[0] == 0:
            done.set_result(None)

    def worker(k: int) -> None:
        for i in range(50):
            backend.call_soon_threadsafe(record, k, i)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    try:
        await done
    finally:
        for t in threads:
            t.join()
    for k, values in got.items():
        assert values == list(range(50)), f"thread {k}'s calls ran as {values[:10]}..."


@check("threads")
async def check_run_in_thread_result(backend: polyloop.Backend) -> None:
    """run_in_thread(fn, *args) runs fn in another thread and returns its result."""
    loop_thread = threading.get_ident()

    def work(a: int, b: int) -> tuple[int, int]:
        return a + b, threading.get_ident()

    total, ident = await backend.run_in_thread(work, 2, 3)
    assert total == 5
    assert ident != loop_thread, "run_in_thread ran fn on the loop's thread"
    assert await polyloop.run_in_thread(sum, [1, 2, 3]) == 6


@check("threads")
async def check_run_in_thread_exception(backend: polyloop.Backend) -> None:
    """run_in_thread re-raises fn's exception (the same object) in the caller."""
    err = ZeroDivisionError("in the worker")

    def fail() -> None:
        raise err

    try:
        await backend.run_in_thread(fail)
    except ZeroDivisionError as exc:
        assert exc is err, f"a different exception object: {exc!r}"
    else:
        raise AssertionError("run_in_thread returned although fn raised")


@check("threads")
async def check_run_in_thread_concurrent(backend: polyloop.Backend) -> None:
    """Several run_in_thread calls run at once (they meet at a barrier) and the loop runs."""
    barrier = threading.Barrier(3, timeout=10)

    def meet(i: int) -> int:
        barrier.wait()
        return i

    tasks = [backend.spawn(backend.run_in_thread(meet, i)) for i in range(3)]
    ticks = 0
    while not all(t.done() for t in tasks):
        await backend.sleep(0.001)  # the loop stays responsive while the threads block
        ticks += 1
        assert ticks < 10_000, "run_in_thread calls never finished"
    assert [t.result() for t in tasks] == [0, 1, 2]


@check("threads")
async def check_thread_wakes_future(backend: polyloop.Backend) -> None:
    """A thread that finishes via call_soon_threadsafe(fut.set_result) wakes an awaiting task."""
    fut = backend.create_future()
    event = threading.Event()

    def worker() -> None:
        event.wait(10)
        backend.call_soon_threadsafe(fut.set_result, "woken")

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        backend.call_later(0.01, event.set)
        assert await fut == "woken"
    finally:
        event.set()
        thread.join()
