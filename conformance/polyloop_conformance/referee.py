"""The referee: time limits and verdicts that do not run on the backend under test.

Rule: nothing here trusts the backend being judged. The suite once timed each case with
``polyloop.wait_for`` on that backend and learned its outcome from a task that backend
ran: a backend whose ``call_later`` fired at once "timed out after 20 s" in 0.006 s, and
one whose tasks swallowed exceptions passed every check, because the checks' own
``AssertionError`` was swallowed by the same bug. So:

- **The clock is the wall clock**, read by a watchdog on a real OS thread (gevent's
  originals after ``patch_all()``), never the loop's timers.
- **The outcome is a plain object.** The check's coroutine writes into a ``Case`` what it
  did (started, returned, raised what) before the backend sees any of it; after ``run()``
  the case compares that with what ``run()`` said. A check whose exception the backend
  lost still fails, and the verdict says the backend lost it.
- **A hang is diagnosed, not guessed.** At the deadline the watchdog asks the loop to run
  a probe with ``call_soon_threadsafe``. If the probe runs, the loop is alive and the check
  waited for an event that never came: the probe cancels the check, and the verdict says
  what it was waiting for. If the probe does not run, nothing wakes that loop: the verdict
  says so, and the case is stopped from outside (``on_hang``: the conformance worker
  reports and exits, so the parent starts a fresh worker for the remaining cases).
- **The loop's error log is evidence.** ``ERROR`` records of the ``polyloop``, ``asyncio``
  and ``tornado`` loggers (and Twisted's log) during a case are attached to a failure,
  and fail a check that otherwise passed, unless the check said it expected them
  (``expect_logged``): an exception in a protocol callback that only the loop saw is a
  bug the verdict must show.

Checks use three helpers from here: ``waiting_for(what)`` (what a timeout message names),
``expect_logged()``, and ``settle(session, seconds)`` (a sleep whose length the wall
clock confirms, for "nothing happens in the meantime" checks).
"""

from __future__ import annotations

import contextlib
import linecache
import logging
import os
import re
import signal
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import polyloop

__all__ = [
    "HUNG_EXIT",
    "Case",
    "Failed",
    "describe",
    "expect_logged",
    "leaves",
    "os_threads",
    "settle",
    "waiting_for",
]

#: Exit code of a conformance worker whose watchdog stopped a hung case (it has written
#: that case's record already).
HUNG_EXIT = 3
#: How long the watchdog waits for the loop to run its probe at the deadline.
PROBE_WAIT = 2.0
#: How long a case may take to unwind after the probe cancelled it.
GRACE = 3.0
#: Loggers whose ERROR records during a case are evidence.
LOGGERS = ("polyloop", "asyncio", "tornado")


def os_threads() -> tuple[Callable[..., Any], Callable[[], int], Callable[[], Any]]:
    """``start_new_thread``, ``get_ident`` and ``allocate_lock`` of real OS threads.

    After ``gevent.monkey.patch_all()`` the ``threading`` module makes greenlets, which
    run only when the hub lets them: no referee, and no test of another thread. gevent
    keeps the originals; ``gevent.monkey`` is looked at only if the process imported it.
    """
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("threading"):
        names = ["start_new_thread", "get_ident", "allocate_lock"]
        start, ident, lock = monkey.get_original("_thread", names)
        return start, ident, lock
    import _thread

    return _thread.start_new_thread, _thread.get_ident, _thread.allocate_lock


class Failed(AssertionError):
    """A verdict whose message is complete (what was expected, what happened).

    ``clause``: the id of the contract clause broken, when the check enforces several
    and knows which one failed; the report then names only that one.
    """

    def __init__(self, message: str = "", clause: str | None = None) -> None:
        super().__init__(message)
        self.clause = clause


class _Interrupt(KeyboardInterrupt):
    """Raised in the main thread by the in-process watchdog to stop a hung run."""


#: The case being judged in this process (one at a time).
_current: Case | None = None


@contextlib.contextmanager
def waiting_for(what: str | Callable[[], str]) -> Iterator[None]:
    """Name what the check waits for, for the message if the case times out there.

    ``what`` may be a callable, evaluated only then (``lambda: f"{n} of 100 bytes"``).
    Outside a judged case this does nothing.
    """
    case = _current
    if case is None:
        yield
        return
    case.waiting.append(what)
    try:
        yield
    except BaseException:
        if case.failed_while is None:  # the innermost wait an exception came through
            try:
                case.failed_while = what() if callable(what) else what
            except Exception:
                case.failed_while = "<a wait that could not describe itself>"
        raise
    finally:
        with contextlib.suppress(ValueError):
            case.waiting.remove(what)


