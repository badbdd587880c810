"""Mixed mode, measured: wake-up latency across every pair of frameworks, and each
session's echo throughput inside the mixed thread against the same backend alone.

    python -m benchmarks.mixed                 # both, ~5 min on 2 cores
    python -m benchmarks.mixed --only wakeups  # or: --only echo

Wake-ups: in one mixed run, each case issues one wake-up from inside one framework
(``polyloop_conformance.checks.wakeups`` lists them: 5 places x 15 wake-ups) and times
it until the woken side runs, ``--wakeups`` times per case, with no timer pending at all
(no deadline either: the run has a watchdog thread instead). Reported per case: median
and 99th percentile in microseconds.

Echo: ``polyloop serve echo --backend B`` against ``--backend mixed:session=B`` for each
of the four, loaded by ``pingpong`` (``pingpong.c``), rounds interleaved, the ratio
taken per round (mixed/alone) and shown as min / median / max, beside the server's CPU
per request. The goal is >= 0.85x of alone (issue 25).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

from . import harness

FRAMEWORKS = ("asyncio", "twisted", "gevent", "tornado")


def wakeup_latencies(rounds: int) -> list[dict[str, Any]]:
    """Every (where, what) wake-up case, ``rounds`` times, in one mixed run."""
    import polyloop
    import polyloop_mixed
    from polyloop_conformance.checks import wakeups

    def watchdog() -> None:
        if not finished.wait(600):
            print("mixed wake-up benchmark: stuck for 10 minutes, exiting", file=sys.stderr)
            import os

            os._exit(3)

    finished = threading.Event()
    threading.Thread(target=watchdog, daemon=True).start()

    async def main() -> list[dict[str, Any]]:
        session = polyloop.current_backend()
        m = wakeups.Machinery(polyloop_mixed.sessions())
        rows = []
        for case, enter, arm in wakeups.cases(m):
            seconds = [await wakeups.latency(session, enter, arm, None) for _ in range(rounds)]
            us = sorted(s * 1e6 for s in seconds)
            rows.append({
                "case": case,
                "median_us": statistics.median(us),
                "p99_us": us[min(len(us) - 1, int(len(us) * 0.99))],
                "max_us": us[-1],
            })  # fmt: skip
        return rows

    try:
        return polyloop.run(main, backend="mixed")
    finally:
        finished.set()


def echo_alone_and_mixed(
    args: argparse.Namespace, progress: harness.Progress
) -> list[dict[str, Any]]:
    pingpong = harness.build_pingpong()
    cells = []
    for name in FRAMEWORKS:
        servers = [
            harness.Server("alone", f"{name} alone",
                           harness.polyloop_server(name, "echo").cmd),
            harness.Server("mixed", f"{name} session in mixed mode",
                           harness.polyloop_server(f"mixed:session={name}", "echo").cmd),
        ]  # fmt: skip
        if name == "twisted":
            # Twisted's session in mixed mode runs on its AsyncioSelectorReactor; alone it
            # runs on epoll. This third server tells the reactor's cost from mixed mode's.
            servers.append(
                harness.Server("asyncio-reactor", "twisted alone on AsyncioSelectorReactor",
                               harness.polyloop_server("twisted:reactor=asyncio", "echo").cmd)
            )  # fmt: skip
        with harness.running(servers, harness.BUILD / "servers.log") as started:
            for s in started:  # a fresh server's first requests cost it more
                harness.echo_load(pingpong, s.port, 10, 1024, 0.2, 0.0)

            def measure(s: harness.Running) -> Any:
                return harness.echo_load(
                    pingpong, s.port, args.connections, args.size, args.seconds, 0.2
                )

            runs = harness.interleave(
                started, args.rounds, measure, progress, f"echo {name}",
                lambda r: f"{r['rps']:,.0f} req/s, p99 {r['p99_us']} us",
            )  # fmt: skip
        cell = {
            "backend": name,
            "runs": runs,
            "ratios": harness.ratios(runs, "rps", "alone"),
            "cpu_ratios": harness.ratios(runs, "server_cpu_us_per_request", "alone"),
        }
        if "asyncio-reactor" in runs:
            pair = {"mixed": runs["mixed"], "asyncio-reactor": runs["asyncio-reactor"]}
            cell["ratios"].update(harness.ratios(pair, "rps", "asyncio-reactor"))
            cell["cpu_ratios"].update(
                harness.ratios(pair, "server_cpu_us_per_request", "asyncio-reactor")
            )
        cells.append(cell)
    return cells


def markdown(wake: list[dict[str, Any]] | None, echo: list[dict[str, Any]] | None) -> str:
    lines = []
    if wake:
        lines += [
            "| wake-up | median µs | p99 µs | max µs |",
            "| --- | ---: | ---: | ---: |",
        ]
        for row in wake:
            lines.append(
                f"| {row['case']} | {row['median_us']:.0f} | {row['p99_us']:.0f}"
                f" | {row['max_us']:.0f} |"
            )
        worst = max(wake, key=lambda r: r["median_us"])
        lines += ["", f"Worst median: {worst['median_us']:.0f} µs ({worst['case']}).", ""]
    if echo:
        lines += [
            "| session | mixed/alone req/s (min / median / max) | mixed/alone CPU per request |",
            "| --- | --- | --- |",
        ]
        for cell in echo:
            for over, label in (
                ("alone", ""),
                ("asyncio-reactor", " (over AsyncioSelectorReactor alone)"),
            ):
                key = f"mixed/{over}"
                if key not in cell["ratios"]:
                    continue
                r, c = cell["ratios"][key], cell["cpu_ratios"][key]
                lines.append(
                    f"| {cell['backend']}{label} | {r['min']:.2f} / **{r['median']:.2f}**"
                    f" / {r['max']:.2f} | {c['median']:.2f} |"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mixed", description=__doc__)
    parser.add_argument("--only", choices=("wakeups", "echo"))
    parser.add_argument("--wakeups", type=int, default=200, help="rounds per wake-up case")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved echo rounds")
    parser.add_argument("--seconds", type=float, default=3.0, help="per echo measurement")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--out", type=Path, help="write mixed.json into this directory")
    args = parser.parse_args(argv)
    started = time.monotonic()
    wake = echo = None
    if args.only in (None, "wakeups"):
        print("wake-ups ...", file=sys.stderr, flush=True)
        wake = wakeup_latencies(args.wakeups)
    if args.only in (None, "echo"):
        progress = harness.Progress(total=(len(FRAMEWORKS) * 2 + 1) * args.rounds)
        echo = echo_alone_and_mixed(args, progress)
    print(markdown(wake, echo))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        record = {"machine": harness_machine(), "wakeups": wake, "echo": echo}
        (args.out / "mixed.json").write_text(json.dumps(record, indent=1))
    print(f"took {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 0


def harness_machine() -> dict[str, Any]:
    from .__main__ import machine

    return machine()


if __name__ == "__main__":
    sys.exit(main())
