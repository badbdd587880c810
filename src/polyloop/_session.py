"""A session: one backend bound to one live loop, and what the core builds on it.

Rule: this file is the object users and backends hold. What a backend implements is its
base class, ``SessionContract`` (``_contract.py``, the whole contract in one file); the
networking functions (``_net.py``) and the lifecycle (``_lifecycle.py``) are written
there once and become this class's methods; here are only identity, timers, tasks and
futures, and the guard that keeps backends to their hooks.

A session is made either by ``Backend.run`` (it *owns* the loop: creates it, runs it,
disposes of it) or by ``Backend.attach`` (it *borrows* a loop the application runs: it
never closes, stops or replaces it, and at its end closes only what polyloop opened).
"""

from __future__ import annotations

import contextvars
import functools
import itertools
import math
import threading
import types
from collections.abc import Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any, TypeVar

from . import _errors, _lifecycle, _net, _pipes, _subprocess
from ._context import on_thread, session_var
from ._contract import Handle, SessionContract
from ._futures import Future, Task, check_coroutine, known_runner, task_var
from ._lifecycle import Resources

if TYPE_CHECKING:
    from ._backend import Backend

__all__ = ["Session"]

T = TypeVar("T")

_ids = itertools.count(1)

#: What the core owns: a backend that defines one of these gets a TypeError at once.
FINAL = frozenset(
    {
        "aclose", "adopt_connection", "adopt_udp", "begin_end", "call_later",
        "callback_context", "check_open", "closed", "connect_read_pipe", "connect_tcp",
        "connect_unix", "connect_write_pipe",
        "create_future", "end", "getaddrinfo", "in_loop_thread", "knows_foreign_runners",
        "listen_sockets", "listen_tcp", "listen_unix", "mark_ended", "on_close", "open_udp",
        "shutdown", "sleep", "spawn", "start_tls", "subprocess_exec", "subprocess_shell",
    }
)  # fmt: skip

#: Hooks of older versions, and what replaced them (see CHANGELOG.md, "Backend authors").
RENAMED = {
    "_call_later": "start_timer", "_serve": "serve_socket", "_adopt_stream": "adopt_stream",
    "_connect_stream": "adopt_client_stream", "_open_datagram": "adopt_datagram",
    "_sock_connect": "sock_connect", "_resolve": "resolve", "_new_task": "new_task",
    "_wait_foreign": "wait_native", "_suspend_foreign": "suspend_foreign",
    "_native_error": "native_error", "_native_gone": "host_gone",
    "_open_streams": "open_streams", "_abort_transports": "abort_transports",
    "_call_soon_in": "call_soon_in", "_finish_end": "dispose", "_end": "dispose",
    "_task_start": "driver_class", "_task_wake": "driver_class",
    "_task_interrupt": "driver_class", "_task_kill": "driver_class",
    "_track": "resources.track", "_untrack": "resources.untrack",
    "_callback_context": "callback_context", "_check_open": "check_open",
}  # fmt: skip


class _NeverHandle:
    """``call_later(inf, ...)``: a call that never comes."""

    __slots__ = ()

    def cancel(self) -> None:
        pass


class _Timer:
    """A ``call_later`` handle the session knows of until it fires or is cancelled: at
    its end a session cancels the timers it set, also on a loop that runs on after it."""

    __slots__ = ("args", "fn", "handle", "timers")

    def __init__(self, timers: set[Any], fn: Callable[..., object], args: tuple[Any, ...]):
        self.timers = timers
        self.fn = fn
        self.args = args
        self.handle: Handle | None = None

    def fire(self) -> None:
        self.timers.discard(self)
        self.fn(*self.args)

    def cancel(self) -> None:
        self.timers.discard(self)
        if self.handle is not None:
            self.handle.cancel()


@types.coroutine
def _bare_yield() -> Generator[None, None, None]:
    yield


def _set_none(fut: Future[Any]) -> None:
    if not fut.done():
        fut.set_result(None)


def _ended_refused(impl: Callable[..., None]) -> Callable[..., None]:
    """A backend's ``call_soon_threadsafe``, with the one behaviour every backend has after
    its session ended (also while it ends): ``RuntimeError`` naming the ended session --
    not a closed loop's error, a closed pipe's, nor a call accepted and never run."""
    if getattr(impl, "_ended_refused", False):
        return impl

    @functools.wraps(impl)
    def call_soon_threadsafe(self: Session, fn: Callable[..., object], *args: Any) -> None:
        if self._closed:
            raise RuntimeError(f"{self!r} has ended: call_soon_threadsafe refused")
        try:
            impl(self, fn, *args)
        except Exception as exc:
            if self._closed:
                raise RuntimeError(f"{self!r} has ended: call_soon_threadsafe refused") from exc
            raise

    call_soon_threadsafe._ended_refused = True  # type: ignore[attr-defined]
    return call_soon_threadsafe


