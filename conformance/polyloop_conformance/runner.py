"""The parent side of a conformance run: plans cases, runs workers, collects records.

Rule: the parent never imports a framework. It starts ``worker`` processes, reads their
JSON lines, and turns every silence into a record: a worker that dies or hangs leaves
``fail`` records that say so, never missing rows. Two workers run at a time by default
(the machine this was built for has two cores).

Budgets keep results: each case's limit may be capped (``Plan.case_budget``) and the
whole run bounded (``Plan.run_budget``); when the run's budget runs out the workers are
stopped, and every planned case without a verdict is recorded as ``not-run`` with the
reason. With ``Plan.json_path``/``html_path`` the records are written as cases finish
(``report.LiveReport``): a run that is killed leaves a valid file that lists every
planned case, those that never ran marked so.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ._registry import CHECKS, CheckResult, with_rules
from .apps import APPS
from .host import host_label, parse_host_label
from .referee import HUNG_EXIT

__all__ = ["Budget", "Plan", "run_backend", "run_plan", "select_cases"]

Progress = Callable[[CheckResult], None]

#: Slack, beyond a case's own timeout, before the parent calls a worker hung. The
#: worker's own watchdog (``referee.py``) answers first, within a few seconds of the
#: timeout; the parent's limit catches a worker whose watchdog could not run at all.
HANG_SLACK = 20.0


@dataclass
class Plan:
    """What to run: cases per backend, and the apps to cross between backends."""

    backends: list[str]
    cases: list[str]
    cross_apps: list[str] = field(default_factory=list)
    jobs: int = 2
    #: Host mode: each case starts inside a loop the framework runs (``host.py``).
    host: bool = False
    #: Every case's time limit in seconds, instead of its own (None: its own).
    timeout: float | None = None
    #: Mixed mode: ``backends`` are framework names, and each column is that framework's
    #: session inside the mixed thread (``X@mixed``, run as ``mixed:session=X``); the
    #: cross matrix pairs them inside one thread.
    mixed: bool = False
    #: A cap on every case's time limit in seconds (its own, or ``timeout``), or None.
    case_budget: float | None = None
    #: The whole run's budget in seconds, or None: once spent, the workers are stopped
    #: and the cases left are recorded as ``not-run`` ("not run: budget exhausted").
    run_budget: float | None = None
    #: Write the records here as the cases finish (JSON: a list of records; HTML: the
    #: report page), each file complete and valid at every moment.
    json_path: str | None = None
    html_path: str | None = None

    def planned(self) -> list[tuple[str, str, str | None]]:
        """Every case the plan will record: (case, backend column, client column)."""
        keys: list[tuple[str, str, str | None]] = [
            (case, label, None) for label in self.labels() for case in self.cases
        ]
        sides = self.cross_labels() if self.cross_apps else []
        for server in sides:
            for client in sides:
                keys += [(f"app.{a}", server, client) for a in self.cross_apps]
        return keys

    def labels(self) -> list[str]:
        """The report's columns: the specs, or in host mode each spec's host runs (gevent
        twice: unpatched, and in a process after ``patch_all()``), or in mixed mode each
        framework's session in the mixed thread."""
        if self.mixed:
            return [mixed_label(b) for b in self.backends]
        if not self.host:
            return list(self.backends)
        out = []
        for spec in self.backends:
            out.append(host_label(spec))
            if spec.split(":")[0] == "gevent":
                out.append(host_label(spec, patched=True))
        return out

    def cross_labels(self) -> list[str]:
        """The cross matrix's sides (host mode: unpatched only)."""
        if self.mixed:
            return self.labels()
        return [host_label(s) for s in self.backends] if self.host else list(self.backends)


