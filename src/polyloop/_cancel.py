"""Cancel scopes and timeouts: ``CancelScope``, ``fail_after``, ``move_on_after``.

Rule: a scope cancels *the task that entered it* and nothing else, and it does so the
way asyncio's own ``asyncio.timeout`` does, on every backend: one cancellation request
(``task.cancel()``), counted, and taken back on exit (``task.uncancel()``). A scope tells
its own cancellation from an outer one by that count: if other requests remain when the
``Cancelled`` reaches it, it lets the ``Cancelled`` through. So nested scopes, task groups,
``wait_for`` and asyncio code (``asyncio.timeout``) in one task compose.

Which "task" that is depends on the runner, and is found here (``cancel_target``):
- a polyloop task (``spawn``): the ``Task`` itself;
- a host application's asyncio task (host mode on asyncio or Tornado): that
  ``asyncio.Task`` (it has ``cancel``/``uncancel``/``cancelling``);
- a coroutine on a framework's own runner (Twisted's ``Deferred.fromCoroutine``): a
  ``ForeignTask`` (``polyloop._scopes``), which cancels the polyloop futures the
  coroutine awaits. There, only polyloop awaits can be interrupted (a native Deferred it
  awaits directly is Twisted's business).

Facts that shaped it:
- The delivery is edge-triggered, as asyncio's: one ``Cancelled`` per scope. Code that
  catches it and goes on runs on until the scope exits (trio and anyio deliver again at
  every await).
- A scope never cancels its task from inside the task's own step: the request is
  scheduled (``call_soon``) and the call cancelled if the scope exits first, as
  ``asyncio.timeout`` does. On Python 3.11 ``Task.uncancel()`` does not clear a request
  that was never delivered, so a scope exiting before any await would otherwise leave a
  stray ``Cancelled`` for the next await after it.
- A shielded scope holds back every cancellation from outside it -- outer scopes, task
  groups, ``Task.cancel()`` of polyloop tasks -- until it exits; it cannot hold back an
  asyncio ``task.cancel()`` made by asyncio code itself.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._context import current_backend
from ._contract import Handle
from ._errors import Cancelled, check_timeout
from ._futures import Task, current_task
from ._scopes import TaskState, drop_state, foreign_task, task_state

if TYPE_CHECKING:
    from ._session import Session

__all__ = [
    "CancelScope",
    "current_effective_deadline",
    "fail_after",
    "fail_at",
    "move_on_after",
    "move_on_at",
]


def cancel_target(make: bool = True) -> Any:
    """The task a scope entered now would cancel (see the module docstring); with
    ``make=False``, ``None`` rather than a new ``ForeignTask``."""
    task = current_task()
    if task is not None:
        return task
    loop = asyncio._get_running_loop()
    if loop is not None:
        native = asyncio.current_task(loop)
        if native is not None:
            return native
    return foreign_task(make)


def _raw_cancel(host: Any, msg: Any) -> None:
    # Past any shield check: the request itself, counted by the host.
    if isinstance(host, Task):
        host.request_cancel(msg)
    else:
        host.cancel(msg)


class CancelScope:
    """A region of one task that can be cancelled, and given a deadline or a shield.

    ``with CancelScope() as scope:`` (a plain ``with``: entering and leaving never wait).
    ``scope.cancel()`` -- from the task itself, another task or a callback -- delivers
    ``polyloop.Cancelled`` at the task's next await inside the scope; the scope then
    catches it on exit (``cancelled_caught``), unless the task was also cancelled from
    outside the scope, in which case it goes on up. ``deadline`` (on the session's clock,
    ``polyloop.time()``) cancels the scope when it passes. ``shield=True`` holds back
    cancellations from outside the scope until it exits.
    """

    __slots__ = (
        "_cancel_called",
        "_cancelled_caught",
        "_deadline",
        "_delivery",
        "_entered",
        "_expired",
        "_handle",
        "_host",
        "_msg",
        "_pending",
        "_requested",
        "_session",
        "_shield",
    )

    def __init__(self, *, deadline: float = math.inf, shield: bool = False) -> None:
        self._deadline = float(deadline)
        self._shield = bool(shield)
        self._cancel_called = False
        self._cancelled_caught = False
        self._entered = False
        self._expired = False  # the deadline's timer cancelled it
        self._host: Any = None
        self._session: Session | None = None
        self._handle: Handle | None = None  # the deadline's timer
        self._delivery: Handle | None = None  # a request scheduled from the task itself
        self._requested = 0  # cancellation requests this scope made of its task
        self._pending = False  # cancelled, but held back by a shield inside it
        self._msg: Any = None

    def __repr__(self) -> str:
        state = "cancelled" if self._cancel_called else "active" if self._entered else "idle"
        return f"<polyloop.CancelScope {state}, deadline={self._deadline}, shield={self._shield}>"

    @property
    def cancel_called(self) -> bool:
        """True once ``cancel()`` was called (or the deadline passed)."""
        return self._cancel_called

    @property
    def cancelled_caught(self) -> bool:
        """True if this scope caught the ``Cancelled`` it caused, on exit."""
        return self._cancelled_caught

    @property
    def deadline(self) -> float:
        """When the scope cancels itself, on the session's clock (``inf``: never)."""
        return self._deadline

    @deadline.setter
    def deadline(self, value: float) -> None:
        self._deadline = float(value)
        if self._entered and not self._cancel_called:
            self._arm()

    @property
    def shield(self) -> bool:
        """Whether cancellations from outside are held back while the scope is active."""
        return self._shield

    @shield.setter
    def shield(self, value: bool) -> None:
        was, self._shield = self._shield, bool(value)
        if was and not self._shield and self._entered:
            self._release_held()

    def cancel(self, msg: Any = None) -> None:
        """Cancel the scope (idempotent); before it is entered, it starts cancelled."""
        if self._cancel_called:
            return
        self._cancel_called = True
        self._msg = msg
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._entered:
            self._deliver()

    # --- entering and leaving ---

    def __enter__(self) -> CancelScope:
        if self._entered:
            raise RuntimeError("a CancelScope can be entered only once")
        self._entered = True
        self._session = current_backend()
        self._host = cancel_target()
        state = task_state(self._host)
        assert state is not None
        state.scopes.append(self)
        if self._cancel_called:
            self._deliver()
        else:
            self._arm()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if not self._entered:
            raise RuntimeError("this CancelScope was never entered")
        for handle in (self._handle, self._delivery):
            if handle is not None:
                handle.cancel()
        self._handle = self._delivery = None
        state = task_state(self._host, make=False)
        if state is None or not state.scopes or state.scopes[-1] is not self:
            raise RuntimeError(
                "CancelScopes must be exited in the reverse order of entering, in the task"
                " that entered them"
            )
        state.scopes.pop()
        self._entered = False
        caught = False
        if self._shield:
            self._release_held(state)
        if self._requested:
            self._requested = 0
            remaining = self._host.uncancel()
            # A request a shield held and has released, not yet delivered, is an outer
            # cancellation too: the Cancelled goes on up for it.
            released = bool(state.held) and not state.shielded_inside(-1)
            if remaining == 0 and not released and isinstance(exc, Cancelled):
                caught = True
        if not state.scopes and not state.held:
            drop_state(self._host)
        self._cancelled_caught = caught
        return caught

    # --- delivering ---

    def _arm(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._deadline == math.inf:
            return
        assert self._session is not None
        delay = self._deadline - self._session.time()
        self._handle = self._session.call_later(max(0.0, delay), self._expire)

    def _expire(self) -> None:
        self._handle = None
        self._expired = not self._cancel_called
        self.cancel()

    def _deliver(self) -> None:
        state = task_state(self._host, make=False)
        if state is None or self not in state.scopes:
            return
        if state.shielded_inside(state.scopes.index(self)):
            self._pending = True  # a shield inside holds it back until it exits
            return
        self._pending = False
        if self._requested or self._delivery is not None:
            return
        if cancel_target(make=False) is self._host:
            # From inside the task's own step: deliver at its next await, never leaving
            # a request that outlives the scope (see the module docstring).
            assert self._session is not None
            self._delivery = self._session.call_soon(self._deliver_now)
        else:
            self._deliver_now()

    def _deliver_now(self) -> None:
        self._delivery = None
        if not self._entered or self._requested:
            return
        state = task_state(self._host, make=False)
        if state is not None and self in state.scopes:
            if state.shielded_inside(state.scopes.index(self)):
                self._pending = True  # a shield entered since: it holds this back too
                return
        self._requested = 1
        _raw_cancel(self._host, self._msg)

    def _release_held(self, state: TaskState | None = None) -> None:
        """A shield went away: deliver what it held back (outer scopes, Task.cancel)."""
        state = state or task_state(self._host, make=False)
        if state is None:
            return
        for scope in reversed(state.scopes):
            if scope._pending:
                scope._deliver()
        if state.held and not state.shielded_inside(-1):
            # Not at once: at the task's next suspension, unless another shield is entered
            # before it (two shields in a row, with no await between them, hold it on).
            assert self._session is not None
            self._session.call_soon(_deliver_held, self._host, state)


def _deliver_held(host: Any, state: TaskState) -> None:
    """What shields held back, delivered once no shield holds it any more."""
    if not state.held or state.shielded_inside(-1):
        return  # delivered already, or a newer shield holds it on
    held, state.held = state.held, []
    for msg in held:
        _raw_cancel(host, msg)
    if not state.scopes:
        drop_state(host)


def current_effective_deadline() -> float:
    """The nearest deadline of the caller's active scopes (``inf`` if none), on the
    session's clock; a shielded scope hides the deadlines outside it."""
    state = task_state(cancel_target(), make=False)
    if state is None:
        return math.inf
    deadline = math.inf
    for scope in reversed(state.scopes):
        deadline = min(deadline, scope._deadline)
        if scope._shield:
            break
    return deadline


def _deadline_after(delay: float | None) -> float:
    if delay is None:
        return math.inf
    seconds = check_timeout(delay)
    assert seconds is not None
    return current_backend().time() + seconds


def move_on_after(delay: float | None, *, shield: bool = False) -> CancelScope:
    """A scope that cancels itself ``delay`` seconds after it is made (``None``: never):
    the code inside stops at its next await and execution goes on after the block."""
    return CancelScope(deadline=_deadline_after(delay), shield=shield)


def move_on_at(deadline: float, *, shield: bool = False) -> CancelScope:
    """``move_on_after`` with an absolute deadline on the session's clock."""
    return CancelScope(deadline=deadline, shield=shield)


@contextmanager
def fail_at(deadline: float, *, shield: bool = False) -> Iterator[CancelScope]:
    """A scope whose deadline raises ``TimeoutError`` out of the block when it passes."""
    with CancelScope(deadline=deadline, shield=shield) as scope:
        yield scope
    if _timed_out(scope):
        raise TimeoutError(f"deadline {deadline} passed")


@contextmanager
def fail_after(delay: float | None, *, shield: bool = False) -> Iterator[CancelScope]:
    """``fail_at(now + delay)``: ``TimeoutError`` out of the block after ``delay`` seconds
    (``None``: no deadline). One deadline for every await inside; they nest."""
    deadline = _deadline_after(delay)
    with CancelScope(deadline=deadline, shield=shield) as scope:
        yield scope
    if _timed_out(scope):
        raise TimeoutError(f"timed out after {delay} s")


def _timed_out(scope: CancelScope) -> bool:
    """The scope caught the cancellation of its deadline.

    Asked of the timer, not only of the clock: uvloop's timers run up to a millisecond
    early by its own ``loop.time()`` (``call_later(d - time())`` then ``time() < d``:
    114 of 300 tries, uvloop 0.23), so ``deadline <= time()`` alone was false on a scope
    its own deadline had cancelled, and ``fail_after`` ended like ``move_on_after``
    (``scopes.fail_after`` failed once on uvloop in the variants matrix). The clock
    still decides for a scope cancelled by hand."""
    if not scope.cancelled_caught:
        return False
    return scope._expired or scope.deadline <= current_backend().time()
