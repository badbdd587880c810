"""What cancel scopes record per task, kept below the futures that consult it.

Rule: this file holds state, not behaviour: which scopes a task has entered and which
cancellations a shield holds back (``TaskState``), and the stand-in task of a coroutine
that a framework's own runner drives (``ForeignTask``). ``_cancel`` (the scopes) and
``_futures`` (``Task.cancel`` asks whether a shield holds it) both stand on it.

Which coroutine is "the task" under a foreign runner (Twisted's ``Deferred.fromCoroutine``)
is the hard part. The runner has no task object, and it runs each coroutine in a *copy*
of the context it was started from, so a context variable alone is inherited: a child
started after its parent used a timeout would share the parent's bookkeeping (measured:
two children, each with its own ``fail_after``, raised "CancelScopes must be exited in
the reverse order", and a timeout in one cancelled its sibling). So the stand-in is
keyed by the root coroutine frame the runner is stepping -- the outermost frame of the
chain of coroutine (and ``__await__`` generator) frames above the caller -- and a value
inherited from another root is not reused.
"""

from __future__ import annotations

import contextvars
import inspect
import sys
import weakref
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._futures import Future

__all__ = ["ForeignTask", "TaskState", "foreign_task", "hold_if_shielded", "task_state"]

_COROUTINE = inspect.CO_COROUTINE | inspect.CO_ITERABLE_COROUTINE | inspect.CO_ASYNC_GENERATOR
_CHAIN = _COROUTINE | inspect.CO_GENERATOR


class ForeignTask:
    """What a scope cancels in a coroutine that a framework's own runner drives: the
    polyloop futures that coroutine awaits (``Future.__await__`` registers them)."""

    __slots__ = ("__weakref__", "must_cancel", "num_cancels", "waiting")

    def __init__(self) -> None:
        self.waiting: set[Future[Any]] = set()
        self.num_cancels = 0
        self.must_cancel = False

    def cancel(self, msg: Any = None) -> bool:
        self.num_cancels += 1
        if self.waiting:
            for fut in list(self.waiting):
                fut.cancel(msg)
        else:
            self.must_cancel = True  # raised at its next polyloop await
        return True

    def uncancel(self) -> int:
        if self.num_cancels > 0:
            self.num_cancels -= 1
        if self.num_cancels == 0:
            self.must_cancel = False
        return self.num_cancels

    def cancelling(self) -> int:
        return self.num_cancels


#: (root frame id, root code, the stand-in) of the coroutine this context runs.
_foreign_var: contextvars.ContextVar[tuple[int, Any, ForeignTask]] = contextvars.ContextVar(
    "polyloop_foreign"
)


def _root_frame() -> FrameType | None:
    """The outermost frame of the coroutine chain that runs the caller (see above)."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None and not frame.f_code.co_flags & _COROUTINE:
        frame = frame.f_back  # our own helpers (a scope's __enter__, fail_after's generator)
    root = None
    while frame is not None and frame.f_code.co_flags & _CHAIN:
        root = frame
        frame = frame.f_back
    return root


def foreign_task(make: bool = True) -> ForeignTask | None:
    """The ``ForeignTask`` of the coroutine running the caller (made on first use, unless
    ``make`` is false)."""
    root = _root_frame()
    key = (id(root), None if root is None else root.f_code)
    found = _foreign_var.get(None)
    if found is not None and found[:2] == key:
        return found[2]
    if not make:
        return None
    task = ForeignTask()
    _foreign_var.set((*key, task))
    return task


class TaskState:
    """A task's active scopes, innermost last, and the cancellations shields hold back."""

    __slots__ = ("held", "scopes")

    def __init__(self) -> None:
        self.scopes: list[Any] = []  # CancelScope objects (``_cancel``)
        self.held: list[Any] = []  # Task.cancel() requests held back by a shield (msgs)

    def shielded_inside(self, index: int) -> bool:
        """Whether a shield is active inside the scope at ``index`` (-1: the task)."""
        return any(s.shield for s in self.scopes[index + 1 :])


_states: weakref.WeakKeyDictionary[Any, TaskState] = weakref.WeakKeyDictionary()


def task_state(host: Any, make: bool = True) -> TaskState | None:
    """The scope state of ``host`` (a task, or a ``ForeignTask``)."""
    state = _states.get(host)
    if state is None and make:
        state = _states[host] = TaskState()
    return state


def drop_state(host: Any) -> None:
    """Forget ``host``'s state (its last scope exited, nothing held)."""
    _states.pop(host, None)


def hold_if_shielded(task: Any, msg: Any) -> bool:
    """For ``Task.cancel``: True if a shield in ``task`` holds the request back."""
    state = _states.get(task)
    if state is None or not state.shielded_inside(-1):
        return False
    state.held.append(msg)
    return True