class Budget:
    """The whole run's time budget, on the wall clock (``None``: unbounded)."""

    def __init__(self, seconds: float | None) -> None:
        if seconds is not None and not seconds > 0:
            raise ValueError(f"a run budget is a number of seconds > 0, not {seconds!r}")
        self.seconds = seconds
        self.started = time.monotonic()
        self.deadline = None if seconds is None else self.started + seconds

    def remaining(self) -> float:
        """Seconds left (``inf`` without a budget, 0 once spent)."""
        if self.deadline is None:
            return float("inf")
        return max(0.0, self.deadline - time.monotonic())

    def exhausted(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def not_run(self) -> str:
        """The detail of a case left without a verdict."""
        if self.exhausted():
            return f"not run: budget exhausted (the run's budget is {self.seconds:g} s)"
        return "not run: no worker reported this case"


#: Unbounded: what ``run_backend`` uses when it is given no budget.
_UNBOUNDED = Budget(None)


#: A mixed-mode column: the framework's session in the mixed thread.
MIXED = "@mixed"
#: The sessions of the mixed thread (``polyloop_mixed.FRAMEWORKS``, without importing it).
MIXED_SESSIONS = ("asyncio", "tornado", "twisted", "gevent")


def mixed_label(framework: str) -> str:
    """The report column of ``framework``'s session in mixed mode."""
    return framework + MIXED


def select_cases(
    check_patterns: list[str] | None,
    app_names: list[str] | None,
    mixed: bool = False,
    tier: int | None = None,
) -> list[str]:
    """Case names from ``--check`` globs and ``--app`` names (none given: everything).
    Checks that need mixed mode are left out unless ``mixed``.

    ``tier`` (``--tier``): only the checks of that tier; tier 1 (what a new backend must
    pass first: the loop contract) has no apps, tier 2 keeps the apps selected. A check
    pattern that matches nothing of that tier is a ``LookupError``.
    """
    if tier is not None and tier not in (1, 2):
        raise LookupError(f"--tier is 1 or 2, not {tier!r}")
    for name in app_names or []:
        if name not in APPS:
            raise LookupError(f"unknown app {name!r}; known: {', '.join(APPS)}")
    if tier == 1 and app_names:
        raise LookupError("the apps are tier 2: --tier 1 runs the loop contract's checks only")
    known = [
        n
        for n, c in CHECKS.items()
        if (mixed or not c.mixed_only) and (tier is None or c.tier == tier)
    ]
    apps = [] if tier == 1 else [f"app.{a}" for a in APPS]
    if check_patterns is None and app_names is None:
        return known + apps
    cases = []
    for pattern in check_patterns or []:
        matched = [
            n for n in known if fnmatch.fnmatchcase(n, pattern) or n.startswith(pattern + ".")
        ]
        if not matched:
            of_tier = f" of tier {tier}" if tier is not None else ""
            raise LookupError(f"no check{of_tier} matches {pattern!r}")
        cases += [n for n in matched if n not in cases]
    cases += [f"app.{a}" for a in app_names or []]
    return cases


def _timeout(case: str, override: float | None = None, cap: float | None = None) -> float:
    if override is not None:
        limit = override
    elif case.startswith("app."):
        limit = APPS[case[4:]].timeout
    else:
        limit = CHECKS[case].timeout
    return limit if cap is None else min(limit, cap)


def _worker_cmd(
    command: str,
    label: str,
    *extra: str,
    timeout: float | None = None,
    case_budget: float | None = None,
) -> list[str]:
    """A worker process for the column ``label``: a host-mode label adds ``--host``, and a
    patched one runs gevent's ``patch_all()`` before anything else is imported, as gevent
    asks."""
    if label.endswith(MIXED):
        args = (command, "--backend", f"mixed:session={label[: -len(MIXED)]}", "--label", label)
        args += tuple(extra)
        patched = False
    else:
        spec, patched = parse_host_label(label)
        args = (command, "--backend", spec, "--label", label, *extra)
        if spec != label:
            args += ("--host",)
    if timeout is not None:
        args += ("--timeout", repr(float(timeout)))
    if case_budget is not None:
        args += ("--case-budget", repr(float(case_budget)))
    if not patched:
        return [sys.executable, "-m", "polyloop_conformance.worker", *args]
    boot = (
        "from gevent import monkey; monkey.patch_all(); import sys;"
        " from polyloop_conformance.worker import main; sys.exit(main(sys.argv[1:]))"
    )
    return [sys.executable, "-c", boot, *args]


class _Worker:
    """A child process whose stdout lines are read by a thread into a queue."""

    def __init__(self, cmd: list[str]) -> None:
        self.stderr = tempfile.TemporaryFile(mode="w+")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=self.stderr, stdin=subprocess.DEVNULL,
            text=True, env=env,
        )  # fmt: skip
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def next_line(self, timeout: float) -> str | None:
        """The next line; ``None`` at EOF; ``TimeoutError`` if none within ``timeout``."""
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError from None

    def stderr_tail(self, lines: int = 12) -> str:
        self.stderr.seek(0)
        text = self.stderr.read().strip().splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.reader.join(5)
        self.stderr.close()


