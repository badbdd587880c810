"""polyloop against each framework's own code, under load generators nobody here wrote.

    python -m benchmarks                              # every backend, ~7 min on 2 cores
    python -m benchmarks --quick                      # a smoke run, well under a minute
    python -m benchmarks --backend twisted:reactor=select --only echo
    python -m benchmarks --backend my_pkg.backend:MyBackend   # a third-party backend
    python -m benchmarks --out docs/bench             # the published run: JSON and charts
    python -m benchmarks --compare before.json after.json   # two runs side by side

Sections (``--only``): ``echo`` (pingpong.c, N connections with one SIZE-byte message
in flight each, against the native echo server, polyloop's Protocol and Stream echo, and
on plain asyncio also asyncio's and anyio's streams), ``sizes`` (the same servers under a
client that reads at most 64 KiB a ``recv``, 10 connections, 16 KiB to 256 KiB, the
sizes where malloc's history decides: 60,000 and 70,000 bytes straddle the 64 KiB
read), ``resp`` (redis-benchmark SET/GET
against the RESP app and a native RESP server), ``http`` (wrk against the HTTP app and
the framework's own HTTP server), ``scale`` (10,000 idle connections: resident memory per
connection, time to accept them all), ``processes`` (``--process-mb`` MiB through ``cat``
with ``polyloop.open_process`` against the framework's own process API, see
``benchmarks/processes.py``), ``twistedweb`` (wrk against one twisted.web site on
Twisted's own epoll reactor and through polyloop_twisted.compat on each backend:
``benchmarks/twistedweb.py``). A backend with no native server known here (a
third-party one) is measured against the plain asyncio servers, labelled "reference".

Results: ``results.json`` (every round of every server, the ratios, the targets, the
machine) and SVG charts in ``--out``; a Markdown summary on stdout. Progress on stderr.
Nothing here asserts on time: this is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import chart, harness, processes, report, twistedweb

DEFAULT_BACKENDS = ["asyncio", "asyncio:loop=uvloop", "twisted", "gevent", "tornado"]
SECTIONS = ("echo", "sizes", "resp", "http", "scale", "processes", "twistedweb")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join((__doc__ or "").split("\n\n")[1:]),
    )
    p.add_argument(
        "--backend",
        action="append",
        metavar="SPEC",
        help="a backend spec, repeatable (default: the four, plus asyncio on uvloop)",
    )
    p.add_argument("--only", default=",".join(SECTIONS), help="sections, comma-separated")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    p.add_argument("--seconds", type=float, default=0.4, help="measured seconds per echo run")
    p.add_argument("--warmup", type=float, default=0.1, help="unmeasured seconds before each")
    p.add_argument("--sizes", default="1024,16384,65536", help="echo message sizes, bytes")
    p.add_argument("--connections", default="10,100", help="echo connection counts")
    p.add_argument(
        "--mid-sizes",
        default="16384,32768,60000,65536,70000,131072,262144",
        help="the sizes section's message sizes, bytes",
    )
    p.add_argument("--mid-connections", type=int, default=10)
    p.add_argument(
        "--mid-read", type=int, default=65536, help="the sizes section's largest recv, bytes"
    )
    p.add_argument("--resp-connections", type=int, default=50)
    p.add_argument("--resp-requests", type=int, default=5000, help="per redis-benchmark test")
    p.add_argument("--resp-size", type=int, default=1024, help="SET/GET value size, bytes")
    p.add_argument("--http-connections", type=int, default=50)
    p.add_argument("--http-seconds", type=int, default=1, help="wrk duration (whole seconds)")
    p.add_argument("--scale", type=int, default=10000, help="idle connections (default 10000)")
    p.add_argument("--scale-rounds", type=int, default=3)
    p.add_argument("--process-mb", type=int, default=100, help="MiB through cat (processes)")
    p.add_argument(
        "--out",
        type=Path,
        default=harness.BUILD / "results",
        help="where results.json and the charts go (default benchmarks/.build/results)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1 round, 1 KiB x 10 connections, 500 idle connections",
    )
    p.add_argument("--no-charts", action="store_true")
    p.add_argument(
        "--malloc",
        choices=("fixed", "default"),
        default="fixed",
        help="glibc malloc thresholds of every server: fixed (harness.FIXED_MALLOC, the"
        " default) or the process's default, which moves with its allocation history",
    )
    p.add_argument(
        "--compare",
        nargs=2,
        type=Path,
        metavar=("BEFORE", "AFTER"),
        help="print two results.json side by side (cell by cell, AFTER/BEFORE) and exit",
    )
    args = p.parse_args(argv)  # fmt: skip
    if args.quick:
        args.rounds, args.scale_rounds, args.seconds, args.warmup = 1, 1, 0.3, 0.05
        args.sizes, args.connections = "1024", "10"
        args.mid_sizes = "32768"
        args.resp_requests, args.resp_connections, args.http_connections = 1000, 10, 10
        args.scale = min(args.scale, 500)
        args.process_mb = min(args.process_mb, 10)
    args.backends = args.backend or DEFAULT_BACKENDS
    args.sections = [s for s in args.only.split(",") if s]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        p.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    args.size_list = [int(s) for s in args.sizes.split(",")]
    args.connection_list = [int(c) for c in args.connections.split(",")]
    args.mid_size_list = [int(s) for s in args.mid_sizes.split(",")]
    return args


def _first_line(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else None


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = None
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    versions = {}
    for dist in ("polyloop", "twisted", "gevent", "greenlet", "tornado", "uvloop", "anyio", "h11"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 2**20, 1),
        "kernel": platform.release(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "versions": versions,
        "tools": {
            "gcc": _first_line(["gcc", "--version"]),
            "redis-benchmark": _first_line(["redis-benchmark", "--version"]),
            "wrk": _first_line(["wrk", "-v"]),
        },
        "load_average_at_start": os.getloadavg(),
    }


def plan_size(args: argparse.Namespace) -> int:
    total = 0
    for spec in args.backends:
        if "echo" in args.sections:
            cells = len(args.size_list) * len(args.connection_list)
            total += len(harness.echo_servers(spec)) * cells * args.rounds
        if "sizes" in args.sections:
            total += len(harness.echo_servers(spec)) * len(args.mid_size_list) * args.rounds
        total += sum(2 * args.rounds for s in ("resp", "http") if s in args.sections)
        if "http" in args.sections and harness.family(spec) not in (None, "asyncio"):
            total += args.rounds  # the http-h11 server beside the framework's own (run_app)
        if "scale" in args.sections:
            total += 3 * args.scale_rounds
        if "processes" in args.sections and spec.split(":")[0] in processes.NATIVE:
            total += 2 * args.rounds
    if "twistedweb" in args.sections:
        total += twistedweb.plan_size(args.backends, args.rounds)
    return total


def run_echo(
    spec: str,
    args: argparse.Namespace,
    pingpong: Path,
    progress: Any,
    plan: list[tuple[int, int]],
    read: int = 0,
) -> list[Any]:
    """Each (connections, size) of ``plan`` against the echo servers of ``spec``;
    ``read`` caps the client's ``recv`` (0: no cap)."""
    cells = []
    with harness.running(harness.echo_servers(spec), harness.BUILD / "servers.log") as servers:
        for s in servers:  # a fresh server's first requests cost it ~3x: not measured
            harness.echo_load(pingpong, s.port, 10, 1024, 0.2, 0.0)
        for connections, size in plan:

            def measure(s: harness.Running, c: int = connections, n: int = size) -> Any:
                return harness.echo_load(pingpong, s.port, c, n, args.seconds, args.warmup, read)

            unit = report.size_label(size).replace(" ", "")
            label = f"echo {spec} {unit}x{connections}" + (f" read<={read}" if read else "")
            runs = harness.interleave(
                servers, args.rounds, measure, progress, label,
                lambda r: f"{r['rps']:,.0f} req/s, p99 {r['p99_us']} us",
            )  # fmt: skip
            cell: dict[str, Any] = {
                "backend": spec,
                "size": size,
                "connections": connections,
                "read": read,
                "labels": {s.server.kind: s.server.label for s in servers},
                "runs": runs,
                "ratios": harness.ratios(runs, "rps", "native"),
                "cpu_ratios": harness.ratios(runs, "server_cpu_us_per_request", "native"),
                "p99_ratios": harness.ratios(runs, "p99_us", "native"),
            }
            for anchor in ("asyncio-streams", "anyio-streams"):
                if anchor in runs:
                    pair = {"stream": runs["stream"], anchor: runs[anchor]}
                    cell["ratios"].update(harness.ratios(pair, "rps", anchor))
                    cell["cpu_ratios"].update(
                        harness.ratios(pair, "server_cpu_us_per_request", anchor)
                    )
                    cell["p99_ratios"].update(harness.ratios(pair, "p99_us", anchor))
            cells.append(cell)
    return cells


