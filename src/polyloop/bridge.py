"""Bridges between the frameworks' native futures, and polyloop's, in every direction.

============================  =================================================
``to_asyncio(x, loop=None)``  an ``asyncio.Future`` on ``loop`` (default: the running
                              one); an asyncio future already on it is ``x`` itself
``to_tornado(x, ioloop=None)`` a Tornado ``Future`` (Tornado's ``Future`` *is*
                              ``asyncio.Future``, on the ``IOLoop``'s asyncio loop)
``to_deferred(x)``            a Twisted ``Deferred`` (a ``Deferred`` is ``x`` itself)
``future(x)``                 a ``polyloop.Future`` of the current session, which any
                              coroutine of any session in the thread can await
``wait(x, timeout=None)``     in a greenlet: block it, and only it, until ``x`` is done;
                              its result, or its exception raised
``to_greenlet(x)``            a ``gevent.Greenlet`` whose value is ``x``'s result
============================  =================================================

``x`` is any of: an asyncio ``Future`` or ``Task`` (a Tornado ``Future`` included), a
``polyloop.Future`` or ``Task``, a ``Deferred``, a ``gevent.Greenlet``, a gevent
``AsyncResult``, a ``concurrent.futures.Future``, or a coroutine (started as a polyloop
task on the current session, ``polyloop.current_backend()``).

What crosses:

- **A result**: the very object.
- **An error**: the very exception object, its type and traceback kept (a ``Deferred``'s
  ``Failure`` gives up its ``value``; a failed greenlet its ``exception``).
- **A cancellation**, each side with its own type: ``asyncio.CancelledError`` (which
  *is* ``polyloop.Cancelled``) from asyncio, Tornado and polyloop futures and from
  ``wait``; ``twisted.internet.defer.CancelledError`` in a ``Deferred`` (never asyncio's,
  the trap of Twisted's ``Deferred.fromFuture``); a greenlet made by ``to_greenlet`` ends
  killed (its value a ``GreenletExit``), gevent's own way to say "cancelled". Going in,
  both cancellation types, and a greenlet killed with ``GreenletExit``, count as one.
- **Cancelling what the bridge made cancels the source**: ``Future.cancel()``,
  ``Deferred.cancel()``, ``Greenlet.kill()``. A gevent ``AsyncResult`` is a value cell
  with nobody to stop, and a running ``concurrent.futures.Future`` cannot be stopped:
  for those only the bridge's side is cancelled. A greenlet blocked in ``wait`` that is
  killed or times out (``gevent.Timeout``) cancels the source and re-raises.

Threads: the outcome is delivered in the thread of the side that receives it, and a
cancellation in the source's thread, through each one's thread-safe entry (asyncio's
``call_soon_threadsafe``, the hub's ``run_callback_threadsafe``, a session's
``call_soon_threadsafe``). So a future of a loop in another thread bridges to this one's.
A ``Deferred`` lives in the thread the bridge was called in, which needs a polyloop
session or a running asyncio loop there to be reached from elsewhere.

A ``Deferred`` given to the bridge is consumed, as Twisted's ``Deferred.asFuture``
consumes it: its result or failure ends in the bridge (no "Unhandled error in Deferred"
later), so callbacks added to it afterwards see ``None``.
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

if TYPE_CHECKING:
    import gevent
    from twisted.internet.defer import Deferred

__all__ = ["future", "to_asyncio", "to_deferred", "to_greenlet", "to_tornado", "wait"]

# An outcome: (kind, value).
_RESULT, _ERROR, _CANCELLED = 0, 1, 2
_Outcome = tuple[int, Any]


class _Home:
    """A thread, and how to run a function in it from another (``None``: no way)."""

    __slots__ = ("_threadsafe", "thread")

    def __init__(
        self, threadsafe: Callable[[Callable[[], object]], object] | None, *, here: bool = True
    ) -> None:
        # The OS thread: threading.get_ident() is a greenlet's id after patch_all().
        self.thread = threading.get_native_id() if here else -1
        self._threadsafe = threadsafe

    def run(self, fn: Callable[[], object]) -> None:
        if self.thread == threading.get_native_id():
            fn()
        elif self._threadsafe is not None:
            self._threadsafe(fn)
        else:
            raise RuntimeError(
                "polyloop.bridge: no loop to reach this thread from another one"
                " (start a polyloop session or an asyncio loop in it)"
            )


_ANYWHERE = _Home(lambda fn: fn())  # thread-safe already (concurrent.futures)
_ANYWHERE.thread = -1


def _loop_home(loop: asyncio.AbstractEventLoop) -> _Home:
    return _Home(loop.call_soon_threadsafe, here=asyncio._get_running_loop() is loop)


def _session_home(session: Any) -> _Home:
    home = _Home(session.call_soon_threadsafe)
    home.thread = session._thread_id
    return home


def _here() -> _Home:
    session = current_or_none()
    if session is not None:
        return _session_home(session)
    loop = asyncio._get_running_loop()
    return _Home(None if loop is None else loop.call_soon_threadsafe)


def _hub_home() -> _Home:
    import gevent

    return _Home(gevent.get_hub().loop.run_callback_threadsafe)


class _Source:
    """What a bridge reads: ``watch(deliver)`` calls ``deliver(outcome)`` once, in the
    thread that completes it; ``cancel()`` must run in ``home``'s thread."""

    __slots__ = ("cancel", "home", "watch")

    def __init__(
        self,
        home: _Home,
        watch: Callable[[Callable[[_Outcome], None]], None],
        cancel: Callable[[], object],
    ) -> None:
        self.home = home
        self.watch = watch
        self.cancel = cancel

    def cancel_from_anywhere(self) -> None:
        self.home.run(self.cancel)


