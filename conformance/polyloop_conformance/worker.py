"""The child-process side of a conformance run (``python -m polyloop_conformance.worker``).

Rule: one process per backend (or per side of a cross pair), so that a hung or crashed
backend cannot take the run with it, each backend starts from a clean interpreter, and
a Twisted or gevent run cannot leave state behind for the next. Results go to stdout as
one JSON record per line; everything else goes to stderr.

    worker run --backend SPEC --case NAME...        checks and in-process apps
    worker serve --backend SPEC --app NAME... [--tls-dir D]
                                                    prints `listening APP HOST PORT` lines
    worker exercise --backend SPEC --target APP=HOST:PORT... --server-label L [--tls-dir D]
    worker mixed-cross --backend mixed:session=Y --server-label X@mixed --app NAME...
                                                    server on X, client on Y, one thread

``run``, ``exercise`` and ``mixed-cross`` take ``--timeout S`` (every case's time limit,
instead of its own) and ``--case-budget S`` (a cap on each case's limit). Each case is
judged by the referee (``referee.py``): a watchdog thread on the wall clock; a case it
cannot stop is reported by the watchdog, and the worker then exits with
``referee.HUNG_EXIT``, so that the parent starts a fresh one for the rest.

Each takes ``--host``: the code under test then starts from inside a loop that the
framework itself runs (``host.py``), never from ``polyloop.run``. A patched gevent worker
(``patch_all()`` before anything else is imported) is started by ``runner._worker_cmd``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import polyloop

from ._registry import (
    CHECKS,
    CheckResult,
    app_config,
    run_app,
    run_case,
    run_check,
    with_rules,
)
from .apps import APPS, Running
from .host import HostBackend
from .referee import exit_on_hang, os_threads, run_judged

_emitting = os_threads()[2]()  # the watchdog thread may emit too


def emit(result: CheckResult) -> None:
    with _emitting:
        sys.stdout.write(json.dumps(result.to_json()) + "\n")
        sys.stdout.flush()


def factory(spec: str, host: bool = False) -> Callable[[], Any]:
    """What a case's ``make_backend()`` returns: a backend, or its host-mode stand-in."""
    polyloop.load_backend(spec)  # fail here, once, if the spec is bad
    if host:
        return lambda: HostBackend(spec)
    return lambda: polyloop.load_backend(spec)


def _exit_on_hang(
    case: str, label: str, client_backend: str | None = None
) -> Callable[[str], None]:
    """The worker's ``on_hang``: write the case's record, then exit with ``HUNG_EXIT``
    (the parent starts a fresh worker for the cases left)."""
    started = time.perf_counter()

    def report(verdict: str) -> None:
        seconds = time.perf_counter() - started
        detail = with_rules(case, verdict)
        emit(CheckResult(case, label, client_backend, "fail", seconds, detail))

    return exit_on_hang(report)


def _limit(own: float, args: argparse.Namespace) -> float:
    """A case's time limit: ``--timeout`` or its own, capped by ``--case-budget``."""
    limit = own if args.timeout is None else args.timeout
    budget = getattr(args, "case_budget", None)
    return limit if budget is None else min(limit, budget)


def cmd_run(args: argparse.Namespace) -> int:
    make = factory(args.backend, args.host)
    for name in args.case:
        on_hang = _exit_on_hang(name, args.label)
        if name.startswith("app."):
            app = APPS[name[4:]]
            limit = _limit(app.timeout, args)
            emit(run_app(app, make, args.label, timeout=limit, on_hang=on_hang))
        else:
            chk = CHECKS[name]
            limit = _limit(chk.timeout, args)
            emit(run_check(chk, make, args.label, timeout=limit, on_hang=on_hang))
    return 0


class _Stop:
    """SIGINT/SIGTERM, seen by every backend: the handler sets a flag that a polling
    coroutine reads. A signal handler runs only when the main thread runs Python code,
    and a hub or reactor blocked in C may not give it the chance until a timer fires,
    so a short poll is the one wake-up path that works the same on all four."""

    def __init__(self) -> None:
        self.requested = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    async def wait(self) -> None:
        while not self.requested:
            await polyloop.sleep(0.1)


async def serve_apps(
    names: list[str],
    host: str,
    port: int,
    tls_dir: str | None,
    announce: Callable[[str, Running], None],
    grace: float = 5.0,
) -> None:
    """Start each app's server, announce its address, serve until SIGINT/SIGTERM; then
    wind down gracefully (``Session.shutdown(grace)``): stop accepting, give the open
    connections ``grace`` seconds to end, close the rest cleanly (the peer reads EOF)."""
    stop = _Stop()
    running: list[Running] = []
    try:
        for name in names:
            app = APPS[name]
            config = app_config(app, tls_dir)
            config.host, config.port = host, (port if len(names) == 1 else 0)
            running.append(await app.serve(config))
            announce(name, running[-1])
        await stop.wait()
        await polyloop.current_backend().shutdown(grace)
    finally:
        for server in running:
            await server.aclose()


