"""The gevent backend: polyloop on the thread's hub, with no monkey patching.

Rule: this file is the lifecycle (owning or borrowing the hub), scheduling, readiness,
threads, and the greenlets that run tasks. Connections live in ``_transport.py``; the
core does the rest (resolution, binding, connecting, servers, UDP and TLS).

Facts that shaped it (measured here, gevent 26.9, libev):
- The library never patches, and works in a process that did (``patch_all()``): the core
  makes plain non-blocking sockets from the ``socket`` module (gevent's own class when
  patched, which behaves the same with a timeout of 0) and waits on this session's
  ``hub.loop.io`` watchers, so it never depends on which ``socket`` class it got.
- A hub whose loop has no referenced watcher left raises ``LoopExit`` into the waiting
  greenlet. A future completed only by ``call_soon_threadsafe`` from an OS thread leaves
  nothing referenced, so each session keeps its own ``async_`` watcher started: it is the
  wake-up path for other threads (``send()`` is thread-safe) and keeps the hub alive
  while the session has work (always when owned; while it has tasks when borrowed, so a
  borrowed session does not change when the application's own ``gevent.wait()`` ends).
- Hub callbacks run in the hub's context, where detection finds nothing: every callback
  and greenlet of a session runs in (a copy of) ``session.context``.
- ``ThreadPool`` reports a task's exception through ``hub.handle_error`` (a traceback on
  stderr) before handing it over: ``run_in_thread`` catches it in the worker instead.
  Its threads are real OS threads also after ``patch_all()``, which turns
  ``concurrent.futures`` threads (the core's default) into greenlets.
- A coroutine runs inside its task's greenlet, so it may call gevent's blocking API
  (``gevent.sleep``, a gevent socket): that parks the greenlet *inside* a step, where only
  this backend can reach it (``_task_interrupt``, ``_task_kill``).
"""

from __future__ import annotations

import collections
import contextvars
import logging
import os
import time
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import gevent
from gevent.hub import Hub, Waiter
from greenlet import GreenletExit, getcurrent, greenlet

import polyloop
from polyloop.lowlevel import (
    CoroutineTask,
    Session,
    TaskDriver,
    fd_of,
    signal_cancelled,
    translate,
)

from ._backend import GeventBackend
from ._transport import GeventTransport

T = TypeVar("T")
log = logging.getLogger("polyloop")

#: gevent's exceptions as polyloop code sees them: the one table (``native_error``).
NATIVE_ERRORS: dict[type[BaseException], Callable[[BaseException], BaseException]] = {
    GreenletExit: lambda exc: polyloop.Cancelled(),
    gevent.Timeout: lambda exc: TimeoutError(str(exc) or "timed out"),
    # What _task_kill throws into a task parked in gevent's API (as coro.close() would).
    GeneratorExit: lambda exc: polyloop.Cancelled(),
}


def own_hub(backend: GeventBackend, body: Callable[[Session], Coroutine[Any, Any, T]]) -> T:
    """``GeventBackend.own_loop``: run ``body`` on this thread's hub, from this greenlet.

    The hub is the thread's, and stays after the run. Not hub.destroy() even for a hub
    made here: measured, it leaves the hub greenlet suspended in its LoopExit throw,
    holding the caller's frames (and the session) in a cycle that gc does not collect --
    one hub leaked per run."""
    hub = gevent.get_hub()  # one per thread, made on first use
    if getcurrent() is hub:
        raise RuntimeError(
            "the gevent hub cannot block: call polyloop from a greenlet, not the hub"
        )
    session = GeventSession(backend, hub, owned=True)
    try:
        task = session.context.run(session.spawn, body(session))
        return session.wait(task)  # parks this greenlet; the hub runs everything else
    finally:
        if not session.closed:  # the main task never got to end the session
            session.mark_ended()


def borrow_hub(backend: GeventBackend, native: Any) -> Session:
    """``GeventBackend.borrow_loop``: a session on this thread's hub."""
    if not isinstance(native, Hub):
        raise TypeError(f"the gevent backend attaches to a gevent hub, not {native!r}")
    if native is not gevent.get_hub():
        raise RuntimeError("a gevent hub can only be attached from its own thread")
    # gevent has no hook for a hub's shutdown: the session ends on session.aclose().
    return GeventSession(backend, native, owned=False)


