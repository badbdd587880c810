"""Threads: ``call_soon_threadsafe`` from real OS threads, and ``run_in_thread``.

Covers waking the loop from another thread (the callback runs on the loop's thread, with
the current backend set), many threads at once, and ``run_in_thread`` running the
function in a worker thread, in a copy of the caller's context (so ``from_thread``
reaches the session there), and giving back its result or its exception.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable
from typing import Any

import polyloop
import polyloop.from_thread

from .._registry import check
from ..referee import os_threads, waiting_for

#: Real OS threads, also after gevent's patch_all() (there, ``threading`` makes
#: greenlets, and these checks would test nothing).
start_os_thread, os_thread_ident, os_lock = os_threads()


@check("threads", clauses=["loop.call_soon_threadsafe.wakes"])
async def check_call_soon_threadsafe(session: polyloop.Session) -> None:
    """call_soon_threadsafe from an OS thread wakes the loop; fn runs on the loop's thread."""
    loop_thread = os_thread_ident()
    done = session.create_future()
    seen: list[object] = []

    def on_loop(value: str) -> None:
        seen.append(os_thread_ident())
        try:
            seen.append(polyloop.current_backend())
        except RuntimeError as exc:
            seen.append(exc)
        done.set_result(value)

    def worker() -> None:
        session.call_soon_threadsafe(on_loop, "from a thread")

    start_os_thread(worker, ())
    with waiting_for("a call_soon_threadsafe callback from another OS thread to run"):
        got = await done
    assert got == "from a thread", f"call_soon_threadsafe passed {got!r}"
    assert seen[0] == loop_thread, "the call_soon_threadsafe callback ran off the loop's thread"
    assert seen[1] is session, (
        f"current_backend() in a call_soon_threadsafe callback was {seen[1]!r}, not {session!r}"
        " (rule: it runs in a copy of the session's context)"
    )


@check("threads", clauses=["loop.call_soon_threadsafe.order"])
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
    with waiting_for(lambda: f"400 call_soon_threadsafe callbacks ({400 - remaining[0]} ran)"):
        await done  # every call has run: the threads are done but for returning
    for k, values in got.items():
        assert values == list(range(50)), (
            f"thread {k}'s 50 call_soon_threadsafe calls ran as {values[:10]}... (rule: each"
            " thread's calls run in the order it made them)"
        )


@check("threads", clauses=["threads.run_in_thread.outcome"])
async def check_run_in_thread_result(session: polyloop.Session) -> None:
    """run_in_thread(fn, *args) runs fn in another thread and returns its result."""
    loop_thread = os_thread_ident()

    def work(a: int, b: int) -> tuple[int, int]:
        return a + b, os_thread_ident()

    with waiting_for("run_in_thread(work, 2, 3) to return"):
        total, ident = await session.run_in_thread(work, 2, 3)
    assert total == 5, f"run_in_thread(lambda a, b: a + b, 2, 3) returned {total!r}"
    assert ident != loop_thread, "run_in_thread ran fn on the loop's thread"
    got = await polyloop.run_in_thread(sum, [1, 2, 3])
    assert got == 6, f"polyloop.run_in_thread(sum, [1, 2, 3]) returned {got!r}"


@check("threads", clauses=["threads.run_in_thread.outcome"])
async def check_run_in_thread_exception(session: polyloop.Session) -> None:
    """run_in_thread re-raises fn's exception (the same object) in the caller."""
    err = ZeroDivisionError("in the worker")

    def fail() -> None:
        raise err

    try:
        with waiting_for("run_in_thread(fail) to raise"):
            got = await session.run_in_thread(fail)
    except ZeroDivisionError as exc:
        assert exc is err, f"run_in_thread raised another exception object: {exc!r}"
    else:
        raise AssertionError(f"run_in_thread returned {got!r} although fn raised")