def cmd_serve(args: argparse.Namespace) -> int:
    def announce(name: str, server: Running) -> None:
        print(f"listening {name} {server.address[0]} {server.address[1]}", flush=True)

    make = factory(args.backend, args.host)
    make().run(serve_apps, args.app, "127.0.0.1", 0, args.tls_dir, announce)
    return 0


def cmd_exercise(args: argparse.Namespace) -> int:
    make = factory(args.backend, args.host)
    for target in args.target:
        name, _, where = target.partition("=")
        host, _, port = where.rpartition(":")
        app = APPS[name]
        case = f"app.{name}"

        async def client(
            session: polyloop.Session, app: Any = app, addr: Any = (host, int(port))
        ) -> None:
            await app.exercise(app_config(app, args.tls_dir), addr)

        def body(client: Any = client, case: str = case, app: Any = app) -> None:
            limit = _limit(app.timeout, args)
            on_hang = _exit_on_hang(case, args.server_label, args.label)
            run_judged(case, make, client, limit, on_hang=on_hang)

        emit(run_case(case, args.server_label, body, client_backend=args.label))
    return 0


def cmd_mixed_cross(args: argparse.Namespace) -> int:
    """Each app served on one session of the mixed thread and exercised from another
    (``--server-label X@mixed``, ``--label Y@mixed``), both in one ``run``."""
    server_fw = args.server_label.removesuffix("@mixed")
    make = factory(args.backend)
    for name in args.app:
        app = APPS[name]
        case = f"app.{name}"

        async def both(session: polyloop.Session, app: Any = app) -> None:
            import polyloop_mixed

            server_session = polyloop_mixed.session(server_fw)
            config = app_config(app)

            async def serve() -> Running:
                found = polyloop.current_backend()
                if found is not server_session:
                    raise AssertionError(f"the server side runs on {found!r}, not {server_fw}")
                running: Running = await app.serve(config)
                return running

            if polyloop.current_backend() is not session or session.name != args.label[:-6]:
                raise AssertionError(f"the client side runs on {session!r}, not {args.label}")
            running = await server_session.spawn(serve())
            try:
                await app.exercise(config, running.address)
            finally:
                await server_session.spawn(running.aclose())

        def body(both: Any = both, case: str = case, app: Any = app) -> None:
            limit = _limit(app.timeout, args)
            on_hang = _exit_on_hang(case, args.server_label, args.label)
            run_judged(case, make, both, limit, on_hang=on_hang)

        emit(run_case(case, args.server_label, body, client_backend=args.label))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="polyloop_conformance.worker")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run")
    p.add_argument("--backend", required=True)
    p.add_argument("--label")
    p.add_argument("--case", action="append", default=[])
    p.add_argument("--host", action="store_true")
    p.add_argument("--timeout", type=float)
    p.add_argument("--case-budget", type=float)
    p = sub.add_parser("serve")
    p.add_argument("--backend", required=True)
    p.add_argument("--label")
    p.add_argument("--app", action="append", default=[])
    p.add_argument("--tls-dir")
    p.add_argument("--host", action="store_true")
    p = sub.add_parser("exercise")
    p.add_argument("--backend", required=True)
    p.add_argument("--label")
    p.add_argument("--server-label", required=True)
    p.add_argument("--target", action="append", default=[])
    p.add_argument("--tls-dir")
    p.add_argument("--host", action="store_true")
    p.add_argument("--timeout", type=float)
    p.add_argument("--case-budget", type=float)
    p = sub.add_parser("mixed-cross")
    p.add_argument("--backend", required=True)
    p.add_argument("--label")
    p.add_argument("--server-label", required=True)
    p.add_argument("--app", action="append", default=[])
    p.add_argument("--timeout", type=float)
    p.add_argument("--case-budget", type=float)
    args = parser.parse_args(argv)
    args.label = getattr(args, "label", None) or args.backend
    started = time.monotonic()
    command = {
        "run": cmd_run, "serve": cmd_serve, "exercise": cmd_exercise,
        "mixed-cross": cmd_mixed_cross,
    }[args.cmd]  # fmt: skip
    if getattr(args, "host", False):
        # Where the framework's application would run the worker's whole life (a Twisted
        # application runs the global reactor in its main thread, and the cases are
        # handed to it from a worker thread): Backend.host_process.
        code = polyloop.load_backend(args.backend).host_process(lambda: command(args))
    else:
        code = command(args)
    print(f"worker {args.cmd} done in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
