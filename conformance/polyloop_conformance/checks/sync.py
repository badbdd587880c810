"""Synchronization and memory object streams: written once in the core, checked on each
backend (anyio's tests/test_synchronization.py and streams/test_memory.py as checklist).

Covers Event, Lock, Semaphore, CapacityLimiter and Condition (FIFO order, ``*_nowait``,
statistics, misuse errors, and the hand-off of a permit to a waiter that is cancelled
before it resumes), the memory object streams (order, buffering, closing either side,
clones, cancelled senders and receivers), and a 200-task stress run with random timeouts
and cancellations in which no permit and no item may be lost.
"""

from __future__ import annotations

import random
from typing import Any

import polyloop

from .._registry import check
from ._util import bounded

#: Seconds a check waits for a wake-up or a hand-off, which takes a loop turn or two.
WAIT = 5.0


async def _settle(session: polyloop.Session, rounds: int = 5) -> None:
    for _ in range(rounds):
        await session.sleep(0)


def _ended(session: polyloop.Session, task: polyloop.Task[Any]) -> polyloop.Future[str]:
    """A future set to ``_outcome(task)`` once ``task`` ends: what to ``bounded()`` an
    outcome by (``_outcome`` itself catches Cancelled, so the bound could not cancel it)."""
    fut: polyloop.Future[str] = session.create_future()

    async def watch() -> None:
        outcome = await _outcome(task)
        if not fut.done():
            fut.set_result(outcome)

    session.spawn(watch())
    return fut


async def _join(tasks: list[polyloop.Task[Any]]) -> None:
    for task in tasks:
        await task


async def _outcome(task: polyloop.Task[Any]) -> str:
    """``"ok"``, ``"cancelled"`` or the error's type name, once ``task`` ends."""
    try:
        await task
    except polyloop.Cancelled:
        return "cancelled"
    except Exception as exc:
        return type(exc).__name__
    return "ok"


@check("sync", clauses=["sync.event"])
async def check_event(session: polyloop.Session) -> None:
    """Event.set() wakes every waiter; wait() after set() returns at once."""
    event = polyloop.Event()
    woken: list[int] = []

    async def waiter(i: int) -> None:
        await event.wait()
        woken.append(i)

    tasks = [session.spawn(waiter(i)) for i in range(5)]
    await _settle(session)
    assert woken == [], f"woken before set(): {woken}"
    assert event.statistics().tasks_waiting == 5, event.statistics()
    assert not event.is_set()
    event.set()
    await bounded(
        session, _join(tasks), WAIT,
        "set() did not wake every waiter: some still wait (rule: Event.set() wakes every"
        " waiter)",
    )  # fmt: skip
    assert sorted(woken) == list(range(5)), (
        f"set() woke the waiters {woken} of 5 (rule: Event.set() wakes every waiter)"
    )
    assert event.is_set() and event.statistics().tasks_waiting == 0
    await bounded(
        session, event.wait(), WAIT,
        "Event.wait() on an event that is set did not return (rule: wait() after set()"
        " returns at once)",
    )  # fmt: skip


@check("sync", clauses=["sync.event"])
async def check_event_wait_cancelled(session: polyloop.Session) -> None:
    """A cancelled Event.wait() leaves the event's waiters; the others still wake."""
    event = polyloop.Event()
    cancelled = session.spawn(event.wait())
    kept = session.spawn(event.wait())
    await _settle(session)
    cancelled.cancel()
    assert await _outcome(cancelled) == "cancelled"
    assert event.statistics().tasks_waiting == 1, event.statistics()
    event.set()
    assert await _outcome(kept) == "ok"


@check("sync", clauses=["sync.lock"])
async def check_lock_fifo(session: polyloop.Session) -> None:
    """Lock: one holder at a time, waiters served in arrival order."""
    lock = polyloop.Lock()
    order: list[int] = []
    holders = 0

    async def worker(i: int) -> None:
        nonlocal holders
        async with lock:
            holders += 1
            assert holders == 1, f"{holders} tasks hold the lock at once"
            order.append(i)
            await session.sleep(0)
            holders -= 1

    await lock.acquire()
    tasks = []
    for i in range(8):
        tasks.append(session.spawn(worker(i)))
        await _settle(session, 2)  # queued in this order
    assert lock.statistics().tasks_waiting == 8, lock.statistics()
    lock.release()
    for task in tasks:
        await task
    assert order == list(range(8)), (
        f"served out of order: {order} (rule: Lock waiters are served in arrival order)"
    )
    assert not lock.locked()


