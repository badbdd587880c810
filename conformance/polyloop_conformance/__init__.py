"""polyloop's conformance suite: behaviour checks and real apps, for any backend.

Everything here is callable without pytest::

    from polyloop_conformance import CHECKS, run_check
    result = run_check(CHECKS["close.flushes"], MyBackend, "mine")
    CHECKS["close.flushes"].clauses   # ('transport.close.flushes',): see CLAUSES

It needs the extra ``polyloop[conformance]``; without it, importing it says so.
"""

from . import _kit  # noqa: F401  (first: names the extra if the kit is missing)
from . import apps as apps
from . import checks as checks
from . import rules as rules
from ._registry import CHECKS as CHECKS
from ._registry import Check as Check
from ._registry import CheckResult as CheckResult
from ._registry import SkipCheck as SkipCheck
from ._registry import check as check
from ._registry import run_check as run_check
from .apps import APPS as APPS
from .apps import App as App
from .apps import AppConfig as AppConfig
from .rules import CLAUSES as CLAUSES
from .rules import Clause as Clause

__all__ = [
    "APPS",
    "CHECKS",
    "CLAUSES",
    "App",
    "AppConfig",
    "Check",
    "CheckResult",
    "Clause",
    "SkipCheck",
    "apps",
    "check",
    "checks",
    "rules",
    "run_check",
]