def _collect(
    cmd_for: Callable[[list[str]], list[str]],
    cases: list[str],
    backend: str,
    client_backend: str | None,
    progress: Progress,
    timeout: float | None = None,
    case_budget: float | None = None,
    budget: Budget = _UNBOUNDED,
) -> list[CheckResult]:
    """Run ``cases`` in workers; restart after a hang or crash, recording why. Once
    ``budget`` is spent the worker is stopped: the case it ran is recorded ``not-run``,
    and the cases left are returned without a record (``run_plan`` lists them)."""
    results: list[CheckResult] = []
    left = list(cases)
    while left and not budget.exhausted():
        worker = _Worker(cmd_for(left))
        try:
            while left:
                case = left[0]
                started = time.monotonic()
                limit = _timeout(case, timeout, case_budget) + HANG_SLACK
                try:
                    line = worker.next_line(min(limit, budget.remaining()))
                except TimeoutError:
                    if budget.exhausted():
                        record = CheckResult(
                            case, backend, client_backend, "not-run",
                            time.monotonic() - started,
                            f"{budget.not_run()}: stopped after"
                            f" {time.monotonic() - started:.1f} s, before its verdict",
                        )  # fmt: skip
                        results.append(record)
                        progress(record)
                        left.pop(0)
                        return results
                    detail = (
                        f"hung: no result after {limit:g} s, and the worker's own watchdog"
                        " did not answer either (a thread holding the GIL?); killed"
                    )
                    line = None
                else:
                    if line is None:
                        code = worker.proc.wait()
                        if code == HUNG_EXIT:
                            break  # its watchdog reported the hung case: a fresh worker
                        detail = f"worker exited with code {code} during this case"
                if line is None:
                    tail = worker.stderr_tail()
                    detail = with_rules(case, detail + (f"\n{tail}" if tail else ""))
                    record = CheckResult(
                        case, backend, client_backend, "fail", time.monotonic() - started, detail
                    )
                    results.append(record)
                    progress(record)
                    left.pop(0)
                    break  # restart a worker for the rest
                try:
                    record = CheckResult(**json.loads(line))
                except (ValueError, TypeError):
                    continue  # not a record: stray output on stdout
                results.append(record)
                progress(record)
                if record.check in left:
                    left.remove(record.check)
        finally:
            worker.stop()
    return results


def run_backend(
    label: str,
    cases: list[str],
    progress: Progress,
    timeout: float | None = None,
    *,
    case_budget: float | None = None,
    budget: Budget = _UNBOUNDED,
) -> list[CheckResult]:
    """Run ``cases`` on the column ``label`` (a spec, or a host label) in workers.
    ``timeout`` replaces each case's limit, ``case_budget`` caps it; once ``budget`` is
    spent the cases left get no record here (``run_plan`` marks them ``not-run``)."""

    def cmd(left: list[str]) -> list[str]:
        args = []
        for case in left:
            args += ["--case", case]
        return _worker_cmd("run", label, *args, timeout=timeout, case_budget=case_budget)

    return _collect(cmd, cases, label, None, progress, timeout, case_budget, budget)


@contextlib.contextmanager
def _servers(
    backends: list[str], apps: list[str], tls_dir: str, budget: Budget = _UNBOUNDED
) -> Iterator[dict[str, dict[str, str] | str]]:
    """One server process per backend, serving every app; yields app -> address or error."""
    workers: dict[str, _Worker] = {}
    found: dict[str, dict[str, str] | str] = {}
    try:
        for spec in backends:
            args = ["--tls-dir", tls_dir]
            for app in apps:
                args += ["--app", app]
            workers[spec] = _Worker(_worker_cmd("serve", spec, *args))
        for spec, worker in workers.items():
            addresses: dict[str, str] = {}
            wait = min(60.0, budget.remaining())
            deadline = time.monotonic() + wait
            error = ""
            while len(addresses) < len(apps):
                try:
                    line = worker.next_line(max(0.1, deadline - time.monotonic()))
                except TimeoutError:
                    error = f"server did not announce all apps within {wait:.3g} s"
                    break
                if line is None:
                    error = f"server exited with code {worker.proc.wait()}"
                    break
                parts = line.split()
                if len(parts) == 4 and parts[0] == "listening":
                    addresses[parts[1]] = f"{parts[2]}:{parts[3]}"
            if error:
                found[spec] = f"{error}\n{worker.stderr_tail()}"
            else:
                found[spec] = addresses
        yield found
    finally:
        for worker in workers.values():
            worker.stop()