def run_app(spec: str, app: str, args: argparse.Namespace, progress: Any) -> dict[str, Any]:
    servers = [harness.native_server(spec, app), harness.polyloop_server(spec, app)]
    if app == "http" and harness.family(spec) not in (None, "asyncio"):
        # Beside the framework's own HTTP server: one running the app's h11 calls on the
        # framework's own sockets (benchmarks/native/_common.H11), so that the ratio
        # over it is the cost of moving the bytes alone (asyncio's "native" is that).
        own = harness.native_server(spec, "http-h11")
        servers.append(harness.Server("native-h11", f"{own.label} + h11", own.cmd))
    with harness.running(servers, harness.BUILD / "servers.log") as started:
        for s in started:  # unmeasured: a fresh server's first requests cost it more
            if app == "resp":
                harness.resp_load(s.port, 10, args.resp_size, 500)
            else:
                harness.http_load(s.port, 10, 1)
        if app == "resp":

            def measure(s: harness.Running) -> Any:
                return harness.resp_load(
                    s.port, args.resp_connections, args.resp_size, args.resp_requests
                )

            show = lambda r: f"SET {r['set']['rps']:,.0f}, GET {r['get']['rps']:,.0f} req/s"  # noqa: E731
        else:

            def measure(s: harness.Running) -> Any:
                return harness.http_load(s.port, args.http_connections, args.http_seconds)

            show = lambda r: f"{r['rps']:,.0f} req/s, p99 {r['p99_us']} us"  # noqa: E731
        runs = harness.interleave(started, args.rounds, measure, progress, f"{app} {spec}", show)
    result: dict[str, Any] = {
        "backend": spec,
        "labels": {s.kind: s.label for s in servers},
        "runs": runs,
        "ratios": harness.ratios(runs, "rps", "native"),
        "cpu_ratios": harness.ratios(runs, "server_cpu_us_per_request", "native"),
    }
    if app == "http":
        result["p99_ratios"] = harness.ratios(runs, "p99_us", "native")
        if "native-h11" in runs:
            for key, metric in (("ratios", "rps"), ("cpu_ratios", "server_cpu_us_per_request"),
                                ("p99_ratios", "p99_us")):  # fmt: skip
                result[key].update(harness.ratios(runs, metric, "native-h11"))
    if app == "resp":
        for test in ("set", "get"):
            per = {k: [r[test] for r in v] for k, v in runs.items()}
            result["ratios"][test] = harness.ratios(per, "rps", "native")["protocol/native"]
    return result


