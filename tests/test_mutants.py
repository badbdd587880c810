"""The suite tested with deliberately broken backends (``polyloop_conformance.mutants``).

Every mutant -- one plausible bug in a working backend -- must be caught by the checks
it names, each failure saying the broken rule (the mutant's expected words), in plain
conformance workers as a third party would run them. Then the referee itself: a backend
that loses task exceptions, fires timers early or never wakes up gets a verdict that
names that fault, in process, in worker processes, in host mode and across backends.

Each case runs with a 4 s limit here (``run_mutants(timeout=4)``), so that the mutants
that hang cost seconds; ``python -m polyloop_conformance.mutants --full`` runs the whole
catalogue on every mutant (outside CI).
"""

from __future__ import annotations

import re
import time

import pytest

import polyloop
import polyloop_conformance as pc
from polyloop_conformance import mutants
from polyloop_conformance.host import host_label
from polyloop_conformance.runner import Plan, run_backend, run_plan, select_cases

pytestmark = pytest.mark.timeout(900)

mutants._load()
NAMES = sorted(mutants.MUTANTS)
LAYERS = {
    "scheduling", "timers", "futures", "tasks", "cancellation", "transports", "flow", "tls",
    "udp", "unix", "shutdown", "threads", "context", "errors", "readiness", "lifecycle",
}  # fmt: skip


@pytest.fixture(scope="module")
def outcomes() -> dict[str, list[pc.CheckResult]]:
    """Every mutant's own checks, in workers, two at a time."""
    return mutants.run_mutants(timeout=4.0, jobs=2)


def test_the_catalogue_is_large_and_covers_every_layer() -> None:
    assert len(NAMES) >= 60, f"only {len(NAMES)} mutants"
    layers = {m.layer for m in mutants.MUTANTS.values()}
    assert layers >= LAYERS, f"no mutant on {sorted(LAYERS - layers)}"
    for m in mutants.MUTANTS.values():
        assert m.checks and m.expect, f"{m.name} names no check or no expected words"
        assert select_cases(list(m.checks), []), f"{m.name}: no check matches {m.checks}"
        assert isinstance(polyloop.load_backend(m.spec), polyloop.Backend), m.spec


@pytest.mark.parametrize("name", NAMES)
def test_mutant_is_killed_with_a_message_naming_the_rule(
    name: str, outcomes: dict[str, list[pc.CheckResult]]
) -> None:
    m = mutants.MUTANTS[name]
    results = outcomes[name]
    killed, problems = mutants.verdict(m, results)
    shown = "\n".join(f"  {r.check}: {r.status} {r.detail[:400]}" for r in results)
    assert killed, f"{name} ({m.rule}) survived: {problems}\n{shown}"


def test_a_timeout_is_never_claimed_faster_than_it_was(
    outcomes: dict[str, list[pc.CheckResult]],
) -> None:
    """The referee's clock is the wall clock: a "timed out after N s" verdict took N s."""
    for name, results in outcomes.items():
        for r in results:
            found = re.search(r"not finished after ([\d.]+) s of wall-clock time", r.detail)
            if found:
                assert r.seconds >= float(found.group(1)) * 0.9, (name, r.seconds, r.detail)


# --- the referee, on the faults the issue names ---


def test_swallowed_task_errors_fail_in_process_and_name_the_fault() -> None:
    backend = mutants.MUTANTS["TaskSwallowsErrors"].spec
    result = pc.run_check(
        pc.CHECKS["tasks.spawn_exception"], lambda: polyloop.load_backend(backend), "m"
    )
    assert result.status == "fail", result
    assert "lost its exception" in result.detail, result.detail
    assert "run() returned normally: the backend lost the exception" in result.detail


def test_early_timers_are_named_not_reported_as_timeouts() -> None:
    spec = mutants.MUTANTS["CallLaterAtOnce"].spec
    cases = select_cases(["timers", "tasks.wait_for*", "flow.pause_reading"], ["echo"])
    results = run_backend(spec, cases, lambda r: None, timeout=4.0)
    failed = [r for r in results if r.status == "fail"]
    assert failed, results
    for r in failed:
        assert "timed out after 20 s" not in r.detail and "nothing within" not in r.detail, r
    early = [r for r in failed if "timers fire early" in r.detail]
    assert {r.check for r in early} >= {"timers.call_later_delay", "timers.sleep_duration"}, [
        (r.check, r.detail[:200]) for r in failed
    ]


