"""Which backend runs the caller.

A context variable answers inside coroutines and in callbacks that inherited the running
context (asyncio and Tornado copy it into every task and callback; the Twisted and gevent
backends set it for their runners and greenlets). Callbacks that a framework runs in some
other context -- a reactor's ``dataReceived``, a gevent hub callback -- fall back to the
innermost backend whose ``run`` is active on this thread. Several backends may share a
thread (mixed mode): the context variable wins, then the innermost ``run``.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._backend import Backend

_current: contextvars.ContextVar[Backend] = contextvars.ContextVar("polyloop_backend")


class _ThreadState(threading.local):
    def __init__(self) -> None:
        self.stack: list[Backend] = []


_thread = _ThreadState()


def current_backend() -> Backend:
    """The backend running the caller; ``RuntimeError`` outside ``polyloop.run``."""
    backend = _current.get(None)
    if backend is not None:
        return backend
    if _thread.stack:
        return _thread.stack[-1]
    raise RuntimeError("no polyloop backend is running here: start one with polyloop.run()")


@contextlib.contextmanager
def running(backend: Backend) -> Iterator[None]:
    """For backends: mark ``backend`` as running on this thread and in this context."""
    token = _current.set(backend)
    _thread.stack.append(backend)
    try:
        yield
    finally:
        _thread.stack.remove(backend)
        _current.reset(token)


def set_current(backend: Backend) -> None:
    """For backends: set the context variable in the current context (a new task's)."""
    _current.set(backend)
