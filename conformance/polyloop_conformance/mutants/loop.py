"""Mutants of the loop: scheduling, timers, the clock, threads, contexts, readiness,
callback errors, and the end of a run -- each one bug in the worked example's session.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import heapq
import logging
import selectors
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import polyloop
from polyloop.lowlevel import Session

from ..example_backend import SelectorsBackend, SelectorsSession, _Handle, _Loop
from . import mutant

T = TypeVar("T")


class _Uncancellable(_Handle):
    __slots__ = ()

    def cancel(self) -> None:
        pass  # the flag is never set


# --- scheduling ---


@mutant(
    "scheduling",
    "call_soon callbacks run in FIFO order",
    clauses=["loop.call_soon.fifo"],
    checks=["scheduling.call_soon_fifo"],
    expect=["FIFO"],
)
class CallSoonLifo(SelectorsSession):
    def call_soon(self, fn: Callable[..., object], *args: Any) -> polyloop.Handle:
        handle = _Handle(fn, args, 0)
        self.loop.ready.appendleft(handle)  # the newest first
        return handle


@mutant(
    "scheduling",
    "call_soon never runs the callback before it returns",
    clauses=["loop.call_soon.never_inline"],
    checks=["scheduling.call_soon_not_inline"],
    expect=["before returning"],
)
class CallSoonInline(SelectorsSession):
    def call_soon(self, fn: Callable[..., object], *args: Any) -> polyloop.Handle:
        handle = _Handle(fn, args, 0)
        handle.run()  # "soon" is now
        return handle


@mutant(
    "scheduling",
    "a cancelled call_soon handle never runs",
    clauses=["loop.call_soon.cancel"],
    checks=["scheduling.call_soon_cancel"],
    expect=["cancelled before it ran still ran"],
)
class CallSoonCancelIgnored(SelectorsSession):
    def call_soon(self, fn: Callable[..., object], *args: Any) -> polyloop.Handle:
        handle = _Uncancellable(fn, args, 0)
        self.loop.ready.append(handle)
        return handle


@mutant(
    "timers",
    "call_later(d) runs no sooner than d seconds later",
    clauses=["loop.call_later.not_early"],
    checks=["timers.call_later_delay", "timers.sleep_duration"],
    expect=["timers fire early"],
)
class CallLaterAtOnce(SelectorsSession):
    def start_timer(
        self, delay: float, fn: Callable[..., object], args: tuple[Any, ...]
    ) -> polyloop.Handle:
        return self.call_soon(fn, *args)  # the deadline is ignored


@mutant(
    "timers",
    "call_later(d) runs no sooner than d seconds later (a unit slip: ds)",
    clauses=["loop.call_later.not_early"],
    checks=["timers.call_later_delay", "tasks.wait_for_timeout"],
    expect=["timers fire early"],
)
class CallLaterTenthOfTheDelay(SelectorsSession):
    def start_timer(
        self, delay: float, fn: Callable[..., object], args: tuple[Any, ...]
    ) -> polyloop.Handle:
        return super().start_timer(delay / 10, fn, args)


@mutant(
    "timers",
    "call_later callbacks fire in deadline order",
    clauses=["loop.call_later.deadline_order"],
    checks=["timers.call_later_order"],
    expect=["deadline order"],
)
class CallLaterFifo(SelectorsSession):
    """Timers due in the same round run in the order they were set, not by deadline."""

    def start_timer(
        self, delay: float, fn: Callable[..., object], args: tuple[Any, ...]
    ) -> polyloop.Handle:
        when = time.monotonic() + delay
        handle = _Handle(fn, args, when)
        # A bucketed timer wheel of 50 ms: every timer of a bucket fires at its end, in
        # the order the timers were set.
        due = (int(when / 0.05) + 1) * 0.05
        heapq.heappush(self.loop.timers, (due, next(self.loop.order), handle))
        return handle


@mutant(
    "timers",
    "a cancelled call_later never fires",
    clauses=["loop.call_later.cancel"],
    checks=["timers.call_later_cancel"],
    expect=["never fires"],
)
class CallLaterCancelIgnored(SelectorsSession):
    def start_timer(
        self, delay: float, fn: Callable[..., object], args: tuple[Any, ...]
    ) -> polyloop.Handle:
        handle = _Uncancellable(fn, args, time.monotonic() + delay)
        heapq.heappush(self.loop.timers, (handle.when, next(self.loop.order), handle))
        return handle


@mutant(
    "timers",
    "time() is a monotonic clock",
    clauses=["loop.time.monotonic"],
    checks=["timers.time_monotonic"],
    expect=["time() went back"],
)
class TimeGoesBack(SelectorsSession):
    calls = 0

    def time(self) -> float:
        self.calls += 1
        return time.monotonic() - (0.5 if self.calls % 7 == 0 else 0.0)  # a jittery source


@mutant(
    "timers",
    "time() is the clock, in seconds, that call_later uses",
    clauses=["loop.call_later.not_early"],
    checks=["timers.call_later_delay"],
    expect=["time() is not the monotonic clock"],
)
class TimeRunsFast(SelectorsSession):
    def time(self) -> float:
        return time.monotonic() * 2  # a clock in half-seconds


# --- threads ---


@mutant(
    "threads",
    "call_soon_threadsafe wakes the loop",
    clauses=["loop.call_soon_threadsafe.wakes"],
    checks=["threads.call_soon_threadsafe"],
    expect=["no wake-up"],
)
class ThreadsafeNoWakeUp(SelectorsSession):
    def call_soon_threadsafe(self, fn: Callable[..., object], *args: Any) -> None:
        handle = _Handle(fn, args, 0)
        handle.context = self.context.copy()
        self.loop.from_threads.append(handle)  # seen only when something else wakes it


@mutant(
    "threads",
    "each thread's call_soon_threadsafe calls run in the order it made them",
    clauses=["loop.call_soon_threadsafe.order"],
    checks=["threads.call_soon_threadsafe_many"],
    expect=["in the order it made them"],
)
class ThreadsafeLifo(SelectorsSession):
    def call_soon_threadsafe(self, fn: Callable[..., object], *args: Any) -> None:
        handle = _Handle(fn, args, 0)
        handle.context = self.context.copy()
        self.loop.from_threads.appendleft(handle)
        self.loop.wake()


@mutant(
    "context",
    "call_soon_threadsafe callbacks run in a copy of the session's context",
    clauses=["loop.call_soon_threadsafe.wakes"],
    checks=["threads.call_soon_threadsafe"],
    expect=["copy of the session's context"],
)
class ThreadsafeInCallersContext(SelectorsSession):
    def call_soon_threadsafe(self, fn: Callable[..., object], *args: Any) -> None:
        handle = _Handle(fn, args, 0)  # the calling thread's context: it knows no session
        self.loop.from_threads.append(handle)
        self.loop.wake()


@mutant(
    "threads",
    "run_in_thread runs fn in another thread",
    clauses=["threads.run_in_thread.outcome"],
    checks=["threads.run_in_thread_result"],
    expect=["on the loop's thread"],
)
class RunInThreadInline(SelectorsSession):
    async def run_in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return fn(*args)


@mutant(
    "threads",
    "run_in_thread raises fn's exception in the caller",
    clauses=["threads.run_in_thread.outcome"],
    checks=["threads.run_in_thread_exception"],
    expect=["although fn raised"],
)
class RunInThreadLosesError(SelectorsSession):
    async def run_in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        def safe(*a: Any) -> Any:
            try:
                return fn(*a)
            except Exception:
                return None

        return await super().run_in_thread(safe, *args)  # type: ignore[no-any-return]


@mutant(
    "context",
    "run_in_thread runs fn in a copy of the caller's context",
    clauses=["threads.run_in_thread.context"],
    checks=["threads.run_in_thread_context"],
    expect=["copy of the caller's context"],
)
class RunInThreadEmptyContext(SelectorsSession):
    async def run_in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        def bare(*a: Any) -> Any:
            return contextvars.Context().run(fn, *a)

        return await super().run_in_thread(bare, *args)  # type: ignore[no-any-return]


_leaked_pools: list[concurrent.futures.ThreadPoolExecutor] = []


@mutant(
    "shutdown",
    "no thread started by a run outlives it",
    clauses=["run.disposes_everything"],
    checks=["cleanliness.no_thread_leak"],
    expect=["threads left running after run()"],
)
class RunInThreadLeaksPool(SelectorsSession):
    async def run_in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        pool = concurrent.futures.ThreadPoolExecutor(1)  # never shut down
        _leaked_pools.append(pool)
        fut = self.create_future()
        work = pool.submit(contextvars.copy_context().run, fn, *args)
        work.add_done_callback(
            lambda w: self.call_soon_threadsafe(lambda: fut.done() or fut.set_result(w.result()))
        )
        return await fut  # type: ignore[no-any-return]


# --- contexts ---


@mutant(
    "context",
    "callbacks run in a copy of the caller's context",
    clauses=["loop.callback.context"],
    checks=["scheduling.callback_context"],
    expect=["copy of the caller's context"],
)
class CallbacksInLoopContext(SelectorsSession):
    def call_soon(self, fn: Callable[..., object], *args: Any) -> polyloop.Handle:
        handle = _Handle(fn, args, 0)
        handle.context = self.context.copy()  # the loop's, not the caller's
        self.loop.ready.append(handle)
        return handle

    def start_timer(
        self, delay: float, fn: Callable[..., object], args: tuple[Any, ...]
    ) -> polyloop.Handle:
        handle = super().start_timer(delay, fn, args)
        handle.context = self.context.copy()  # type: ignore[attr-defined]
        return handle


class _OutsideContextBackend(SelectorsBackend):
    def own_loop(self, body: Callable[[Session], Coroutine[Any, Any, T]]) -> T:
        loop = _Loop(type(self))
        session = self.session_class(self, loop)
        try:
            task = session.context.run(session.spawn, body(session))
            loop.run_until(task.done)  # not in session.context: readiness callbacks miss it
            return task.result()
        finally:
            loop.close()


@mutant(
    "context",
    "an owned loop runs in session.context: protocol callbacks find the session",
    clauses=["session.current_everywhere"],
    checks=["session.current_backend_in_callbacks"],
    expect=["current_backend() was wrong"],
)
class LoopOutsideContext(_OutsideContextBackend):
    pass


# --- readiness ---


@mutant(
    "readiness",
    "remove_reader/remove_writer return whether the fd was watched",
    clauses=["loop.remove_reader.never_after"],
    checks=["readiness.callbacks"],
    expect=["of a watched fd is not True"],
)
class RemoveReturnsNone(SelectorsSession):
    def remove_reader(self, fd: Any) -> bool:
        super().remove_reader(fd)
        return None  # type: ignore[return-value]

    def remove_writer(self, fd: Any) -> bool:
        super().remove_writer(fd)
        return None  # type: ignore[return-value]


@mutant(
    "readiness",
    "add_reader refuses what is not an fd with ValueError",
    clauses=["loop.add_reader.bad_fd"],
    checks=["readiness.bad_fd"],
    expect=["add_reader('x') raised AttributeError"],
)
class UncheckedFd(SelectorsSession):
    def add_reader(self, fd: Any, fn: Callable[[], object]) -> None:
        super().add_reader(fd if isinstance(fd, int) else fd.fileno(), fn)


class _StaleLoop(_Loop):
    def run_once(self) -> None:
        timeout: float | None = None
        if self.ready:
            timeout = 0
        elif self.timers:
            timeout = max(0.0, self.timers[0][0] - time.monotonic())
        for key, events in self.selector.select(timeout):
            reader, writer = key.data  # the callbacks as they are now, run later
            if events & selectors.EVENT_READ and reader is not None:
                self.ready.append(_Handle(reader, (), 0))
            if events & selectors.EVENT_WRITE and writer is not None:
                self.ready.append(_Handle(writer, (), 0))
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            self.ready.append(heapq.heappop(self.timers)[2])
        for _ in range(len(self.ready)):
            self.ready.popleft().run()


class _StaleBackend(SelectorsBackend):
    def own_loop(self, body: Callable[[Session], Coroutine[Any, Any, T]]) -> T:
        loop = _StaleLoop(type(self))
        session = self.session_class(self, loop)
        try:
            task = session.context.run(session.spawn, body(session))
            session.context.run(loop.run_until, task.done)
            return task.result()
        finally:
            loop.close()


@mutant(
    "readiness",
    "a reader removed by remove_reader is not called any more",
    clauses=["loop.remove_reader.never_after"],
    checks=["readiness.callbacks"],
    expect=["ran after remove_reader()"],
)
class ReaderRunsAfterRemove(_StaleBackend):
    pass


# --- callback errors ---


class _RaisingHandle(_Handle):
    __slots__ = ()

    def run(self) -> None:
        fn = self.fn
        if fn is None:
            return
        self.fn = None
        self.context.run(fn, *self.args)  # an exception escapes into the loop


@mutant(
    "scheduling",
    "an exception in a callback is logged and the loop goes on",
    clauses=["loop.callback.error_logged"],
    checks=["scheduling.callback_error_logged"],
    expect=["deliberate callback failure"],
)
class CallbackErrorStopsLoop(SelectorsSession):
    def call_soon(self, fn: Callable[..., object], *args: Any) -> polyloop.Handle:
        handle = _RaisingHandle(fn, args, 0)
        self.loop.ready.append(handle)
        return handle


@mutant(
    "scheduling",
    "an exception in a callback is logged",
    clauses=["loop.callback.error_logged"],
    checks=["scheduling.callback_error_logged"],
    expect=["were logged"],
)
class CallbackErrorSilent(SelectorsSession):
    def call_soon(self, fn: Callable[..., object], *args: Any) -> polyloop.Handle:
        def quiet(*a: Any) -> None:
            try:
                fn(*a)
            except Exception:
                pass

        return super().call_soon(quiet, *args)

    def start_timer(
        self, delay: float, fn: Callable[..., object], args: tuple[Any, ...]
    ) -> polyloop.Handle:
        def quiet(*a: Any) -> None:
            try:
                fn(*a)
            except Exception:
                pass

        return super().start_timer(delay, quiet, args)


# --- the end of a run ---


@mutant(
    "shutdown",
    "the end of a run closes servers and connections (no fd outlives run)",
    clauses=["run.disposes_everything"],
    checks=["cleanliness.no_fd_leak", "cleanliness.connections_lost"],
    expect=["fd(s) leaked", "connection_lost"],
)
class EndDisposesNothing(SelectorsSession, core_override=True):
    async def end(self) -> None:
        self.mark_ended()


@mutant(
    "shutdown",
    "the end of a run cancels the tasks left running",
    clauses=["run.end_cancels_tasks"],
    checks=["cleanliness.tasks_cancelled"],
    expect=["cancels leftover tasks"],
)
class EndLeavesTasks(SelectorsSession, core_override=True):
    async def end(self) -> None:
        self.resources.tasks = set()  # forgets them: nobody cancels them
        await super().end()


@mutant(
    "shutdown",
    "the end of a session runs its on_close hooks",
    clauses=["session.ends_with_run"],
    checks=["session.ends_with_run"],
    expect=["on_close hooks ran 0 times"],
)
class EndSkipsHooks(SelectorsSession, core_override=True):
    def mark_ended(self) -> None:
        self._close_hooks = []
        super().mark_ended()


@mutant(
    "shutdown",
    "on_close hooks run last, after the connections are gone",
    clauses=["run.end_order"],
    checks=["cleanliness.end_order"],
    expect=["on_close hooks ran"],
)
class EndHooksFirst(SelectorsSession, core_override=True):
    async def end(self) -> None:
        hooks, self._close_hooks = self._close_hooks, []
        for fn in hooks:
            fn(self)
        await super().end()


@mutant(
    "shutdown",
    "the end of a run cancels tasks before it aborts connections",
    clauses=["run.end_order"],
    checks=["cleanliness.end_order"],
    expect=["tasks are cancelled first"],
)
class EndAbortsFirst(SelectorsSession, core_override=True):
    async def end(self) -> None:
        self.abort_transports()
        for _ in range(5):
            await self.sleep(0)
        await super().end()


class _LeakyLoop(_Loop):
    def close(self) -> None:
        pass  # the selector and the waker pair stay open


class _LeakyBackend(SelectorsBackend):
    def own_loop(self, body: Callable[[Session], Coroutine[Any, Any, T]]) -> T:
        loop = _LeakyLoop(type(self))
        session = self.session_class(self, loop)
        try:
            task = session.context.run(session.spawn, body(session))
            session.context.run(loop.run_until, task.done)
            return task.result()
        finally:
            loop.close()


@mutant(
    "shutdown",
    "run disposes of its loop: no fd outlives run",
    clauses=["run.disposes_everything"],
    checks=["cleanliness.no_fd_leak"],
    expect=["fd(s) leaked by one run"],
)
class LoopLeaksFds(_LeakyBackend):
    pass


class _DropsResultBackend(SelectorsBackend):
    def own_loop(self, body: Callable[[Session], Coroutine[Any, Any, T]]) -> T:
        super().own_loop(body)
        return None  # type: ignore[return-value]


@mutant(
    "lifecycle",
    "run(main) returns what main returns",
    clauses=["run.returns_main_result"],
    checks=["run.returns_result"],
    expect=["returns what main returns"],
)
class RunDropsResult(_DropsResultBackend):
    pass


class _SwallowsErrorBackend(SelectorsBackend):
    def own_loop(self, body: Callable[[Session], Coroutine[Any, Any, T]]) -> T:
        try:
            return super().own_loop(body)
        except Exception:
            logging.getLogger("polyloop.mutant").debug("swallowed", exc_info=True)
            return None  # type: ignore[return-value]


@mutant(
    "lifecycle",
    "an exception main raises propagates out of run",
    clauses=["run.propagates_main_exception"],
    checks=["run.propagates_exception"],
    expect=["lost main's exception"],
)
class RunSwallowsError(_SwallowsErrorBackend):
    pass


@mutant(
    "scheduling",
    "sleep(0) yields to the loop",
    clauses=["loop.sleep_zero.yields"],
    checks=["scheduling.sleep_zero_yields", "starttls.protocol_api_upgrade"],
    expect=["sleep(0)", "the loop is busy, not asleep"],
)
class SleepZeroNoYield(SelectorsSession, core_override=True):
    async def sleep(self, seconds: float) -> None:
        if seconds == 0:
            return  # returns at once: a `while ...: await sleep(0)` never lets the loop run
        await super().sleep(seconds)


@mutant(
    "lifecycle",
    "run(main) returns main's result: the loop's disposal does not fail",
    clauses=["run.returns_main_result"],
    checks=["run.returns_result", "timers.call_later_order"],
    expect=["OSError: [Errno 9]", "inside an ExceptionGroup"],
)
class DisposalErrorGrouped(SelectorsBackend):
    """A run() that, like a structured-concurrency loop's, reports what went wrong at
    its end as an ExceptionGroup: the verdict must show the OSError inside it."""

    def own_loop(self, body: Callable[[Session], Coroutine[Any, Any, T]]) -> T:
        super().own_loop(body)
        error = OSError(9, "Bad file descriptor (closing the selector)")
        raise ExceptionGroup("unhandled errors in the loop's disposal", [error])


@mutant(
    "scheduling",
    "call_soon callbacks run (on the next loop iteration)",
    clauses=["loop.call_soon.fifo"],
    checks=["scheduling.call_soon_fifo"],
    expect=["hung", "had not started the check's coroutine"],
)
class CallSoonNeverRuns(SelectorsSession):
    """Every case hangs: not even main's first step runs (the budget tests use it)."""

    def call_soon(self, fn: Callable[..., object], *args: Any) -> polyloop.Handle:
        handle = _Handle(fn, args, 0)
        self.loop.from_threads.append(handle)  # a queue the loop reads only when woken
        return handle

    def call_soon_threadsafe(self, fn: Callable[..., object], *args: Any) -> None:
        pass  # nothing from other threads either: the loop never wakes
