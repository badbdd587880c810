"""The conformance kit's subcommands of the ``polyloop`` command: ``conformance`` and
``serve``.

The core's command (``polyloop._cli``) names no kit: it finds these through the
entry-point group ``polyloop.commands`` (``pyproject.toml``), where each entry names a
function that adds one subcommand to the parser. This module imports only the standard
library, the core and ``_kit`` at import time; without the kit's libraries that import
fails naming the extra, and the core's command prints it in one line, exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

from polyloop._cli import UsageError, check_backend, check_writable
from polyloop._registry import available_backends

from ._kit import REQUIREMENTS, missing_message

__all__ = ["add_conformance", "add_serve", "require_kit"]


def require_kit(command: str) -> None:
    """``UsageError`` naming the extra if a library of the conformance kit is missing."""
    # Importing this module ran _kit's check once; this one runs with each command, so a
    # library removed since (or hidden by a test) is still named.
    missing = []
    for name in REQUIREMENTS:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise UsageError(f"'polyloop {command}': {missing_message(missing)}")


def cmd_conformance(args: argparse.Namespace) -> int:
    require_kit("conformance")
    check_writable("--json", args.json)
    check_writable("--html", args.html)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from . import report
    from .rules import list_catalogue
    from .runner import Plan, run_plan, select_cases

    if args.list:
        list_catalogue(args.tier)
        return 0
    try:
        cases = select_cases(args.check, args.app, mixed=args.mixed, tier=args.tier)
    except LookupError as exc:
        raise UsageError(str(exc)) from None
    for flag, value in (("--budget", args.budget), ("--case-budget", args.case_budget)):
        if value is not None and not 0 < value < float("inf"):
            raise UsageError(f"{flag} must be a number of seconds > 0, got {value}")
    if args.jobs < 1:
        raise UsageError("--jobs must be >= 1")
    if args.mixed and args.host:
        raise UsageError("--mixed and --host are two modes; pick one")
    if args.mixed:
        from .runner import MIXED_SESSIONS

        backends = args.backend or list(MIXED_SESSIONS)
        for name in backends:
            if name not in MIXED_SESSIONS:
                raise UsageError(
                    f"with --mixed, --backend names a session: {', '.join(MIXED_SESSIONS)}"
                )
    elif args.backend:
        backends = [check_backend(b) for b in args.backend]
    else:
        backends = [b.name for b in available_backends() if b.error is None]
        unavailable = [b for b in available_backends() if b.error is not None]
        for info in unavailable:
            print(f"polyloop: leaving out backend {info.name}: {info.error}", file=sys.stderr)
    cross_apps: list[str] = []
    if args.cross:
        cross_apps = [c[4:] for c in cases if c.startswith("app.")]
        if not cross_apps:
            raise UsageError("--cross needs at least one app (see --app)")
    plan = Plan(
        backends, cases, cross_apps, jobs=args.jobs, host=args.host, mixed=args.mixed,
        case_budget=args.case_budget, run_budget=args.budget,
        json_path=args.json, html_path=args.html,
    )  # fmt: skip
    n_pairs = len(plan.cross_labels()) ** 2 * len(cross_apps)
    total = len(plan.labels()) * len(cases) + n_pairs
    out = Console()
    err = Console(stderr=True)
    with Progress(
        TextColumn("[bold]conformance"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.description}"), console=err, transient=True,
    ) as progress:  # fmt: skip
        task = progress.add_task("starting", total=total)
        failed = 0

        def on_result(record: Any) -> None:
            nonlocal failed
            failed += record.status == "fail"
            where = record.backend + (f"→{record.client_backend}" if record.client_backend else "")
            progress.update(
                task, advance=1, description=f"{where} {record.check} ({failed} failed)"
            )
            if record.status == "fail" and not err.is_terminal:
                err.print(f"FAIL {record.check} on {where}")

        results = run_plan(plan, on_result)
    report.print_matrix(results, out)
    if args.json:
        report.write_json(results, args.json)
        out.print(f"wrote {args.json}")
    if args.html:
        report.write_html(results, args.html)
        out.print(f"wrote {args.html}")
    return report.exit_code(results, args.allow_skip)


def cmd_serve(args: argparse.Namespace) -> int:
    require_kit("serve")
    from . import APPS
    from .serving import serve_apps

    if args.app not in APPS:
        raise UsageError(f"unknown app {args.app!r}; known: {', '.join(APPS)}")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be in 0..65535, got {args.port}")
    if not 0 <= args.grace < float("inf"):
        raise UsageError(f"--grace must be a finite number of seconds >= 0, got {args.grace}")
    check_backend(args.backend)
    tls_dir = args.tls_dir
    if APPS[args.app].tls and tls_dir is None:
        from .tls import material

        tls_dir = material().folder
        print(f"TLS: trust the CA in {material().ca_path}", file=sys.stderr, flush=True)

    def announce(name: str, running: Any) -> None:
        host, port = running.address[:2]
        print(f"listening on {host}:{port}", flush=True)

    import polyloop

    try:
        polyloop.run(
            serve_apps, [args.app], args.host, args.port, tls_dir, announce, args.grace,
            backend=args.backend,
        )  # fmt: skip
    except OSError as exc:
        raise UsageError(f"cannot serve on {args.host}:{args.port}: {exc}") from None
    return 0


def add_conformance(sub: Any) -> None:
    """Add ``polyloop conformance`` to the subparsers ``sub``."""
    p = sub.add_parser(
        "conformance",
        help="run the conformance checks and apps and print the matrix",
        description=(
            "Run checks and apps on backends, each backend in its own process. A backend "
            "is NAME, NAME:key=value[,key=value] (options, e.g. asyncio:loop=uvloop, "
            "twisted:reactor=select) or module:Class (a third-party backend)."
        ),
    )
    p.add_argument("--backend", action="append", metavar="SPEC", help="repeatable; default: all")
    p.add_argument("--app", action="append", metavar="NAME", help="only these apps (repeatable)")
    p.add_argument(
        "--check", action="append", metavar="PATTERN",
        help="only checks matching this glob or category (repeatable), e.g. 'tls' or 'close.*'",
    )  # fmt: skip
    p.add_argument(
        "--cross", action="store_true", help="also run every app server-on-X × client-on-Y"
    )
    p.add_argument(
        "--host", action="store_true",
        help="host mode: start every case from inside a loop the framework itself runs"
        " (asyncio.run, Twisted's global reactor, IOLoop.run_sync, a gevent greenlet, also"
        " after patch_all), never from polyloop.run",
    )  # fmt: skip
    p.add_argument(
        "--mixed", action="store_true",
        help="mixed mode: every case on each of the four sessions of one thread that runs"
        " asyncio, Tornado, Twisted and gevent together (--backend then names sessions);"
        " with --cross, every server/client pairing inside that one thread",
    )  # fmt: skip
    p.add_argument("--json", metavar="PATH", help="write one JSON record per case")
    p.add_argument("--html", metavar="PATH", help="write a self-contained HTML report")
    p.add_argument("--jobs", type=int, default=2, help="worker processes at once (default 2)")
    p.add_argument("--allow-skip", action="store_true", help="exit 0 even if some case skipped")
    p.add_argument(
        "--tier", type=int, choices=(1, 2),
        help="only the checks of this tier (1: the loop contract a new backend must pass"
        " first; 2: the rest, with the apps)",
    )  # fmt: skip
    p.add_argument(
        "--list", action="store_true",
        help="print every check with the contract clauses it enforces, then every clause"
        " (with --tier: that tier's), and exit",
    )  # fmt: skip
    p.add_argument(
        "--case-budget", type=float, metavar="SECONDS",
        help="cap every case's time limit at this many seconds",
    )  # fmt: skip
    p.add_argument(
        "--budget", type=float, metavar="SECONDS",
        help="the whole run's budget: once spent, the workers are stopped and the cases"
        " left are recorded as not run (--json/--html are written as cases finish)",
    )  # fmt: skip
    p.set_defaults(fn=cmd_conformance)


def add_serve(sub: Any) -> None:
    """Add ``polyloop serve`` to the subparsers ``sub``."""
    p = sub.add_parser(
        "serve", help="serve a conformance app until SIGINT/SIGTERM, then wind down gracefully"
    )
    p.add_argument("app", help="echo, echo-stream, chat, http, ws, resp, udp, tls, proxy")
    p.add_argument("--backend", default="asyncio", metavar="SPEC")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--tls-dir", help="folder with ca.pem/server.pem (made if missing)")
    p.add_argument(
        "--grace", type=float, default=5.0, metavar="SECONDS",
        help="on SIGINT/SIGTERM: stop accepting, let open connections end for this long,"
        " then close them cleanly (FIN, not RST) and exit 0 (default 5); a second signal"
        " ends the grace at once",
    )  # fmt: skip
    p.set_defaults(fn=cmd_serve)
