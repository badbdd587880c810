"""The referee's verdicts point at the cause: exception groups unwrapped, a bare
``assert`` or an ``IndexError`` of the check's own code turned into a sentence that shows
what the check saw, and a busy loop told from one asleep without a wake-up."""

from __future__ import annotations

import linecache
from typing import Any

import polyloop
from polyloop_conformance import mutants
from polyloop_conformance.referee import describe, leaves
from polyloop_conformance.runner import run_backend

mutants._load()

#: A check's file, as the referee recognises one (by its path).
FAKE = "/somewhere/polyloop_conformance/checks/fake_check.py"
SOURCE = """
class Proto:
    def __init__(self):
        self.events = ["made"]
        self.transport = None


def bare_assert():
    proto = Proto()
    assert proto.transport is not None


def index_error():
    proto = Proto()
    return proto.events[1]


def grouped():
    try:
        raise OSError(98, "Address already in use")
    except OSError as exc:
        raise BaseExceptionGroup("unhandled errors in a TaskGroup", [exc, polyloop.Cancelled()])
"""


def _fake_check() -> dict[str, Any]:
    lines = SOURCE.splitlines(keepends=True)
    linecache.cache[FAKE] = (len(SOURCE), None, lines, FAKE)
    namespace: dict[str, Any] = {"polyloop": polyloop}
    exec(compile(SOURCE, FAKE, "exec"), namespace)
    return namespace


def _verdict(fn: Any) -> str:
    try:
        fn()
    except BaseException as exc:
        return describe(exc, "x.fake")
    raise AssertionError(f"{fn} did not raise")


def test_a_bare_assert_becomes_a_sentence_with_what_the_check_saw() -> None:
    text = _verdict(_fake_check()["bare_assert"])
    assert text.startswith(
        "the check expected `proto.transport is not None`, and it was false"
        " (the check saw proto.transport = None)"
    ), text
    assert "[x.fake, at fake_check.py:" in text
    assert "AssertionError" not in text


def test_an_index_error_of_the_check_says_what_was_missing() -> None:
    text = _verdict(_fake_check()["index_error"])
    assert text.startswith(
        "what the backend delivered did not have the shape the check expected:"
        " `return proto.events[1]` raised IndexError (list index out of range);"
        " the check saw proto.events = ['made']"
    ), text


def test_an_exception_group_shows_the_error_inside() -> None:
    text = _verdict(_fake_check()["grouped"])
    assert text.startswith("OSError: [Errno 98] Address already in use (1 of 2 exceptions"), text
    assert "inside a BaseExceptionGroup; the others: Cancelled" in text
    assert "ExceptionGroup:" not in text and "ExceptionGroup raised" not in text


def test_leaves_flattens_nested_groups() -> None:
    a, b, c = ValueError("a"), OSError("b"), KeyError("c")
    group = ExceptionGroup("outer", [a, ExceptionGroup("inner", [b, c])])
    assert leaves(group) == [a, b, c]
    assert leaves(a) == [a]


def test_a_busy_loop_is_not_blamed_on_wake_ups() -> None:
    """A sleep(0) that does not yield spins in Python code: the verdict says the loop is
    busy, not that call_soon_threadsafe failed to wake it; a loop asleep in its poll
    without a wake-up still gets "no wake-up"."""
    busy = mutants.MUTANTS["SleepZeroNoYield"].spec
    (spun,) = run_backend(busy, ["starttls.protocol_api_upgrade"], lambda r: None, 2.0)
    assert spun.status == "fail" and "the loop is busy, not asleep" in spun.detail, spun
    assert "no wake-up" not in spun.detail, spun.detail
    asleep = mutants.MUTANTS["ThreadsafeNoWakeUp"].spec
    (slept,) = run_backend(asleep, ["threads.call_soon_threadsafe"], lambda r: None, 2.0)
    assert "no wake-up (the loop sleeps in its poll at selectors.py" in slept.detail, slept
    assert "busy" not in slept.detail, slept.detail


def test_a_run_that_raises_a_group_at_its_end_names_the_error_inside() -> None:
    spec = mutants.MUTANTS["DisposalErrorGrouped"].spec
    results = run_backend(
        spec, ["run.returns_result", "timers.call_later_order"], lambda r: None, 4.0
    )
    for r in results:
        assert r.status == "fail", r
        assert "OSError: [Errno 9] Bad file descriptor" in r.detail, r.detail
        assert "inside an ExceptionGroup" in r.detail and "raised ExceptionGroup" not in r.detail
