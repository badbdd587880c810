"""Synchronization: ``Event``, ``Lock``, ``Semaphore``, ``CapacityLimiter``, ``Condition``.

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

import math
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ._cancel import CancelScope, cancel_target
from ._context import current_backend, current_or_none
from ._errors import Cancelled, WouldBlock
from ._futures import Future, current_task
from ._session import Session

#: The fast path's thread identity. Not ``get_native_id`` (a system call: 90 ns against
#: 23 ns here); whatever this says, a mismatch only sends the check to the slow path,
#: which asks ``Session.in_loop_thread`` (the OS thread, also after gevent's ``patch_all``, where
#: this one may name a greenlet instead).
_ident = threading.get_ident

__all__ = [
    "CapacityLimiter",
    "CapacityLimiterStatistics",
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


class _OneThread:
    """Rule 3: the session a primitive belongs to, and the check every operation makes."""

    _session: Session | None = None
    #: ``_ident()`` of its session's loop thread, once seen there (the fast path).
    _thread_id: int | None = None
    #: What the error calls it (default: the class's name).
    _kind = ""

    def _check_thread(self, operation: str) -> None:
        # Measured: the full check doubled an uncontended Lock's acquire+release
        # (445 -> 910 ns), so the callers inline the common case (the owner's thread)
        # as ``if self._thread_id != _ident():`` and call this only otherwise.
        session = self._session
        if session is None or session.closed:
            # First use (or first since its session ended): the current session owns
            # it. A thread that knows no session changes nothing a loop waits on yet; a
            # run_in_thread worker knows its caller's session, and is refused below.
            session = self._session = current_or_none()
            self._thread_id = None
            if session is None:
                return
        if not session.in_loop_thread():
            kind = self._kind or type(self).__name__
            raise RuntimeError(
                f"{operation} called from thread {threading.current_thread().name!r},"
                f" but this {kind} belongs to {session!r}, whose loop runs"
                " in another thread (the session current when it was first used). From"
                " another thread, use polyloop.from_thread.run_sync(fn, ...,"
                " session=...) or session.call_soon_threadsafe(fn, ...)"
            )
        self._thread_id = _ident()


class _Acquirable(_OneThread):
    """``async with`` for what has ``acquire()`` and ``release()``."""

    async def acquire(self) -> None:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()


def _future() -> Future[Any]:
    return current_backend().create_future()


def _hand(waiters: deque[Future[Any]], value: Any = None) -> bool:
    """Complete the first waiter still waiting; False if there is none."""
    while waiters:
        waiter = waiters.popleft()
        if not waiter.done():
            waiter.set_result(value)
            return True
    return False


def _handed(waiter: Future[Any]) -> bool:
    """In a cancelled waiter: whether the permit had been handed to it already."""
    return waiter.done() and not waiter.cancelled()


@dataclass(frozen=True)
class EventStatistics:
    """``Event.statistics()``."""

    tasks_waiting: int


class Event(_OneThread):
    """A flag that tasks wait for: ``set()`` wakes every waiter, now and later."""

    def __init__(self) -> None:
        self._set = False
        self._waiters: deque[Future[Any]] = deque()

    def __repr__(self) -> str:
        return f"<polyloop.Event {'set' if self._set else 'unset'}, {len(self._waiters)} waiting>"

    def set(self) -> None:
        """Set the flag and wake every waiter (idempotent). ``RuntimeError`` from a
        thread other than its session's loop thread (see ``polyloop.from_thread``)."""
        if self._thread_id != _ident():  # inlined: the fast path
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
        if self._thread_id != _ident():  # inlined: the fast path
            self._check_thread("Event.wait()")
        if self._set:
            return
        waiter = _future()
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


