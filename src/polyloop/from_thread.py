"""Calling into a live session from another thread, synchronously (anyio's ``from_thread``).

Rule: these functions block the *calling* thread, never a loop. From the session's own
loop thread they refuse (that would deadlock the loop); await instead.

A worker of ``run_in_thread`` runs in a copy of its caller's context, so there the
session is found by itself; any other thread passes ``session=`` (an object it was
handed, such as ``polyloop.current_backend()`` taken on the loop's thread).

A program with no loop at all starts one with ``start_blocking_portal(backend)``: a
loop of that backend in a thread of its own, ended and joined when the ``with`` block
ends (anyio's ``start_blocking_portal``).
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import inspect
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from . import _context
from ._backend import Backend
from ._errors import Cancelled
from ._futures import Future, Task
from ._plugins import detectors
from ._registry import load_backend
from ._session import Session
from ._taskgroup import TaskGroup, TaskStatus

__all__ = ["BlockingPortal", "run", "run_sync", "start_blocking_portal"]

T = TypeVar("T")


def _target(session: Session | None) -> Session:
    if session is None:
        session = _context.session_var.get(None)
    if session is None:
        raise RuntimeError(
            "no polyloop session is known in this thread: pass session= (for example"
            " polyloop.current_backend(), taken on the loop's thread)"
        )
    if session.closed:
        raise RuntimeError(f"{session!r} has ended")
    if session.in_loop_thread():
        raise RuntimeError(
            "polyloop.from_thread was called on the session's own loop thread: it would"
            " block the loop. Await the coroutine instead"
        )
    return session


def _copy_outcome(task: Future[Any], done: concurrent.futures.Future[Any]) -> None:
    if done.done():
        return
    if task.cancelled():
        done.set_exception(Cancelled())
        return
    exc = task.exception()
    if exc is not None:
        done.set_exception(exc)
    else:
        done.set_result(task.result())


def _wait(session: Session, done: concurrent.futures.Future[T], call: Callable[[], None]) -> T:
    """Schedule ``call`` on ``session``'s loop and block this thread on ``done``, never for
    ever: the session fails ``done`` (``RuntimeError``) if it ends before ``call`` ran."""
    session.resources.track_waiter(done)
    try:
        session.call_soon_threadsafe(call)  # RuntimeError if the session has ended
        return done.result()
    finally:
        session.resources.untrack_waiter(done)


def run(async_fn: Callable[..., Awaitable[T]], *args: Any, session: Session | None = None) -> T:
    """Run ``async_fn(*args)`` as a task of ``session`` and wait, in this thread, for its
    result (or its exception, raised here)."""
    target = _target(session)
    done: concurrent.futures.Future[T] = concurrent.futures.Future()

    async def call() -> T:
        return await async_fn(*args)

    def start() -> None:
        if done.done():
            return  # the session ended first, and failed it
        try:
            task = target.spawn(call())
        except BaseException as exc:
            done.set_exception(exc)
            return
        task.add_done_callback(lambda t: _copy_outcome(t, done))

    return _wait(target, done, start)


def run_sync(fn: Callable[..., T], *args: Any, session: Session | None = None) -> T:
    """Call ``fn(*args)`` on ``session``'s loop thread and wait for its result here."""
    target = _target(session)
    done: concurrent.futures.Future[T] = concurrent.futures.Future()

    def call() -> None:
        if done.done():
            return  # the session ended first, and failed it
        try:
            result = fn(*args)
        except BaseException as exc:
            done.set_exception(exc)
        else:
            done.set_result(result)

    return _wait(target, done, call)


