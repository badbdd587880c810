"""Mixed mode: the four frameworks on one thread, one set of machinery, four sessions.

Rule: nothing here adapts a framework -- the four adapters do, through their ``attach``.
This file builds the machinery they attach to, in the one order that works:

- the gevent hub is the base: it runs every greenlet, the caller's included;
- an asyncio loop runs in a greenlet on it, cooperatively, unpatched, as
  ``SelectorEventLoop(gevent.selectors.GeventSelector())``;
- Tornado's ``IOLoop`` wraps that asyncio loop (``AsyncIOLoop(asyncio_loop=...)``);
- Twisted's ``AsyncioSelectorReactor`` sits on the same loop, started with
  ``startRunning(installSignalHandlers=False)`` and never ``stop()``ped: stopping it
  would stop the loop under the other two.

Facts that shaped it (measured on gevent 26.9, Python 3.11):
- The trap of this layering: asyncio's non-threadsafe scheduling (``call_soon``,
  ``call_at``, a future's ``set_result``, registering a reader) from a greenlet other than
  the loop's only appends to the loop's queues; the loop's greenlet sleeps in
  ``GeventSelector.select`` with the timeout it computed before, and sees the work at its
  next timer or event -- 2 s delays and hangs were measured. ``MixedLoop`` owns the
  wake-up path: such a call from any other greenlet also writes to the loop's self-pipe,
  which the selector watches.
- asyncio's "running loop" is per thread, not per greenlet: every greenlet of the thread
  sees the loop as running. So the core's detection asks this loop which greenlet runs it
  (``_polyloop_greenlet``) and gives the gevent session to the others.

Which session ``polyloop.current_backend()`` is, in mixed mode (the documented choice):
a polyloop task or callback: the session that spawned or scheduled it; a native asyncio
task (a Tornado handler included) started from a session's code: that session (the
context is inherited); any other asyncio task: the asyncio session; a coroutine on
Twisted's own runner: the Twisted session; any greenlet other than the loop's: the gevent
session.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import selectors
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import gevent
from gevent.event import AsyncResult, Event
from gevent.hub import Waiter
from greenlet import getcurrent

import polyloop
from polyloop.lowlevel import Session, signal_cancelled

from ._backend import FRAMEWORKS, MixedBackend

__all__ = ["HubSelector", "Mixed", "MixedLoop", "attach", "own_mixed", "session", "sessions"]

T = TypeVar("T")


_EV_READ, _EV_WRITE = 1, 2  # libev's EV_READ and EV_WRITE
_mixed_var: contextvars.ContextVar[Mixed] = contextvars.ContextVar("polyloop_mixed")


def _flags(events: int) -> int:
    read = _EV_READ if events & selectors.EVENT_READ else 0
    return read | (_EV_WRITE if events & selectors.EVENT_WRITE else 0)


class HubSelector(selectors._BaseSelectorImpl):
    """A ``selectors`` selector on gevent's hub, for the asyncio loop's greenlet.

    ``gevent.selectors.GeventSelector`` starts a libev watcher for every registered fd
    on every ``select()`` and stops each that fired (two ``epoll_ctl`` calls per ready
    fd per loop iteration), and wakes the caller through an ``Event`` (one more hub
    callback): mixed mode's echo ran at 0.5-0.7x of the backend alone on it. Here the
    watchers stay started while the fd is registered, their callbacks (in the hub)
    gather events, and the first one to fire schedules the switch back to the waiting
    greenlet, which the hub makes once every watcher ready in that turn has fired
    (switching from the first callback gave asyncio one event per select: 2.7x the CPU
    per request). A ``select(0)`` still gives the hub one turn, so gevent's greenlets
    and I/O run while asyncio is busy.
    """

    def __init__(self) -> None:
        super().__init__()
        # The base class's fd -> key map (typeshed leaves the private names out).
        self._keys: dict[int, selectors.SelectorKey] = getattr(self, "_fd_to_key")  # noqa: B009
        self._hub = gevent.get_hub()
        self._watchers: dict[int, Any] = {}
        self._events: dict[int, int] = {}
        self._waiter: Any = None

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        key = super().register(fileobj, events, data)
        loop = self._hub.loop
        try:
            watcher = loop.io(key.fd, _flags(events))
        except OSError as exc:
            super().unregister(fileobj)
            raise ValueError(f"invalid file descriptor {key.fd}") from exc
        watcher.priority = loop.MAXPRI
        watcher.start(self._fired, key.fd, pass_events=True)
        self._watchers[key.fd] = watcher
        return key

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        # asyncio modifies an fd's key each time a writer comes and goes (Twisted's
        # every write does): change the watcher's events in place, not a new watcher.
        key = self.get_key(fileobj)  # KeyError if not registered
        if not events or events & ~(selectors.EVENT_READ | selectors.EVENT_WRITE):
            raise ValueError(f"Invalid events: {events!r}")
        if events != key.events:
            watcher = self._watchers[key.fd]
            watcher.stop()
            watcher.events = _flags(events)
            watcher.start(self._fired, key.fd, pass_events=True)
        key = key._replace(events=events, data=data)
        self._keys[key.fd] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        key = super().unregister(fileobj)
        watcher = self._watchers.pop(key.fd, None)
        if watcher is not None:
            watcher.stop()
            watcher.close()
        self._events.pop(key.fd, None)
        return key

    def _fired(self, events: int, fd: int) -> None:  # in the hub
        mask = (selectors.EVENT_READ if events & _EV_READ else 0) | (
            selectors.EVENT_WRITE if events & _EV_WRITE else 0
        )
        self._events[fd] = self._events.get(fd, 0) | mask
        waiter = self._waiter
        if waiter is not None:
            # Not switching from here: the other fds ready in this turn of the hub
            # fire next; a callback runs once they all have (one select, many events).
            self._waiter = None
            self._hub.loop.run_callback(waiter.switch, None)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if not self._events:
            waiter = self._waiter = Waiter(self._hub)
            timer = None
            if timeout is not None:
                timer = self._hub.loop.timer(max(timeout, 0.0))
                timer.start(waiter.switch, None)
            try:
                waiter.get()
            finally:
                self._waiter = None
                if timer is not None:
                    timer.close()
        ready = []
        events, self._events = self._events, {}
        for fd, mask in events.items():
            key = self._keys.get(fd)
            if key is not None:
                ready.append((key, mask & key.events))
        return ready

    def close(self) -> None:
        for watcher in self._watchers.values():
            watcher.stop()
            watcher.close()
        self._watchers.clear()
        super().close()


class MixedLoop(asyncio.SelectorEventLoop):
    """An asyncio loop that runs in a greenlet on gevent's hub, and is woken when another
    greenlet schedules work on it (see the module docstring)."""

    #: The greenlet running ``run_forever`` (the core's detection reads it).
    _polyloop_greenlet: Any = None
    #: Asks the core's detection for the asyncio session in plain asyncio tasks.
    _polyloop_mixed = True

    def __init__(self) -> None:
        super().__init__(HubSelector())

    def run_forever(self) -> None:
        self._polyloop_greenlet = getcurrent()
        try:
            super().run_forever()
        finally:
            self._polyloop_greenlet = None

    def _wake_if_elsewhere(self) -> None:
        runner = self._polyloop_greenlet
        if runner is not None and getcurrent() is not runner:
            self._write_to_self()  # type: ignore[attr-defined]

    def call_soon_threadsafe(  # type: ignore[override]
        self, callback: Any, *args: Any, context: Any = None
    ) -> asyncio.Handle:
        # asyncio's own writes the self-pipe after _call_soon, and ours (below) has already
        # written it when called off the loop's greenlet: one write is enough.
        self._check_closed()  # type: ignore[attr-defined]
        if self.get_debug():
            self._check_callback(callback, "call_soon_threadsafe")  # type: ignore[attr-defined]
        handle: asyncio.Handle = super()._call_soon(callback, args, context)  # type: ignore[misc]
        self._write_to_self()  # type: ignore[attr-defined]
        return handle

    def _call_soon(self, callback: Any, args: Any, context: Any) -> Any:
        handle = super()._call_soon(callback, args, context)  # type: ignore[misc]
        self._wake_if_elsewhere()
        return handle

    def call_at(  # type: ignore[override]
        self, when: float, callback: Any, *args: Any, context: Any = None
    ) -> asyncio.TimerHandle:
        timer = super().call_at(when, callback, *args, context=context)
        self._wake_if_elsewhere()
        return timer

    def _add_reader(self, fd: Any, callback: Any, *args: Any) -> Any:
        handle = super()._add_reader(fd, callback, *args)  # type: ignore[misc]
        self._wake_if_elsewhere()
        return handle

    def _add_writer(self, fd: Any, callback: Any, *args: Any) -> Any:
        handle = super()._add_writer(fd, callback, *args)  # type: ignore[misc]
        self._wake_if_elsewhere()
        return handle


def _reraise(exc: BaseException) -> None:
    raise exc


@functools.cache
def _reactor_class() -> type:
    """``AsyncioSelectorReactor``, whose timed calls let a SystemExit or KeyboardInterrupt
    out, as asyncio's callbacks do.

    Twisted's ``runUntilCurrent`` logs and swallows every exception of a timed call,
    ``BaseException`` included, so ``sys.exit()`` in a native ``reactor.callLater`` (and
    ``callFromThread``, which goes through ``callLater`` on this reactor) would not end
    the run, where it does in an asyncio, Tornado or gevent timer. Each callable is
    wrapped: one more Python frame per timed call. The wrapper raises the exception
    again from a plain asyncio callback, which ``run_forever`` lets out, and
    ``Mixed.run_loop`` takes it from there. I/O callbacks need nothing: the Twisted
    session's fds are the asyncio loop's own readers (asyncio lets a SystemExit out of
    ``run_forever``), and a native Twisted protocol's ``dataReceived`` comes through this
    reactor's ``_readOrWrite``, which catches only ``Exception`` (Twisted 26.10).
    """
    from twisted.internet.asyncioreactor import AsyncioSelectorReactor

    class MixedReactor(AsyncioSelectorReactor):
        def callLater(self, delay: float, callable: Any, *args: Any, **kw: Any) -> Any:
            loop = self._asyncioEventloop

            @functools.wraps(callable)
            def call(*a: Any, **k: Any) -> Any:
                try:
                    return callable(*a, **k)
                except (SystemExit, KeyboardInterrupt) as exc:
                    loop.call_soon(_reraise, exc)
                    return None

            return super().callLater(delay, call, *args, **kw)  # type: ignore[no-untyped-call]

    return MixedReactor


class Mixed:
    """One thread's machinery and its four sessions (``start``, then ``stop``)."""

    def __init__(self) -> None:
        from tornado.platform.asyncio import AsyncIOLoop

        self.hub = gevent.get_hub()
        if getcurrent() is self.hub:
            raise RuntimeError(
                "mixed mode cannot start on the gevent hub; call it from a greenlet"
            )
        self.loop = MixedLoop()
        self.ioloop = AsyncIOLoop(asyncio_loop=self.loop, make_current=False)
        self.reactor = _reactor_class()(self.loop)
        self.sessions: dict[str, Session] = {}
        self._runner: gevent.Greenlet | None = None
        #: The first SystemExit or KeyboardInterrupt a callback raised (see run_loop).
        self.escaped: BaseException | None = None
        #: Called with it, on the loop's greenlet (own_mixed: cancel main).
        self.on_escape: Callable[[BaseException], None] = lambda exc: None

    def escape(self, exc: BaseException) -> None:
        """Record ``exc`` (the first one wins) and pass it to ``on_escape``."""
        if self.escaped is None:
            self.escaped = exc
        self.on_escape(exc)

    def signalled(self) -> bool:
        """Whether a signal has cancelled main (on whichever session it runs)."""
        return any(signal_cancelled(s) for s in self.sessions.values())

    def run_loop(self) -> None:
        """The loop's greenlet: ``run_forever`` until ``stop``. A SystemExit or
        KeyboardInterrupt from a callback leaves ``run_forever`` (asyncio lets them
        through); left to itself it would end this greenlet, and gevent would throw it
        into the main greenlet with the sessions still open. So it is recorded here and
        the loop runs on, as ``asyncio.run`` runs the loop again to cancel main and let it
        clean up; ``own_mixed`` raises it once main has ended."""
        while True:
            try:
                self.loop.run_forever()
                return
            except (SystemExit, KeyboardInterrupt) as exc:
                if self.escaped is not None or self.signalled():
                    # A second one (a Ctrl-C on a clean-up that hangs, also after the
                    # first Ctrl-C cancelled main through the signal handler): out at once.
                    self.escaped = self.escaped or exc
                    raise
                self.escape(exc)

    def on_loop(self, fn: Callable[[], T]) -> T:
        """Call ``fn()`` in the loop's greenlet and wait for its result here."""
        result: AsyncResult = AsyncResult()

        def call() -> None:
            try:
                result.set(fn())
            except BaseException as exc:
                result.set_exception(exc)

        self.loop.call_soon_threadsafe(call)
        value: T = result.get()
        return value

    def start(self) -> None:
        """Run the loop in its greenlet, start the reactor on it, attach the sessions."""
        ready = Event()
        self.loop.call_soon(ready.set)
        self._runner = gevent.spawn(self.run_loop)
        ready.wait()
        self.on_loop(lambda: self.reactor.startRunning(installSignalHandlers=False))
        self.on_loop(self._attach)

    def _attach(self) -> None:
        natives = {
            "asyncio": self.loop, "tornado": self.ioloop, "twisted": self.reactor,
            "gevent": self.hub,
        }  # fmt: skip
        for name in FRAMEWORKS:
            session = polyloop.load_backend(name).attach(natives[name])
            session.context.run(_mixed_var.set, self)
            self.sessions[name] = session
        _by_loop[self.loop] = self.sessions

    async def end_sessions(self, *, but: Session | None = None) -> None:
        """End every session but ``but`` (its end is its own), while the loop runs."""
        for name in reversed(FRAMEWORKS):
            session = self.sessions.get(name)
            if session is not None and session is not but and not session.closed:
                await session.end()

    def stop(self) -> None:
        """Stop the loop and take the machinery apart: no fd, greenlet or timer left."""
        from polyloop_twisted._reactor import unbuild_reactor

        runner = self._runner
        if runner is not None and not runner.dead:
            self.loop.call_soon_threadsafe(self.loop.stop)
            runner.join()
        # A loop whose greenlet died of an exception (a SystemExit raised in a callback)
        # cannot run the shutdown coroutines: it stops at once, and their RuntimeError
        # would replace the exception on its way out. Each step runs, whatever the others
        # do; the first error is raised only if nothing else is on its way.
        clean = runner is None or runner.successful()
        steps: list[Callable[[], object]] = [
            lambda: unbuild_reactor(self.reactor, close_loop=False),  # readers, timers
        ]
        if clean:
            steps += [
                lambda: self.loop.run_until_complete(self.loop.shutdown_asyncgens()),
                lambda: self.loop.run_until_complete(self.loop.shutdown_default_executor()),
            ]
        steps.append(lambda: self.ioloop.close(all_fds=True))  # the asyncio loop too
        errors = []
        for step in steps:
            try:
                step()
            except Exception as exc:
                errors.append(exc)
        if errors and clean:
            raise errors[0]


