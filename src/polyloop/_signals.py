"""Ctrl-C and SIGTERM for ``polyloop.run``: a signal cancels ``main``, which cleans up.

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

import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._cancel import cancel_target

if TYPE_CHECKING:
    from ._session import Session

__all__ = ["cancel_main_on"]

#: How often the loop returns to Python while a handler is installed, in seconds.
TICK = 0.2


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