class _Handle:
    """A ``call_soon`` callback or a ``call_later`` timer watcher."""

    __slots__ = ("_timer", "_w")

    def __init__(self, watcher: Any, timer: bool) -> None:
        self._w = watcher
        self._timer = timer  # a one-shot timer watcher is closed, a callback stopped

    def cancel(self) -> None:
        """Don't run it, if it has not run yet."""
        w, self._w = self._w, None
        if w is None:
            return
        if self._timer:
            w.close()
        else:
            w.stop()


class SessionGreenlet(greenlet):  # type: ignore[misc]
    """A greenlet under the hub that parks there between turns (a task's, a reader's).

    ``resume()``, called from the hub, switches in only if it is parked in ``park()``: one
    parked elsewhere (in gevent's blocking API, called from user code) is never woken
    by mistake. Waiting for its first turn counts as parked.
    """

    def __init__(self, run: Callable[[], object], hub: Any, context: contextvars.Context):
        super().__init__(run, hub)
        # Greenlets do not inherit contextvars: this one sees its session as current.
        self.gr_context = context
        self.parked = True

    def park(self, watcher: Any = None) -> None:
        """Switch to the hub until ``resume()`` (or until ``watcher`` fires)."""
        self.parked = True
        if watcher is not None:
            watcher.start(self.resume)
        try:
            self.parent.switch()
        finally:
            self.parked = False
            if watcher is not None:
                watcher.stop()

    def resume(self) -> None:
        """Give it its next turn now, if it is parked (hub only)."""
        if self.parked:
            self.parked = False
            self.switch()


class GeventDriver(TaskDriver):
    """Each core task runs in a greenlet of its own under the hub (``SessionGreenlet``):
    a coroutine may then call gevent's blocking API, which parks the greenlet *inside* a
    step, where only this driver can reach it (``interrupt``, ``kill``)."""

    session: GeventSession

    def start(self, task: CoroutineTask[Any]) -> None:
        session = self.session
        task.native = session._greenlet(lambda: self._drive(task))
        session.keep_hub_alive()

    def _drive(self, task: CoroutineTask[Any]) -> None:
        """A task greenlet's body: step the coroutine; between steps, park in the hub."""
        gr: SessionGreenlet = task.native
        try:
            task.step()
            while not task.done():
                try:
                    gr.park()
                except GreenletExit:  # kill(), or anyone's kill: close the coroutine
                    task.kill()
                    return
                except BaseException as exc:  # thrown in at an await (a gevent.Timeout)
                    if task.throw_at_await(exc):
                        self.session.loop.run_callback(gr.resume)
                    continue
                task.step()
        finally:
            self.session.let_hub_go()

    def wake(self, task: CoroutineTask[Any]) -> None:
        if getcurrent() is self.session.hub:
            task.native.resume()  # a future's callback: step at once, as asyncio's wakeup
        else:
            self.schedule(task)

    def schedule(self, task: CoroutineTask[Any]) -> None:
        self.session.loop.run_callback(task.native.resume)

    def interrupt(self, task: CoroutineTask[Any]) -> None:
        if task.native is not getcurrent():  # else it cancels itself: read at its next step
            self.session.loop.run_callback(self._interrupt, task)

    def _interrupt(self, task: CoroutineTask[Any]) -> None:
        # In the hub: the task may have moved on since cancel() was called.
        gr: SessionGreenlet = task.native
        if task.stepping and not gr.parked and not gr.dead and task.take_cancel():
            gr.throw(polyloop.Cancelled())  # delivered here, not again at its next step

    def kill(self, task: polyloop.Task[Any]) -> None:
        self.session.loop.run_callback(self._kill, task)

    def _kill(self, task: CoroutineTask[Any]) -> None:
        # In the hub. Parked between steps (or not started): GreenletExit, which _drive
        # turns into closing the coroutine. Parked inside a step, in gevent's API:
        # GeneratorExit, which user code sees as it would from coro.close().
        gr: SessionGreenlet = task.native
        if not gr.dead:
            gr.throw(GreenletExit() if gr.parked else GeneratorExit())
        if gr.dead:  # throw() into a greenlet that never started kills it unrun:
            task.kill()  # close its coroutine here (a no-op if _drive did it)