class Lock(_Acquirable):
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
        if self._thread_id != _ident():  # inlined: the fast path
            self._check_thread("Lock.acquire_nowait()")
        if self._locked or self._waiters:
            raise WouldBlock("the lock is held")
        self._locked = True
        self._owner = current_task()

    async def acquire(self) -> None:
        """Wait for the lock. ``RuntimeError`` if the calling task holds it already."""
        if self._thread_id != _ident():  # inlined: the fast path
            self._check_thread("Lock.acquire()")
        if not self._locked and not self._waiters:
            self._locked = True
            self._owner = current_task()
            return
        me = current_task()
        if me is not None and me is self._owner:
            raise RuntimeError("this task holds the lock already (Lock is not reentrant)")
        waiter = _future()
        self._waiters.append(waiter)
        try:
            await waiter
        except Cancelled:
            if _handed(waiter):
                self._owner = me
                self.release()  # handed to us as we were cancelled: pass it on
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise
        self._owner = me  # release() handed it over: it stayed locked for us

    def release(self) -> None:
        """Release it, handing it to the first waiter. ``RuntimeError`` if not held."""
        if self._thread_id != _ident():  # inlined: the fast path
            self._check_thread("Lock.release()")
        if not self._locked:
            raise RuntimeError("release() of a lock that is not held")
        self._owner = None
        if not _hand(self._waiters):
            self._locked = False

    def statistics(self) -> LockStatistics:
        """Whether it is held, by which task, and how many wait."""
        return LockStatistics(self._locked, self._owner, sum(not w.done() for w in self._waiters))


@dataclass(frozen=True)
class SemaphoreStatistics:
    """``Semaphore.statistics()``."""

    value: int
    tasks_waiting: int


class Semaphore(_Acquirable):
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
        if self._thread_id != _ident():  # inlined: the fast path
            self._check_thread("Semaphore.acquire_nowait()")
        if self._value == 0 or self._waiters:
            raise WouldBlock("no permit is free")
        self._value -= 1

    async def acquire(self) -> None:
        """Wait for a permit and take it."""
        if self._thread_id != _ident():  # inlined: the fast path
            self._check_thread("Semaphore.acquire()")
        if self._value > 0 and not self._waiters:
            self._value -= 1
            return
        waiter = _future()
        self._waiters.append(waiter)
        try:
            await waiter
        except Cancelled:
            if _handed(waiter):
                self.release()  # handed to us as we were cancelled: pass it on
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        """Give a permit back (to the first waiter, if any)."""
        if self._thread_id != _ident():  # inlined: the fast path
            self._check_thread("Semaphore.release()")
        if _hand(self._waiters):
            return
        if self._max_value is not None and self._value >= self._max_value:
            raise ValueError("release() past the semaphore's max_value")
        self._value += 1

    def statistics(self) -> SemaphoreStatistics:
        """Free permits and waiting tasks."""
        return SemaphoreStatistics(self._value, sum(not w.done() for w in self._waiters))


@dataclass(frozen=True)
class CapacityLimiterStatistics:
    """``CapacityLimiter.statistics()``."""

    borrowed_tokens: int
    total_tokens: float
    borrowers: tuple[object, ...]
    tasks_waiting: int