#: The sessions sharing each asyncio loop: a mixed run's, or ``attach``'s.
_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Session]] = (
    weakref.WeakKeyDictionary()
)


def sessions() -> dict[str, Session]:
    """The sessions of the mixed run (or of ``attach``) the caller is in, by framework
    name: polyloop code finds its run through its context, native callbacks (a Twisted
    protocol, a Tornado handler) through the running asyncio loop."""
    mixed = _mixed_var.get(None)
    if mixed is not None:
        return dict(mixed.sessions)
    loop = asyncio._get_running_loop()
    found = _by_loop.get(loop) if loop is not None else None
    if found is None or any(s.closed for s in found.values()):
        raise RuntimeError(
            "not in mixed mode: polyloop.run(main, backend='mixed'), or polyloop_mixed.attach()"
        )
    return dict(found)


def attach(native: Any = None) -> dict[str, Session]:
    """Mixed mode added to an application that already runs asyncio, Tornado or Twisted
    (on ``AsyncioSelectorReactor``): the asyncio, Tornado and Twisted sessions of its
    one asyncio loop, by name. ``native``: that loop, the ``IOLoop`` on it, or the
    reactor on it (default: the running asyncio loop). Call it on the loop's thread,
    while it runs; every call for one loop gets the same sessions until they end.

    What is reused and what is added: the application's ``IOLoop`` and reactor if it
    has them (the global reactor too, if it is an ``AsyncioSelectorReactor`` on this
    loop); otherwise an ``AsyncIOLoop`` wrapping the loop and an ``AsyncioSelectorReactor``
    on it (started with ``startRunning(installSignalHandlers=False)``, never stopped,
    taken apart when its session ends). The sessions end with the loop (when it shuts
    down its async generators, as ``asyncio.run`` does) or on ``aclose()``. No gevent
    session: gevent needs the loop to run in a greenlet on its hub, which only
    ``polyloop.run(main, backend="mixed")`` sets up."""
    from tornado.ioloop import IOLoop
    from tornado.platform.asyncio import AsyncIOLoop, BaseAsyncIOLoop

    loop, ioloop, reactor = _natives_of(native)
    known = _by_loop.get(loop)
    if known is not None and not any(s.closed for s in known.values()):
        return dict(known)
    if ioloop is None:
        ioloop = IOLoop._ioloop_for_asyncio.get(loop)
        if not isinstance(ioloop, BaseAsyncIOLoop) or ioloop.closing:
            ioloop = AsyncIOLoop(asyncio_loop=loop, make_current=False)
    made_reactor = False
    if reactor is None:
        reactor = _global_reactor_on(loop)
    if reactor is None:
        from twisted.internet.asyncioreactor import AsyncioSelectorReactor

        reactor = AsyncioSelectorReactor(loop)
        reactor.startRunning(installSignalHandlers=False)
        made_reactor = True
    found = {
        "asyncio": polyloop.load_backend("asyncio").attach(loop),
        "tornado": polyloop.load_backend("tornado").attach(ioloop),
        "twisted": polyloop.load_backend("twisted").attach(reactor),
    }
    if made_reactor:
        from polyloop_twisted._reactor import unbuild_reactor

        # Nobody shuts this reactor down: its session ends with the asyncio loop (the
        # Twisted backend's attach sees to that), and then it is taken apart.
        found["twisted"].on_close(lambda _: unbuild_reactor(reactor, close_loop=False))
    _by_loop[loop] = found
    return dict(found)


