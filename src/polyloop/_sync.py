"""Synchronization: ``Event``, ``Lock``, ``Semaphore``, ``Condition`` (``CapacityLimiter``
in ``_limiter.py``, on the same base in ``_primitives.py``).

Rule 1: written once, on polyloop futures only, so every primitive works the same on
every backend and in host mode; none is bound to a loop when it is made (waiters make
their future on the session running them).

Rule 2: FIFO and hand-off. A release *hands* the permit to the first waiter (completes
its future) rather than freeing it for whoever comes next, so a waiter is never overtaken.
A waiter cancelled *after* the permit was handed to it, before it could resume, passes
the permit on to the next one: no permit is ever lost, and a cancelled ``acquire`` never
holds one.

Rule 3: one thread. A primitive belongs to the session that was current when it was
first used, and only that session's loop thread may use it (the futures it completes
wake their tasks through the loop, which no other thread may touch). From any other OS
thread every operation raises ``RuntimeError`` and changes nothing, as asyncio's "is
bound to a different event loop": another thread goes through ``polyloop.from_thread``
or ``session.call_soon_threadsafe``. Once that session has ended, the next session to
use the primitive owns it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ._cancel import CancelScope
from ._errors import Cancelled, WouldBlock
from ._futures import Future, current_task
from ._primitives import Acquirable, OneThread, hand, handed, new_future, thread_ident

__all__ = [
    "Condition",
    "ConditionStatistics",
    "Event",
    "EventStatistics",
    "Lock",
    "LockStatistics",
    "Semaphore",
    "SemaphoreStatistics",
]

T = TypeVar("T")


@dataclass(frozen=True)
class EventStatistics:
    """``Event.statistics()``."""

    tasks_waiting: int


class Event(OneThread):
    """A flag that tasks wait for: ``set()`` wakes every waiter, now and later."""

    def __init__(self) -> None:
        self._set = False
        self._waiters: deque[Future[Any]] = deque()

    def __repr__(self) -> str:
        return f"<polyloop.Event {'set' if self._set else 'unset'}, {len(self._waiters)} waiting>"

    def set(self) -> None:
        """Set the flag and wake every waiter (idempotent). ``RuntimeError`` from a
        thread other than its session's loop thread (see ``polyloop.from_thread``)."""
        if self._thread_id != thread_ident():  # inlined: the fast path
            self._check_thread("Event.set()")
        if self._set:
            return
        self._set = True
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def is_set(self) -> bool:
        """Whether ``set()`` was called."""
        return self._set

    async def wait(self) -> None:
        """Return once the flag is set (at once if it is)."""
        if self._thread_id != thread_ident():  # inlined: the fast path
            self._check_thread("Event.wait()")
        if self._set:
            return
        waiter = new_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except Cancelled:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    def statistics(self) -> EventStatistics:
        """How many tasks wait."""
        return EventStatistics(sum(not w.done() for w in self._waiters))


@dataclass(frozen=True)
class LockStatistics:
    """``Lock.statistics()``: whether it is held, by which task, and how many wait."""

    locked: bool
    owner: Any
    tasks_waiting: int


class Lock(Acquirable):
    """A mutual-exclusion lock; ``async with lock:``. FIFO, handed on at release."""

    def __init__(self) -> None:
        self._locked = False
        self._owner: Any = None
        self._waiters: deque[Future[Any]] = deque()

    def __repr__(self) -> str:
        state = "locked" if self._locked else "unlocked"
        return f"<polyloop.Lock {state}, {len(self._waiters)} waiting>"

    def locked(self) -> bool:
        """Whether some task holds it."""
        return self._locked

    def acquire_nowait(self) -> None:
        """Take it now, or raise ``WouldBlock``."""
        if self._thread_id != thread_ident():  # inlined: the fast path
            self._check_thread("Lock.acquire_nowait()")
        if self._locked or self._waiters:
            raise WouldBlock("the lock is held")
        self._locked = True
        self._owner = current_task()

    async def acquire(self) -> None:
        """Wait for the lock. ``RuntimeError`` if the calling task holds it already."""
        if self._thread_id != thread_ident():  # inlined: the fast path
            self._check_thread("Lock.acquire()")
        if not self._locked and not self._waiters:
            self._locked = True
            self._owner = current_task()
            return
        me = current_task()
        if me is not None and me is self._owner:
            raise RuntimeError("this task holds the lock already (Lock is not reentrant)")
        waiter = new_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except Cancelled:
            if handed(waiter):
                self._owner = me
                self.release()  # handed to us as we were cancelled: pass it on
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise
        self._owner = me  # release() handed it over: it stayed locked for us

    def release(self) -> None:
        """Release it, handing it to the first waiter. ``RuntimeError`` if not held."""
        if self._thread_id != thread_ident():  # inlined: the fast path
            self._check_thread("Lock.release()")
        if not self._locked:
            raise RuntimeError("release() of a lock that is not held")
        self._owner = None
        if not hand(self._waiters):
            self._locked = False

    def statistics(self) -> LockStatistics:
        """Whether it is held, by which task, and how many wait."""
        return LockStatistics(self._locked, self._owner, sum(not w.done() for w in self._waiters))