def _future_outcome(f: Any) -> _Outcome:
    if f.cancelled():
        return _CANCELLED, None
    exc = f.exception()
    if exc is None:
        return _RESULT, f.result()
    return (_CANCELLED, None) if isinstance(exc, Cancelled) else (_ERROR, exc)


def _source(x: Any) -> _Source:
    if isinstance(x, concurrent.futures.Future):
        home = _ANYWHERE
    elif isinstance(x, Future):
        home = _session_home(x.session)
    elif asyncio.isfuture(x):
        home = _loop_home(x.get_loop())
    else:
        return _foreign_source(x)
    fut = x

    def watch(deliver: Callable[[_Outcome], None]) -> None:
        home.run(lambda: fut.add_done_callback(lambda f: deliver(_future_outcome(f))))

    return _Source(home, watch, fut.cancel)


def _foreign_source(x: Any) -> _Source:
    import sys

    if "twisted.internet.defer" in sys.modules:
        from twisted.internet.defer import Deferred

        if isinstance(x, Deferred):
            return _deferred_source(x)
    if "gevent" in sys.modules:
        from gevent import Greenlet
        from gevent.event import AsyncResult

        if isinstance(x, Greenlet):
            return _greenlet_source(x)
        if isinstance(x, AsyncResult):
            return _async_result_source(x)
    if inspect.iscoroutine(x):
        try:
            session = current_backend()
        except BaseException:
            x.close()  # never started: no "coroutine was never awaited" warning
            raise
        return _source(session.spawn(x))
    if inspect.isawaitable(x):
        return _source(current_backend().spawn(_await(x)))
    raise TypeError(
        "polyloop.bridge takes a future, task, Deferred, Greenlet, AsyncResult or"
        f" coroutine, not {type(x).__name__}"
    )


async def _await(aw: Any) -> Any:
    return await aw


def _deferred_source(d: Deferred[Any]) -> _Source:
    from twisted.internet import defer
    from twisted.python.failure import Failure

    def watch(deliver: Callable[[_Outcome], None]) -> None:
        def fired(result: object) -> None:
            if not isinstance(result, Failure):
                deliver((_RESULT, result))
            elif result.check(defer.CancelledError, Cancelled):  # type: ignore[no-untyped-call]
                deliver((_CANCELLED, None))
            else:
                deliver((_ERROR, result.value))
            return None  # consumed (see the module docstring)

        d.addBoth(fired)

    return _Source(_here(), watch, d.cancel)


def _greenlet_source(g: gevent.Greenlet) -> _Source:
    from gevent import GreenletExit

    def watch(deliver: Callable[[_Outcome], None]) -> None:
        def ended(g: gevent.Greenlet) -> None:
            if g.successful():
                value = g.value
                deliver(
                    (_CANCELLED, None) if isinstance(value, GreenletExit) else (_RESULT, value)
                )
            elif isinstance(g.exception, Cancelled):
                deliver((_CANCELLED, None))
            else:
                deliver((_ERROR, g.exception))

        g.rawlink(ended)

    return _Source(_hub_home(), watch, lambda: g.kill(block=False))


def _async_result_source(ar: Any) -> _Source:
    from gevent import GreenletExit

    def watch(deliver: Callable[[_Outcome], None]) -> None:
        def ready(ar: Any) -> None:
            if ar.successful():
                deliver((_RESULT, ar.value))
            elif isinstance(ar.exception, (GreenletExit, Cancelled)):
                deliver((_CANCELLED, None))
            else:
                deliver((_ERROR, ar.exception))

        ar.rawlink(ready)

    return _Source(_hub_home(), watch, lambda: None)  # a value cell: nobody to stop


def _settle_future(fut: Any, outcome: _Outcome) -> None:
    if fut.done():
        return  # cancelled on this side first
    kind, value = outcome
    if kind == _RESULT:
        fut.set_result(value)
    elif kind == _ERROR:
        fut.set_exception(value)
    else:
        fut.cancel()


def _into_future(src: _Source, fut: Any, home: _Home) -> None:
    """Wire ``src`` into ``fut`` (an asyncio or polyloop future living in ``home``)."""
    src.watch(lambda outcome: home.run(lambda: _settle_future(fut, outcome)))
    fut.add_done_callback(lambda f: src.cancel_from_anywhere() if f.cancelled() else None)


