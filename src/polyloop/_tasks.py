"""The two kinds of task, and the driver that decides where a core task's steps run.

Rule: a ``CoroutineTask`` is asyncio's ``Task`` re-told for any session; an
``AsyncioTask`` is a polyloop ``Task`` over asyncio's own (the sessions on an asyncio
loop). Either is cancelled the way asyncio cancels a task, on every backend: a task
waiting on a future cancels that future and stays parked until the wake-up delivers
``Cancelled`` (so a task awaiting another task waits for the inner one's clean-up); a
task that cancels itself, or is cancelled before it starts, gets ``Cancelled`` at its
next step; ``cancelling()``/``uncancel()`` count the requests.

A ``TaskDriver`` is the interface between a ``CoroutineTask`` and its session: the task
asks the driver to start it, wake it, or step it on a later iteration, and the driver
calls ``task.step()`` wherever the backend wants coroutines to run (the default: in a
loop callback; gevent's: inside the task's greenlet). A driver uses only the task's public
surface (``step``, ``stepping``, ``take_cancel``, ``throw_at_await``, ``kill``,
``native``).

One hop per wake-up: when the future a task waits on completes, its done-callback (a
loop callback already) steps the task at once, as asyncio's ``Task.__wakeup`` does --
not through a second ``call_soon``. Measured on a 1-byte Stream ping-pong on Twisted,
where each ``call_soon`` is a reactor iteration: see ``docs/benchmarks.md``.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from ._errors import Cancelled
from ._futures import CANCELLED, FINISHED, PENDING, Future, Raised, Task, enter_task

if TYPE_CHECKING:
    from ._session import Session

__all__ = [
    "AsyncioTask",
    "CoroutineTask",
    "TaskDriver",
    "from_asyncio_future",
    "in_asyncio_executor",
]

T = TypeVar("T")


class TaskDriver:
    """Where the steps of the core's ``CoroutineTask`` run (``Session.driver_class``).

    The default runs each step in a loop callback of its session. A backend whose
    coroutines must run elsewhere subclasses it (gevent: each task in a greenlet of its
    own, so that its coroutine may call gevent's blocking API).
    """

    def __init__(self, session: Session) -> None:
        #: The session whose tasks this driver runs.
        self.session = session

    def start(self, task: CoroutineTask[Any]) -> None:
        """A new task: its first step runs on a later loop iteration, never inline."""
        self.session.call_soon(task.step)

    def wake(self, task: CoroutineTask[Any]) -> None:
        """The future ``task`` waited on is done; called from a loop callback (that
        future's done-callback). Default: step now (one hop per wake-up)."""
        task.step()

    def schedule(self, task: CoroutineTask[Any]) -> None:
        """Step ``task`` on a later loop iteration (a bare ``yield``, a future that was
        done already, a native wait that ended)."""
        self.session.call_soon(task.step)

    def interrupt(self, task: CoroutineTask[Any]) -> None:
        """``cancel()`` came while ``task`` is inside a step: it cancels itself (the
        request is read at its next step), or it is parked inside a framework call made
        from its coroutine (gevent), which only the driver can interrupt: then
        ``task.take_cancel()`` and throw ``Cancelled`` in. Default: nothing to do."""

    def kill(self, task: Task[Any]) -> None:
        """The task ignored cancellation at the end of its session: stop it for good."""
        task.kill()


class CoroutineTask(Task[T]):
    """The core's own coroutine driver, on any session (asyncio's ``Task``, re-told).

    Each step runs ``coro.send``/``coro.throw`` in the task's context. What the coroutine
    yields decides how it waits: a ``Future`` (it parks until the future is done), a
    bare ``yield`` (it goes round the loop once), or anything else, which the session may
    know how to wait for (``Session.wait_native``: the Twisted session waits on a
    ``Deferred``). The session's ``driver`` decides where steps run.
    """

    __slots__ = (
        "_context",
        "_driver",
        "_foreign",
        "_must_cancel",
        "_stepping",
        "_throw",
        "_waiting",
        "native",
    )

    def __init__(self, session: Session, coro: Coroutine[Any, Any, T], name: str | None) -> None:
        super().__init__(session, coro, name)
        self._must_cancel = False
        self._stepping = False
        self._waiting: Future[Any] | None = None
        self._foreign: Any = None  # what the session waits on for us (has cancel())
        self._throw: BaseException | None = None  # to deliver at the next step
        #: The driver's own handle for this task (the gevent greenlet), if it has one.
        self.native: Any = None
        self._context = contextvars.copy_context()
        self._context.run(enter_task, self)
        self._driver = session.driver
        self._driver.start(self)

    # --- for drivers ---

    @property
    def stepping(self) -> bool:
        """True while the coroutine runs (inside ``step()``)."""
        return self._stepping

    def running_now(self) -> bool:
        return self._stepping

    def take_cancel(self) -> bool:
        """A cancellation that is requested and not yet delivered: mark it delivered
        (the driver throws ``Cancelled`` in itself) and return True; else False."""
        if not self._must_cancel:
            return False
        self._must_cancel = False
        return True

    def throw_at_await(self, exc: BaseException) -> bool:
        """Make the next step raise ``exc`` at the coroutine's ``await``. True if the task
        stopped waiting for its future because of it: the driver must then schedule a
        step itself; False if a wake-up is on its way already (it brings ``exc``)."""
        self._throw = exc
        waiting = self._waiting
        if waiting is not None and waiting.remove_done_callback(self._wake):
            self._waiting = None
            return True
        return False

    def step(self) -> None:
        """Run the coroutine up to its next suspension (drivers call this)."""
        if self._state != PENDING:
            return
        coro = self._coro
        assert coro is not None
        exc, self._throw = self._throw, None
        if exc is None and self._must_cancel:
            self._must_cancel = False
            exc = self._make_cancelled()
        self._stepping = True
        try:
            if exc is None:
                yielded = self._context.run(coro.send, None)
            else:
                yielded = self._context.run(coro.throw, exc)
        except StopIteration as stop:
            self._finish(FINISHED, stop.value)
            return
        except Cancelled:
            self._finish(CANCELLED, None)
            return
        except (KeyboardInterrupt, SystemExit) as error:
            self._finish(FINISHED, Raised(error))
            raise
        except BaseException as error:
            error = self._session.native_error(error)
            if isinstance(error, Cancelled):
                self._finish(CANCELLED, None)
            else:
                self._finish(FINISHED, Raised(error))
            return
        finally:
            self._stepping = False
        self._park(yielded)

    # --- cancellation ---

    def request_cancel(self, msg: Any = None) -> bool:
        if self._state != PENDING:
            return False
        self._num_cancels += 1
        self._cancel_msg = msg
        waiting = self._waiting
        if waiting is not None and waiting.cancel(msg):
            # The wake-up brings Cancelled (from waiting.result()). A task that is awaited
            # stays pending until its own coroutine has unwound, so we wait for it too.
            return True
        self._must_cancel = True
        foreign = self._foreign
        if foreign is not None:
            self._foreign = None
            foreign.cancel()  # its wake-up comes; the step then throws Cancelled
        elif self._stepping:
            self._driver.interrupt(self)  # parked inside a step (gevent's own API)
        return True

    def uncancel(self) -> int:
        left = super().uncancel()
        if left == 0:
            self._must_cancel = False  # a request never delivered is taken back too
        return left

    # --- waiting ---

    def _wake(self, _: object = None) -> None:
        # The done-callback of the future we wait on: a loop callback already.
        self._waiting = None
        self._driver.wake(self)

    def _native_done(self) -> None:
        # A native wait's end (which may come inline, from inside _park).
        self._foreign = None
        self._driver.schedule(self)

    def _park(self, yielded: Any) -> None:
        if yielded is None:  # a bare yield (sleep(0)): once round the loop
            self._driver.schedule(self)
            return
        if isinstance(yielded, Future):
            yielded._asyncio_future_blocking = False
            if yielded.done():
                self._driver.schedule(self)
                return
            self._waiting = yielded
            yielded.add_done_callback(self._wake)
            if self._must_cancel and yielded.cancel(self._cancel_msg):
                self._must_cancel = False
            return
        try:
            self._foreign = self._session.wait_native(yielded, self._native_done)
        except TypeError as error:
            self._throw = error  # "cannot await that", raised at the await
            self._driver.schedule(self)
            return
        if self._must_cancel and self._foreign is not None:
            foreign, self._foreign = self._foreign, None
            foreign.cancel()


class AsyncioTask(Task[T]):
    """A task on an asyncio loop's own ``Task`` (the asyncio and Tornado sessions).

    Why not ``CoroutineTask`` there: asyncio code inside a polyloop task must find itself
    in an asyncio task (``asyncio.current_task()``, ``asyncio.timeout``, anyio, sniffio),
    as it would in any asyncio program. Cancellation is asyncio's, which the rule copies.
    """

    __slots__ = ("native",)

    def __init__(
        self,
        session: Session,
        coro: Coroutine[Any, Any, T],
        name: str | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__(session, coro, name)
        context = contextvars.copy_context()
        context.run(enter_task, self)
        #: The asyncio task that runs the coroutine.
        self.native = loop.create_task(self._run(coro), name=self._name, context=context)
        # Cancelled before its first step, the native task never enters _run's body.
        self.native.add_done_callback(self._native_done)

    async def _run(self, coro: Coroutine[Any, Any, T]) -> None:
        try:
            result = await coro
        except Cancelled:
            self._finish(CANCELLED, None)
            raise
        except (KeyboardInterrupt, SystemExit) as error:
            self._finish(FINISHED, Raised(error))
            raise
        except BaseException as error:
            self._finish(FINISHED, Raised(error))
        else:
            self._finish(FINISHED, result)

    def _native_done(self, native: asyncio.Task[None]) -> None:
        if self._state == PENDING:
            coro = self._coro
            self._finish(CANCELLED, None)
            if coro is not None:
                coro.close()  # never started: no "coroutine was never awaited" warning

    def running_now(self) -> bool:
        loop = asyncio._get_running_loop()
        return loop is not None and asyncio.current_task(loop) is self.native

    def request_cancel(self, msg: Any = None) -> bool:
        if self._state != PENDING:
            return False
        return self.native.cancel(msg)

    def kill(self) -> None:
        self.native.cancel()  # asyncio's task owns the coroutine: ask it once more

    def cancelling(self) -> int:
        return self.native.cancelling()

    def uncancel(self) -> int:
        return self.native.uncancel()


def from_asyncio_future(session: Session, native: asyncio.Future[T]) -> Future[T]:
    """For backends on asyncio: a polyloop ``Future`` with ``native``'s outcome, so that any
    runner can await it. Cancelling the polyloop future cancels ``native``."""
    fut: Future[T] = Future(session)

    def copy(native: asyncio.Future[T]) -> None:
        if fut.done():
            return
        if native.cancelled():
            fut.cancel()
        elif (exc := native.exception()) is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(native.result())

    def back(fut: Future[T]) -> None:
        if fut.cancelled():
            native.cancel()

    native.add_done_callback(copy)
    fut.add_done_callback(back)
    return fut


def in_asyncio_executor(
    session: Session, loop: asyncio.AbstractEventLoop, fn: Callable[..., T], *args: Any
) -> Future[T]:
    """For backends on asyncio: ``fn(*args)`` in ``loop``'s default executor (the end of
    the loop joins its threads), in a context that names ``session`` whatever the caller's
    names, so that ``from_thread`` in the worker reaches the session."""
    ctx = session.callback_context()
    return from_asyncio_future(session, loop.run_in_executor(None, ctx.run, fn, *args))