@check("sync", clauses=["sync.lock"])
async def check_lock_misuse(session: polyloop.Session) -> None:
    """Lock: acquire_nowait raises WouldBlock when held; release() unheld and a second
    acquire by the holder raise RuntimeError."""
    lock = polyloop.Lock()
    try:
        lock.release()
    except RuntimeError:
        pass
    else:
        raise AssertionError("release() of an unheld lock did not raise RuntimeError")
    lock.acquire_nowait()
    assert lock.locked()
    try:
        lock.acquire_nowait()
    except polyloop.WouldBlock:
        pass
    else:
        raise AssertionError("acquire_nowait() of a held lock did not raise WouldBlock")

    async def twice() -> None:
        async with lock:
            await lock.acquire()

    lock.release()
    assert await _outcome(session.spawn(twice())) == "RuntimeError", "the lock is reentrant"
    assert not lock.locked(), "a failed reentrant acquire left the lock held"


@check("sync", clauses=["sync.handoff_not_lost"])
async def check_lock_cancel_after_handoff(session: polyloop.Session) -> None:
    """A waiter cancelled after release() handed it the lock passes it on: not lost."""
    lock = polyloop.Lock()
    await lock.acquire()
    first = session.spawn(lock.acquire())
    await _settle(session)
    got: list[str] = []

    async def second() -> None:
        async with lock:
            got.append("second")

    waiter = session.spawn(second())
    await _settle(session)
    lock.release()  # handed to `first`...
    first.cancel()  # ...which is cancelled before it resumes
    assert await _outcome(first) == "cancelled", "the cancelled waiter was not cancelled"
    await bounded(
        session, waiter, WAIT,
        "the lock handed to a cancelled waiter was lost: the next waiter never got it (rule:"
        " a waiter cancelled after release() handed it the lock passes the lock on)",
    )  # fmt: skip
    assert not lock.locked(), "the lock is still held after everyone left"


@check("sync", clauses=["sync.semaphore"])
async def check_semaphore(session: polyloop.Session) -> None:
    """Semaphore: value counts free permits, waiters served in order, max_value enforced,
    acquire_nowait raises WouldBlock when none is free."""
    sem = polyloop.Semaphore(2, max_value=2)
    await sem.acquire()
    sem.acquire_nowait()
    assert sem.value == 0
    try:
        sem.acquire_nowait()
    except polyloop.WouldBlock:
        pass
    else:
        raise AssertionError("acquire_nowait() with no free permit did not raise WouldBlock")
    order: list[int] = []

    async def waiter(i: int) -> None:
        async with sem:
            order.append(i)

    tasks = []
    for i in range(4):
        tasks.append(session.spawn(waiter(i)))
        await _settle(session, 2)
    assert sem.statistics().tasks_waiting == 4, sem.statistics()
    sem.release()
    sem.release()
    for task in tasks:
        await task
    assert order == [0, 1, 2, 3], (
        f"served out of order: {order} (rule: Semaphore waiters are served in arrival order)"
    )
    assert sem.value == 2, f"value {sem.value} after everyone left, not 2"
    try:
        sem.release()
    except ValueError:
        pass
    else:
        raise AssertionError(
            "release() past max_value did not raise ValueError (rule: a Semaphore never"
            " holds more than max_value permits)"
        )


@check("sync", clauses=["sync.handoff_not_lost"])
async def check_semaphore_cancel_after_handoff(session: polyloop.Session) -> None:
    """A Semaphore waiter cancelled after a permit was handed to it passes it on."""
    sem = polyloop.Semaphore(1)
    await sem.acquire()
    first = session.spawn(sem.acquire())
    second = session.spawn(sem.acquire())
    await _settle(session)
    sem.release()
    first.cancel()
    assert await _outcome(first) == "cancelled"
    rule = "rule: a waiter cancelled after a permit was handed to it passes the permit on"
    outcome = await bounded(
        session, _ended(session, second), WAIT,
        f"the permit handed to a cancelled waiter was lost: the next waiter never got it"
        f" ({rule})",
    )  # fmt: skip
    assert outcome == "ok", f"the waiter the permit was passed on to ended {outcome} ({rule})"
    sem.release()
    assert sem.value == 1, f"value {sem.value}, not 1: a permit was lost or made up ({rule})"