@contextlib.contextmanager
def expect_logged() -> Iterator[list[str]]:
    """Error log records made inside this block are expected by the check (they do not
    fail it); the list it yields fills with their messages."""
    case = _current
    seen: list[str] = []
    if case is None:
        yield seen
        return
    case.expecting.append(seen)
    try:
        yield seen
    finally:
        case.expecting.remove(seen)


async def settle(session: polyloop.Session, seconds: float) -> None:
    """``session.sleep(seconds)``, confirmed by the wall clock.

    For checks of the form "nothing happens in the meantime": on a backend whose timers
    fire early such a wait would prove nothing, so it fails and names that fault.
    """
    start = time.monotonic()
    with waiting_for(f"session.sleep({seconds:g}) to return"):
        await session.sleep(seconds)
    took = time.monotonic() - start
    if took < seconds * 0.8:
        raise Failed(
            f"timers fire early: session.sleep({seconds:g}) returned after {took:.4f} s of"
            f" wall-clock time (rule: call_later(d)/sleep(d) wait at least d seconds)"
        )


_HARNESS = ("referee.py", "_registry.py", "worker.py", "runner.py", "host.py")


def _in_check(filename: str) -> bool:
    path = filename.replace("\\", "/")
    return "polyloop_conformance/checks/" in path or "polyloop_conformance/apps/" in path


def _harness(filename: str) -> bool:
    return filename.replace("\\", "/").rsplit("/", 1)[-1] in _HARNESS


def _frame_line(frame: traceback.FrameSummary) -> str:
    line = (frame.line or linecache.getline(frame.filename, frame.lineno or 0)).strip()
    return line


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside ``exc``: itself, or for an exception group every leaf of it
    (nested groups flattened), in order."""
    if isinstance(exc, BaseExceptionGroup):
        found: list[BaseException] = []
        for inner in exc.exceptions:
            found += leaves(inner)
        return found
    return [exc]


def _cause_of(exc: BaseException) -> tuple[BaseException, str]:
    """The exception that says what went wrong, and a note on where it was found.

    A backend whose ``run()`` wraps what went wrong in an ``ExceptionGroup`` (a task
    group around main) must not hide it: the verdict describes the leaf, and the first
    leaf that is not a cancellation (a cancellation is the consequence, not the cause).
    """
    if not isinstance(exc, BaseExceptionGroup):
        return exc, ""
    found = leaves(exc)
    if not found:
        return exc, ""
    causes = [e for e in found if not isinstance(e, polyloop.Cancelled)] or found
    cause = causes[0]
    kind = type(exc).__name__
    kind = f"an {kind}" if kind[0] in "AEIOU" else f"a {kind}"
    if len(found) == 1:
        note = f" (inside {kind})"
    else:
        others = ", ".join(type(e).__name__ for e in found if e is not cause)
        note = f" (1 of {len(found)} exceptions inside {kind}; the others: {others})"
    return cause, note


#: What a frame's source line shows of a value, at most.
_VALUE_CHARS = 120


def _operands(frame: Any, source: str) -> str:
    """The values of the plain names and attributes in ``source`` (an ``assert`` or the
    line that raised), read from the failing frame's locals: what the check saw. Only
    names and ``a.b`` chains are read, never calls, so nothing runs again."""
    import ast

    if frame is None or not source:
        return ""
    text = source.removeprefix("assert ").strip().removesuffix(":")
    for prefix in ("return ", "elif ", "if ", "while ", "await "):
        text = text.removeprefix(prefix)
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return ""
    shown: dict[str, str] = {}
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Name, ast.Attribute)):
            continue
        expr = ast.unparse(node)
        if expr in shown or len(shown) >= 4:
            continue
        try:
            value = _safe_lookup(node, frame)
            if callable(value) or isinstance(value, type) or hasattr(value, "__path__"):
                continue
            rendered = repr(value)
        except Exception:  # a value that cannot be shown is left out, never raised
            continue
        if re.fullmatch(r"<.* at 0x[0-9a-f]+>", rendered):
            continue  # an object's default repr says nothing
        if len(rendered) > _VALUE_CHARS:
            rendered = rendered[: _VALUE_CHARS - 3] + "..."
        shown[expr] = rendered
    return ", ".join(f"{k} = {v}" for k, v in shown.items())


def _safe_lookup(node: Any, frame: Any) -> Any:
    import ast

    if isinstance(node, ast.Name):
        if node.id in frame.f_locals:
            return frame.f_locals[node.id]
        if node.id in frame.f_globals:
            return frame.f_globals[node.id]
        raise LookupError(node.id)
    if isinstance(node, ast.Attribute) and isinstance(node.value, (ast.Name, ast.Attribute)):
        base = _safe_lookup(node.value, frame)
        value = getattr(type(base), node.attr, None)
        if isinstance(value, property) or callable(value):
            raise LookupError(node.attr)  # a property runs code: not read
        return base.__dict__[node.attr] if hasattr(base, "__dict__") else getattr(base, node.attr)
    raise LookupError(type(node).__name__)


def _frame_of(exc: BaseException, wanted: traceback.FrameSummary | None) -> Any:
    """The live frame of ``wanted`` in ``exc``'s traceback (for its locals)."""
    tb = exc.__traceback__
    found = None
    while tb is not None:
        code = tb.tb_frame.f_code
        if (
            wanted is not None
            and code.co_filename == wanted.filename
            and tb.tb_lineno == wanted.lineno
        ):
            found = tb.tb_frame
        tb = tb.tb_next
    return found