class Session(SessionContract):
    """One backend bound to one live loop: what ``polyloop.current_backend()`` returns.

    Every polyloop call on one loop goes to the same session, so a library may key its
    connection pools on it, and ``on_close`` tells it when the session ends: at the end of
    ``polyloop.run``, when the host loop shuts down, or on ``aclose()``.
    """

    def __init_subclass__(cls, *, core_override: bool = False, **kwargs: Any) -> None:
        # core_override: only for the conformance suite's deliberately broken backends.
        super().__init_subclass__(**kwargs)
        if "call_soon_threadsafe" in vars(cls):
            cls.call_soon_threadsafe = _ended_refused(vars(cls)["call_soon_threadsafe"])  # type: ignore[method-assign]
        if core_override:
            return
        for name in vars(cls):
            if name in FINAL:
                raise TypeError(
                    f"{cls.__qualname__}.{name}: the core's, not a hook a backend may"
                    " override (the hooks are in polyloop.lowlevel.SessionContract)"
                )
            if name in RENAMED:
                raise TypeError(
                    f"{cls.__qualname__}.{name} is a hook of an older polyloop: it is"
                    f" now {RENAMED[name]!r} (see CHANGELOG.md, 'Backend authors')"
                )

    def __init__(self, backend: Backend, native: Any, *, owned: bool) -> None:
        #: The backend (type and options) this session belongs to.
        self.backend = backend
        #: The live framework object: an event loop, an IOLoop, a reactor or a hub.
        self.native = native
        #: True if ``polyloop.run`` made the loop (and disposes of it).
        self.owned = owned
        #: A number unique in this process (``repr`` shows it).
        self.id = next(_ids)
        #: Whether the backend's transports take a stdlib ``ssl.SSLContext`` themselves.
        self.native_tls = backend.native_tls
        #: What the session opened and has not seen end (``polyloop.lowlevel.Resources``).
        self.resources = Resources()
        #: Where the steps of the core's tasks run (``driver_class(self)``).
        self.driver = self.driver_class(self)
        #: The OS thread of the loop (also after gevent's ``patch_all()``).
        self.thread_id = threading.get_native_id()
        self._pool = None
        self._ending = False
        self._closed = False
        self._close_hooks: list[Callable[[Session], object]] = []
        #: A context in which this session is current: an owned loop runs inside it, and
        #: callbacks from other threads run in a copy of it (``self.context.copy().run``:
        #: a context cannot be entered twice at once).
        self.context = contextvars.copy_context()
        self.context.run(session_var.set, self)
        self.context.run(task_var.set, None)  # the creator's task is not ours

    def __repr__(self) -> str:
        how = "owned" if self.owned else "borrowed"
        state = " closed" if self._closed else ""
        return f"<polyloop {self.name} session #{self.id}, {how}{state}>"

    # --- identity and lifecycle ---

    @property
    def closed(self) -> bool:
        """True once the session has ended (its ``on_close`` hooks have run)."""
        return self._closed

    def on_close(self, fn: Callable[[Session], object]) -> None:
        """Call ``fn(session)`` once, when the session ends (at once if it has)."""
        if self._closed:
            fn(self)
        else:
            self._close_hooks.append(fn)

    def check_open(self) -> None:
        """``RuntimeError`` if the session has ended."""
        if self._closed:
            raise RuntimeError(f"{self!r} has ended: use polyloop.current_backend() again")

    def in_loop_thread(self) -> bool:
        """Whether the caller runs on this session's loop thread."""
        return on_thread(self.thread_id)

    def begin_end(self) -> bool:
        """For ``end``: True the first time (the end begins), False after."""
        if self._ending:
            return False
        self._ending = True
        return True

    def mark_ended(self) -> None:
        """For backends: the session is over (also when its loop died under it): release
        what it holds (``dispose``) and run its ``on_close`` hooks. Once."""
        if self._closed:
            return
        self._ending = self._closed = True
        hooks, self._close_hooks = self._close_hooks, []
        _lifecycle.mark_ended(self, hooks)

    aclose = _lifecycle.aclose
    shutdown = _lifecycle.shutdown
    end = _lifecycle.end

    # --- scheduling ---

    def call_later(self, delay: float, fn: Callable[..., object], *args: Any) -> Handle:
        """Call ``fn(*args)`` after ``delay`` seconds (negative: as soon as possible;
        infinite: never). ``ValueError`` for NaN, ``TypeError`` for a non-number."""
        delay = _errors.check_delay(delay)
        if delay == math.inf:
            return _NeverHandle()
        timers = self.resources.timers
        timer = _Timer(timers, fn, args)
        timer.handle = self.start_timer(delay, timer.fire, ())
        timers.add(timer)
        return timer

    # --- tasks and futures ---

    def create_future(self) -> Future[Any]:
        """A future that any coroutine on any session can await."""
        return Future(self)

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str | None = None) -> Task[T]:
        """Start running ``coro`` concurrently; ``TypeError`` unless it is a coroutine."""
        check_coroutine(coro)
        self.check_open()
        task = self.new_task(coro, name)
        if not task.done():
            self.resources.tasks.add(task)
        return task

    async def sleep(self, seconds: float) -> None:
        """Suspend the caller for ``seconds`` (0 yields to the loop once; ``inf``: for
        ever). ``ValueError`` for a negative or NaN delay, ``TypeError`` for a non-number."""
        seconds = _errors.check_sleep(seconds)
        if not seconds and known_runner():
            # A bare yield is one turn of the loop for asyncio's Task and for the core's
            # driver, without a future and a callback (a foreign runner would not
            # suspend on it: there the future below is used).
            await _bare_yield()
            return
        fut = self.create_future()
        handle = self.call_later(seconds, _set_none, fut) if seconds else None
        if handle is None:
            self.call_soon(_set_none, fut)
        try:
            await fut
        finally:
            if handle is not None:
                handle.cancel()

    # --- networking (polyloop._net) ---

    getaddrinfo = _net.getaddrinfo
    listen_tcp = _net.listen_tcp
    listen_unix = _net.listen_unix
    listen_sockets = _net.listen_sockets
    adopt_connection = _net.adopt_connection
    adopt_udp = _net.adopt_udp
    connect_tcp = _net.connect_tcp
    connect_unix = _net.connect_unix
    open_udp = _net.open_udp
    start_tls = _net.start_tls

    # --- pipes and child processes (polyloop._pipes, polyloop._subprocess) ---

    connect_read_pipe = _pipes.connect_read_pipe
    connect_write_pipe = _pipes.connect_write_pipe
    subprocess_exec = _subprocess.subprocess_exec
    subprocess_shell = _subprocess.subprocess_shell
