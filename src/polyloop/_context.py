"""Which session runs the caller: the context variable, then the running framework.

Rule: this file decides attribution and nothing else. It imports no framework: it only
looks in ``sys.modules`` for frameworks the application has already imported, and loads
a backend (through its entry point, like any plugin) only once that framework is found
running the caller.

The order of detection, and why (``current_backend()``):

1. **The context variable.** ``polyloop.run`` sets it around the loop it owns, every
   session sets it in the tasks it spawns and the callbacks it schedules, and the explicit
   entries (``polyloop_twisted.as_deferred``, ``polyloop_gevent.wait``) set it for the
   coroutine they start. It is exact and cheap, and it is the only answer that stays
   right when several sessions share a thread (mixed mode).
2. **A running asyncio loop** in this thread (asyncio, uvloop, and Tornado, whose IOLoop
   wraps one). Two frameworks can sit on one asyncio loop, and they are told apart here:

   a. *Twisted's* ``AsyncioSelectorReactor`` on this loop, when no asyncio task runs the
      caller. Twisted's own coroutine runner (``Deferred.fromCoroutine``) steps
      coroutines from reactor callbacks, which run as plain loop callbacks: there is no
      current asyncio task then, and only the Twisted session can suspend such a
      coroutine (asyncio's cannot). Inside an asyncio task, the task's runner is
      asyncio's, so (c) or (b) answers instead.
   b. *Tornado*, if an ``IOLoop`` already wraps this loop. ``IOLoop.current()`` would
      *create* a wrapper for any loop, so the existing mapping is looked up instead
      (``IOLoop._ioloop_for_asyncio``): a plain asyncio application never gets one.
      Not in mixed mode, where every framework shares the loop and a plain asyncio
      task is asyncio's (Tornado's own code names its session through the context).
   c. Otherwise *asyncio* (its tasks run the caller).

   In mixed mode the loop runs in one greenlet of the thread, and asyncio's running
   loop is per thread: a caller on any other greenlet gets the gevent session first.
3. **Twisted's global reactor**, only if the application itself installed it (it is in
   ``sys.modules``; importing ``twisted.internet.reactor`` would install one), and it is
   running in this thread -- or it has never run and this is the main thread:
   ``task.react(main)`` calls ``main`` *before* ``reactor.run()``, and the Deferreds a
   session hands out then fire once the reactor starts. Twisted has no public "current
   reactor" for its runner, so any other reactor is reached through an explicit entry.
4. **The gevent hub** of this thread, if it exists already and the caller is a greenlet
   other than the hub (code on the hub itself must not block, so it gets no session).

The first three give a session shared by every caller on that loop ("one session per
host loop"): it is kept in ``_hosts`` until it ends, and a library can key its pools on it.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._session import Session

__all__ = ["current_backend"]

_session_var: contextvars.ContextVar[Session] = contextvars.ContextVar("polyloop_session")

#: Borrowed sessions by the identity of the live object they are bound to.
_hosts: dict[int, Session] = {}

_NOWHERE = (
    "no polyloop session runs here. Run the code with polyloop.run(main), or call it from"
    " a running asyncio loop, Tornado IOLoop or Twisted reactor, or from a gevent greenlet"
    " with polyloop_gevent.wait(); from another thread, use session.call_soon_threadsafe()"
    " or polyloop.from_thread"
)


def current_backend() -> Session:
    """The session running the caller (``RuntimeError`` if none does).

    Works inside ``polyloop.run`` and, with no ``polyloop.run`` at all, on the loop that
    an asyncio, Tornado, Twisted or gevent application already runs (host mode). Every
    caller on one host loop gets the same session.
    """
    session = _session_var.get(None)
    if session is not None and not session.closed:
        return session
    session = detect()
    if session is None:
        raise RuntimeError(_NOWHERE)
    return session


def foreign_runner_session() -> Session:
    """The session that can suspend a coroutine driven by a framework's own runner.

    A runner that sends a polyloop future back is not asyncio's nor polyloop's (see
    ``polyloop._futures``, Rule 2): it is Twisted's. The context variable may name
    another session (an asyncio task's, inherited by a reactor callback on the asyncio
    reactor), so a session that knows such runners is looked for first.
    """
    from ._session import Session

    def knows_runners(session: Session | None) -> bool:
        return (
            session is not None
            and not session.closed
            and type(session)._suspend_foreign is not Session._suspend_foreign
        )

    session = _session_var.get(None)
    if knows_runners(session):
        assert session is not None
        return session
    loop = asyncio._get_running_loop()
    found = _twisted_on(loop) if loop is not None else None
    if found is None:
        reactor = _twisted_global_reactor()
        found = host("twisted", reactor) if reactor is not None else None
    return found if found is not None else current_backend()


def current_or_none() -> Session | None:
    """``current_backend()``, or ``None`` instead of the error."""
    session = _session_var.get(None)
    if session is not None and not session.closed:
        return session
    return detect()


def detect() -> Session | None:
    """Steps 2-4 of the detection order (see the module docstring)."""
    loop = asyncio._get_running_loop()
    if loop is not None:
        return _on_asyncio_loop(loop)
    reactor = _twisted_global_reactor()
    if reactor is not None:
        return host("twisted", reactor)
    hub = _gevent_hub()
    if hub is not None:
        return host("gevent", hub)
    return None


def _on_asyncio_loop(loop: asyncio.AbstractEventLoop) -> Session:
    # Mixed mode (polyloop_mixed): the loop runs in one greenlet of the thread, and
    # asyncio's "running loop" is per thread, so every greenlet sees it running. A
    # greenlet other than the loop's is gevent's.
    runner = getattr(loop, "_polyloop_greenlet", None)
    if runner is not None:
        from greenlet import getcurrent

        if getcurrent() is not runner:
            hub = _gevent_hub()
            if hub is not None:
                return host("gevent", hub)
    if asyncio.current_task(loop) is None:
        twisted = _twisted_on(loop)
        if twisted is not None:
            return twisted
    tornado = sys.modules.get("tornado.ioloop")
    if tornado is not None and not getattr(loop, "_polyloop_mixed", False):
        ioloop = tornado.IOLoop._ioloop_for_asyncio.get(loop)
        if ioloop is not None:
            return host("tornado", ioloop)
    session = host("asyncio", loop)
    # Cache it in the caller's context (an asyncio task's, or a callback's copy), so the
    # next call in this task is a plain context-variable lookup. It names a session of
    # the very loop this context runs on, so it cannot mislead.
    _session_var.set(session)
    return session


def _twisted_on(loop: asyncio.AbstractEventLoop) -> Session | None:
    for session in list(_hosts.values()):
        reactor = getattr(session, "reactor", None)
        if getattr(reactor, "_asyncioEventloop", None) is loop and not session.closed:
            return session
    reactor = sys.modules.get("twisted.internet.reactor")
    if reactor is not None and getattr(reactor, "_asyncioEventloop", None) is loop:
        return host("twisted", reactor)
    return None


def _twisted_global_reactor(running_only: bool = False) -> Any:
    """The global reactor, if it runs this thread (or, unless ``running_only``, will)."""
    reactor = sys.modules.get("twisted.internet.reactor")
    if reactor is None or not hasattr(reactor, "callLater"):
        return None
    threadable = sys.modules.get("twisted.python.threadable")
    if threadable is None:
        return None
    if getattr(reactor, "running", False):
        return reactor if threadable.isInIOThread() else None
    if running_only or getattr(reactor, "_startedBefore", True):
        return None
    import threading

    # Never run yet, no thread registered as its I/O thread, and we are the main thread:
    # the reactor an application is about to run (task.react calls main first).
    if threadable.ioThread is None and threading.current_thread() is threading.main_thread():
        return reactor
    return None


def _gevent_hub() -> Any:
    hub_local = sys.modules.get("gevent._hub_local")
    if hub_local is None:
        return None
    hub = hub_local.get_hub_if_exists()
    if hub is None:
        return None
    from greenlet import getcurrent

    return None if getcurrent() is hub else hub


def host(name: str, native: Any) -> Session:
    """The session bound to ``native`` (a loop, IOLoop, reactor or hub), made if needed."""
    session = _hosts.get(id(native))
    if session is not None and session.native is native and not session.closed:
        return session
    from ._registry import load_backend_class

    return load_backend_class(name)().attach(native)


def register_host(session: Session) -> None:
    """For ``Backend.attach``: one session per host object."""
    for other in list(_hosts.values()):
        if other._native_gone():
            other._finish_end()  # its loop closed without telling anyone
    _hosts[id(session.native)] = session


def unregister_host(session: Session) -> None:
    """For a borrowed session that ends."""
    if _hosts.get(id(session.native)) is session:
        del _hosts[id(session.native)]


def set_current(session: Session) -> None:
    """For backends: name ``session`` as current in the current context."""
    _session_var.set(session)


def context_for(session: Session) -> contextvars.Context:
    """A copy of the current context in which ``session`` is current."""
    ctx = contextvars.copy_context()
    ctx.run(_session_var.set, session)
    return ctx