def test_a_loop_that_never_wakes_is_reported_as_hung_and_the_run_goes_on() -> None:
    spec = mutants.MUTANTS["ThreadsafeNoWakeUp"].spec
    started = time.monotonic()
    results = run_backend(
        spec, ["threads.call_soon_threadsafe", "scheduling.call_soon_fifo"], lambda r: None, 2.0
    )
    by_name = {r.check: r for r in results}
    hung = by_name["threads.call_soon_threadsafe"]
    assert hung.status == "fail" and "no wake-up" in hung.detail, hung
    assert hung.detail.startswith("hung:"), hung.detail
    # The watchdog reported it and ended that worker; a fresh one ran the next case.
    assert by_name["scheduling.call_soon_fifo"].status == "pass", by_name
    assert time.monotonic() - started < 60


def test_the_referee_judges_host_mode_too() -> None:
    spec = mutants.MUTANTS["AsyncioTaskSwallowsErrors"].spec + ":native_tls=true"
    (result,) = run_backend(host_label(spec), ["tasks.spawn_exception"], lambda r: None, 4.0)
    assert result.backend.endswith("@host")
    assert result.status == "fail" and "lost its exception" in result.detail, result


def test_the_referee_judges_cross_runs_too(tmp_path: object) -> None:
    """A client on a backend with early timers fails its app with that fault named."""
    spec = mutants.MUTANTS["CallLaterAtOnce"].spec
    plan = Plan(["asyncio", spec], [], cross_apps=["http"], timeout=10.0)
    results = run_plan(plan)
    mine = [r for r in results if r.client_backend == spec]
    assert mine and all(r.status == "fail" for r in mine), mine
    assert all("timers fire early" in r.detail for r in mine), [r.detail for r in mine]
    good = [r for r in results if r.backend == r.client_backend == "asyncio"]
    assert good and all(r.status == "pass" for r in good), good


def test_an_error_seen_only_in_the_log_fails_the_check() -> None:
    """A protocol callback that raises inside the loop (connection_made called twice)
    shows in the verdict, although the check's own assertions might not see it."""
    spec = mutants.MUTANTS["MadeTwice"].spec
    (result,) = run_backend(spec, ["protocol.callback_order"], lambda r: None, 4.0)
    assert result.status == "fail", result
    assert "logged" in result.detail and "InvalidStateError" in result.detail, result.detail


# --- verdicts that do not depend on the backend under test ---


def test_a_late_data_path_fails_by_its_clause_id() -> None:
    """A transport that delivers each chunk a loop iteration late through the loop's own
    queue (not session.call_soon, which the old check watched) fails the data-path rule,
    judged from outside by what a plain socket sent and when the protocol saw it."""
    spec = mutants.MUTANTS["DataThroughOwnQueue"].spec
    (result,) = run_backend(spec, ["protocol.direct_data_path"], lambda r: None, 10.0)
    assert result.status == "fail", result
    assert "one loop iteration after the transport's socket was readable" in result.detail
    assert "\n  rule [protocol.data_path.direct]: " in result.detail, result.detail


def test_two_end_rules_name_the_end_at_fault() -> None:
    """A backend that never sends resets and one that reports resets as EOF fail with
    messages naming different ends: the other end is a plain socket, not the backend."""
    checks = ["abort.peer_reset", "abort.reset_reported", "abort.peer_stream_reset"]
    never_resets = run_backend(
        mutants.MUTANTS["AbortWithoutReset"].spec, checks, lambda r: None, 10.0
    )
    resets_as_eof = run_backend(mutants.MUTANTS["ResetAsEof"].spec, checks, lambda r: None, 10.0)
    sender = [r for r in never_resets if r.status == "fail"]
    receiver = [r for r in resets_as_eof if r.status == "fail"]
    assert [r.check for r in sender] == ["abort.peer_reset"], never_resets
    assert {r.check for r in receiver} == {"abort.reset_reported", "abort.peer_stream_reset"}
    for r in sender:
        assert "the aborting end (the backend under test)" in r.detail, r.detail
        assert "receiving end" not in r.detail and "[transport.abort.resets_peer]" in r.detail
    for r in receiver:
        assert "the receiving end (the backend under test)" in r.detail, r.detail
        assert "aborting end" not in r.detail and "[transport.reset.not_eof]" in r.detail


def test_every_mutant_failure_names_a_clause(outcomes: dict[str, list[pc.CheckResult]]) -> None:
    """The referee prints the clause with every failure of a check."""
    for name, results in outcomes.items():
        for r in results:
            if r.status == "fail" and not r.check.startswith("app."):
                assert "\n  rule [" in r.detail, (name, r.check, r.detail)