@check("sync", clauses=["sync.semaphore"])
async def check_capacity_limiter(session: polyloop.Session) -> None:
    """CapacityLimiter: one token per borrower, at most total_tokens at once; raising
    total_tokens lets waiters in; releasing a token one does not hold is an error."""
    limiter = polyloop.CapacityLimiter(2)
    a, b, c = object(), object(), object()
    await limiter.acquire_on_behalf_of(a)
    limiter.acquire_on_behalf_of_nowait(b)
    assert limiter.borrowed_tokens == 2 and limiter.available_tokens == 0
    one_token = (
        "rule: one token per borrower: a borrower that holds one and asks again gets RuntimeError"
    )
    again = await bounded(
        session, _ended(session, session.spawn(limiter.acquire_on_behalf_of(a))), WAIT,
        f"a borrower that holds a token waited for a second one ({one_token})",
    )  # fmt: skip
    assert again == "RuntimeError", (
        f"a borrower that holds a token asked again: {again}, not RuntimeError ({one_token})"
    )
    waiting = session.spawn(limiter.acquire_on_behalf_of(c))
    await _settle(session)
    assert not waiting.done() and limiter.statistics().tasks_waiting == 1
    limiter.total_tokens = 3
    await bounded(
        session, waiting, WAIT,
        "raising total_tokens from 2 to 3 did not let the waiting borrower in (rule: a"
        " token made free, or added, goes to the first waiter)",
    )  # fmt: skip
    assert limiter.borrowed_tokens == 3, limiter.statistics()
    try:
        limiter.release_on_behalf_of(object())
    except RuntimeError:
        pass
    else:
        raise AssertionError("releasing a token nobody borrowed did not raise")
    for borrower in (a, b, c):
        limiter.release_on_behalf_of(borrower)
    assert limiter.borrowed_tokens == 0

    async def task_borrows() -> int:
        async with limiter:
            return limiter.borrowed_tokens

    assert await session.spawn(task_borrows()) == 1, "acquire() in a task took no token"


@check("sync", clauses=["sync.condition"])
async def check_condition(session: polyloop.Session) -> None:
    """Condition: wait() releases the lock and takes it back; notify(n) wakes n waiters
    in order; notify_all() the rest; wait_for() loops on a predicate."""
    cond = polyloop.Condition()
    woken: list[int] = []

    async def waiter(i: int) -> None:
        async with cond:
            await cond.wait()
            assert cond.locked(), "wait() returned without the lock"
            woken.append(i)

    tasks = []
    for i in range(4):
        tasks.append(session.spawn(waiter(i)))
        await _settle(session, 2)
    async with cond:
        cond.notify(2)
    await _settle(session)
    assert woken == [0, 1], f"notify(2) woke {woken}"
    async with cond:
        cond.notify_all()
    for task in tasks:
        await task
    assert woken == [0, 1, 2, 3], woken
    items: list[int] = []

    async def consumer() -> int:
        async with cond:
            return await cond.wait_for(lambda: len(items) >= 3)

    task = session.spawn(consumer())
    for i in range(3):
        await _settle(session)
        async with cond:
            items.append(i)
            cond.notify_all()
    assert await task is True
    try:
        await cond.wait()
    except RuntimeError:
        pass
    else:
        raise AssertionError("wait() without the lock did not raise RuntimeError")


