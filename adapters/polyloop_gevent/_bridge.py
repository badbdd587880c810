"""gevent in ``polyloop.bridge``: a ``Greenlet`` or ``AsyncResult`` as a bridge source, any
future-like object as a greenlet (``to_greenlet``), and blocking a greenlet on one
(``polyloop_gevent.wait``).

Cancellation, gevent's way: a greenlet made by ``to_greenlet`` ends killed (its value a
``GreenletExit``) when the source is cancelled, and killing it cancels the source. A
gevent ``AsyncResult`` is a value cell with nobody to stop: cancelling the bridge only
cancels the bridge's side.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import gevent
from gevent import Greenlet, GreenletExit
from gevent.event import AsyncResult
from greenlet import getcurrent

import polyloop
from polyloop.bridge import CANCELLED, ERROR, RESULT, Home, Outcome, Source, source_of

__all__ = ["greenlet_source", "to_greenlet", "wait_future"]


def _hub_home() -> Home:
    return Home(gevent.get_hub().loop.run_callback_threadsafe)


def greenlet_source(x: Any) -> Source | None:
    """A ``Greenlet`` or an ``AsyncResult`` as a bridge source; ``None`` for anything else."""
    if isinstance(x, Greenlet):
        g = x

        def watch_greenlet(deliver: Callable[[Outcome], None]) -> None:
            def ended(g: Greenlet) -> None:
                if g.successful():
                    value = g.value
                    gone = isinstance(value, GreenletExit)
                    deliver((CANCELLED, None) if gone else (RESULT, value))
                elif isinstance(g.exception, polyloop.Cancelled):
                    deliver((CANCELLED, None))
                else:
                    deliver((ERROR, g.exception))

            g.rawlink(ended)

        return Source(_hub_home(), watch_greenlet, lambda: g.kill(block=False))
    if isinstance(x, AsyncResult):
        ar = x

        def watch_result(deliver: Callable[[Outcome], None]) -> None:
            def ready(ar: Any) -> None:
                if ar.successful():
                    deliver((RESULT, ar.value))
                elif isinstance(ar.exception, (GreenletExit, polyloop.Cancelled)):
                    deliver((CANCELLED, None))
                else:
                    deliver((ERROR, ar.exception))

            ar.rawlink(ready)

        return Source(_hub_home(), watch_result, lambda: None)  # nobody to stop
    return None


def _async_result(src: Source) -> AsyncResult:
    ar = AsyncResult()
    home = _hub_home()

    def settle(outcome: Outcome) -> None:
        kind, value = outcome
        if kind == RESULT:
            ar.set(value)
        elif kind == ERROR:
            ar.set_exception(value, (type(value), value, value.__traceback__))
        else:
            ar.set_exception(polyloop.Cancelled())

    src.watch(lambda outcome: home.run(lambda: settle(outcome)))
    return ar


def wait_future(x: Any, timeout: float | None = None) -> Any:
    """Block the calling greenlet until the future-like ``x`` is done (see ``wait``)."""
    me = getcurrent()
    if me is gevent.get_hub():
        raise RuntimeError("polyloop_gevent.wait cannot block the gevent hub")
    loop = asyncio._get_running_loop()
    if loop is not None and getattr(loop, "_polyloop_greenlet", None) in (None, me):
        raise RuntimeError(
            "polyloop_gevent.wait would block the asyncio loop this greenlet runs: await"
            " instead, or call it from another greenlet"
        )
    src = source_of(x)
    ar = _async_result(src)
    try:
        return ar.get(timeout=timeout)
    except BaseException:
        if not ar.ready():
            src.cancel_from_anywhere()
        raise


def to_greenlet(x: Any) -> Greenlet:
    """``x`` as a ``gevent.Greenlet`` (``x`` itself if it is one), started now: its value
    is ``x``'s result, its exception ``x``'s. ``x`` cancelled: it ends killed (its value a
    ``GreenletExit``). Killing it cancels ``x``."""
    if isinstance(x, Greenlet):
        return x
    src = source_of(x)
    ar = _async_result(src)

    def run() -> Any:
        try:
            return ar.get()
        except polyloop.Cancelled:
            raise GreenletExit() from None  # gevent's "killed": a success

    g = gevent.spawn(run)
    g.rawlink(lambda _: None if ar.ready() else src.cancel_from_anywhere())
    return g