def to_asyncio(x: Any, *, loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Future[Any]:
    """``x`` as an ``asyncio.Future`` on ``loop`` (default: the running loop; outside one,
    pass it). Cancelling the future cancels ``x``; see the module docstring."""
    if loop is None:
        loop = asyncio.get_running_loop()
    if isinstance(x, asyncio.Future) and x.get_loop() is loop:
        return x
    src = _source(x)
    fut = loop.create_future()
    _into_future(src, fut, _loop_home(loop))
    return fut


def to_tornado(x: Any, *, ioloop: Any = None) -> asyncio.Future[Any]:
    """``x`` as a Tornado ``Future`` of ``ioloop`` (default ``IOLoop.current()``).

    Tornado's ``Future`` is ``asyncio.Future`` (Tornado 5 on), so this is ``to_asyncio``
    on the ``IOLoop``'s asyncio loop; a ``gen.coroutine``, a native coroutine and
    ``IOLoop.add_future`` all take it."""
    if ioloop is None:
        from tornado.ioloop import IOLoop

        ioloop = IOLoop.current()
    return to_asyncio(x, loop=ioloop.asyncio_loop)


def future(x: Any) -> Future[Any]:
    """``x`` as a ``polyloop.Future`` of the current session (``x`` itself if it is one).
    Any coroutine of any session of the thread can await it; cancelling it cancels ``x``."""
    if isinstance(x, Future):
        return x
    src = _source(x)
    session = current_backend()
    fut: Future[Any] = session.create_future()
    _into_future(src, fut, _session_home(session))
    return fut


def to_deferred(x: Any) -> Deferred[Any]:
    """``x`` as a Twisted ``Deferred`` (``x`` itself if it is one), fired in this thread.

    ``Deferred.cancel()`` cancels ``x``, and the ``Deferred`` fails with Twisted's
    ``defer.CancelledError``, as it does when ``x`` is cancelled."""
    from twisted.internet import defer
    from twisted.python.failure import Failure

    if isinstance(x, defer.Deferred):
        return x
    src = _source(x)
    home = _here()
    d: defer.Deferred[Any] = defer.Deferred(lambda _: src.cancel_from_anywhere())

    def settle(outcome: _Outcome) -> None:
        if d.called:
            return  # cancelled on this side first
        kind, value = outcome
        if kind == _RESULT:
            d.callback(value)
        elif kind == _ERROR:
            d.errback(Failure(value, type(value), value.__traceback__))  # type: ignore[no-untyped-call]
        else:
            d.errback(Failure(defer.CancelledError()))  # type: ignore[no-untyped-call]

    src.watch(lambda outcome: home.run(lambda: settle(outcome)))
    return d


def _async_result(src: _Source) -> Any:
    from gevent.event import AsyncResult

    ar = AsyncResult()
    home = _hub_home()

    def settle(outcome: _Outcome) -> None:
        kind, value = outcome
        if kind == _RESULT:
            ar.set(value)
        elif kind == _ERROR:
            ar.set_exception(value, (type(value), value, value.__traceback__))
        else:
            ar.set_exception(Cancelled())

    src.watch(lambda outcome: home.run(lambda: settle(outcome)))
    return ar


def _check_may_block() -> None:
    import gevent
    from greenlet import getcurrent

    me = getcurrent()
    if me is gevent.get_hub():
        raise RuntimeError("polyloop.bridge.wait cannot block the gevent hub")
    loop = asyncio._get_running_loop()
    if loop is not None and getattr(loop, "_polyloop_greenlet", None) in (None, me):
        raise RuntimeError(
            "polyloop.bridge.wait would block the asyncio loop this greenlet runs: await"
            " instead, or call it from another greenlet"
        )


def wait(x: Any, timeout: float | None = None) -> Any:
    """Block the calling greenlet (only it) until ``x`` is done; return its result or
    raise its exception (``polyloop.Cancelled`` if it was cancelled).

    If the greenlet is killed while it waits, or ``timeout`` seconds pass
    (``gevent.Timeout``), ``x`` is cancelled and the exception re-raised. From the hub,
    or from the greenlet running the asyncio loop that would have to complete ``x``:
    ``RuntimeError``."""
    _check_may_block()
    src = _source(x)
    ar = _async_result(src)
    try:
        return ar.get(timeout=timeout)
    except BaseException:
        if not ar.ready():
            src.cancel_from_anywhere()
        raise


def to_greenlet(x: Any) -> gevent.Greenlet:
    """``x`` as a ``gevent.Greenlet`` (``x`` itself if it is one), started now: its value
    is ``x``'s result, its exception ``x``'s. ``x`` cancelled: it ends killed (its value a
    ``GreenletExit``). Killing it cancels ``x``."""
    import gevent

    if isinstance(x, gevent.Greenlet):
        return x
    src = _source(x)
    ar = _async_result(src)

    def run() -> Any:
        try:
            return ar.get()
        except Cancelled:
            raise gevent.GreenletExit() from None  # gevent's "killed": a success

    g = gevent.spawn(run)
    g.rawlink(lambda _: None if ar.ready() else src.cancel_from_anywhere())
    return g
