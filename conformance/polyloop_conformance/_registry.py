"""The catalogue of checks and apps, and how one case is run and recorded.

Rule: a check is a plain function, free of pytest, so a third party can call it on
their own backend: ``async def check_x(session)`` runs inside ``backend.run``;
``def check_x(make_backend)`` (``sync=True``) runs around it (run, cleanliness).
An async check receives the session it runs in (``polyloop.current_backend()``).
A check passes by returning and fails by raising; an ``AssertionError``'s message is
the report's detail. ``SkipCheck`` skips, and its reason is printed in the report.
The verdict is the referee's (``referee.py``): a wall-clock time limit, and the check's
outcome noted outside the backend under test, so a backend cannot fake a pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import polyloop

__all__ = [
    "CHECKS",
    "KNOWN_FAILURES",
    "Check",
    "CheckResult",
    "KnownFailure",
    "SkipCheck",
    "check",
    "run_check",
    "with_rules",
]

BackendFactory = Callable[[], polyloop.Backend]
#: ``not-run``: the case never got a verdict (the run's budget ran out, or the run was
#: stopped before it); its detail says which.
Status = Literal["pass", "fail", "skip", "not-run"]


class SkipCheck(Exception):
    """Raised by a check that cannot apply here; the message is the written reason."""


@dataclass(frozen=True)
class Check:
    """One behaviour scenario of the backend contract."""

    name: str
    category: str
    fn: Callable[..., Any]
    doc: str
    sync: bool
    timeout: float
    #: Only in mixed mode (``--mixed``): it needs the four frameworks in one thread.
    mixed_only: bool = False
    #: The ids of the contract clauses it enforces (``rules.CLAUSES``).
    clauses: tuple[str, ...] = ()

    @property
    def tier(self) -> int:
        """1 if it enforces a tier-1 clause (what a new backend must pass first), else 2."""
        from .rules import CLAUSES

        return min((CLAUSES[c].tier for c in self.clauses), default=2)


@dataclass
class CheckResult:
    """One case of a conformance run (the ``--json`` record)."""

    check: str
    backend: str
    client_backend: str | None
    status: Status
    seconds: float
    detail: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


CHECKS: dict[str, Check] = {}


@dataclass(frozen=True)
class KnownFailure:
    """A check a first-party backend fails today, until its adapter is fixed.

    Such a case is recorded as a pass whose detail starts with ``KNOWN FAILURE`` (the
    report lists them apart, loudly), so that the project's own matrix stays green
    while the rule stays checked; once it passes, the detail says to remove the entry.
    ``backend`` is a glob on the report column (``asyncio:loop=uvloop``, ``twisted@host``).
    """

    check: str
    backend: str
    reason: str


#: Rules that first-party backends break today (see each reason for where to fix it).
KNOWN_FAILURES: list[KnownFailure] = []


def known_failure(check: str, backend_label: str) -> KnownFailure | None:
    """The entry of ``KNOWN_FAILURES`` for this case, if any."""
    import fnmatch

    for known in KNOWN_FAILURES:
        if known.check == check and fnmatch.fnmatchcase(backend_label, known.backend):
            return known
    return None


def check(
    category: str,
    *,
    clauses: Iterable[str],
    name: str | None = None,
    timeout: float = 20.0,
    sync: bool = False,
    mixed_only: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a check under ``category.name`` (name defaults to the function's).

    ``clauses``: the ids of the contract clauses it enforces (``rules.CLAUSES``), at
    least one; an unknown id is a ``LookupError`` here. ``mixed_only``: run only in
    mixed mode (``--mixed``).
    """
    from .rules import check_ids

    ids = check_ids(clauses)

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        short = name or fn.__name__.removeprefix("check_")
        full = f"{category}.{short}"
        if full in CHECKS:
            raise ValueError(f"check {full!r} registered twice")
        if not ids:
            raise ValueError(f"check {full!r} names no contract clause (clauses=[...])")
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else short
        CHECKS[full] = Check(full, category, fn, doc, sync, timeout, mixed_only, ids)
        return fn

    return register