def _run_cross_mixed(plan: Plan, progress: Progress, budget: Budget) -> list[CheckResult]:
    """Mixed mode's cross matrix: each pair in one worker, server and client sessions in
    its one mixed thread (``worker mixed-cross``)."""
    sides = plan.cross_labels()
    pairs = [(server, client) for server in sides for client in sides]
    cases = [f"app.{a}" for a in plan.cross_apps]

    def one(server: str, client: str) -> list[CheckResult]:
        def cmd(left: list[str]) -> list[str]:
            args = ["--server-label", server]
            for case in left:
                args += ["--app", case[4:]]
            return _worker_cmd(
                "mixed-cross", client, *args, timeout=plan.timeout, case_budget=plan.case_budget
            )

        return _collect(
            cmd, cases, server, client, progress, plan.timeout, plan.case_budget, budget
        )

    results: list[CheckResult] = []
    with ThreadPoolExecutor(plan.jobs) as pool:
        for chunk in pool.map(lambda p: one(*p), pairs):
            results.extend(chunk)
    return results


def _run_cross(plan: Plan, progress: Progress, budget: Budget) -> list[CheckResult]:
    if plan.mixed:
        return _run_cross_mixed(plan, progress, budget)
    if budget.exhausted():
        return []
    tls_dir = tempfile.mkdtemp(prefix="polyloop-cross-")
    results: list[CheckResult] = []
    try:
        from .tls import TLSMaterial

        TLSMaterial(tls_dir)  # made once, before servers and clients race to make it
        sides = plan.cross_labels()
        with _servers(sides, plan.cross_apps, tls_dir, budget) as servers:
            n = len(sides)
            # Diagonal order: pairs that run at the same time hit different servers,
            # so no app server sees two clients at once (the RESP app's FLUSHDB would).
            pairs = [(sides[(i + d) % n], sides[i]) for d in range(n) for i in range(n)]
            locks = {spec: threading.Lock() for spec in sides}

            def one(server: str, client: str) -> list[CheckResult]:
                found = servers[server]
                if budget.exhausted():
                    return []  # run_plan records them as not run
                if isinstance(found, str):
                    failed = [
                        CheckResult(f"app.{a}", server, client, "fail", 0.0, found)
                        for a in plan.cross_apps
                    ]
                    for record in failed:
                        progress(record)
                    return failed
                with locks[server]:

                    def cmd(left: list[str]) -> list[str]:
                        args = ["--server-label", server, "--tls-dir", tls_dir]
                        for case in left:
                            args += ["--target", f"{case[4:]}={found[case[4:]]}"]
                        return _worker_cmd(
                            "exercise", client, *args,
                            timeout=plan.timeout, case_budget=plan.case_budget,
                        )  # fmt: skip

                    cases = [f"app.{a}" for a in plan.cross_apps]
                    return _collect(
                        cmd, cases, server, client, progress, plan.timeout, plan.case_budget,
                        budget,
                    )  # fmt: skip

            with ThreadPoolExecutor(plan.jobs) as pool:
                for chunk in pool.map(lambda p: one(*p), pairs):
                    results.extend(chunk)
    finally:
        shutil.rmtree(tls_dir, ignore_errors=True)
    return results


def run_plan(plan: Plan, progress: Progress = lambda r: None) -> list[CheckResult]:
    """Run every case on every backend, then the cross matrix; return all records, one
    per planned case (``Plan.planned``): a case left without a verdict when the run's
    budget ran out is recorded ``not-run``. With ``plan.json_path``/``html_path`` the
    records are written as they come."""
    from .report import LiveReport

    budget = Budget(plan.run_budget)
    planned = plan.planned()
    live = LiveReport(planned, plan.json_path, plan.html_path)
    lock = threading.Lock()

    def report(record: CheckResult) -> None:
        with lock:
            live.add(record)
            progress(record)

    results: list[CheckResult] = []
    try:
        if plan.cases:
            with ThreadPoolExecutor(plan.jobs) as pool:

                def one(label: str) -> list[CheckResult]:
                    return run_backend(
                        label, plan.cases, report, plan.timeout,
                        case_budget=plan.case_budget, budget=budget,
                    )  # fmt: skip

                for chunk in pool.map(one, plan.labels()):
                    results.extend(chunk)
        if plan.cross_apps:
            results.extend(_run_cross(plan, report, budget))
        seen = {(r.check, r.backend, r.client_backend) for r in results}
        for case, backend, client in planned:
            if (case, backend, client) not in seen:
                record = CheckResult(case, backend, client, "not-run", 0.0, budget.not_run())
                results.append(record)
                report(record)
    finally:
        live.close()
    return results