#: Exceptions that, raised by the check's own code, mean "what the backend delivered did
#: not have the shape the contract promises" (an element missing, a key absent...).
_SHAPE_ERRORS = (IndexError, KeyError, AttributeError, ValueError, TypeError, StopIteration)


#: A message that is only a value's repr: ``LockStatistics(...)``, ``[...]``, ``<x>``.
_REPR = re.compile(r"^[\w.]*[(\[{<]")


def _condition(source: str) -> str:
    """The condition of an ``assert`` line (without its message), or ``""``."""
    import ast

    if not source.startswith("assert"):
        return ""
    try:
        node = ast.parse(source).body[0]
    except (SyntaxError, IndexError):  # an assert that spans lines: its first line
        return source.removeprefix("assert").strip().rstrip("(").strip()
    return ast.unparse(node.test) if isinstance(node, ast.Assert) else ""


def describe(exc: BaseException, check: str | None = None) -> str:
    """A failure as a backend author reads it: a sentence, and where in the check.

    An exception group is unwrapped (its first leaf that is not a cancellation is the
    cause). An ``assert`` without a message becomes a sentence that shows the condition
    and the values the check saw; an ``IndexError``/``KeyError``/... raised by the
    check's own code says what it could not find. The location is the innermost frame
    of the conformance package (the check or its helper), never the runner's.
    """
    exc, note = _cause_of(exc)
    if isinstance(exc, Failed):
        return str(exc) + note
    tb = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in tb if _in_check(f.filename)]
    if not ours:
        ours = [f for f in tb if "polyloop_conformance" in f.filename and not _harness(f.filename)]
    # The check's own line, and the shared helper under it if the failure is in one.
    own = [f for f in ours if not f.filename.endswith("_util.py")]
    where = own[-1] if own else (ours[-1] if ours else (tb[-1] if tb else None))
    helper = ours[-1] if ours and own and ours[-1] is not own[-1] else None
    inner = tb[-1] if tb else None
    text = str(exc)
    if isinstance(exc, AssertionError):
        failing = ours[-1] if ours else where  # the frame of the assert statement
        source = _frame_line(failing) if failing is not None else ""
        condition = _condition(source)
        seen = _operands(_frame_of(exc, failing), condition) if condition else ""
        seen = f" (the check saw {seen})" if seen else ""
        if not text:
            if condition:
                text = f"the check expected `{condition}`, and it was false{seen}"
            else:
                text = "the check found the contract broken at an assertion without a message"
        elif condition and (len(text.split()) < 3 or _REPR.match(text)):
            # A message that is only a value (a list, a statistics record) is no sentence.
            text = f"the check expected `{condition}`, and it was false: {text}{seen}"
    elif (
        isinstance(exc, _SHAPE_ERRORS)
        and inner is not None
        and _in_check(inner.filename)
        and not isinstance(exc, polyloop.Cancelled)
    ):
        # Raised by the check's own code, not by the backend: what the backend gave it
        # did not have the shape the contract promises.
        source = _frame_line(inner)
        seen = _operands(_frame_of(exc, inner), source)
        seen = f"; the check saw {seen}" if seen else ""
        reason = f" ({text})" if text else ""
        text = (
            f"what the backend delivered did not have the shape the check expected: "
            f"`{source}` raised {type(exc).__name__}{reason}{seen}"
        )
    else:
        text = f"{type(exc).__name__}: {text}" if text else f"{type(exc).__name__} raised"
    text += note
    if where is not None:
        at = f"{where.filename.rsplit('/', 1)[-1]}:{where.lineno}"
        if helper is not None:
            at += f" via {helper.filename.rsplit('/', 1)[-1]}:{helper.lineno} {helper.name}()"
        if inner is not None and inner is not where and not _in_check(inner.filename):
            # Raised by the backend (or the core) under the check's call: say where.
            at += f", raised in {inner.filename.rsplit('/', 1)[-1]}:{inner.lineno} {inner.name}()"
        text += f" [{check}, at {at}]" if check else f" (at {at})"
    return text