class BlockingPortal:
    """A loop running in a thread of its own, and the way into it from other threads.

    Made by ``start_blocking_portal``. ``call(fn, *args)`` runs ``fn`` on the loop and
    blocks the calling thread for its result; ``start_task_soon(fn, *args)`` returns a
    ``concurrent.futures.Future`` at once; ``start_task(fn, *args)`` waits until ``fn``
    reports ready (``TaskGroup.start``'s ``task_status``). Every method may be called
    from any thread but the portal's own loop thread (``call`` from there raises
    ``RuntimeError``: it would block the loop it waits for). Once stopped, ``call`` and
    ``start_task_soon`` raise ``RuntimeError``. ``fn`` runs in a copy of the calling
    thread's context (its context variables), as in anyio.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._session: Session | None = None
        self._group: TaskGroup | None = None
        self._tasks: set[Task[Any]] = set()
        self._stop: Future[bool] | None = None
        self._stopping = False
        self._ready: concurrent.futures.Future[None] = concurrent.futures.Future()

    def __repr__(self) -> str:
        state = "stopped" if self._stopping else "running" if self._session else "starting"
        return f"<polyloop.from_thread.BlockingPortal {state} session={self._session!r}>"

    async def _main(self) -> None:
        session = _context.current_backend()
        stop: Future[bool] = session.create_future()
        async with TaskGroup() as group:
            with self._lock:
                self._session, self._group, self._stop = session, group, stop
            self._ready.set_result(None)
            cancel_remaining = await stop
            if cancel_remaining:
                for task in list(self._tasks):
                    task.cancel()
        # The group has waited for every task; the loop ends when this returns.

    def _check_caller(self) -> None:
        if self._thread is not None and threading.get_ident() == self._thread.ident:
            raise RuntimeError(
                "this portal's call() was made on the portal's own loop thread: it would"
                " block the loop it waits for. Await the function instead"
            )

    def start_task_soon(
        self, fn: Callable[..., Any], *args: Any, name: str | None = None
    ) -> concurrent.futures.Future[Any]:
        """Run ``fn(*args)`` as a task on the portal's loop (``fn`` async or not), and
        return a ``concurrent.futures.Future`` for its outcome at once. ``cancel()`` on
        that future cancels the task. ``RuntimeError`` once the portal is stopped."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._schedule(_call(fn, args, future), name, future)
        return future

    def _schedule(
        self, coro: Any, name: str | None, future: concurrent.futures.Future[Any]
    ) -> None:
        context = contextvars.copy_context()  # the caller's: the task runs in a copy
        with self._lock:
            if self._stopping or self._session is None:
                coro.close()
                raise RuntimeError("this blocking portal is not running")
            session = self._session
            # Under the lock: a start scheduled before stop()'s signal reaches the loop
            # before it (call_soon_threadsafe is FIFO), so its task is waited for.
            session.call_soon_threadsafe(self._spawn, coro, name, future, context)

    def _spawn(
        self,
        coro: Any,
        name: str | None,
        future: concurrent.futures.Future[Any],
        context: contextvars.Context,
    ) -> None:
        if future.cancelled():
            coro.close()
            return
        assert self._group is not None
        try:
            # A task copies the context it is made in, and names itself and its session
            # there: the caller's variables come along, polyloop's own are the task's.
            task = context.run(self._group.spawn, coro, name=name)
        except BaseException as exc:
            _settle(future, exc=exc)
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        session = self._session
        assert session is not None

        def cancelled(done: concurrent.futures.Future[Any]) -> None:
            if done.cancelled():  # from any thread: the task is cancelled on the loop
                try:
                    session.call_soon_threadsafe(task.cancel)
                except RuntimeError:
                    pass  # the loop has ended, and the task with it

        future.add_done_callback(cancelled)

    def start_task(
        self, fn: Callable[..., Awaitable[Any]], *args: Any, name: str | None = None
    ) -> tuple[concurrent.futures.Future[Any], Any]:
        """``TaskGroup.start`` from another thread: run ``fn(*args, task_status=...)`` as
        a task on the portal's loop, wait until it calls ``task_status.started(value)``,
        and return ``(future, value)``: the future is for the task's outcome. An error
        before ``started()`` is raised here; so is ``RuntimeError`` if the task ends
        without calling it."""
        self._check_caller()
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        ready: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._schedule(self._start(fn, args, name, future, ready), None, ready)
        return future, ready.result()

    async def _start(
        self,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        name: str | None,
        future: concurrent.futures.Future[Any],
        ready: concurrent.futures.Future[Any],
    ) -> None:
        async def run(*, task_status: TaskStatus[Any]) -> None:
            status = _Forward(task_status)
            try:
                result = await fn(*args, task_status=status)
            except Cancelled:
                future.cancel()
                raise
            except BaseException as exc:
                _settle(future, exc=exc)
                if not status.reported:
                    raise  # before started(): start() raises it, in the caller's thread
            else:
                _settle(future, result=result)

        assert self._group is not None
        try:
            value = await self._group.start(run, name=name)
        except BaseException as exc:
            _settle(ready, exc=exc)
            _settle(future, exc=exc)
            if isinstance(exc, Cancelled):
                raise
        else:
            _settle(ready, result=value)

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the portal's loop (awaiting it if it is async), and block
        this thread until it returns; return its result or raise its exception here.
        ``RuntimeError`` on the portal's own loop thread, or once it is stopped."""
        self._check_caller()
        return self.start_task_soon(fn, *args).result()

    def stop(self, cancel_remaining: bool = False) -> None:
        """End the portal: no new calls; its tasks are waited for (or cancelled, with
        ``cancel_remaining=True``), then the loop ends. From another thread this also
        waits for the loop's thread to end; idempotent."""
        with self._lock:
            first, self._stopping = not self._stopping, True
            session = self._session
            if first and session is not None and self._stop is not None:
                try:
                    session.call_soon_threadsafe(_resolve, self._stop, cancel_remaining)
                except RuntimeError:
                    if not session.closed:
                        raise  # else the loop has ended already: nothing left to stop
        thread = self._thread
        if thread is not None and threading.get_ident() != thread.ident:
            thread.join()


