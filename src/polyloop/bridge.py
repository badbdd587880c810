"""Bridges between polyloop's futures and the frameworks' own, in every direction.

The core holds the dispatch and the cases the standard library knows:

================================  =============================================
``to_asyncio(x, loop=None)``      an ``asyncio.Future`` on ``loop`` (default: the running
                                  one); an asyncio future already on it is ``x`` itself
``future(x)``                     a ``polyloop.Future`` of the current session, which any
                                  coroutine of any session in the thread can await
================================  =============================================

Each backend adds its framework's own, in its package: ``polyloop_twisted.to_deferred``,
``polyloop_tornado.to_tornado``, ``polyloop_gevent.to_greenlet`` and
``polyloop_gevent.wait``, and teaches ``future``/``to_asyncio`` its native future types
(``Backend.bridge_source``: a ``Deferred``, a ``Greenlet``, an ``AsyncResult``).

``x`` is any of: an asyncio ``Future`` or ``Task`` (a Tornado ``Future`` included), a
``polyloop.Future`` or ``Task``, a ``concurrent.futures.Future``, a coroutine (started as
a polyloop task on the current session, ``polyloop.current_backend()``), or a native
future of an installed backend's framework.

What crosses:

- **A result**: the very object.
- **An error**: the very exception object, its type and traceback kept (a ``Deferred``'s
  ``Failure`` gives up its ``value``, translated as the Twisted backend translates every
  error: builtin types; a failed greenlet its ``exception``).
- **A cancellation**, each side with its own type: ``polyloop.Cancelled`` (which *is*
  ``asyncio.CancelledError``) in polyloop and asyncio futures; each backend's converter
  uses its framework's own (``defer.CancelledError``, a killed greenlet).
- **Cancelling what the bridge made cancels the source** where the source can be
  stopped: ``Future.cancel()``, ``Deferred.cancel()``, ``Greenlet.kill()``. A running
  ``concurrent.futures.Future`` cannot be stopped: only the bridge's side is cancelled.

Threads: the outcome is delivered in the thread of the side that receives it, and a
cancellation in the source's thread, through each one's thread-safe entry (asyncio's
``call_soon_threadsafe``, a session's ``call_soon_threadsafe``, ...): a ``Home``. So a
future of a loop in another thread bridges to this one's.

For backends: a converter is a ``Source`` (how to watch the native object, how to cancel
it, and its ``Home``), returned by the backend class's ``bridge_source(x)``; a backend's
own ``to_*`` functions build on ``source_of(x)``, ``Outcome`` and ``here()``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._context import current_backend, current_or_none
from ._errors import Cancelled
from ._futures import Future
from ._plugins import detectors

if TYPE_CHECKING:
    from ._session import Session

__all__ = [
    "CANCELLED",
    "ERROR",
    "RESULT",
    "Home",
    "Outcome",
    "Source",
    "future",
    "future_outcome",
    "here",
    "into",
    "session_home",
    "source_of",
    "to_asyncio",
]

#: The kind of an outcome that is a result: ``(RESULT, value)``.
RESULT = 0
#: The kind of an outcome that is an exception: ``(ERROR, exception)``.
ERROR = 1
#: The kind of an outcome that is a cancellation: ``(CANCELLED, None)``.
CANCELLED = 2
#: An outcome: ``(RESULT, value)``, ``(ERROR, exception)`` or ``(CANCELLED, None)``.
Outcome = tuple[int, Any]


class Home:
    """A thread, and how to run a function in it from another (``None``: no way)."""

    __slots__ = ("_threadsafe", "thread")

    def __init__(
        self,
        threadsafe: Callable[[Callable[[], object]], object] | None,
        *,
        thread: int | None = None,
    ) -> None:
        #: The OS thread (``threading.get_native_id()``; -1: any): ``threading.get_ident()``
        #: is a greenlet's id after gevent's ``patch_all()``.
        self.thread = threading.get_native_id() if thread is None else thread
        self._threadsafe = threadsafe

    def run(self, fn: Callable[[], object]) -> None:
        """Call ``fn()`` now if this is the home thread, else through the thread-safe
        entry (``RuntimeError`` if there is none)."""
        if self.thread == threading.get_native_id():
            fn()
        elif self._threadsafe is not None:
            self._threadsafe(fn)
        else:
            raise RuntimeError(
                "polyloop.bridge: no loop to reach this thread from another one"
                " (start a polyloop session or an asyncio loop in it)"
            )


_ANYWHERE = Home(lambda fn: fn(), thread=-1)  # thread-safe already (concurrent.futures)


def _loop_home(loop: asyncio.AbstractEventLoop) -> Home:
    return Home(
        loop.call_soon_threadsafe, thread=None if asyncio._get_running_loop() is loop else -1
    )


def session_home(session: Session) -> Home:
    """The home of ``session``: its loop's thread, reached by ``call_soon_threadsafe``."""
    return Home(session.call_soon_threadsafe, thread=session.thread_id)


