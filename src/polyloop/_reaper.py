"""Reaping children without signals: a pidfd on the loop, or a ``waitpid`` thread.

Rule: the process-wide ``SIGCHLD`` handler is never touched (the frameworks and the
application own it). On Linux ``os.pidfd_open(pid)`` gives an fd that is readable once
the child has exited, reaped or not (watched with ``add_reader``, then
``os.waitpid(pid, WNOHANG)``); elsewhere a thread per child blocks in ``os.waitpid`` and
hands the status back with ``call_soon_threadsafe``. The session records every child it
watches (``resources.children``): its end kills and reaps those still running.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._session import Session

__all__ = ["ChildWatch", "reap_now", "watch_child"]

log = logging.getLogger("polyloop")

#: What status a child reaped by someone else reports (asyncio's choice, too).
UNKNOWN_STATUS = 255


class ChildWatch:
    """Calls ``on_exit(returncode)`` on the loop once the child ``pid`` has exited and
    has been reaped (``watch_child``)."""

    def __init__(self, session: Session, pid: int, on_exit: Callable[[int], object]):
        self.session = session
        self.pid = pid
        self.on_exit: Callable[[int], object] | None = on_exit
        self.pidfd: int | None = None
        self.done = False
        #: The ``subprocess.Popen`` of the child, if any: ``reap_now`` sets its
        #: ``returncode`` (else its ``__del__`` warns that the child "is still running").
        self.popen: Any = None
        pidfd_open = getattr(os, "pidfd_open", None)
        if pidfd_open is not None:
            try:
                self.pidfd = pidfd_open(pid)
            except OSError:  # a kernel older than 5.3 (ENOSYS), or seccomp
                self.pidfd = None
        if self.pidfd is not None:
            session.add_reader(self.pidfd, self._on_pidfd)
        else:
            thread = threading.Thread(target=self._wait_thread, name=f"polyloop-waitpid-{pid}")
            thread.daemon = True
            thread.start()

    def _on_pidfd(self) -> None:
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = self.pid, -1
        if pid == 0:
            return  # not yet (a spurious wake-up)
        self._finish(_returncode(status))

    def _wait_thread(self) -> None:
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:
            status = -1
        try:
            self.session.call_soon_threadsafe(self._finish, _returncode(status))
        except RuntimeError:
            pass  # the session ended: reap_now() took care of it

    def _finish(self, returncode: int) -> None:
        if self.done:
            return
        self.done = True
        self._close_pidfd()
        self.session.resources.children.discard(self)
        on_exit, self.on_exit = self.on_exit, None
        if on_exit is not None:
            on_exit(returncode)

    def _close_pidfd(self) -> None:
        fd, self.pidfd = self.pidfd, None
        if fd is not None:
            try:
                self.session.remove_reader(fd)
            except Exception:  # a loop that is gone already
                pass
            os.close(fd)

    def reap_now(self) -> None:
        """At the session's end: kill the child if it still runs, and reap it (blocking;
        a killed child goes at once). ``on_exit`` is not called any more."""
        if self.done:
            return
        self.done = True
        self.on_exit = None
        self._close_pidfd()
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:
            status = -1  # the waiter thread got it
        if self.popen is not None and self.popen.returncode is None:
            self.popen.returncode = _returncode(status) if status != -1 else -signal.SIGKILL


def _returncode(status: int) -> int:
    if status == -1:
        log.warning("polyloop: a child was reaped by someone else: returncode %d", UNKNOWN_STATUS)
        return UNKNOWN_STATUS
    return os.waitstatus_to_exitcode(status)


def watch_child(session: Session, pid: int, on_exit: Callable[[int], object]) -> ChildWatch:
    """For backends: reap the child ``pid`` (ours, not reaped yet) without signals, and
    call ``on_exit(returncode)`` on the loop (``-N`` for signal N). A child not reaped
    when the session ends is killed and reaped then."""
    watch = ChildWatch(session, pid, on_exit)
    session.resources.children.add(watch)
    return watch


def reap_now(session: Session) -> None:
    """For the session's end: kill and reap every child still watched."""
    for watch in list(session.resources.children):
        watch.reap_now()
    session.resources.children.clear()