async def _call(
    fn: Callable[..., Any], args: tuple[Any, ...], future: concurrent.futures.Future[Any]
) -> None:
    # Every outcome goes to the caller's future, none into the portal's group (one
    # failing call must not cancel the others), a BaseException that is not an Exception
    # (KeyboardInterrupt, SystemExit) included: the caller gets it, and closing the
    # portal raises nothing more (anyio's test_raise_baseexception_from_task).
    try:
        result = fn(*args)
        if inspect.isawaitable(result):
            result = await result
    except Cancelled:
        future.cancel()
        raise
    except BaseException as exc:
        _settle(future, exc=exc)
    else:
        _settle(future, result=result)


class _Forward(TaskStatus[Any]):
    """The ``task_status`` a portal's ``start_task`` hands on, noting ``started()``."""

    def __init__(self, inner: TaskStatus[Any]) -> None:
        super().__init__(None, lambda: None)
        self._inner = inner
        self.reported = False

    def started(self, value: Any = None) -> None:
        self._inner.started(value)
        self.reported = True


def _settle(
    future: concurrent.futures.Future[Any], result: Any = None, exc: BaseException | None = None
) -> None:
    if future.cancelled():
        return
    try:
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)
    except concurrent.futures.InvalidStateError:
        pass  # cancelled from another thread just now


def _resolve(future: Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)


def _release_thread() -> None:
    """What frameworks keep per thread, released as the portal's own thread ends: every
    installed backend's ``release_thread`` (gevent's hub, for one)."""
    for cls in detectors():
        cls.release_thread()


@contextmanager
def start_blocking_portal(
    backend: str | Backend | type[Backend] = "asyncio", **options: Any
) -> Iterator[BlockingPortal]:
    """``with start_blocking_portal("twisted") as portal: portal.call(fn, *args)``.

    Starts ``polyloop.run`` of ``backend`` (a name, spec, class or instance, with
    ``options``, as ``polyloop.run`` takes) in a new thread, and yields a
    ``BlockingPortal`` into it once the loop runs. When the block ends, the portal
    stops: the tasks it started are waited for (cancelled instead if the block raised),
    the loop ends and its thread is joined, so nothing is left running. A bad backend
    spec raises here, before any thread starts; an error that ends the loop is raised
    when the block ends.
    """
    chosen = load_backend(backend, **options)
    portal = BlockingPortal()
    ended: concurrent.futures.Future[None] = concurrent.futures.Future()

    def target() -> None:
        try:
            chosen.run(portal._main)
        except BaseException as exc:
            ended.set_exception(exc)
            if not portal._ready.done():
                portal._ready.set_exception(exc)
        else:
            ended.set_result(None)
        finally:
            _release_thread()

    thread = threading.Thread(target=target, name=f"polyloop-portal-{chosen.name}")
    portal._thread = thread
    thread.start()
    try:
        portal._ready.result()
    except BaseException:
        thread.join()
        raise
    cancel_remaining = False
    try:
        yield portal
    except BaseException:
        cancel_remaining = True
        raise
    finally:
        portal.stop(cancel_remaining)
        thread.join()
        ended.result()