def here() -> Home:
    """The caller's thread, reached through its session or its running asyncio loop."""
    session = current_or_none()
    if session is not None:
        return session_home(session)
    loop = asyncio._get_running_loop()
    return Home(None if loop is None else loop.call_soon_threadsafe)


class Source:
    """What a bridge reads: ``watch(deliver)`` calls ``deliver(outcome)`` once, in the
    thread that completes it; ``cancel()`` must run in ``home``'s thread."""

    __slots__ = ("cancel", "home", "watch")

    def __init__(
        self,
        home: Home,
        watch: Callable[[Callable[[Outcome], None]], None],
        cancel: Callable[[], object],
    ) -> None:
        self.home = home
        self.watch = watch
        self.cancel = cancel

    def cancel_from_anywhere(self) -> None:
        """``cancel()``, run in the source's home thread."""
        self.home.run(self.cancel)


def future_outcome(f: Any) -> Outcome:
    """The outcome of a done asyncio, polyloop or ``concurrent.futures`` future."""
    if f.cancelled():
        return CANCELLED, None
    exc = f.exception()
    if exc is None:
        return RESULT, f.result()
    return (CANCELLED, None) if isinstance(exc, Cancelled) else (ERROR, exc)


def source_of(x: Any) -> Source:
    """A ``Source`` for ``x`` (see the module docstring); ``TypeError`` for anything else."""
    if isinstance(x, concurrent.futures.Future):
        home = _ANYWHERE
    elif isinstance(x, Future):
        home = session_home(x.session)
    elif asyncio.isfuture(x):
        home = _loop_home(x.get_loop())
    else:
        return _other_source(x)
    fut = x

    def watch(deliver: Callable[[Outcome], None]) -> None:
        home.run(lambda: fut.add_done_callback(lambda f: deliver(future_outcome(f))))

    return Source(home, watch, fut.cancel)


def _other_source(x: Any) -> Source:
    for cls in detectors():
        found = cls.bridge_source(x)
        if found is not None:
            return found  # type: ignore[no-any-return]
    if inspect.iscoroutine(x):
        try:
            session = current_backend()
        except BaseException:
            x.close()  # never started: no "coroutine was never awaited" warning
            raise
        return source_of(session.spawn(x))
    if inspect.isawaitable(x):
        return source_of(current_backend().spawn(_await(x)))
    raise TypeError(
        "polyloop.bridge takes a future, a task, a coroutine or a native future of an"
        f" installed backend's framework, not {type(x).__name__}"
    )


async def _await(aw: Any) -> Any:
    return await aw


def _settle_future(fut: Any, outcome: Outcome) -> None:
    if fut.done():
        return  # cancelled on this side first
    kind, value = outcome
    if kind == RESULT:
        fut.set_result(value)
    elif kind == ERROR:
        fut.set_exception(value)
    else:
        fut.cancel()


def into(src: Source, fut: Any, home: Home) -> None:
    """Wire ``src`` into ``fut`` (an asyncio or polyloop future living in ``home``):
    ``fut`` gets the outcome, and cancelling ``fut`` cancels the source."""
    src.watch(lambda outcome: home.run(lambda: _settle_future(fut, outcome)))
    fut.add_done_callback(lambda f: src.cancel_from_anywhere() if f.cancelled() else None)


def to_asyncio(x: Any, *, loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Future[Any]:
    """``x`` as an ``asyncio.Future`` on ``loop`` (default: the running loop; outside one,
    pass it). Cancelling the future cancels ``x``; see the module docstring."""
    if loop is None:
        loop = asyncio.get_running_loop()
    if isinstance(x, asyncio.Future) and x.get_loop() is loop:
        return x
    src = source_of(x)
    fut = loop.create_future()
    into(src, fut, _loop_home(loop))
    return fut


def future(x: Any) -> Future[Any]:
    """``x`` as a ``polyloop.Future`` of the current session (``x`` itself if it is one).
    Any coroutine of any session of the thread can await it; cancelling it cancels ``x``."""
    if isinstance(x, Future):
        return x
    src = source_of(x)
    session = current_backend()
    fut: Future[Any] = session.create_future()
    into(src, fut, session_home(session))
    return fut
