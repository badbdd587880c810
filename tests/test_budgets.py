"""Budgets that keep results: a per-case cap, a whole-run budget, records streamed to
the JSON and HTML files as cases finish, and what did not run listed as such.

The acceptance case: a backend on which every case hangs (``CallSoonNeverRuns``: not
even main's first step runs) gets a full catalogue run that ends once its budget is
spent -- not after the ~25 minutes its hangs would take -- with a JSON file that lists
every planned case.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from polyloop_conformance import mutants, report
from polyloop_conformance._registry import CheckResult
from polyloop_conformance.runner import Budget, Plan, run_plan, select_cases

mutants._load()
HANGS = mutants.MUTANTS["CallSoonNeverRuns"].spec


def test_a_run_that_hangs_everywhere_ends_with_its_budget_and_lists_every_case(
    tmp_path: Path,
) -> None:
    out = tmp_path / "r.json"
    page = tmp_path / "r.html"
    cases = select_cases(None, None)
    plan = Plan(
        [HANGS], cases, case_budget=1.0, run_budget=12.0, json_path=str(out), html_path=str(page)
    )
    started = time.monotonic()
    results = run_plan(plan)
    took = time.monotonic() - started
    # Not a speed test: without the budget this run takes 251 hangs of ~6 s each.
    assert took < 12.0 + 15.0, f"the run went on {took:.0f} s past a 12 s budget"
    records = json.loads(out.read_text())
    assert [r["check"] for r in records] == cases, "the JSON does not list every case in order"
    assert [r.check for r in results] == [r["check"] for r in records]
    statuses = {r["status"] for r in records}
    assert statuses <= {"fail", "not-run"}, statuses
    hung = [r for r in records if r["status"] == "fail"]
    assert hung and all(r["detail"].startswith("hung:") for r in hung), hung[:2]
    left = [r for r in records if r["status"] == "not-run"]
    assert len(left) > len(cases) // 2, f"only {len(left)} of {len(cases)} not run"
    assert all(r["detail"].startswith("not run: budget exhausted") for r in left), left[:2]
    assert "did not run" in page.read_text(), "the HTML does not say what did not run"
    assert report.exit_code(results) == 1
    shown = io.StringIO()
    report.print_matrix(results, Console(file=shown, width=200))
    assert f"NOT RUN {len(left)} cases (not run: budget exhausted" in shown.getvalue()


def test_a_killed_run_leaves_a_valid_json_of_what_finished(tmp_path: Path) -> None:
    out = tmp_path / "partial.json"
    cases = ["scheduling.call_soon_fifo", "scheduling.call_soon_not_inline", "app.echo"]
    program = (
        "import sys; from polyloop_conformance.runner import Plan, run_plan;"
        f" run_plan(Plan(['asyncio', {HANGS!r}], {cases!r}, jobs=1, case_budget=30.0,"
        f" json_path={str(out)!r}))"
    )
    # A session of its own: the kill below ends the run and its workers at once.
    proc = subprocess.Popen([sys.executable, "-c", program], start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        finished: list[dict[str, object]] = []
        while time.monotonic() < deadline and len(finished) < len(cases):
            time.sleep(0.2)
            if out.exists():
                records = json.loads(out.read_text())  # valid at every moment
                finished = [r for r in records if r["status"] != "not-run"]
        assert len(finished) >= len(cases), "asyncio's cases did not finish in 60 s"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # in the middle of the mutant's first case
        proc.wait()
    records = json.loads(out.read_text())
    assert len(records) == 2 * len(cases), records
    mine = [r for r in records if r["backend"] == "asyncio"]
    assert all(r["status"] == "pass" for r in mine), mine
    pending = [r for r in records if r["backend"] == HANGS]
    assert all(r["status"] == "not-run" for r in pending), pending
    assert all(r["detail"] == report.PENDING for r in pending), pending


def test_the_case_budget_caps_each_case_and_the_budget_is_checked() -> None:
    plan = Plan([HANGS], ["scheduling.call_soon_fifo"], case_budget=1.0)
    (result,) = run_plan(plan)
    # Its own limit is 20 s: the verdict says the cap applied.
    assert result.status == "fail" and "after 1 s of wall-clock time" in result.detail, result
    with pytest.raises(ValueError, match="budget"):
        Budget(0)
    assert Budget(None).remaining() == float("inf") and not Budget(None).exhausted()


def test_exit_code_counts_cases_that_did_not_run() -> None:
    def rec(status: str) -> CheckResult:
        return CheckResult("c", "b", None, status, 0.0, "")  # type: ignore[arg-type]

    assert report.exit_code([rec("pass")]) == 0
    assert report.exit_code([rec("pass"), rec("not-run")]) == 1
    assert report.exit_code([rec("pass"), rec("skip")]) == 1
    assert report.exit_code([rec("pass"), rec("skip")], allow_skip=True) == 0
    assert report.exit_code([]) == 1