class _LogCapture(logging.Handler):
    def __init__(self, case: Case) -> None:
        super().__init__(logging.ERROR)
        self.case = case

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"{record.levelname} {record.name}: {record.getMessage()}"
            if record.exc_info and record.exc_info[1] is not None:
                exc = record.exc_info[1]
                text += f" -- {type(exc).__name__}: {exc}"
            self.case.log(text, observed=self._observed(record.name))
        except Exception:  # a log handler must never raise into the loop
            pass

    def snapshot(self) -> None:
        """The handlers there before the case (pytest's, the application's)."""
        self.before = {id(h) for h in _chain_handlers("")}
        for name in LOGGERS:
            self.before |= {id(h) for h in logging.getLogger(name).handlers}

    def _observed(self, name: str) -> bool:
        """Whether the check itself listens to this record's logger: a handler that
        came during the case (such a check asserts on what it sees)."""
        return any(id(h) not in self.before and h is not self for h in _chain_handlers(name))


def _chain_handlers(name: str) -> list[logging.Handler]:
    """The handlers a record of logger ``name`` reaches (it and its ancestors)."""
    found: list[logging.Handler] = []
    logger: logging.Logger | None = logging.getLogger(name) if name else logging.getLogger()
    while logger is not None:
        found += logger.handlers
        if not logger.propagate:
            break
        logger = logger.parent
    return found