def _natives_of(native: Any) -> tuple[asyncio.AbstractEventLoop, Any, Any]:
    """(asyncio loop, IOLoop or None, reactor or None) of what ``attach`` was given."""
    from tornado.platform.asyncio import BaseAsyncIOLoop

    if native is None:
        return asyncio.get_running_loop(), None, None
    if isinstance(native, asyncio.AbstractEventLoop):
        return native, None, None
    if isinstance(native, BaseAsyncIOLoop):
        return native.asyncio_loop, native, None
    loop = getattr(native, "_asyncioEventloop", None)
    if isinstance(loop, asyncio.AbstractEventLoop):
        return loop, None, native
    raise TypeError(
        "polyloop_mixed.attach takes an asyncio loop, a Tornado IOLoop on one or a"
        f" Twisted AsyncioSelectorReactor, not {native!r}"
    )


def _global_reactor_on(loop: asyncio.AbstractEventLoop) -> Any:
    import sys

    module = sys.modules.get("twisted.internet.reactor")
    if module is not None and getattr(module, "_asyncioEventloop", None) is loop:
        return module
    return None


def session(name: str) -> Session:
    """The session of ``name`` (``asyncio``, ``tornado``, ``twisted``, ``gevent``) in the
    mixed run the caller is in."""
    try:
        return sessions()[name]
    except KeyError:
        raise LookupError(f"no {name!r} session in mixed mode; known: {FRAMEWORKS}") from None