def run_case(
    label: str,
    backend_label: str,
    body: Callable[[], None],
    client_backend: str | None = None,
) -> CheckResult:
    """Run ``body`` and record pass/fail/skip with its (wall-clock) timing."""
    from .referee import describe

    start = time.perf_counter()
    failure: BaseException | None = None
    try:
        body()
    except SkipCheck as exc:
        status: Status = "skip"
        detail = str(exc) or "skipped without a reason"
    except BaseException as exc:  # a check's failure is data here
        if isinstance(exc, KeyboardInterrupt) and type(exc) is KeyboardInterrupt:
            raise
        status, detail, failure = "fail", describe(exc, label), exc
    else:
        status, detail = "pass", ""
    if status == "fail":
        detail = with_rules(label, detail, getattr(failure, "clause", None))
    known = known_failure(label, backend_label) if client_backend is None else None
    if known is not None and status == "fail":
        status, detail = "pass", f"KNOWN FAILURE ({known.reason}): {detail}"
    elif known is not None and status == "pass":
        detail = f"known failure no longer fails: remove it from KNOWN_FAILURES ({known.reason})"
    return CheckResult(
        label, backend_label, client_backend, status, time.perf_counter() - start, detail
    )


def with_rules(case: str, detail: str, clause: str | None = None) -> str:
    """A failure's ``detail`` followed by the clause(s) the case enforces, each as
    ``rule [id]: sentence`` (``clause``: only that one, the check said which it broke).
    Apps and unknown cases have no clause: the detail is returned as it is."""
    from .rules import CLAUSES

    chk = CHECKS.get(case)
    ids = (clause,) if clause in CLAUSES else (chk.clauses if chk is not None else ())
    if not ids or "\n  rule [" in detail:
        return detail
    rules = "".join(f"\n  rule [{i}]: {CLAUSES[i].sentence}" for i in ids)
    return detail + rules


def run_check(
    chk: Check,
    make_backend: BackendFactory,
    backend_label: str,
    *,
    timeout: float | None = None,
    on_hang: Callable[[str], None] | None = None,
) -> CheckResult:
    """Run one check on a fresh backend instance (or, for sync checks, the factory).

    The verdict comes from the referee (``referee.py``), not from the backend: the time
    limit (``timeout``, default the check's own) is the wall clock's, and the check's
    outcome is noted outside the backend's task machinery. ``on_hang(verdict)`` is called
    from the watchdog thread if the case cannot be stopped (the worker exits there).
    """
    from .referee import run_judged

    limit = chk.timeout if timeout is None else timeout

    def body() -> None:
        run_judged(chk.name, make_backend, chk.fn, limit, sync=chk.sync, on_hang=on_hang)

    return run_case(chk.name, backend_label, body)


def app_config(app: Any, tls_folder: str | None = None, **options: Any) -> Any:
    """The ``AppConfig`` for ``app``: TLS contexts from the shared test CA if it uses TLS."""
    from .apps import AppConfig
    from .tls import material

    config = AppConfig(options=options)
    if app.tls:
        tls = material(tls_folder)
        config.server_ssl = tls.server_context()
        config.client_ssl = tls.client_context()
    return config


def run_app(
    app: Any,
    make_backend: BackendFactory,
    backend_label: str,
    *,
    timeout: float | None = None,
    on_hang: Callable[[str], None] | None = None,
) -> CheckResult:
    """Serve ``app`` and exercise it with its client, both on one fresh backend."""
    from .referee import run_judged

    async def both(session: polyloop.Session) -> None:
        config = app_config(app)
        running = await app.serve(config)
        try:
            await app.exercise(config, running.address)
        finally:
            await running.aclose()

    name = f"app.{app.name}"
    limit = app.timeout if timeout is None else timeout

    def body() -> None:
        run_judged(name, make_backend, both, limit, on_hang=on_hang)

    return run_case(name, backend_label, body)