class CapacityLimiter(_Acquirable):
    """At most ``total_tokens`` borrowers at once, each holding one token (anyio's).

    A borrower is the calling task (``acquire``) or any object
    (``acquire_on_behalf_of``); one borrower may not hold two tokens. ``total_tokens`` may
    be raised or lowered while in use (``math.inf``: no limit)."""

    def __init__(self, total_tokens: float) -> None:
        self._total = self._check(total_tokens)
        self._borrowers: set[object] = set()
        self._waiters: OrderedDict[object, Future[Any]] = OrderedDict()

    @staticmethod
    def _check(total: float) -> float:
        if not isinstance(total, int) and total != math.inf:
            raise TypeError("total_tokens must be an int or math.inf")
        if total < 1:
            raise ValueError("total_tokens must be >= 1")
        return total

    def __repr__(self) -> str:
        return f"<polyloop.CapacityLimiter {len(self._borrowers)}/{self._total}>"

    @property
    def total_tokens(self) -> float:
        """Tokens in all."""
        return self._total

    @total_tokens.setter
    def total_tokens(self, value: float) -> None:
        if self._thread_id != _ident():  # inlined: the fast path
            self._check_thread("CapacityLimiter.total_tokens =")
        self._total = self._check(value)
        self._hand_free()

    @property
    def borrowed_tokens(self) -> int:
        """Tokens held now."""
        return len(self._borrowers)

    @property
    def available_tokens(self) -> float:
        """Tokens free now."""
        return self._total - len(self._borrowers)

    def _me(self) -> object:
        task = current_task()
        return task if task is not None else _host_borrower()

    def acquire_nowait(self) -> None:
        """Take a token for the calling task now, or raise ``WouldBlock``."""
        self.acquire_on_behalf_of_nowait(self._me())

    def acquire_on_behalf_of_nowait(self, borrower: object) -> None:
        """Take a token for ``borrower`` now, or raise ``WouldBlock``."""
        if self._thread_id != _ident():  # inlined: the fast path
            self._check_thread("CapacityLimiter.acquire_nowait()")
        if borrower in self._borrowers:
            raise RuntimeError(f"{borrower!r} holds a token of this limiter already")
        if self._waiters or len(self._borrowers) >= self._total:
            raise WouldBlock("no token is free")
        self._borrowers.add(borrower)

    async def acquire(self) -> None:
        """Wait for a token for the calling task."""
        await self.acquire_on_behalf_of(self._me())

    async def acquire_on_behalf_of(self, borrower: object) -> None:
        """Wait for a token for ``borrower``."""
        try:
            self.acquire_on_behalf_of_nowait(borrower)
            return
        except WouldBlock:
            pass
        waiter = _future()
        self._waiters[borrower] = waiter
        try:
            await waiter
        except Cancelled:
            if _handed(waiter):
                self.release_on_behalf_of(borrower)  # pass it on
            else:
                self._waiters.pop(borrower, None)
            raise

    def release(self) -> None:
        """Give back the calling task's token."""
        self.release_on_behalf_of(self._me())

    def release_on_behalf_of(self, borrower: object) -> None:
        """Give back ``borrower``'s token. ``RuntimeError`` if it holds none."""
        if self._thread_id != _ident():  # inlined: the fast path
            self._check_thread("CapacityLimiter.release()")
        try:
            self._borrowers.remove(borrower)
        except KeyError:
            raise RuntimeError(f"{borrower!r} holds no token of this limiter") from None
        self._hand_free()

    def _hand_free(self) -> None:
        while self._waiters and len(self._borrowers) < self._total:
            borrower, waiter = self._waiters.popitem(last=False)
            if not waiter.done():
                self._borrowers.add(borrower)
                waiter.set_result(None)

    def statistics(self) -> CapacityLimiterStatistics:
        """Tokens held and in all, the borrowers, waiting tasks."""
        return CapacityLimiterStatistics(
            len(self._borrowers), self._total, tuple(self._borrowers), len(self._waiters)
        )


def _host_borrower() -> object:
    # A host application's own task (no polyloop task runs the caller).
    return cancel_target()


@dataclass(frozen=True)
class ConditionStatistics:
    """``Condition.statistics()``."""

    tasks_waiting: int
    lock_statistics: LockStatistics


class Condition(_Acquirable):
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
        if self._thread_id != _ident():  # inlined: the fast path
            self._check_thread("Condition.notify()")
        for _ in range(n):
            if not _hand(self._waiters):
                break

    def notify_all(self) -> None:
        """Wake every waiter."""
        self.notify(len(self._waiters))

    async def wait(self) -> None:
        """Release the lock, wait to be notified, then take the lock back (also when
        cancelled). A notification that reaches a cancelled waiter goes to the next."""
        if self._thread_id != _ident():  # inlined: the fast path
            self._check_thread("Condition.wait()")
        if not self._lock.locked():
            raise RuntimeError("wait() needs the condition's lock held")
        waiter = _future()
        self._waiters.append(waiter)
        self._lock.release()
        try:
            await waiter
        except Cancelled:
            if _handed(waiter):
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
