"""``CapacityLimiter``: at most ``total_tokens`` borrowers at once (anyio's).

Rule: the rules of ``_sync.py`` (one thread, FIFO and hand-off), for tokens that a task
(or a host application's task) borrows and gives back.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from ._cancel import cancel_target
from ._errors import Cancelled, WouldBlock
from ._futures import Future, current_task
from ._primitives import Acquirable, handed, new_future, thread_ident

__all__ = ["CapacityLimiter", "CapacityLimiterStatistics"]


@dataclass(frozen=True)
class CapacityLimiterStatistics:
    """``CapacityLimiter.statistics()``."""

    borrowed_tokens: int
    total_tokens: float
    borrowers: tuple[object, ...]
    tasks_waiting: int


class CapacityLimiter(Acquirable):
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
        if self._thread_id != thread_ident():  # inlined: the fast path
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
        if self._thread_id != thread_ident():  # inlined: the fast path
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
        waiter = new_future()
        self._waiters[borrower] = waiter
        try:
            await waiter
        except Cancelled:
            if handed(waiter):
                self.release_on_behalf_of(borrower)  # pass it on
            else:
                self._waiters.pop(borrower, None)
            raise

    def release(self) -> None:
        """Give back the calling task's token."""
        self.release_on_behalf_of(self._me())

    def release_on_behalf_of(self, borrower: object) -> None:
        """Give back ``borrower``'s token. ``RuntimeError`` if it holds none."""
        if self._thread_id != thread_ident():  # inlined: the fast path
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
