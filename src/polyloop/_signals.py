"""Ctrl-C and SIGTERM for ``polyloop.run``: a signal cancels ``main``, which cleans up.

Also ``open_signal_receiver``, the same way for a library's or an application's own
signals (anyio's shape).

Rule: written once for every backend, so that a backend has nothing to do for Ctrl-C but
return to Python now and then (see ``docs/writing-a-backend.md``, "Ctrl-C"). Only in the
main thread, and only for a signal whose handler is Python's default: an application
that installed its own keeps it.

The handler only asks the loop (``call_soon_threadsafe``, which wakes it). A loop blocked
in a system call (``select``, ``epoll.poll``) is interrupted by the signal, and Python runs
the handler before it retries; gevent's libev loop checks for signals itself. For
SIGTERM (``handle_sigterm``, a server's shutdown), a timer every 0.2 s also gives Python
the chance on a loop blocked in C code that would otherwise not return to Python until
its next event -- not for Ctrl-C, where it would also mask a loop that misses its
wake-ups, the thing the conformance suite's wake-up checks look for. The
first signal puts the previous handler back at once, so that a second one ends a
clean-up that hangs (a second Ctrl-C raises ``KeyboardInterrupt``); a cancellation still
queued when ``main`` has returned is dropped, not delivered to the session's end.
"""

from __future__ import annotations

import collections
import contextlib
import signal
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ._cancel import cancel_target
from ._context import current_backend

if TYPE_CHECKING:
    from ._session import Session

__all__ = ["SignalReceiver", "cancel_main_on", "open_signal_receiver", "signal_cancelled"]

#: How often the loop returns to Python while a handler is installed, in seconds.
TICK = 0.2

# The sessions whose main a signal has cancelled (see signal_cancelled).
_signalled: weakref.WeakSet[Session] = weakref.WeakSet()


def signal_cancelled(session: Session) -> bool:
    """For backends: whether a signal (``polyloop.run``'s Ctrl-C, or SIGTERM with
    ``handle_sigterm``) has cancelled the main of ``session``'s run. The handler that was
    there before is back then, so a ``KeyboardInterrupt`` that a callback raises now is
    the second Ctrl-C: it leaves ``run()`` at once, instead of cancelling main again and
    waiting for a clean-up that may hang (a backend's "second one goes out at once")."""
    return session in _signalled


def cancel_main_on(
    session: Session, signums: tuple[int, ...], fired: list[int]
) -> Callable[[], None]:
    """Make each signal of ``signums`` (those with their default handler, in the main
    thread) cancel the task that runs the caller; ``fired`` gets the signal's number.
    Returns the function that puts the previous handlers back."""
    # The OS thread, not threading.current_thread(): after gevent's patch_all() that
    # would register a dummy thread for the greenlet that calls us (a "leaked" thread).
    if threading.get_native_id() != threading.main_thread().native_id:
        return lambda: None
    defaults: dict[int, Any] = {
        signal.SIGINT: signal.default_int_handler,
        signal.SIGTERM: signal.SIG_DFL,
    }
    mine = [s for s in signums if signal.getsignal(s) is defaults.get(s, signal.SIG_DFL)]
    if not mine:
        return lambda: None
    host = cancel_target()
    returned: list[bool] = []
    previous: dict[int, Any] = {}

    def cancel_main() -> None:
        if not returned:
            host.cancel()

    def on_signal(signum: int, frame: object) -> None:
        if not fired:
            fired.append(signum)
            _signalled.add(session)
            for s, handler in previous.items():
                signal.signal(s, handler)
            session.call_soon_threadsafe(cancel_main)

    timers: list[Any] = []

    def tick() -> None:
        timers[:] = [session.call_later(TICK, tick)]

    for s in mine:
        previous[s] = signal.signal(s, on_signal)
    if signal.SIGTERM in mine:
        tick()

    def restore() -> None:
        returned.append(True)
        for timer in timers:
            timer.cancel()
        if not fired:
            for s, handler in previous.items():
                signal.signal(s, handler)

    return restore


class SignalReceiver:
    """What ``open_signal_receiver`` yields: ``async for signum in receiver`` gives each
    signal received (a ``signal.Signals``), in order, on the loop's thread."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._queue: collections.deque[signal.Signals] = collections.deque()
        self._waiter: Any = None
        self._closed = False

    def _deliver(self, signum: int) -> None:
        if self._closed:
            return
        self._queue.append(signal.Signals(signum))
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _close(self) -> None:
        self._closed = True
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def __aiter__(self) -> SignalReceiver:
        return self

    async def __anext__(self) -> signal.Signals:
        while not self._queue:
            if self._closed:
                raise StopAsyncIteration
            self._waiter = self._session.create_future()
            await self._waiter
        return self._queue.popleft()


@contextlib.contextmanager
def open_signal_receiver(*signals: int) -> Iterator[SignalReceiver]:
    """Receive ``signals`` on the loop while the ``with`` block runs (anyio's shape)::

        with polyloop.open_signal_receiver(signal.SIGHUP, signal.SIGTERM) as received:
            async for signum in received:
                ...

    Each signal's handler is replaced for the block, and the one installed before is put
    back at its end (the iteration then stops). The handler only queues the signal for
    the loop (``call_soon_threadsafe``, which wakes it): the iteration runs on the loop's
    thread, on every backend, and ``signal.set_wakeup_fd`` (which the frameworks use) is
    left alone. Only from the main thread, on its loop (Python runs signal handlers
    there): ``RuntimeError`` elsewhere; ``ValueError`` for what is not a signal that can
    be caught (``SIGKILL``, ``SIGSTOP``, numbers out of range), before any is replaced.
    """
    session = current_backend()
    if threading.get_native_id() != threading.main_thread().native_id:
        raise RuntimeError("open_signal_receiver works only in the main thread, on its loop")
    if not signals:
        raise ValueError("open_signal_receiver needs at least one signal")
    wanted: list[signal.Signals] = []
    for s in signals:
        if isinstance(s, bool) or not isinstance(s, int):
            raise TypeError(f"signals are ints (signal.SIGTERM ...), not {type(s).__name__}")
        try:
            sig = signal.Signals(s)
        except ValueError:
            raise ValueError(f"{s!r} is not a signal number") from None
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            raise ValueError(f"{sig.name} cannot be caught")
        if sig not in wanted:
            wanted.append(sig)
    receiver = SignalReceiver(session)

    def on_signal(signum: int, frame: object) -> None:
        try:
            session.call_soon_threadsafe(receiver._deliver, signum)
        except RuntimeError:
            pass  # the session has ended: nobody is left to receive it

    previous: list[tuple[signal.Signals, Any]] = []
    try:
        for sig in wanted:
            previous.append((sig, signal.signal(sig, on_signal)))
        yield receiver
    finally:
        for sig, handler in reversed(previous):
            signal.signal(sig, handler)
        receiver._close()
