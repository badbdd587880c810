"""Which session runs the caller: the context variable, then the backends' own detection.

Rule: this file decides attribution and nothing else. It names no framework: each
backend class answers for its own (``Backend.detect``), and this file only asks them,
in the order they declare (``Backend.detect_order``), until one answers. A backend class
is light to import (its framework is imported only once the backend runs or attaches),
and its ``detect`` looks for its framework in ``sys.modules``, never importing it.

The order of detection (``current_backend()``):

1. **The context variable.** ``polyloop.run`` sets it around the loop it owns, every
   session sets it in the tasks it spawns and the callbacks it schedules, and the explicit
   entries (a Twisted ``as_deferred``, a gevent ``wait``) set it for the coroutine they
   start. It is exact and cheap, and it is the only answer that stays right when several
   sessions share a thread (mixed mode).
2. **The installed backends' ``detect()``, by ``detect_order``** (lowest first). The
   first-party ones, and why in this order (``docs/writing-a-backend.md`` has the table):
   ``mixed`` (10: a greenlet other than the mixed loop's is gevent's), ``twisted`` (20: an
   ``AsyncioSelectorReactor`` on the running asyncio loop when Twisted's runner, not an
   asyncio task, runs the caller; else the global reactor when no asyncio loop runs),
   ``tornado`` (30: an ``IOLoop`` that already wraps the running asyncio loop), ``asyncio``
   (40: any running asyncio loop), ``gevent`` (50: the thread's hub, from a greenlet other
   than the hub). A third-party backend picks its own number.

What ``detect()`` returns is a borrowed session, one per host loop: it is kept in
``_hosts`` until it ends, and every caller on that loop gets the same one.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from typing import TYPE_CHECKING, Any

from ._plugins import detectors

if TYPE_CHECKING:
    from ._session import Session

__all__ = [
    "check_not_nested",
    "context_for",
    "current_backend",
    "current_or_none",
    "detect",
    "find_host",
    "foreign_runner_session",
    "register_host",
    "session_var",
    "set_current",
    "unregister_host",
]

#: The session running the caller's code (see rule 1).
session_var: contextvars.ContextVar[Session] = contextvars.ContextVar("polyloop_session")

#: Borrowed sessions by the identity of the live object they are bound to.
_hosts: dict[int, Session] = {}

_NOWHERE = (
    "no polyloop session runs here. Run the code with polyloop.run(main), or call it from"
    " a loop an installed backend detects (a running asyncio loop, Tornado IOLoop or"
    " Twisted reactor, a gevent greenlet, ...); from another thread, use"
    " session.call_soon_threadsafe() or polyloop.from_thread"
)


def current_backend() -> Session:
    """The session running the caller (``RuntimeError`` if none does).

    Works inside ``polyloop.run`` and, with no ``polyloop.run`` at all, on the loop that
    an application already runs (host mode): every installed backend is asked, in its
    documented order. Every caller on one host loop gets the same session.
    """
    session = session_var.get(None)
    if session is not None and not session.closed:
        return session
    session = detect()
    if session is None:
        raise RuntimeError(_NOWHERE)
    return session


def current_or_none() -> Session | None:
    """``current_backend()``, or ``None`` instead of the error."""
    session = session_var.get(None)
    if session is not None and not session.closed:
        return session
    return detect()


def detect() -> Session | None:
    """Step 2 of the detection order: the first backend whose ``detect()`` answers."""
    for cls in detectors():
        session = cls.detect()
        if session is not None:
            return session  # type: ignore[no-any-return]
    return None


def foreign_runner_session() -> Session:
    """The session that can suspend a coroutine driven by a framework's own runner.

    The context variable may name a session whose runner is not the one driving the
    caller (an asyncio task's session, inherited by a reactor callback on the asyncio
    reactor), so a session that knows foreign runners is looked for first.
    """
    session = session_var.get(None)
    if session is not None and not session.closed and session.knows_foreign_runners():
        return session
    for cls in detectors():
        found = cls.detect(foreign=True)
        if found is not None and found.knows_foreign_runners():
            return found  # type: ignore[no-any-return]
    return current_backend()


def check_not_nested() -> None:
    """``run()`` inside a running loop would block that loop: refuse, the same everywhere."""
    where = None
    session = session_var.get(None)
    if session is not None and not session.closed:
        where = f"the {session.name} session #{session.id}"
    elif asyncio._get_running_loop() is not None:
        where = "a running asyncio loop"
    else:
        for cls in detectors():
            if not cls.nests and cls.running_native() is not None:
                where = f"a running {cls.name} loop"
                break
    if where is not None:
        raise RuntimeError(
            f"polyloop.run() called inside {where}: it would block that loop. Await the"
            " code instead: polyloop runs on the loop that is already running (host mode)"
        )


def find_host(native: Any) -> Session | None:
    """The live borrowed session bound to ``native``, if there is one."""
    session = _hosts.get(id(native))
    if session is not None and session.native is native and not session.closed:
        return session
    return None


def hosts() -> list[Session]:
    """Every live borrowed session (for a backend's ``detect``)."""
    return [s for s in list(_hosts.values()) if not s.closed]


def register_host(session: Session) -> None:
    """For ``Backend.attach``: one session per host object."""
    for other in list(_hosts.values()):
        if other.host_gone():
            other.mark_ended()  # its loop closed without telling anyone
    _hosts[id(session.native)] = session


def unregister_host(session: Session) -> None:
    """For a borrowed session that ends."""
    if _hosts.get(id(session.native)) is session:
        del _hosts[id(session.native)]


def set_current(session: Session) -> None:
    """For backends: name ``session`` as current in the current context."""
    session_var.set(session)


def context_for(session: Session) -> contextvars.Context:
    """A copy of the current context in which ``session`` is current."""
    ctx = contextvars.copy_context()
    ctx.run(session_var.set, session)
    return ctx


def on_thread(thread_id: int) -> bool:
    """Whether the caller runs on the OS thread ``thread_id`` (also after gevent's
    ``patch_all()``, where ``threading.get_ident()`` is a greenlet's)."""
    return threading.get_native_id() == thread_id