def own_mixed(backend: MixedBackend, body: Callable[[Session], Coroutine[Any, Any, T]]) -> T:
    """``MixedBackend.own_loop``: the machinery, ``body`` on the chosen session, the end."""
    mixed = Mixed()
    try:
        mixed.start()
        main = mixed.sessions[backend.main]

        async def whole() -> T:
            try:
                return await body(main)  # ends main's session at its end
            finally:
                await mixed.end_sessions(but=main)

        done = Event()
        task = mixed.on_loop(lambda: main.context.run(main.spawn, whole()))
        task.add_done_callback(lambda t: done.set())

        def cancel_main(exc: BaseException) -> None:
            task.cancel()

        mixed.on_escape = cancel_main
        while not done.is_set():
            try:
                done.wait()
            except (SystemExit, KeyboardInterrupt) as exc:
                # Raised by a callback on gevent's hub (a gevent session's timer, a
                # greenlet): gevent throws it into this, the main greenlet. A second
                # one, or one after a signal cancelled main, goes out at once.
                if mixed.escaped is not None or mixed.signalled():
                    raise
                mixed.escaped = exc
                mixed.loop.call_soon_threadsafe(task.cancel)
        if mixed.escaped is not None:
            raise mixed.escaped
        return task.result()
    finally:
        mixed.stop()