@check("sync", clauses=["sync.handoff_not_lost"])
async def check_condition_notify_handover_on_cancel(session: polyloop.Session) -> None:
    """A Condition waiter notified and then cancelled hands the notification on."""
    cond = polyloop.Condition()

    async def waiter() -> None:
        async with cond:
            await cond.wait()

    first = session.spawn(waiter())
    second = session.spawn(waiter())
    await _settle(session)
    async with cond:
        cond.notify(1)
        first.cancel()
    assert await _outcome(first) == "cancelled"
    rule = "rule: a waiter notified and then cancelled hands the notification on"
    outcome = await bounded(
        session, _ended(session, second), WAIT,
        f"the notification given to a cancelled waiter was lost: the other waiter never"
        f" woke ({rule})",
    )  # fmt: skip
    assert outcome == "ok", (
        f"the waiter the notification was handed on to ended {outcome} ({rule})"
    )
    assert not cond.locked()


@check("channels", clauses=["channel.order"])
async def check_channel_order(session: polyloop.Session) -> None:
    """A memory object stream delivers every item once, in order; send waits while the
    buffer is full; statistics count the buffer and the waiters."""
    send, receive = polyloop.create_memory_object_stream(2)
    send.send_nowait(0)
    send.send_nowait(1)
    try:
        send.send_nowait(2)
    except polyloop.WouldBlock:
        pass
    else:
        raise AssertionError("send_nowait() into a full buffer did not raise WouldBlock")
    blocked = session.spawn(send.send(2))
    await _settle(session)
    stats = send.statistics()
    assert (stats.current_buffer_used, stats.tasks_waiting_send) == (2, 1), stats
    got = [await receive.receive() for _ in range(3)]
    await blocked
    assert got == [0, 1, 2], got
    try:
        receive.receive_nowait()
    except polyloop.WouldBlock:
        pass
    else:
        raise AssertionError("receive_nowait() with nothing sent did not raise WouldBlock")


@check("channels", clauses=["channel.order"])
async def check_channel_unbuffered(session: polyloop.Session) -> None:
    """With no buffer a send waits for a receiver, and the item goes straight to it."""
    send, receive = polyloop.create_memory_object_stream(0)
    sender = session.spawn(send.send("item"))
    await _settle(session)
    assert not sender.done(), "an unbuffered send did not wait for a receiver"
    assert await receive.receive() == "item"
    await sender
    receiver = session.spawn(receive.receive())
    await _settle(session)
    send.send_nowait("direct")  # a receiver waits: no buffer needed
    assert await receiver == "direct"


@check("channels", clauses=["channel.close"])
async def check_channel_close_send(session: polyloop.Session) -> None:
    """Closing every send end: receivers drain the buffer, then get EndOfStream; async
    iteration ends; a waiting receiver wakes with EndOfStream."""
    send, receive = polyloop.create_memory_object_stream(10)
    clone = send.clone()
    for i in range(3):
        await send.send(i)
    send.close()
    waiting = session.spawn(receive.clone().receive())
    got = [item async for item in _until(receive, 3)]
    assert got == [0, 1, 2], got
    await _settle(session)
    assert not waiting.done(), "a receiver ended while a clone of the send end was open"
    clone.close()
    assert await _outcome(waiting) == "EndOfStream", "a waiting receiver was not ended"
    try:
        await receive.receive()
    except polyloop.EndOfStream:
        pass
    else:
        raise AssertionError("receive() after every sender closed did not raise EndOfStream")
    try:
        await send.send(9)
    except polyloop.ClosedResourceError:
        pass
    else:
        raise AssertionError("send() on a closed send end did not raise ClosedResourceError")


async def _until(receive: polyloop.MemoryObjectReceiveStream[Any], n: int) -> Any:
    async for item in receive:
        yield item
        n -= 1
        if not n:
            return


@check("channels", clauses=["channel.close"])
async def check_channel_close_receive(session: polyloop.Session) -> None:
    """Closing every receive end: waiting and later senders get BrokenResourceError."""
    send, receive = polyloop.create_memory_object_stream(0)
    waiting = session.spawn(send.send("x"))
    await _settle(session)
    receive.close()
    assert await _outcome(waiting) == "BrokenResourceError", "a waiting sender was not told"
    try:
        send.send_nowait("y")
    except polyloop.BrokenResourceError:
        pass
    else:
        raise AssertionError("send with every receiver closed did not raise BrokenResourceError")
    try:
        receive.receive_nowait()
    except polyloop.ClosedResourceError:
        pass
    else:
        raise AssertionError("receive on a closed end did not raise ClosedResourceError")