@check("threads", clauses=["threads.run_in_thread.concurrent"])
async def check_run_in_thread_concurrent(session: polyloop.Session) -> None:
    """Several run_in_thread calls run at once (they meet at a barrier) and the loop runs."""
    barrier = threading.Barrier(3, timeout=10)

    def meet(i: int) -> int:
        barrier.wait()
        return i

    tasks = [session.spawn(session.run_in_thread(meet, i)) for i in range(3)]
    ticks = 0
    with waiting_for(lambda: f"3 run_in_thread calls at a barrier ({barrier.n_waiting} there)"):
        while not all(t.done() for t in tasks):
            await session.sleep(0.001)  # the loop stays responsive while the threads block
            ticks += 1
            assert ticks < 10_000, "run_in_thread calls never finished"
    results = [t.result() for t in tasks]
    assert results == [0, 1, 2], f"3 concurrent run_in_thread calls gave {results}"


@check("threads", clauses=["loop.call_soon_threadsafe.wakes"])
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
    with waiting_for("a future set from another thread with call_soon_threadsafe"):
        got = await fut
    assert got == "woken", f"the future set from a thread gave {got!r}"


_var: contextvars.ContextVar[str] = contextvars.ContextVar("polyloop_conformance_thread")


@check("threads", clauses=["threads.run_in_thread.context"])
async def check_run_in_thread_context(session: polyloop.Session) -> None:
    """run_in_thread runs fn in a copy of the caller's context: it sees the caller's
    context variables, and polyloop.from_thread.run_sync reaches the session there."""
    token = _var.set("set by the caller")
    try:

        def work() -> tuple[str, object]:
            seen = _var.get("<unset>")
            try:
                back: object = polyloop.from_thread.run_sync(polyloop.current_backend)
            except RuntimeError as exc:
                back = exc
            return seen, back

        with waiting_for("run_in_thread(work) to return"):
            seen, back = await session.run_in_thread(work)
    finally:
        _var.reset(token)
    assert seen == "set by the caller", (
        f"in run_in_thread the caller's context variable was {seen!r} (rule: fn runs in a copy"
        " of the caller's context)"
    )
    assert back is session, (
        f"from_thread.run_sync(current_backend) in a run_in_thread worker gave {back!r},"
        f" not {session!r} (rule: fn runs in a copy of the caller's context, where the session"
        " is found)"
    )


@check("threads", sync=True, timeout=60, clauses=["threads.end_fails_waiters"])
def check_end_fails_calls_from_threads(make_backend: Callable[[], polyloop.Backend]) -> None:
    """Threads calling into a session while it ends are never left blocked: each call
    completes or fails with RuntimeError naming the ended session, and
    call_soon_threadsafe after the end raises that RuntimeError -- on every backend."""
    outcomes: list[str] = []
    sessions: list[polyloop.Session] = []
    start_thread, _, allocate_lock = os_threads()  # real OS threads, also when patched
    finished: list[Any] = []

    def caller(session: polyloop.Session, done: Any) -> None:
        try:
            while True:
                try:
                    polyloop.from_thread.run_sync(lambda: None, session=session)
                except RuntimeError as exc:
                    outcomes.append(str(exc))
                    return
                except BaseException as exc:
                    outcomes.append(f"{type(exc).__name__}: {exc}")
                    return
        finally:
            done.release()

    async def main() -> None:
        session = polyloop.current_backend()
        sessions.append(session)
        for _ in range(20):
            done = allocate_lock()
            done.acquire()
            finished.append(done)
            start_thread(caller, (session, done))
        await polyloop.sleep(0.05)  # main returns while the threads are calling

    make_backend().run(main)
    deadline = time.monotonic() + 5
    blocked = 0
    for done in finished:
        if not done.acquire(timeout=max(0.0, deadline - time.monotonic())):
            blocked += 1
    assert not blocked, (
        f"{blocked} of {len(finished)} threads still blocked in from_thread.run_sync 5 s"
        " after the session ended (rule: the end of a session fails every pending call"
        " from another thread)"
    )
    wrong = [o for o in outcomes if "ended" not in o]
    assert not wrong, (
        f"calls from threads during the end failed with {wrong[:3]} (rule: RuntimeError"
        " naming the ended session)"
    )
    try:
        sessions[0].call_soon_threadsafe(lambda: None)
    except RuntimeError as exc:
        assert "ended" in str(exc), f"call_soon_threadsafe after the end raised {exc!r}"
    else:
        raise AssertionError(
            "call_soon_threadsafe after the session ended was accepted (rule: RuntimeError"
            " naming the ended session, on every backend)"
        )