class GeventSession(Session):
    """A session on one gevent hub (the hub of the thread that made it)."""

    name = "gevent"
    driver_class = GeventDriver

    def __init__(self, backend: GeventBackend, hub: Any, *, owned: bool) -> None:
        super().__init__(backend, hub, owned=owned)
        #: The hub, and its event loop.
        self.hub = hub
        self.loop = hub.loop
        self._watchers: dict[tuple[int, int], Any] = {}  # (fd, 1 read / 2 write) -> io
        # Transports' reader greenlets (tasks' greenlets end with their tasks).
        self._helpers: weakref.WeakSet[SessionGreenlet] = weakref.WeakSet()
        self._threads: Any = None  # a gevent ThreadPool, made on first use
        self._queue: collections.deque[tuple[Callable[..., object], tuple[Any, ...]]] = (
            collections.deque()
        )
        # The async_ watcher is the only thing that keeps the hub from LoopExit while a
        # task waits on another OS thread (see the module docstring).
        self._wake: Any = self.loop.async_()
        self._wake.start(self._run_threadsafe)
        self._wake.ref = owned

    def host_gone(self) -> bool:
        return self.hub.loop is None  # hub.destroy() ran

    def keep_hub_alive(self) -> None:
        """The session has work: its wake-up watcher keeps the hub from ``LoopExit``."""
        if self._wake is not None:
            self._wake.ref = True

    def let_hub_go(self) -> None:
        """A borrowed session with no task and nothing queued: the hub may end as if we
        were not here (the application's own ``gevent.wait()`` decides)."""
        if not self.owned and not self.resources.tasks and not self._queue:
            if self._wake is not None:
                self._wake.ref = False

    def dispose(self) -> None:
        """Close what the session itself holds (after the core closed what users left)."""
        super().dispose()
        if self._threads is not None:
            self._threads.kill()
            self._threads = None
        self._queue.clear()
        wake, self._wake = self._wake, None
        if self.host_gone():  # a destroyed loop's watchers must not be touched
            self.resources.timers.clear()
            self._watchers.clear()
            return
        if wake is not None:
            wake.close()
        for timer in list(self.resources.timers):  # the core's record of what call_later set
            timer.cancel()
        for watcher in self._watchers.values():
            watcher.close()
        self._watchers.clear()
        for gr in list(self._helpers):  # a reader still parked in user code
            if not gr.dead:
                self.loop.run_callback(gr.throw)

    def wait(self, task: polyloop.Task[T]) -> T:
        """Block the calling greenlet (not the hub) until ``task`` is done; return its
        result or raise its exception. Interrupted (KeyboardInterrupt, GreenletExit, a
        gevent.Timeout), it cancels the task, lets it unwind, and re-raises, as
        ``asyncio.Runner`` does with KeyboardInterrupt."""
        try:
            self._block(task)
        except BaseException:
            if not signal_cancelled(self) and task.cancel():  # a 2nd Ctrl-C: out at once
                self._block(task)
            raise
        return task.result()

    def _block(self, fut: polyloop.Future[Any]) -> None:
        waiter = Waiter(self.hub)
        fut.add_done_callback(waiter.switch)  # runs in the hub, as Waiter wants
        try:
            waiter.get()
        finally:
            fut.remove_done_callback(waiter.switch)

    # --- tier 1 ---

    def time(self) -> float:
        # Not loop.now(): libev's cached time is the wall clock, and lags inside a turn.
        return time.monotonic()

    def _call(self, context: contextvars.Context, fn: Callable[..., object], args: Any) -> None:
        """Every callback the hub runs for this session: in its context, errors logged."""
        try:
            context.run(fn, *args)
        except Exception:
            log.exception("polyloop: exception in callback %r", fn)

    def call_soon(self, fn: Callable[..., object], *args: Any) -> polyloop.Handle:
        # In a copy of the caller's context, as asyncio's call_soon (the hub has its own).
        callback = self.loop.run_callback(self._call, self.callback_context(), fn, args)
        return _Handle(callback, False)

    def call_soon_in(
        self, context: contextvars.Context | None, fn: Callable[..., object], arg: Any
    ) -> None:
        # Future callbacks, in the registrant's context if it gave one; no handle to make.
        ctx = self.context if context is None else context  # an empty Context is falsy
        self.loop.run_callback(self._call, ctx, fn, (arg,))

    def start_timer(
        self, delay: float, fn: Callable[..., object], args: tuple[Any, ...]
    ) -> polyloop.Handle:
        timer = self.loop.timer(delay)
        handle = _Handle(timer, True)
        # update=True: measure the delay from now, not from the loop's cached time.
        timer.start(self._fire, handle, self.callback_context(), fn, args, update=True)
        return handle

    def _fire(
        self,
        handle: _Handle,
        context: contextvars.Context,
        fn: Callable[..., object],
        args: tuple[Any, ...],
    ) -> None:
        handle.cancel()  # closes the one-shot watcher
        self._call(context, fn, args)

    def call_soon_threadsafe(self, fn: Callable[..., object], *args: Any) -> None:
        wake = self._wake
        if wake is None:
            raise RuntimeError(f"{self!r} has ended")
        self._queue.append((fn, args))  # deque.append is atomic
        if self.in_loop_thread():
            # From a timer or readiness callback of a borrowed session with no task: the
            # watcher would be unreferenced, and the hub could end (LoopExit in the
            # waiting greenlet) before it runs the call. Another thread must not touch
            # libev's reference count: there, the session's tasks keep it.
            wake.ref = True
        wake.send()

    def _run_threadsafe(self) -> None:
        queue = self._queue
        while queue:
            fn, args = queue.popleft()
            self._call(self.context, fn, args)
        self.let_hub_go()

    def add_reader(self, fd: Any, fn: Callable[[], object]) -> None:
        self._watch(fd, 1, fn)

    def remove_reader(self, fd: Any) -> bool:
        return self._unwatch(fd, 1)

    def add_writer(self, fd: Any, fn: Callable[[], object]) -> None:
        self._watch(fd, 2, fn)

    def remove_writer(self, fd: Any) -> bool:
        return self._unwatch(fd, 2)

    def _watch(self, fd: Any, events: int, fn: Callable[[], object]) -> None:
        key = (fd_of(fd), events)
        watcher = self._watchers.get(key)
        if watcher is None:
            watcher = self._watchers[key] = self.loop.io(*key)
        else:
            watcher.stop()  # a new callback for the same fd
        watcher.start(self._call, self.context, fn, ())

    def _unwatch(self, fd: Any, events: int) -> bool:
        # Closed before the fd goes: libev must not watch a closed fd.
        key = (fd_of(fd), events)
        watcher = self._watchers.pop(key, None)
        if watcher is None:
            return False
        watcher.close()
        return True

    # --- greenlets and tasks ---

    def _greenlet(self, run: Callable[[], object]) -> SessionGreenlet:
        """A greenlet under the hub, in a copy of this session's context, started soon."""
        gr = SessionGreenlet(run, self.hub, self.context.copy())
        self.loop.run_callback(gr.resume)
        return gr

    def _spawn_reader(self, run: Callable[[], object]) -> SessionGreenlet:
        """For transports: a reader greenlet, killed at the end if it outlives its
        connection (parked in user code)."""
        gr = self._greenlet(run)
        self._helpers.add(gr)
        return gr

    def native_error(self, exc: BaseException) -> BaseException:
        return translate(exc, NATIVE_ERRORS)

    async def run_in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        if self._threads is None:
            from gevent.threadpool import ThreadPool

            self._threads = ThreadPool(min(32, (os.cpu_count() or 1) + 4), hub=self.hub)
        ctx = self.callback_context()  # names this session, whatever the caller has

        def work() -> tuple[bool, Any]:
            try:
                return True, ctx.run(fn, *args)
            except BaseException as exc:  # handed back to the caller
                return False, exc

        fut: polyloop.Future[tuple[bool, Any]] = self.create_future()

        def deliver(result: Any) -> None:
            if not fut.done():
                fut.set_result(result.value)

        # spawn() parks the calling greenlet (the task's) while all workers are busy.
        self._threads.spawn(work).rawlink(deliver)
        ok, value = await fut
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    # --- adopting sockets (the core binds, connects and accepts) ---

    def adopt_stream(
        self, sock: Any, factory: Callable[[], polyloop.Protocol]
    ) -> polyloop.Transport:
        return GeventTransport(self, sock, factory)
