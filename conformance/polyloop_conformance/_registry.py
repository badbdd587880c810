"""The catalogue of checks and apps, and how one case is run and recorded.

Rule: a check is a plain function, free of pytest, so a third party can call it on
their own backend: ``async def check_x(session)`` runs inside ``backend.run``;
``def check_x(make_backend)`` (``sync=True``) runs around it (lifecycle, cleanliness).
An async check receives the session it runs in (``polyloop.current_backend()``).
A check passes by returning and fails by raising; an ``AssertionError``'s message is
the report's detail. ``SkipCheck`` skips, and its reason is printed in the report.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import polyloop

__all__ = ["CHECKS", "Check", "CheckResult", "SkipCheck", "check", "run_check"]

BackendFactory = Callable[[], polyloop.Backend]
Status = Literal["pass", "fail", "skip"]


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


def check(
    category: str, *, name: str | None = None, timeout: float = 20.0, sync: bool = False
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a check under ``category.name`` (name defaults to the function's)."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        short = name or fn.__name__.removeprefix("check_")
        full = f"{category}.{short}"
        if full in CHECKS:
            raise ValueError(f"check {full!r} registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else short
        CHECKS[full] = Check(full, category, fn, doc, sync, timeout)
        return fn

    return register


def _describe(exc: BaseException) -> str:
    if isinstance(exc, AssertionError) and str(exc):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    tb = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in tb if "polyloop_conformance" in f.filename]
    where = ours[-1] if ours else (tb[-1] if tb else None)
    if where is not None:
        text += f" (at {where.filename.rsplit('/', 1)[-1]}:{where.lineno})"
    return text


def run_case(
    label: str,
    backend_label: str,
    body: Callable[[], None],
    client_backend: str | None = None,
) -> CheckResult:
    """Run ``body`` and record pass/fail/skip with its timing."""
    start = time.perf_counter()
    try:
        body()
    except SkipCheck as exc:
        status: Status = "skip"
        detail = str(exc) or "skipped without a reason"
    except BaseException as exc:  # a check's failure is data here
        if isinstance(exc, KeyboardInterrupt):
            raise
        status, detail = "fail", _describe(exc)
    else:
        status, detail = "pass", ""
    return CheckResult(
        label, backend_label, client_backend, status, time.perf_counter() - start, detail
    )


async def _bounded(fn: Callable[..., Awaitable[None]], t: float) -> None:
    try:
        await polyloop.wait_for(fn(polyloop.current_backend()), t)
    except TimeoutError:
        raise AssertionError(f"timed out after {t:g} s") from None


def run_check(chk: Check, make_backend: BackendFactory, backend_label: str) -> CheckResult:
    """Run one check on a fresh backend instance (or, for sync checks, the factory)."""

    def body() -> None:
        if chk.sync:
            chk.fn(make_backend)
        else:
            make_backend().run(_bounded, chk.fn, chk.timeout)

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


def run_app(app: Any, make_backend: BackendFactory, backend_label: str) -> CheckResult:
    """Serve ``app`` and exercise it with its client, both on one fresh backend."""

    async def both(session: polyloop.Session) -> None:
        config = app_config(app)
        running = await app.serve(config)
        try:
            await app.exercise(config, running.address)
        finally:
            await running.aclose()

    def body() -> None:
        make_backend().run(_bounded, both, app.timeout)

    return run_case(f"app.{app.name}", backend_label, body)
