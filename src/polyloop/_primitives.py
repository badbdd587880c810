"""What every synchronization primitive stands on: its one thread, and FIFO hand-off.

Rule: the rules are ``_sync.py``'s (one thread, FIFO and hand-off); this file holds the
pieces the primitives share -- the check that a primitive is used from its session's
loop thread, ``async with`` for acquirables, and handing a permit to the first waiter.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from ._context import current_backend, current_or_none
from ._futures import Future
from ._session import Session

__all__ = ["Acquirable", "OneThread", "hand", "handed", "new_future", "thread_ident"]

#: The fast path's thread identity. Not ``get_native_id`` (a system call: 90 ns against
#: 23 ns here); whatever this says, a mismatch only sends the check to the slow path,
#: which asks ``Session.in_loop_thread`` (the OS thread, also after gevent's ``patch_all``, where
#: this one may name a greenlet instead).
thread_ident = threading.get_ident


class OneThread:
    """Rule 3 of ``_sync.py``: the session a primitive belongs to, and the check every
    operation makes."""

    _session: Session | None = None
    #: ``thread_ident()`` of its session's loop thread, once seen there (the fast path).
    _thread_id: int | None = None
    #: What the error calls it (default: the class's name).
    _kind = ""

    def _check_thread(self, operation: str) -> None:
        # Measured: the full check doubled an uncontended Lock's acquire+release
        # (445 -> 910 ns), so the callers inline the common case (the owner's thread)
        # as ``if self._thread_id != thread_ident():`` and call this only otherwise.
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
        self._thread_id = thread_ident()


class Acquirable(OneThread):
    """``async with`` for what has ``acquire()`` and ``release()``."""

    async def acquire(self) -> None:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()


def new_future() -> Future[Any]:
    return current_backend().create_future()


def hand(waiters: deque[Future[Any]], value: Any = None) -> bool:
    """Complete the first waiter still waiting; False if there is none."""
    while waiters:
        waiter = waiters.popleft()
        if not waiter.done():
            waiter.set_result(value)
            return True
    return False


def handed(waiter: Future[Any]) -> bool:
    """In a cancelled waiter: whether the permit had been handed to it already."""
    return waiter.done() and not waiter.cancelled()