class Case:
    """One judged case: the watchdog, the log capture and the outcome of ``main``.

    ``with Case(name, timeout) as case: backend.run(case.main(fn))`` runs ``fn(session)``
    as ``main``; then ``case.judge(...)`` raises the verdict if it failed. ``on_hang`` is
    called (from the watchdog thread) with the verdict of a case that could not be
    stopped; the default interrupts the main thread where it can, and otherwise waits.
    """

    def __init__(
        self, name: str, timeout: float, on_hang: Callable[[str], None] | None = None
    ) -> None:
        self.name = name
        self.timeout = timeout
        self.on_hang = on_hang
        self.session: polyloop.Session | None = None
        self.task: Any = None
        self.started = False
        self.finished = False
        self.error: BaseException | None = None
        self.waiting: list[str | Callable[[], str]] = []
        #: What the check waited for when an exception came through that wait.
        self.failed_while: str | None = None
        self.expecting: list[list[str]] = []
        self.logged: list[str] = []
        self.unexpected: list[str] = []
        self.timed_out: str | None = None  # the timeout verdict, once the deadline passed
        self.began = time.monotonic()
        self._token = object()
        start, self._ident, allocate = os_threads()
        self._done = allocate()
        self._done.acquire()
        self._start_thread = start
        self._allocate = allocate
        self._main_ident = self._ident()
        #: The thread that runs the loop under test (where the check's coroutine runs).
        self._loop_ident = self._main_ident
        self._handler = _LogCapture(self)
        self._twisted: Any = None
        self._old_signal: Any = None

    # --- the case's frame: watchdog and log capture ---

    def __enter__(self) -> Case:
        global _current
        _current = self
        self._handler.snapshot()
        for name in LOGGERS:
            logging.getLogger(name).addHandler(self._handler)
        self._watch_twisted_log()
        self._install_interrupt()
        self._start_thread(self._watch, ())
        return self

    def __exit__(self, *exc_info: object) -> None:
        global _current
        self._done.release()
        for name in LOGGERS:
            logging.getLogger(name).removeHandler(self._handler)
        if self._twisted is not None:
            from twisted.logger import globalLogPublisher

            globalLogPublisher.removeObserver(self._twisted)
        if self._old_signal is not None:
            signal.signal(signal.SIGUSR1, self._old_signal)
        _current = None

    def log(self, text: str, observed: bool = False) -> None:
        """An error record seen during the case (``observed``: the check listens to that
        log itself, so the record is what it expects)."""
        self.logged.append(text)
        if self.expecting:
            self.expecting[-1].append(text)
        elif not observed:
            self.unexpected.append(text)

    def _watch_twisted_log(self) -> None:
        if "twisted.logger" not in sys.modules:
            return
        from twisted.logger import LogLevel, formatEvent, globalLogPublisher

        def observe(event: dict[str, Any]) -> None:
            try:
                failure = event.get("log_failure")
                level = event.get("log_level")
                if failure is None and level not in (LogLevel.error, LogLevel.critical):
                    return
                text = f"twisted: {formatEvent(event)}"
                if failure is not None:
                    text += f" -- {failure.type.__name__}: {failure.value}"
                self.log(text)
            except Exception:
                pass

        self._twisted = observe
        globalLogPublisher.addObserver(observe)

    def _install_interrupt(self) -> None:
        # In-process, a hung run can only be stopped by a signal to the main thread,
        # which interrupts a loop blocked in its poll. Only if nobody else uses SIGUSR1.
        if self.on_hang is not None or not hasattr(signal, "pthread_kill"):
            return
        try:
            if signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, None):
                return
            self._old_signal = signal.signal(signal.SIGUSR1, self._raise_interrupt)
        except ValueError:  # not the main thread
            self._old_signal = None

    def _raise_interrupt(self, signum: int, frame: Any) -> None:
        raise _Interrupt

    # --- the watchdog (a real OS thread; it never raises) ---

    def _watch(self) -> None:
        try:
            if self._done.acquire(True, self.timeout):
                self._done.release()
                return
            verdict = self._at_deadline()
            if self._done.acquire(True, GRACE):
                self._done.release()
                return
            self._hung(verdict + self._not_unwound())
        except BaseException:  # the referee must not crash the case it judges
            pass

    def _waiting_text(self) -> str:
        notes = []
        for what in self.waiting:
            try:
                notes.append(what() if callable(what) else what)
            except Exception as exc:
                notes.append(f"<{type(exc).__name__} describing the wait>")
        return f", waiting for {notes[-1]}" if notes else ""

    def _at_deadline(self) -> str:
        """Probe the loop, cancel the check if the loop answers, return the verdict."""
        waiting = self._waiting_text()
        head = f"not finished after {self.timeout:g} s of wall-clock time"
        session = self.session
        if session is None or not self.started:
            self.timed_out = (
                f"hung: run() had not started the check's coroutine after {self.timeout:g} s"
                " of wall-clock time"
            )
            places = list(dict.fromkeys(self._sample_loop_thread(None) or []))
            if len(places) > 1:
                self.timed_out += (
                    f"; the thread that called run() is busy running Python code ({places[0]}"
                    f", {places[1]}...): the loop never gets to main's first step"
                )
            elif places and _asleep(places[0]):
                self.timed_out += (
                    f"; the loop sleeps in its poll at {places[0]}: main's first step"
                    " (scheduled with call_soon) never ran"
                )
            elif places:
                self.timed_out += f"; the thread that called run() is blocked at {places[0]}"
            return self.timed_out
        answered = self._allocate()
        answered.acquire()
        asked = time.monotonic()
        # Set before the probe can end the case: the verdict is read as soon as it ends.
        self.timed_out = f"timed out: {head}{waiting}"

        def probe() -> None:
            delay = (time.monotonic() - asked) * 1000
            self.timed_out = (
                f"timed out: {head}{waiting}. The loop is alive (a call_soon_threadsafe from"
                f" the referee's thread ran {delay:.1f} ms later), so what the check waited"
                " for never happened"
            )
            answered.release()
            task = self.task
            if task is not None and not self.finished:
                task.cancel()

        try:
            session.call_soon_threadsafe(probe)
        except BaseException as exc:
            self.timed_out = (
                f"hung: {head}{waiting}; and call_soon_threadsafe from the referee's thread"
                f" raised {type(exc).__name__}: {exc}"
            )
            return self.timed_out
        seen = self._sample_loop_thread(answered)
        if seen is None:
            return self.timed_out  # the probe ran, and wrote the verdict
        unanswered = (
            f"hung: {head}{waiting}; and a call_soon_threadsafe from the referee's thread"
            f" did not run within {PROBE_WAIT:g} s"
        )
        places = list(dict.fromkeys(seen))
        shown = ", ".join(places[:3]) + (f" and {len(places) - 3} more" if len(places) > 3 else "")
        if len(places) > 1:
            # Python code ran all the while: not a loop asleep without a wake-up, but a
            # loop that never gets back to its poll and its queue's far end.
            self.timed_out = (
                f"{unanswered}: the loop is busy, not asleep -- its thread ran Python code"
                f" throughout ({len(seen)} samples in {len(places)} places: {shown}) and"
                " never reached the callback. A loop that never polls starves what other"
                " threads schedule: a ready queue run newest-first (call_soon is FIFO), a"
                " sleep(0) that does not yield to the loop, or a callback that reschedules"
                " itself at once"
            )
        elif places and _asleep(places[0]):
            self.timed_out = (
                f"{unanswered}: no wake-up (the loop sleeps in its poll at {places[0]};"
                " call_soon_threadsafe must wake a loop that waits in its poll)"
            )
        elif places:
            self.timed_out = (
                f"{unanswered}: the loop's thread is blocked at {places[0]} the whole time"
                " (a callback, or the loop itself, waits in a call that does not return;"
                " nothing may block the loop's thread)"
            )
        else:
            self.timed_out = (
                f"{unanswered}: no wake-up (the loop is blocked or stopped;"
                " call_soon_threadsafe must wake a loop that waits in its poll)"
            )
        return self.timed_out

    def _sample_loop_thread(self, answered: Any) -> list[str] | None:
        """Wait up to ``PROBE_WAIT`` for the probe (``answered``; ``None``: no probe, just
        look), looking at where the loop's thread is every 0.1 s: ``None`` if the probe
        ran, else the places seen
        (``file.py:line function()`` of the innermost Python frame, one per look)."""
        seen: list[str] = []
        deadline = time.monotonic() + PROBE_WAIT
        while True:
            pause = min(0.1, max(0.0, deadline - time.monotonic()))
            if answered is None:
                # A real lock's timeout, not time.sleep: after patch_all() that would be
                # gevent's, in a thread without a hub.
                never = self._allocate()
                never.acquire()
                never.acquire(True, pause)
            elif answered.acquire(True, pause):
                return None
            frame = sys._current_frames().get(self._loop_ident)
            if frame is not None:
                code = frame.f_code
                name = code.co_filename.replace("\\", "/").rsplit("/", 1)[-1]
                seen.append(f"{name}:{frame.f_lineno} {code.co_name}()")
            del frame
            if time.monotonic() >= deadline:
                return seen

    def _not_unwound(self) -> str:
        if self.timed_out and self.timed_out.startswith("timed out"):
            return f"; cancelling the check did not end the case within {GRACE:g} s"
        return ""

    def _hung(self, verdict: str) -> None:
        verdict = self._with_logs(verdict)
        if self.on_hang is not None:
            self.on_hang(verdict)
            return
        if self._old_signal is not None:
            for _ in range(20):  # until it lands outside a callback that swallows it
                signal.pthread_kill(self._main_ident, signal.SIGUSR1)
                if self._done.acquire(True, 0.5):
                    self._done.release()
                    return

    # --- main, as the backend runs it ---

    def begin(self, session: polyloop.Session) -> None:
        """Note that the code under test now runs, as ``session``'s running task."""
        if self._twisted is None:
            # A backend that imported Twisted only as it started (mixed mode, in the
            # first case of a process): without this its log went unwatched, and a check
            # of what is logged failed or passed by the order the cases ran in.
            self._watch_twisted_log()
        self.session = session
        self.task = _running_task()
        self._loop_ident = self._ident()
        self.started = True

    def main(self, fn: Callable[[polyloop.Session], Awaitable[Any]]) -> Callable[[], Any]:
        """The ``main`` to pass to ``run``: ``fn(session)``, its outcome noted here."""

        async def main() -> object:
            session = polyloop.current_backend()
            self.begin(session)
            try:
                await fn(session)
            except BaseException as exc:
                self.error = exc
                raise
            self.finished = True
            return self._token

        return main

    def release(self) -> None:
        """Drop what the case holds of the run (its task, the exception and its frames):
        the watchdog thread may outlive the case by a moment, and with it this object."""
        self.task = None
        self.error = None
        self.session = None

    # --- the verdict ---

    def describe(self, exc: BaseException) -> str:
        """``describe(exc)``, plus what the check was waiting for if the exception is not
        an assertion (an error raised by the backend under a wait says where it came)."""
        text = describe(exc, self.name)
        if self.failed_while and not isinstance(exc, AssertionError):
            text += f"\n  raised while waiting for {self.failed_while}"
        return text

    def _with_logs(self, text: str) -> str:
        if not self.logged:
            return text
        shown = "; ".join(self.logged[:3])
        more = f" (and {len(self.logged) - 3} more)" if len(self.logged) > 3 else ""
        return f"{text}\n  logged during the case: {shown}{more}"

    def judge(self, raised: BaseException | None, returned: object = None) -> None:
        """Raise the verdict of the case (``SkipCheck`` passes through), or return."""
        from ._registry import SkipCheck

        if self.timed_out is not None:
            raise Failed(self._with_logs(self.timed_out))
        if isinstance(raised, _Interrupt):
            raise Failed(self._with_logs("hung: stopped by the referee"))
        error = self.error
        if error is not None:
            if isinstance(error, SkipCheck):
                raise error
            text = self.describe(error)
            if raised is None:
                text += (
                    "\n  and run() returned normally: the backend lost the exception the"
                    " check raised (a failed task's exception must reach whoever awaits it)"
                )
            elif (
                raised is not error
                and not isinstance(raised, polyloop.Cancelled)
                and error not in leaves(raised)
            ):
                text += f"\n  and run() raised {describe(raised)} instead of it"
            raise Failed(self._with_logs(text), getattr(error, "clause", None))
        if self.finished:
            if raised is not None:
                raise Failed(
                    self._with_logs(
                        f"the check passed, but run() then raised {describe(raised)}"
                        " (the end of the session, or the loop's disposal, failed)"
                    )
                )
            if returned is not self._token:
                raise Failed(
                    f"the check passed, but run() returned {returned!r} instead of main's"
                    " result (rule: run(main) returns what main returns)"
                )
            if self.unexpected:
                shown = "; ".join(self.unexpected[:3])
                raise Failed(
                    f"the check passed, but the loop logged an error during it: {shown}"
                    " (an exception escaped a callback: a protocol or scheduled callback raised)"
                )
            return
        if self.started:
            waiting = self._waiting_text()
            if raised is not None:
                raise Failed(
                    self._with_logs(
                        f"run() raised {describe(raised)} while the check was still suspended"
                        f"{waiting}"
                    )
                )
            raise Failed(
                self._with_logs(
                    f"run() returned {returned!r} while the check was still suspended at an"
                    f" await{waiting} (rule: run(main) runs main to completion)"
                )
            )
        if raised is not None:
            text = f"run() raised before the check started: {describe(raised)}"
            raise Failed(self._with_logs(text))
        raise Failed(f"run() returned {returned!r} without ever starting the check's coroutine")