@dataclass(frozen=True)
class SemaphoreStatistics:
    """``Semaphore.statistics()``."""

    value: int
    tasks_waiting: int


class Semaphore(Acquirable):
    """A counter of permits (``initial_value``); ``async with sem:`` takes one. FIFO,
    handed on at release. ``max_value``: releasing past it raises ``ValueError``."""

    def __init__(self, initial_value: int, *, max_value: int | None = None) -> None:
        if isinstance(initial_value, bool) or not isinstance(initial_value, int):
            raise TypeError("initial_value must be an int")
        if initial_value < 0:
            raise ValueError("initial_value must be >= 0")
        if max_value is not None:
            if isinstance(max_value, bool) or not isinstance(max_value, int):
                raise TypeError("max_value must be an int or None")
            if max_value < initial_value:
                raise ValueError("max_value must be >= initial_value")
        self._value = initial_value
        self._max_value = max_value
        self._waiters: deque[Future[Any]] = deque()

    def __repr__(self) -> str:
        return f"<polyloop.Semaphore value={self._value}, {len(self._waiters)} waiting>"

    @property
    def value(self) -> int:
        """Free permits."""
        return self._value

    @property
    def max_value(self) -> int | None:
        """The most permits it may hold (``None``: no limit)."""
        return self._max_value

    def acquire_nowait(self) -> None:
        """Take a permit now, or raise ``WouldBlock``."""
        if self._thread_id != thread_ident():  # inlined: the fast path
            self._check_thread("Semaphore.acquire_nowait()")
        if self._value == 0 or self._waiters:
            raise WouldBlock("no permit is free")
        self._value -= 1

    async def acquire(self) -> None:
        """Wait for a permit and take it."""
        if self._thread_id != thread_ident():  # inlined: the fast path
            self._check_thread("Semaphore.acquire()")
        if self._value > 0 and not self._waiters:
            self._value -= 1
            return
        waiter = new_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except Cancelled:
            if handed(waiter):
                self.release()  # handed to us as we were cancelled: pass it on
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        """Give a permit back (to the first waiter, if any)."""
        if self._thread_id != thread_ident():  # inlined: the fast path
            self._check_thread("Semaphore.release()")
        if hand(self._waiters):
            return
        if self._max_value is not None and self._value >= self._max_value:
            raise ValueError("release() past the semaphore's max_value")
        self._value += 1

    def statistics(self) -> SemaphoreStatistics:
        """Free permits and waiting tasks."""
        return SemaphoreStatistics(self._value, sum(not w.done() for w in self._waiters))


@dataclass(frozen=True)
class ConditionStatistics:
    """``Condition.statistics()``."""

    tasks_waiting: int
    lock_statistics: LockStatistics


class Condition(Acquirable):
    """Wait until notified, holding ``lock`` (a new ``Lock`` if none) around it."""

    def __init__(self, lock: Lock | None = None) -> None:
        self._lock = lock if lock is not None else Lock()
        self._waiters: deque[Future[Any]] = deque()

    def __repr__(self) -> str:
        return f"<polyloop.Condition {self._lock!r}, {len(self._waiters)} waiting>"

    def locked(self) -> bool:
        """Whether its lock is held."""
        return self._lock.locked()

    async def acquire(self) -> None:
        """Acquire the lock."""
        await self._lock.acquire()

    def acquire_nowait(self) -> None:
        """Acquire the lock now, or raise ``WouldBlock``."""
        self._lock.acquire_nowait()

    def release(self) -> None:
        """Release the lock."""
        self._lock.release()

    def notify(self, n: int = 1) -> None:
        """Wake up to ``n`` waiters, first come first served."""
        if self._thread_id != thread_ident():  # inlined: the fast path
            self._check_thread("Condition.notify()")
        for _ in range(n):
            if not hand(self._waiters):
                break

    def notify_all(self) -> None:
        """Wake every waiter."""
        self.notify(len(self._waiters))

    async def wait(self) -> None:
        """Release the lock, wait to be notified, then take the lock back (also when
        cancelled). A notification that reaches a cancelled waiter goes to the next."""
        if self._thread_id != thread_ident():  # inlined: the fast path
            self._check_thread("Condition.wait()")
        if not self._lock.locked():
            raise RuntimeError("wait() needs the condition's lock held")
        waiter = new_future()
        self._waiters.append(waiter)
        self._lock.release()
        try:
            await waiter
        except Cancelled:
            if handed(waiter):
                self.notify(1)  # we were notified as we were cancelled: pass it on
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise
        finally:
            await _reacquire(self._lock)

    async def wait_for(self, predicate: Callable[[], T]) -> T:
        """``wait()`` until ``predicate()`` is true; return its value."""
        while not (result := predicate()):
            await self.wait()
        return result

    def statistics(self) -> ConditionStatistics:
        """Waiting tasks and the lock's statistics."""
        return ConditionStatistics(
            sum(not w.done() for w in self._waiters), self._lock.statistics()
        )


async def _reacquire(lock: Lock) -> None:
    # The lock must be held again when wait() leaves, cancelled or not: shield it.
    with CancelScope(shield=True):
        await lock.acquire()