@check("channels", clauses=["sync.handoff_not_lost"])
async def check_channel_cancelled_receiver_loses_nothing(session: polyloop.Session) -> None:
    """An item handed to a receiver that is cancelled before it resumes is not lost."""
    send, receive = polyloop.create_memory_object_stream(0)
    first = session.spawn(receive.receive())
    await _settle(session)
    send.send_nowait("precious")  # handed to `first`...
    first.cancel()  # ...which is cancelled before it resumes
    assert await _outcome(first) == "cancelled"
    rule = "rule: an item handed to a receiver cancelled before it resumed stays in the stream"
    try:
        item = receive.receive_nowait()
    except polyloop.WouldBlock:
        raise AssertionError(
            f"the item of a cancelled receiver was lost: receive_nowait() found nothing ({rule})"
        ) from None
    assert item == "precious", f"receive_nowait() gave {item!r}, not 'precious' ({rule})"


@check("channels", clauses=["channel.cancelled_send"])
async def check_channel_cancelled_sender_sent_nothing(session: polyloop.Session) -> None:
    """A send cancelled while it waits (nobody took the item) sends nothing."""
    send, receive = polyloop.create_memory_object_stream(0)
    sender = session.spawn(send.send("never"))
    await _settle(session)
    sender.cancel()
    assert await _outcome(sender) == "cancelled"
    try:
        item = receive.receive_nowait()
    except polyloop.WouldBlock:
        return
    raise AssertionError(f"a cancelled send delivered {item!r}")


def _from_threads(session: polyloop.Session, calls: dict[str, Any]) -> Any:
    """Run each of ``calls`` (name -> function) in a worker of ``run_in_thread`` (which
    runs in a copy of the caller's context) and in a plain thread (which knows no
    session): what each raised, or ``None`` if it raised nothing."""

    async def run() -> dict[str, str]:
        import threading

        outcomes: dict[str, str] = {}

        def attempt(where: str, name: str, fn: Any) -> None:
            try:
                fn()
            except RuntimeError as exc:
                outcomes[f"{name} from {where}"] = str(exc)
            except BaseException as exc:  # any other error is a wrong answer too
                outcomes[f"{name} from {where}"] = f"not RuntimeError: {exc!r}"
            else:
                outcomes[f"{name} from {where}"] = "no error"

        def in_plain_thread(name: str, fn: Any) -> None:
            thread = threading.Thread(target=attempt, args=("a plain thread", name, fn))
            thread.start()
            thread.join()

        for name, fn in calls.items():
            await session.run_in_thread(attempt, "a run_in_thread worker", name, fn)
            await session.run_in_thread(in_plain_thread, name, fn)
        return outcomes

    return run()


def _refused(outcomes: dict[str, str]) -> None:
    rule = (
        "rule: a primitive used from a thread that is not its session's loop thread raises"
        " RuntimeError naming polyloop.from_thread"
    )
    wrong = {k: v for k, v in outcomes.items() if "polyloop.from_thread" not in v}
    assert not wrong, f"{rule}; instead: {wrong}"