#: Where a loop waits for I/O: the innermost Python frame of a loop asleep in its poll
#: (selectors' select, Twisted's doPoll/doSelect/doKEvent, gevent's hub).
_POLLS = frozenset(
    {"select", "poll", "_poll", "epoll", "control", "doPoll", "doSelect", "doKEvent",
     "doIteration", "wait", "switch", "run"}
)  # fmt: skip


def _asleep(place: str) -> bool:
    """Whether ``file.py:line function()`` is a loop waiting in its poll."""
    where, _, function = place.partition(" ")
    return function.removesuffix("()") in _POLLS or where.startswith("selectors.py")


def _running_task() -> Any:
    """What the watchdog's probe cancels: the polyloop task running the check, or the
    host's asyncio task (host mode), or None (then only ``on_hang`` can stop it)."""
    task = polyloop.current_task()
    if task is not None:
        return task
    import asyncio

    try:
        return asyncio.current_task()
    except RuntimeError:
        return None


class JudgedBackend:
    """For synchronous checks: a backend whose every ``run`` is judged like a case's.

    The check calls ``run(main, *args)`` itself; this records ``main``'s outcome outside
    the backend and refuses a run that lost main's exception, returned something else
    than main's result, or returned while main was still suspended.
    """

    def __init__(self, backend: Any, case: Case) -> None:
        self._backend = backend
        self._case = case

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def __repr__(self) -> str:
        return repr(self._backend)

    def run(self, main: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        case = self._case
        seen: dict[str, Any] = {}

        async def judged(*a: Any) -> Any:
            case.begin(polyloop.current_backend())
            seen["started"] = True
            try:
                value = await main(*a)
            except BaseException as exc:
                seen["error"] = exc
                raise
            seen["value"] = value
            return value

        if not callable(main):  # the check wants run()'s own refusal
            return self._backend.run(main, *args)
        try:
            returned = self._backend.run(judged, *args)
        except _Interrupt:
            raise
        except BaseException as exc:
            error = seen.get("error")
            interrupted = isinstance(exc, KeyboardInterrupt) and isinstance(
                error, polyloop.Cancelled
            )
            if "error" in seen and exc is not error and not isinstance(exc, polyloop.Cancelled):
                if interrupted:  # Ctrl-C cancelled main, and run() says so (Backend.run)
                    raise
                if error in leaves(exc):
                    raise Failed(
                        f"run() raised {type(exc).__name__} around main's {error!r}: run must"
                        " propagate main's exception unchanged, not wrapped"
                    ) from exc
                raise Failed(
                    f"run() raised {describe(exc)}, but main raised {error!r}: run must"
                    " propagate main's exception unchanged"
                ) from exc
            if "value" in seen:
                raise Failed(
                    f"main returned {seen['value']!r}, but run() then raised {describe(exc)}"
                    " (the end of the session, or the loop's disposal, failed; rule: run(main)"
                    " returns what main returns)"
                ) from exc
            if seen.get("started") and "error" not in seen:
                raise Failed(
                    f"run() raised {describe(exc)} while main was still suspended at an await"
                ) from exc
            raise
        if "error" in seen:
            raise Failed(
                f"run() returned {returned!r} although main raised {seen['error']!r}: the"
                " backend lost main's exception (a failed task's exception must reach whoever"
                " awaits it)"
            )
        if not seen.get("started"):
            raise Failed(f"run() returned {returned!r} without ever starting main")
        if "value" not in seen:
            raise Failed(
                f"run() returned {returned!r} while main was still suspended at an await"
                " (rule: run(main) runs main to completion)"
            )
        if returned is not seen["value"]:
            raise Failed(
                f"run() returned {returned!r}, but main returned {seen['value']!r}"
                " (rule: run(main) returns what main returns)"
            )
        return returned


def run_judged(
    name: str,
    make_backend: Callable[[], Any],
    fn: Callable[..., Any],
    timeout: float,
    *,
    sync: bool = False,
    on_hang: Callable[[str], None] | None = None,
) -> None:
    """Run one case under the referee; raise its verdict (``Failed``/``SkipCheck``)."""
    case = Case(name, timeout, on_hang)
    try:
        _judge_run(case, make_backend, fn, sync)
    finally:
        case.release()


def _judge_run(
    case: Case, make_backend: Callable[[], Any], fn: Callable[..., Any], sync: bool
) -> None:
    from ._registry import SkipCheck

    with case:
        if sync:
            try:
                fn(lambda: JudgedBackend(make_backend(), case))
            except SkipCheck:
                raise
            except _Interrupt:
                interrupted = True
            except BaseException as exc:
                if case.timed_out is None:
                    text = case._with_logs(case.describe(exc))
                    raise Failed(text, getattr(exc, "clause", None)) from exc
                interrupted = True
            else:
                interrupted = False
                if case.timed_out is None and case.unexpected:
                    shown = "; ".join(case.unexpected[:3])
                    raise Failed(
                        f"the check passed, but the loop logged an error during it: {shown}"
                        " (an exception escaped a callback)"
                    )
            if case.timed_out is not None:
                raise Failed(case._with_logs(case.timed_out))
            if interrupted:
                raise Failed(case._with_logs("hung: stopped by the referee"))
            return
        raised: BaseException | None = None
        returned: object = None
        try:
            returned = make_backend().run(case.main(fn))
        except BaseException as exc:
            raised = exc
    case.judge(raised, returned)


def exit_on_hang(report: Callable[[str], None]) -> Callable[[str], None]:
    """``on_hang`` for a worker process: report the verdict, then end the process (the
    parent starts a fresh worker for the cases left)."""

    def on_hang(verdict: str) -> None:
        try:
            report(verdict)
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(HUNG_EXIT)

    return on_hang
