"""The toolkit's checks can fail: each runs against a deliberately broken copy of one
primitive (one plausible bug each) and must notice, with a message.

The checks themselves run on every backend in the conformance matrix; here one backend
is enough, because what is under test is the check.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Callable
from typing import Any

import pytest

import polyloop
import polyloop_conformance as pc
from polyloop import _channels, _primitives, _streams, _sync

#: The case's time limit here: above the checks' own bounds (5 s, ``bounded``), so that a
#: broken primitive that leaves its check waiting gets the check's verdict, which names
#: the rule, not the referee's "timed out" (the suite's default limit is 20 s).
LIMIT = 10.0


def _run(name: str) -> pc.CheckResult:
    chk = dataclasses.replace(pc.CHECKS[name], timeout=LIMIT)
    return pc.run_check(chk, lambda: polyloop.load_backend("asyncio"), "test")


class _LockNoHandOff(polyloop.Lock):
    """Bug: a waiter cancelled after the lock was handed to it just re-raises."""

    async def acquire(self) -> None:
        if not self._locked and not self._waiters:
            self._locked = True
            return
        waiter = polyloop.current_backend().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except polyloop.Cancelled:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            raise


class _LockLifo(polyloop.Lock):
    """Bug: the last waiter is served first."""

    def release(self) -> None:
        self._waiters = deque(reversed(self._waiters))
        super().release()


class _SemaphoreUnbounded(polyloop.Semaphore):
    """Bug: max_value is not enforced."""

    def release(self) -> None:
        if not _primitives.hand(self._waiters):
            self._value += 1


class _SemaphoreLosesPermit(polyloop.Semaphore):
    """Bug: a waiter cancelled after being handed a permit keeps it."""

    async def acquire(self) -> None:
        if self._value > 0 and not self._waiters:
            self._value -= 1
            return
        waiter = polyloop.current_backend().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except polyloop.Cancelled:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            raise


class _EventWakesOne(polyloop.Event):
    """Bug: set() wakes only the first waiter."""

    def set(self) -> None:
        self._set = True
        _primitives.hand(self._waiters)


class _ConditionNoHandover(polyloop.Condition):
    """Bug: a notification that reaches a cancelled waiter is dropped."""

    async def wait(self) -> None:
        waiter = polyloop.current_backend().create_future()
        self._waiters.append(waiter)
        self._lock.release()
        try:
            await waiter
        finally:
            await _sync._reacquire(self._lock)


class _LimiterDoubleBorrow(polyloop.CapacityLimiter):
    """Bug: one borrower may take two tokens."""

    def acquire_on_behalf_of_nowait(self, borrower: object) -> None:
        if len(self._borrowers) >= self._total:
            raise polyloop.WouldBlock("full")
        self._borrowers.add(object())


def _receive_loses_item(self: Any) -> Any:
    """Bug: a cancelled receiver drops the item it was handed."""

    async def receive() -> Any:
        try:
            return self.receive_nowait()
        except polyloop.WouldBlock:
            pass
        waiter = polyloop.current_backend().create_future()
        self._state.waiting_receivers[waiter] = None
        try:
            return await waiter
        except polyloop.Cancelled:
            self._state.waiting_receivers.pop(waiter, None)
            raise

    return receive()


class _GroupNoCancel(polyloop.TaskGroup):
    """Bug: a failing child does not cancel its siblings or the block."""

    def _abort(self) -> None:
        self._aborting = True


class _ScopeNoShield(polyloop.CancelScope):
    """Bug: shield=True is ignored."""

    def __init__(self, *, deadline: float = math.inf, shield: bool = False) -> None:
        super().__init__(deadline=deadline, shield=False)


async def _old_wait_for(aw: Any, timeout: float | None) -> Any:
    """Bug: the 0.1 wait_for, whose timeout swallowed a late cancellation."""
    session = polyloop.current_backend()
    task = session.spawn(aw)
    timed_out = False

    def expire() -> None:
        nonlocal timed_out
        if not task.done():
            timed_out = True
            task.cancel()

    handle = session.call_later(timeout or 0, expire)
    try:
        return await task
    except polyloop.Cancelled:
        if timed_out:
            raise TimeoutError("timed out") from None
        raise
    finally:
        handle.cancel()


async def _start_tls_drops_leftover(self: Any, ssl: Any, **kw: Any) -> None:
    """Bug: bytes already buffered past the plain part are dropped, not handshaken."""
    self._p.buffer.clear()
    transport = await self._p.session.start_tls(self.transport, self._p, ssl, **kw)
    self.transport = self._p.transport = transport


#: (label, patch, {check: words its failure must contain (case-insensitive)}).
BROKEN: list[tuple[str, Callable[[pytest.MonkeyPatch], None], dict[str, list[str]]]] = [
    ("lock-no-hand-off", lambda m: m.setattr(polyloop, "Lock", _LockNoHandOff),
     {"sync.lock_cancel_after_handoff": ["handed", "cancelled waiter", "passes the lock on"]}),
    ("lock-lifo", lambda m: m.setattr(polyloop, "Lock", _LockLifo),
     {"sync.lock_fifo": ["out of order", "arrival order"]}),
    ("semaphore-unbounded", lambda m: m.setattr(polyloop, "Semaphore", _SemaphoreUnbounded),
     {"sync.semaphore": ["max_value", "ValueError"]}),
    ("semaphore-loses-permit",
     lambda m: m.setattr(polyloop, "Semaphore", _SemaphoreLosesPermit),
     {"sync.semaphore_cancel_after_handoff": ["permit", "cancelled waiter",
                                              "passes the permit on"]}),
    ("event-wakes-one", lambda m: m.setattr(polyloop, "Event", _EventWakesOne),
     {"sync.event": ["set()", "wakes every waiter"]}),
    ("condition-no-handover", lambda m: m.setattr(polyloop, "Condition", _ConditionNoHandover),
     {"sync.condition_notify_handover_on_cancel": ["notification", "hands the notification on"]}),
    ("limiter-double-borrow",
     lambda m: m.setattr(polyloop, "CapacityLimiter", _LimiterDoubleBorrow),
     {"sync.capacity_limiter": ["second", "one token per borrower"]}),
    ("channel-loses-item",
     lambda m: m.setattr(_channels.MemoryObjectReceiveStream, "receive", _receive_loses_item),
     {"channels.channel_cancelled_receiver_loses_nothing": ["item", "lost",
                                                            "stays in the stream"]}),
    ("group-no-cancel", lambda m: m.setattr(polyloop, "TaskGroup", _GroupNoCancel),
     {"taskgroups.child_error_cancels_the_rest": ["failing child cancels its siblings",
                                                  "not cancelled: the sibling"]}),
    ("scope-no-shield", lambda m: m.setattr(polyloop, "CancelScope", _ScopeNoShield),
     {"scopes.shield": ["shielded scope", "holds back an outer cancellation"]}),
    ("old-wait-for", lambda m: m.setattr(polyloop, "wait_for", _old_wait_for),
     {"scopes.wait_for_delivers_late_cancellation": ["cancellation was lost", "TimeoutError"]}),
    ("start-tls-drops-leftover",
     lambda m: m.setattr(_streams.Stream, "start_tls", _start_tls_drops_leftover),
     {"starttls.handshake_right_after_the_command": ["start_tls", "ClientHello",
                                                     "bytes already received"]}),
    ("no-at-eof", lambda m: m.setattr(_streams.Stream, "at_eof", lambda self: False),
     {"streams.idle_sees_eof": ["at_eof()", "peer closed"]}),
]  # fmt: skip


@pytest.mark.parametrize(("label", "patch", "expect"), BROKEN, ids=[b[0] for b in BROKEN])
def test_toolkit_checks_catch_broken_primitives(
    label: str,
    patch: Callable[[pytest.MonkeyPatch], None],
    expect: dict[str, list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each check fails, by its own verdict (not the referee's time limit), and the
    message names the rule the primitive broke."""
    patch(monkeypatch)
    for name, words in expect.items():
        result = _run(name)
        detail = result.detail
        assert result.status == "fail", f"{name} did not notice the broken {label}"
        assert not detail.startswith(("timed out", "hung")), (
            f"{name} only timed out on the broken {label}, naming no rule: {detail}"
        )
        assert result.seconds < LIMIT, f"{name} took {result.seconds:.1f} s: {detail}"
        assert "rule:" in detail, f"{name} failed without naming the rule: {detail}"
        missing = [w for w in words if w.lower() not in detail.lower()]
        assert not missing, f"{name}'s failure does not say {missing}: {detail}"


def test_fail_after_raises_when_timers_run_early_by_the_clock() -> None:
    """uvloop's timers run up to 1 ms early by its own ``loop.time()``: the deadline's
    timer, not a clock comparison, says that fail_after's scope timed out. Here every
    timer of the session runs 5 ms early by the session's clock."""
    from polyloop_asyncio import AsyncioBackend, AsyncioSession

    class EarlyTimers(AsyncioSession):
        def start_timer(self, delay: float, fn: Any, args: tuple[Any, ...]) -> Any:
            return super().start_timer(max(0.0, delay - 0.005), fn, args)

    class Backend(AsyncioBackend):
        session_class = EarlyTimers

    async def main() -> list[str]:
        seen = []
        for _ in range(5):
            try:
                with polyloop.fail_after(0.01):
                    await polyloop.sleep(60)
                seen.append("no TimeoutError")
            except TimeoutError:
                seen.append("TimeoutError")
        with polyloop.move_on_after(0.01) as scope:  # move_on stays quiet
            await polyloop.sleep(60)
        assert scope.cancelled_caught
        return seen

    assert polyloop.run(main, backend=Backend()) == ["TimeoutError"] * 5