@check("sync", clauses=["sync.one_thread"])
async def check_cross_thread_use_refused(session: polyloop.Session) -> None:
    """Event, Lock, Semaphore, CapacityLimiter and Condition, once used on a session,
    refuse to be used from another OS thread (a run_in_thread worker, a plain thread):
    RuntimeError pointing to polyloop.from_thread, and nothing changes. The same
    calls on the loop's thread then work."""
    event = polyloop.Event()
    waiter = session.spawn(event.wait())
    await _settle(session)
    lock, sem, limiter = polyloop.Lock(), polyloop.Semaphore(1), polyloop.CapacityLimiter(1)
    await lock.acquire()
    await sem.acquire()
    await limiter.acquire_on_behalf_of("loop")
    cond = polyloop.Condition()
    async with cond:
        cond.notify()
    outcomes = await _from_threads(session, {
        "Event.set": event.set,
        "Lock.release": lock.release,
        "Lock.acquire_nowait": lock.acquire_nowait,
        "Semaphore.release": sem.release,
        "CapacityLimiter.release_on_behalf_of": lambda: limiter.release_on_behalf_of("loop"),
        "Condition.notify": cond.notify,
        "Condition.acquire_nowait": cond.acquire_nowait,
    })  # fmt: skip
    _refused(outcomes)
    assert not event.is_set() and not waiter.done(), "a refused set() woke the waiter"
    assert lock.locked() and sem.value == 0 and limiter.borrowed_tokens == 1
    event.set()
    await bounded(session, waiter, WAIT, "Event.set() on the loop's thread woke no one")

    # First used in a run_in_thread worker, which knows its caller's session: refused too.
    fresh = polyloop.Event()

    def first_use() -> str:
        try:
            fresh.set()
        except RuntimeError as exc:
            return str(exc)
        return "no error"

    said = await session.run_in_thread(first_use)
    assert "polyloop.from_thread" in said, f"first use in a worker thread: {said}"
    lock.release()
    sem.release()
    limiter.release_on_behalf_of("loop")


@check("channels", clauses=["sync.one_thread"])
async def check_channel_cross_thread_use_refused(session: polyloop.Session) -> None:
    """A memory object stream, once used on a session, refuses send_nowait,
    receive_nowait and close from another OS thread: RuntimeError pointing to
    polyloop.from_thread, and no item is lost or stuck."""
    send, receive = polyloop.create_memory_object_stream(1)
    receiver = session.spawn(receive.receive())
    await _settle(session)
    outcomes = await _from_threads(session, {
        "send_nowait": lambda: send.send_nowait("from a thread"),
        "receive_nowait": receive.receive_nowait,
        "close": send.close,
    })  # fmt: skip
    _refused(outcomes)
    assert not receiver.done(), "a refused call ended the waiting receiver"
    send.send_nowait("from the loop")
    got = await bounded(session, receiver, WAIT, "send_nowait() on the loop woke no one")
    assert got == "from the loop", got
    send.close()
    receive.close()


@check("sync", clauses=["sync.handoff_not_lost"], timeout=60)
async def check_stress_no_permit_or_item_lost(session: polyloop.Session) -> None:
    """200 tasks with random timeouts and cancels on a Semaphore(3) and a queue with 5
    consumers: never more than 3 holders, no permit lost, every item received once."""
    rng = random.Random(20261201)
    sem = polyloop.Semaphore(3)
    inside = peak = 0

    async def user() -> None:
        nonlocal inside, peak
        with polyloop.move_on_after(rng.random() * 0.02):
            async with sem:
                inside += 1
                peak = max(peak, inside)
                try:
                    await session.sleep(rng.random() * 0.004)
                finally:
                    inside -= 1

    tasks = [session.spawn(user()) for _ in range(200)]
    for task in tasks[::4]:
        session.call_later(rng.random() * 0.03, task.cancel)
    outcomes = [await _outcome(t) for t in tasks]
    assert set(outcomes) <= {"ok", "cancelled"}, set(outcomes)
    assert peak <= 3, f"{peak} tasks held a Semaphore(3) at once"
    assert sem.value == 3, f"the semaphore ends with {sem.value} permits, not 3"

    send, receive = polyloop.create_memory_object_stream(4)
    received: list[int] = []

    async def consumer(mine: polyloop.MemoryObjectReceiveStream[int]) -> None:
        async with mine:
            while True:
                with polyloop.move_on_after(rng.random() * 0.01):
                    try:
                        received.append(await mine.receive())
                    except polyloop.EndOfStream:
                        return

    async def producer(mine: polyloop.MemoryObjectSendStream[int], start: int) -> None:
        async with mine:
            for i in range(start, start + 40):
                await mine.send(i)

    async with polyloop.TaskGroup() as tg:
        for _ in range(5):
            tg.spawn(consumer(receive.clone()))
        for p in range(5):
            tg.spawn(producer(send.clone(), p * 40))
        send.close()
        receive.close()
    missing = sorted(set(range(200)) - set(received))
    assert not missing, f"{len(missing)} items lost, e.g. {missing[:10]}"
    assert len(received) == 200, f"{len(received) - 200} items received twice"
