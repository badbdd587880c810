"""Mixed mode's wake-ups: work scheduled from any framework is picked up at once.

The trap (measured): asyncio's non-thread-safe scheduling from a greenlet other than
the loop's only appends to the loop's queues, and the loop's greenlet sleeps in its
selector until its next timer -- 2 s late, or never. So each case here issues one
wake-up from inside one framework (an asyncio callback, a Tornado callback, a Twisted
``callLater``, a greenlet, a callback of gevent's hub) aimed at one framework (asyncio's
``call_soon`` and ``Future.set_result``, Tornado's ``add_callback``, Twisted's
``callLater(0)`` and a ``Deferred`` firing, gevent's ``AsyncResult.set`` and a greenlet
finishing, each session's ``call_soon`` and ``Future.set_result``), while the only timer
pending is this check's deadline, ``DEADLINE`` seconds away. A wake-up that waits for a
timer is seen ``DEADLINE`` seconds late, and fails the case; one that works takes well
under a millisecond, ``LATE`` is a margin of hundreds of times that.

``benchmarks/wakeup.py`` measures the same pairs, with no timer at all.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import polyloop

from .._registry import check
from .bridges import FRAMEWORKS, mixed_sessions

__all__ = ["entries", "wakes"]

DEADLINE = 2.0
LATE = 0.5

Call = Callable[[], object]


class Machinery:
    """The mixed thread's natives, found from its sessions."""

    def __init__(self, sessions: dict[str, polyloop.Session]) -> None:
        import gevent

        self.sessions = sessions
        self.loop = asyncio.get_running_loop()
        self.ioloop = sessions["tornado"].native
        self.reactor = sessions["twisted"].native
        self.hub = gevent.get_hub()


def entries(m: Machinery) -> Iterator[tuple[str, Callable[[Call], object]]]:
    """Where a wake-up is issued from: (name, run ``fn`` in there)."""
    import gevent

    yield "an asyncio callback", m.loop.call_soon
    yield "a Tornado callback", m.ioloop.add_callback
    yield "a Twisted callLater", lambda fn: m.reactor.callLater(0, fn)
    yield "a greenlet", gevent.spawn
    yield "a gevent hub callback", m.hub.loop.run_callback


def wakes(m: Machinery, done: Call) -> Iterator[tuple[str, Callable[[], Call]]]:
    """What is woken: (name, ``arm()``). ``arm()`` sets up a waiter that calls ``done()``
    once woken, and returns the trigger that wakes it."""
    import gevent
    from gevent.event import AsyncResult, Event
    from twisted.internet.defer import Deferred

    yield "asyncio call_soon", lambda: lambda: m.loop.call_soon(done)

    def asyncio_future() -> Call:
        f = m.loop.create_future()

        async def waiter() -> None:
            await f
            done()

        m.loop.create_task(waiter())
        return lambda: f.set_result(None)

    yield "asyncio Future.set_result, a task resumes", asyncio_future
    yield "Tornado add_callback", lambda: lambda: m.ioloop.add_callback(done)
    yield "Twisted callLater(0)", lambda: lambda: m.reactor.callLater(0, done)

    def deferred_into_asyncio() -> Call:
        d: Deferred[None] = Deferred()
        f = polyloop.bridge.to_asyncio(d, loop=m.loop)

        async def waiter() -> None:
            await f
            done()

        m.loop.create_task(waiter())
        return lambda: d.callback(None)

    yield "a Deferred fires, an asyncio task resumes", deferred_into_asyncio

    def async_result() -> Call:
        ar = AsyncResult()

        def waiter() -> None:
            ar.get()
            done()

        gevent.spawn(waiter)
        return lambda: ar.set(None)

    yield "AsyncResult.set, a greenlet resumes", async_result

    def greenlet_ends() -> Call:
        go = Event()
        g = gevent.spawn(go.wait)
        f = polyloop.bridge.to_asyncio(g, loop=m.loop)

        async def waiter() -> None:
            await f
            done()

        m.loop.create_task(waiter())
        return go.set

    yield "a greenlet ends, an asyncio task resumes", greenlet_ends
    for name in FRAMEWORKS:
        session = m.sessions[name]
        yield f"{name} session call_soon", lambda s=session: lambda: s.call_soon(done)

        def session_future(s: polyloop.Session = session) -> Call:
            f: polyloop.Future[None] = s.create_future()

            async def waiter() -> None:
                await f
                done()

            s.spawn(waiter())
            return lambda: f.set_result(None)

        yield f"{name} session Future.set_result, a task resumes", session_future


async def latency(
    session: polyloop.Session,
    enter: Callable[[Call], object],
    arm: Callable[[Call], Call],
    timeout: float | None,
) -> float:
    """Seconds from issuing one wake-up (inside ``enter``) to the woken side running."""
    seen: polyloop.Future[float] = session.create_future()
    started: list[float] = []

    def done() -> None:
        if not seen.done():
            seen.set_result(time.perf_counter())

    trigger = arm(done)
    await session.sleep(0.01)  # the waiters reach their wait

    def fire() -> None:
        started.append(time.perf_counter())
        trigger()

    enter(fire)
    woke = await (seen if timeout is None else polyloop.wait_for(seen, timeout))
    return woke - started[0]


def cases(m: Machinery) -> Iterator[tuple[str, Callable[[Call], object], Callable[[Call], Call]]]:
    """Every (description, enter, arm) pair."""
    for where, enter in entries(m):
        for what, _ in wakes(m, lambda: None):
            yield f"{what} from {where}", enter, _armer(m, what)


def _armer(m: Machinery, what: str) -> Callable[[Call], Call]:
    def arm(done: Call) -> Call:
        for name, make in wakes(m, done):
            if name == what:
                return make()
        raise LookupError(what)

    return arm


@check("wakeups", clauses=["mixed.wakeups"], timeout=120, mixed_only=True)
async def check_wakeups_are_immediate(session: polyloop.Session) -> None:
    """Every framework's wake-up, issued from every framework, runs at once: none waits
    for a timer (the only one pending is DEADLINE seconds away)."""
    m = Machinery(mixed_sessions())
    late: list[str] = []
    for case, enter, arm in cases(m):
        try:
            took = await latency(session, enter, arm, DEADLINE)
        except TimeoutError:
            late.append(f"{case}: not woken in {DEADLINE} s")
            continue
        if took >= LATE:
            late.append(f"{case}: woken after {took:.3f} s, by a timer, not at once")
    if late:
        raise AssertionError(f"{len(late)} wake-up(s) waited for a timer:\n  " + "\n  ".join(late))