def run_scale(
    spec: str, args: argparse.Namespace, pingpong: Path, progress: Any
) -> dict[str, Any]:
    servers = harness.echo_servers(spec)[:3]  # native, Protocol, Stream
    runs: dict[str, list[Any]] = {s.kind: [] for s in servers}
    log = harness.BUILD / "servers.log"
    for n in range(args.scale_rounds):
        for position, server in enumerate(harness.round_order(servers, n)):
            with harness.running([server], log) as (started,):
                r = harness.idle_load(pingpong, started, args.scale, settle=0.3)
            r["position"] = position
            runs[server.kind].append(r)
            progress.step(
                f"scale {spec} round {n + 1}/{args.scale_rounds} {server.label}",
                f"{args.scale} accepted in {r['accept_seconds']:.2f} s,"
                f" {r['bytes_per_connection'] / 1024:.1f} KiB/connection",
            )
    return {
        "backend": spec,
        "connections": args.scale,
        "labels": {s.kind: s.label for s in servers},
        "runs": runs,
        "memory_ratios": harness.ratios(runs, "bytes_per_connection", "native"),
        "accept_ratios": harness.ratios(runs, "accept_seconds", "native"),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    harness.SERVER_ENV = dict(harness.FIXED_MALLOC) if args.malloc == "fixed" else {}
    if args.compare:
        before, after = (json.loads(path.read_text()) for path in args.compare)
        print(report.compare(before, after, *(str(path) for path in args.compare)))
        return 0
    harness.BUILD.mkdir(exist_ok=True)
    nofile = harness.raise_nofile(2 * args.scale + 1024)
    if "scale" in args.sections and nofile < args.scale + 256:
        print(f"RLIMIT_NOFILE is {nofile}: fewer idle connections", file=sys.stderr)
        args.scale = nofile - 256
    pingpong = harness.build_pingpong()
    for tool, section in (("redis-benchmark", "resp"), ("wrk", "http"), ("wrk", "twistedweb")):
        if section in args.sections:
            harness.need(tool)
    results: dict[str, Any] = {
        "machine": machine(),
        "config": {k: v for k, v in vars(args).items() if k not in ("out",)},
        "echo": [], "resp": [], "http": [], "scale": [], "processes": [], "twistedweb": [],
    }  # fmt: skip
    progress = harness.Progress(plan_size(args))
    started = time.monotonic()
    print(f"{progress.total} measurements; backends {', '.join(args.backends)}", file=sys.stderr)
    for spec in args.backends:
        if "echo" in args.sections:
            plan = [(c, n) for c in args.connection_list for n in args.size_list]
            results["echo"] += run_echo(spec, args, pingpong, progress, plan)
        if "sizes" in args.sections:
            plan = [(args.mid_connections, n) for n in args.mid_size_list]
            results["echo"] += run_echo(spec, args, pingpong, progress, plan, args.mid_read)
        for app in ("resp", "http"):
            if app in args.sections:
                results[app].append(run_app(spec, app, args, progress))
        if "scale" in args.sections:
            results["scale"].append(run_scale(spec, args, pingpong, progress))
        if "processes" in args.sections:
            results["processes"] += processes.run([spec], args.process_mb, args.rounds, progress)
    if "twistedweb" in args.sections:
        results["twistedweb"] = twistedweb.run(args.backends, args, progress)
    results["duration_seconds"] = round(time.monotonic() - started, 1)
    results["machine"]["load_average_at_end"] = os.getloadavg()
    results["targets"] = report.targets(results) + twistedweb.targets(results["twistedweb"])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    if not args.no_charts:
        chart.write_all(results, args.out)
    print(report.markdown(results) + twistedweb.markdown(results["twistedweb"]))
    if results["processes"]:
        print("\n" + processes.markdown(results["processes"]))
    print(f"\nwrote {args.out}/ in {results['duration_seconds']:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
