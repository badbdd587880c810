"""The Twisted backend: ``polyloop.run(main, backend="twisted", reactor="epoll")``.

``reactor`` is ``"epoll"`` (the default where available), ``"poll"``, ``"select"`` or
``"asyncio"``. Each run builds a private reactor; the global
``twisted.internet.reactor`` is never imported.

Host mode: in an application that runs a reactor itself, polyloop code awaited in its
coroutines (``Deferred.fromCoroutine``, ``ensureDeferred``) finds the session of the
global reactor by itself. ``as_deferred`` and ``attach`` are the explicit entries, and
the only ones for a reactor that is not the global one. ``to_deferred`` bridges any
polyloop, asyncio or ``concurrent.futures`` future into a ``Deferred``.

Importing this package imports no Twisted: the backend class must load for detection in
applications that never use Twisted. Twisted comes in with the first session.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

import polyloop
from polyloop.lowlevel import lazy_attributes

from ._backend import TwistedBackend as TwistedBackend

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from ._session import TwistedSession as TwistedSession

__all__ = ["TwistedBackend", "TwistedSession", "as_deferred", "attach", "to_deferred"]

T = TypeVar("T")


def attach(reactor: Any = None) -> polyloop.Session:
    """The polyloop session on ``reactor`` (default: the global reactor, which the
    application must have installed, running in this thread or not started yet).

    One session per reactor: every caller gets the same one until it ends, when the
    reactor shuts down (its connections are closed while the reactor still runs) or on
    ``await session.aclose()``. polyloop never stops the reactor or installs anything.
    """
    return TwistedBackend().attach(reactor)


def as_deferred(aw: Awaitable[T], reactor: Any = None) -> Deferred[T]:
    """Run the awaitable ``aw`` (polyloop code) on Twisted's coroutine runner, as a
    ``Deferred``, with the session of ``reactor`` (default: the global one) current.

    Cancelling the ``Deferred`` cancels the coroutine (polyloop code in it sees
    ``polyloop.Cancelled``), and the ``Deferred`` then fails with Twisted's
    ``defer.CancelledError``, as Twisted code expects.
    """
    from ._deferreds import start

    return start(attach(reactor), aw)


def to_deferred(x: Any) -> Deferred[Any]:
    """``x`` (a polyloop, asyncio or ``concurrent.futures`` future, a task, a coroutine)
    as a ``Deferred`` fired in this thread; cancelling either cancels the other. See
    ``polyloop.bridge`` for what crosses."""
    from ._bridge import to_deferred as convert

    return convert(x)


__getattr__ = lazy_attributes("polyloop_twisted", {"TwistedSession": "._session:TwistedSession"})


TwistedBackend.__module__ = "polyloop_twisted"
for _fn in (attach, as_deferred, to_deferred):
    _fn.__module__ = "polyloop_twisted"
