"""A session's record of what it opened, and its end.

Rule: whatever polyloop opens on a loop is recorded in its session's ``Resources`` (tasks,
servers, transports, timers) until it is done, and the end of a session -- at the end of
``polyloop.run``, when a host loop shuts down, or on ``aclose()`` -- disposes of exactly
that, in one order, on every backend. A borrowed loop is never closed, stopped or
replaced; only what polyloop opened on it goes.
"""

from __future__ import annotations

import concurrent.futures
import logging
from typing import TYPE_CHECKING, Any

from . import _errors
from ._context import unregister_host
from ._futures import current_task
from ._reaper import reap_now
from ._transports import BaseTransport

if TYPE_CHECKING:
    from ._futures import Task
    from ._server import Server
    from ._session import Session

__all__ = [
    "DISPOSE_GRACE",
    "Resources",
    "aclose",
    "end",
    "end_with_asyncio_loop",
    "mark_ended",
    "shutdown",
]

log = logging.getLogger("polyloop")

#: How long the end of a session lets the tasks it cancelled unwind.
DISPOSE_GRACE = 1.0


class Resources:
    """What a session opened and has not seen end: its end disposes of these."""

    __slots__ = ("children", "servers", "tasks", "timers", "transports", "waiters")

    def __init__(self) -> None:
        #: Tasks spawned and not done.
        self.tasks: set[Task[Any]] = set()
        #: Servers listening.
        self.servers: set[Server] = set()
        #: Transports made and not lost (backends: ``track``/``untrack``).
        self.transports: set[BaseTransport] = set()
        #: ``call_later`` timers not fired nor cancelled (objects with ``cancel()``).
        self.timers: set[Any] = set()
        #: Other threads blocked on a call into the session (``polyloop.from_thread``):
        #: failed when the session ends, so that no thread waits for ever.
        self.waiters: set[concurrent.futures.Future[Any]] = set()
        #: Child processes not yet reaped (``polyloop._reaper.watch_child``): killed
        #: and reaped at the end, so that no zombie outlives the session.
        self.children: set[Any] = set()

    def track(self, transport: BaseTransport) -> None:
        """For transports: open, from when it is made until ``untrack``."""
        self.transports.add(transport)

    def untrack(self, transport: BaseTransport) -> None:
        """For transports: ``connection_lost`` has run."""
        self.transports.discard(transport)

    def track_waiter(self, waiter: concurrent.futures.Future[Any]) -> None:
        """For calls from other threads: ``waiter`` is failed if the session ends first
        (any thread; ``set.add`` is atomic)."""
        self.waiters.add(waiter)

    def untrack_waiter(self, waiter: concurrent.futures.Future[Any]) -> None:
        """The call is over (any thread)."""
        self.waiters.discard(waiter)

    def empty(self, but: Any = None) -> bool:
        """Nothing left open but tasks ``but`` (the task ending the session)."""
        return not self.transports and not (self.tasks - {but})


async def aclose(session: Session) -> None:
    """End a borrowed session: cancel its tasks, close its servers and connections,
    run the ``on_close`` hooks. The host's loop keeps running; the next polyloop call
    on it gets a new session. (An owned session ends when ``run`` does.)"""
    if session.owned:
        raise RuntimeError("an owned session ends when polyloop.run returns")
    await end(session)


async def shutdown(session: Session, grace: float = 5.0) -> None:
    """Wind down gracefully: stop accepting (close every server), let the open
    connections end by themselves for up to ``grace`` seconds, then close the rest
    cleanly -- flushed, the peer reads EOF, not a reset -- and give them one more
    second to flush. Tasks are left alone; the session stays open. For a server's
    SIGTERM (``polyloop serve``)."""
    grace = _errors.check_sleep(grace)
    for server in list(session.resources.servers):
        server.close()
    for server in list(session.resources.servers):
        await server.wait_closed()
    deadline = session.time() + grace
    while session.open_streams() and session.time() < deadline:
        await session.sleep(min(0.01, max(0.0, deadline - session.time())))
    for transport in session.open_streams():
        if not transport.is_closing():
            transport.close()
    deadline = session.time() + 1.0
    while session.open_streams() and session.time() < deadline:
        await session.sleep(0.01)


async def end(session: Session) -> None:
    """For backends: dispose of what ``session`` opened, while its loop still runs, then
    run its ``on_close`` hooks (``mark_ended``). Once; later calls return at once.

    Tasks first, so that a handler sees ``Cancelled`` rather than its connection
    vanishing under it (they get ``DISPOSE_GRACE`` seconds to unwind); then servers; then
    every connection still open (aborted: the peer sees a reset); then timers.
    """
    if not session.begin_end():
        return
    resources = session.resources
    me = current_task()
    tasks = [t for t in resources.tasks if t is not me]
    for task in tasks:
        task.cancel()
    deadline = session.time() + DISPOSE_GRACE
    while any(not t.done() for t in tasks) and session.time() < deadline:
        await session.sleep(0.001)
    for task in tasks:
        if not task.done():
            session.driver.kill(task)
    for server in list(resources.servers):
        server.close()
    for server in list(resources.servers):
        await server.wait_closed()
    session.abort_transports()
    for _ in range(20):  # connection_lost callbacks come on later iterations
        await session.sleep(0)
        if resources.empty(but=me):
            break
    await session.sleep(0)
    for timer in list(resources.timers):
        timer.cancel()
    session.mark_ended()


def mark_ended(session: Session, hooks: list[Any]) -> None:
    """The last of ``end``, also reached when a loop dies under a session: release what
    the session holds, then run ``hooks`` (its ``on_close`` callbacks)."""
    if not session.owned:
        unregister_host(session)
    try:
        reap_now(session)
    except Exception:
        log.exception("polyloop: reaping the children of %r raised", session)
    try:
        session.dispose()
    except Exception:
        log.exception("polyloop: %r.dispose() raised", session)
    for waiter in list(session.resources.waiters):  # a thread blocked in from_thread
        if not waiter.done():
            try:
                waiter.set_exception(
                    RuntimeError(f"{session!r} ended before the call from another thread ran")
                )
            except concurrent.futures.InvalidStateError:
                pass  # completed meanwhile, in the loop's last callback
    for fn in hooks:
        try:
            fn(session)
        except Exception:
            log.exception("polyloop: on_close hook %r raised", fn)


def end_with_asyncio_loop(session: Session) -> None:
    """For a session borrowing an asyncio loop: end it when the loop shuts down.

    asyncio has no "loop closing" hook, but ``loop.shutdown_asyncgens()`` (called by
    ``asyncio.run``, ``asyncio.Runner``, uvloop and pytest-asyncio, while the loop still
    runs) closes every async generator first iterated on the loop. So the session keeps
    one, suspended, and ends in its ``finally``: the session's connections are closed
    while the loop can still deliver ``connection_lost``. Must be called on the loop's
    thread while it runs (its ``firstiter`` hook registers the generator).
    """

    async def sentinel() -> Any:
        try:
            yield
        finally:
            await end(session)

    agen = sentinel()
    try:
        agen.asend(None).send(None)
    except StopIteration:
        pass
    session.on_close(lambda _: _keep(agen))  # the loop only holds it weakly


def _keep(agen: Any) -> None:
    """Holds the sentinel generator until the session ends (a closure keeps it)."""
