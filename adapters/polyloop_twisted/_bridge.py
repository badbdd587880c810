"""``Deferred``s in ``polyloop.bridge``: a ``Deferred`` as a bridge source, and any
future-like object as a ``Deferred`` (``to_deferred``).

One error policy with the rest of the adapter: a ``Deferred``'s failure crosses as the
builtin exception ``_errors.translate`` makes of it (Twisted's ``ConnectionRefusedError``
becomes the builtin one), and Twisted's ``CancelledError`` as a cancellation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

import polyloop
from polyloop.bridge import CANCELLED, ERROR, RESULT, Outcome, Source, here, source_of

from ._errors import translate

__all__ = ["deferred_source", "to_deferred"]


def deferred_source(d: defer.Deferred[Any]) -> Source:
    """A ``Deferred`` as a bridge source. The ``Deferred`` is consumed, as Twisted's
    ``Deferred.asFuture`` consumes it: its result or failure ends in the bridge (no
    "Unhandled error in Deferred" later), so callbacks added to it afterwards see ``None``.
    """

    def watch(deliver: Callable[[Outcome], None]) -> None:
        def fired(result: object) -> None:
            if not isinstance(result, Failure):
                deliver((RESULT, result))
                return None
            exc = translate(result)
            if isinstance(exc, polyloop.Cancelled):
                deliver((CANCELLED, None))
            else:
                deliver((ERROR, exc))
            return None  # consumed

        d.addBoth(fired)

    return Source(here(), watch, d.cancel)


def to_deferred(x: Any) -> defer.Deferred[Any]:
    """``x`` (any future, task, coroutine or native future ``polyloop.bridge`` takes) as a
    Twisted ``Deferred`` (``x`` itself if it is one), fired in this thread.

    ``Deferred.cancel()`` cancels ``x``, and the ``Deferred`` fails with Twisted's
    ``defer.CancelledError``, as it does when ``x`` is cancelled."""
    if isinstance(x, defer.Deferred):
        return x
    src = source_of(x)
    home = here()
    d: defer.Deferred[Any] = defer.Deferred(lambda _: src.cancel_from_anywhere())

    def settle(outcome: Outcome) -> None:
        if d.called:
            return  # cancelled on this side first
        kind, value = outcome
        if kind == RESULT:
            d.callback(value)
        elif kind == ERROR:
            d.errback(Failure(value, type(value), value.__traceback__))  # type: ignore[no-untyped-call]
        else:
            d.errback(Failure(defer.CancelledError()))  # type: ignore[no-untyped-call]

    src.watch(lambda outcome: home.run(lambda: settle(outcome)))
    return d
