"""From the rounds to the targets and a Markdown summary (what docs/benchmarks.md quotes).

Rule: numbers only, no I/O. A ratio is always shown with its spread over the rounds,
``median (min-max)``; a target is judged on the worst cell's median, and the spread is
there so that a reader can tell a miss from noise.
"""

from __future__ import annotations

import statistics
from typing import Any

#: The goals of issue 25 (performance round 3). A target is judged on its worst cell.
#: Protocol echo against the framework's own echo, uvloop's included.
ECHO_GOAL = 1.0
#: The RESP app against the same sans-io store on the framework's sockets, and the HTTP
#: app against a native server running the same h11 code.
APP_GOAL = 0.95
#: The HTTP app against the framework's *own* HTTP server (a different parser: twisted.web,
#: Tornado's HTTPServer, gevent's pywsgi): kept from round 2, not in issue 25's acceptance.
OWN_HTTP_GOAL = 0.9
MEMORY_GOAL = 1.1


def echo_goal(spec: str) -> float:
    """The Protocol echo's goal over native for a backend spec (the same on every one)."""
    return ECHO_GOAL


def _fmt(s: dict[str, float] | None) -> str:
    if not s:
        return "–"
    return f"{s['median']:.2f} ({s['min']:.2f}–{s['max']:.2f})"


def _inv(s: dict[str, float] | None) -> str:
    """A spread of x/y shown as y/x (so that above 1 reads "the Stream API is cheaper")."""
    if not s:
        return "–"
    return _fmt({"median": 1 / s["median"], "min": 1 / s["max"], "max": 1 / s["min"]})


def size_label(size: int) -> str:
    """``16 KiB``, ``60,000 B``: KiB where the size is a whole number of them."""
    return f"{size // 1024} KiB" if size >= 1024 and size % 1024 == 0 else f"{size:,} B"


def cell_label(c: dict[str, Any]) -> str:
    """An echo cell's load: size × connections, and the client's read cap if it had one."""
    read = f", reads ≤ {size_label(c['read'])}" if c.get("read") else ""
    return f"{size_label(c['size'])} × {c['connections']}{read}"


_cell = cell_label


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def _faults(runs: dict[str, list[dict[str, Any]]], kind: str) -> str:
    values = [r["server_faults_per_request"] for r in runs.get(kind, [])
              if "server_faults_per_request" in r]  # fmt: skip
    return f"{statistics.median(values):.1f}" if values else "–"


def _p99_ratio(runs: dict[str, list[dict[str, Any]]], test: str) -> dict[str, float] | None:
    """A RESP test's p99, polyloop over native, per round."""
    per = [p[test]["p99_us"] / n[test]["p99_us"]
           for p, n in zip(runs["protocol"], runs["native"], strict=True)
           if n[test]["p99_us"]]  # fmt: skip
    if not per:
        return None
    return {"min": min(per), "median": statistics.median(per), "max": max(per)}


def _target(
    what: str, backend: str, goal: float, op: str, cases: list[tuple[str, dict[str, float]]]
) -> dict[str, Any] | None:
    if not cases:
        return None
    if op == ">=":
        where, worst = min(cases, key=lambda c: c[1]["median"])
        met = worst["median"] >= goal
    else:
        where, worst = max(cases, key=lambda c: c[1]["median"])
        met = worst["median"] <= goal
    return {"target": what, "backend": backend, "goal": goal, "op": op, "worst_at": where,
            "worst": worst, "met": met}  # fmt: skip


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any] | None] = []
    backends = list(dict.fromkeys(c["backend"] for c in results["echo"]))
    for spec in backends:
        cells = [c for c in results["echo"] if c["backend"] == spec]
        goal = echo_goal(spec)
        vs = "uvloop-native" if "loop=uvloop" in spec else "native"
        out.append(_target(f"Protocol echo ≥ {goal}× {vs}", spec, goal, ">=",
                           [(_cell(c), c["ratios"]["protocol/native"])
                            for c in cells]))  # fmt: skip
        for anchor, g in (("asyncio-streams", 1.0), ("anyio-streams", 2.0)):
            key = f"stream/{anchor}"
            cases = [(_cell(c), c["ratios"][key]) for c in cells if key in c["ratios"]]
            out.append(
                _target(f"Stream echo ≥ {g}× {anchor.replace('-', ' ')}", spec, g, ">=", cases)
            )
    for app in ("resp", "http"):
        for r in results[app]:
            if app == "resp":
                cases = [(t.upper(), r["ratios"][t]) for t in ("set", "get")]
            else:
                cases = [("GET /", r["ratios"]["protocol/native"])]
            name = "RESP app (redis-benchmark)" if app == "resp" else "HTTP app (wrk)"
            if app == "resp":
                out.append(_target(f"{name} ≥ {APP_GOAL}× native", r["backend"], APP_GOAL,
                                   ">=", cases))  # fmt: skip
                continue
            same = r["ratios"].get("protocol/native-h11")
            if same is None:  # asyncio's (and a reference's) native server *is* that h11
                same = r["ratios"]["protocol/native"]
            else:
                out.append(_target(f"{name} ≥ {OWN_HTTP_GOAL}× the framework's own server",
                                   r["backend"], OWN_HTTP_GOAL, ">=", cases))  # fmt: skip
            out.append(_target(f"{name} ≥ {APP_GOAL}× native with the same h11",
                               r["backend"], APP_GOAL, ">=", [("GET /", same)]))  # fmt: skip
    for r in results["scale"]:
        ratio = r["memory_ratios"].get("protocol/native")
        if ratio:
            out.append(_target(f"memory per idle connection ≤ {MEMORY_GOAL}× native",
                               r["backend"], MEMORY_GOAL, "<=",
                               [(f"{r['connections']} idle", ratio)]))  # fmt: skip
    return [t for t in out if t is not None]


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    v = m["versions"]
    lines = [
        f"Machine: {m['cores']} cores, {m['cpu']}, {m['memory_gib']} GiB, Linux {m['kernel']};"
        f" {m['python']}; Twisted {v.get('twisted')}, gevent {v.get('gevent')},"
        f" Tornado {v.get('tornado')}, uvloop {v.get('uvloop')}, anyio {v.get('anyio')};"
        f" load average {m['load_average_at_start'][0]:.2f} at start."
        f" Run: {results['config']['rounds']} rounds, {results['duration_seconds']:.0f} s.",
        "",
    ]
    if results["echo"]:
        lines += [
            "| backend | load | native req/s | Protocol req/s | **Protocol / native** "
            "| Stream / native | server CPU/request, Protocol / native "
            "| p99 µs native / Protocol | p99 Protocol / native |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for c in results["echo"]:
            runs, r = c["runs"], c["ratios"]
            lines.append(
                f"| {c['backend']} | {_cell(c)} | {_median(runs['native'], 'rps'):,.0f}"
                f" | {_median(runs['protocol'], 'rps'):,.0f} | {_fmt(r.get('protocol/native'))}"
                f" | {_fmt(r.get('stream/native'))}"
                f" | {_fmt(c['cpu_ratios'].get('protocol/native'))}"
                f" | {_median(runs['native'], 'p99_us'):,.0f}"
                f" / {_median(runs['protocol'], 'p99_us'):,.0f}"
                f" | {_fmt(c.get('p99_ratios', {}).get('protocol/native'))} |"
            )
        anchored = [c for c in results["echo"] if "stream/asyncio-streams" in c["ratios"]]
        if anchored:
            lines += [
                "",
                "| backend | load | Stream req/s | asyncio streams req/s | anyio req/s "
                "| **Stream / asyncio streams** | **Stream / anyio** "
                "| CPU/request, asyncio streams / Stream | p99 Stream / asyncio streams "
                "| page faults/request, Stream / asyncio streams |",
                "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            ]
            for c in anchored:
                runs, r = c["runs"], c["ratios"]
                lines.append(
                    f"| {c['backend']} | {_cell(c)} | {_median(runs['stream'], 'rps'):,.0f}"
                    f" | {_median(runs['asyncio-streams'], 'rps'):,.0f}"
                    f" | {_median(runs['anyio-streams'], 'rps'):,.0f}"
                    f" | {_fmt(r.get('stream/asyncio-streams'))}"
                    f" | {_fmt(r.get('stream/anyio-streams'))}"
                    f" | {_inv(c['cpu_ratios'].get('stream/asyncio-streams'))}"
                    f" | {_fmt(c.get('p99_ratios', {}).get('stream/asyncio-streams'))}"
                    f" | {_faults(runs, 'stream')} / {_faults(runs, 'asyncio-streams')} |"
                )
    if results["resp"] or results["http"]:
        lines += [
            "",
            "| backend | load | native req/s | polyloop req/s | **polyloop / native** "
            "| server CPU/request, polyloop / native | p99 polyloop / native |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in results["resp"]:
            for t in ("set", "get"):
                nat = statistics.median(x[t]["rps"] for x in r["runs"]["native"])
                pol = statistics.median(x[t]["rps"] for x in r["runs"]["protocol"])
                lines.append(
                    f"| {r['backend']} | redis-benchmark {t.upper()} | {nat:,.0f} | {pol:,.0f}"
                    f" | {_fmt(r['ratios'][t])} | {_fmt(r['cpu_ratios'].get('protocol/native'))}"
                    f" | {_fmt(_p99_ratio(r['runs'], t))} |"
                )
        for r in results["http"]:
            for native in ("native", "native-h11"):
                if native not in r["runs"]:
                    continue
                key = f"protocol/{native}"
                lines.append(
                    f"| {r['backend']} | wrk GET / ({r['labels'][native]})"
                    f" | {_median(r['runs'][native], 'rps'):,.0f}"
                    f" | {_median(r['runs']['protocol'], 'rps'):,.0f}"
                    f" | {_fmt(r['ratios'].get(key))}"
                    f" | {_fmt(r['cpu_ratios'].get(key))}"
                    f" | {_fmt(r.get('p99_ratios', {}).get(key))} |"
                )
    if results["scale"]:
        lines += [
            "",
            "| backend | idle connections | KiB/connection native / Protocol / Stream "
            "| **memory Protocol / native** | accept all, s: native / Protocol / Stream |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for r in results["scale"]:
            runs = r["runs"]
            kib = " / ".join(
                f"{_median(runs[k], 'bytes_per_connection') / 1024:.1f}"
                for k in ("native", "protocol", "stream")
            )
            acc = " / ".join(
                f"{_median(runs[k], 'accept_seconds'):.2f}"
                for k in ("native", "protocol", "stream")
            )
            lines.append(
                f"| {r['backend']} | {r['connections']:,} | {kib}"
                f" | {_fmt(r['memory_ratios'].get('protocol/native'))} | {acc} |"
            )
    if results["targets"]:
        lines += ["", "| target | backend | worst cell | median (min–max) | met |",
                  "| --- | --- | --- | ---: | :---: |"]  # fmt: skip
        for t in results["targets"]:
            lines.append(
                f"| {t['target']} | {t['backend']} | {t['worst_at']} | {_fmt(t['worst'])}"
                f" | {'yes' if t['met'] else '**no**'} |"
            )
    return "\n".join(lines)


def _key(c: dict[str, Any]) -> tuple[Any, ...]:
    return (c["backend"], c["size"], c["connections"], c.get("read", 0))


def _med(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if key in r]
    return statistics.median(values) if values else None


def _num(x: float | None, fmt: str = "{:,.0f}") -> str:
    return "–" if x is None else fmt.format(x)


def _change(a: float | None, b: float | None) -> str:
    return "–" if a is None or b is None or not a else f"{b / a:.2f}"


def compare(before: dict[str, Any], after: dict[str, Any], a: str = "A", b: str = "B") -> str:
    """Two results files side by side, cell by cell (``python -m benchmarks --compare``).

    The two runs were not interleaved with each other: a machine that was busier during
    one moves all of its absolute numbers. The ratios (each taken per round, inside its
    own run) are what compares first; the absolute rates, CPU and page faults per request
    say where a change came from.
    """
    lines = [f"Before: {a} ({before['machine']['date']}, load"
             f" {before['machine']['load_average_at_start'][0]:.2f});"
             f" after: {b} ({after['machine']['date']}, load"
             f" {after['machine']['load_average_at_start'][0]:.2f}).", ""]  # fmt: skip
    old = {_key(c): c for c in before.get("echo", [])}
    new = {_key(c): c for c in after.get("echo", [])}
    keys = list(dict.fromkeys([*old, *new]))
    if keys:
        lines += [
            "| backend | load | ratio | before | after |",
            "| --- | --- | --- | ---: | ---: |",
        ]
        for k in keys:
            x, y = old.get(k), new.get(k)
            cell = cell_label(x or y or {})
            names = list(
                dict.fromkeys([*(x or {}).get("ratios", {}), *(y or {}).get("ratios", {})])
            )
            for name in names:
                lines.append(
                    f"| {k[0]} | {cell} | {name} | {_fmt((x or {}).get('ratios', {}).get(name))}"
                    f" | {_fmt((y or {}).get('ratios', {}).get(name))} |"
                )
        lines += [
            "",
            "| backend | load | server | req/s before → after | after / before "
            "| CPU µs/request before → after | page faults/request before → after "
            "| p99 µs before → after |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for k in keys:
            x, y = old.get(k), new.get(k)
            cell = cell_label(x or y or {})
            kinds = list(dict.fromkeys([*(x or {}).get("runs", {}), *(y or {}).get("runs", {})]))
            for kind in kinds:
                rx = (x or {}).get("runs", {}).get(kind, [])
                ry = (y or {}).get("runs", {}).get(kind, [])
                pa, pb = _med(rx, "rps"), _med(ry, "rps")
                cpu = (
                    _med(rx, "server_cpu_us_per_request"),
                    _med(ry, "server_cpu_us_per_request"),
                )
                flt = (
                    _med(rx, "server_faults_per_request"),
                    _med(ry, "server_faults_per_request"),
                )
                p99 = (_med(rx, "p99_us"), _med(ry, "p99_us"))
                lines.append(
                    f"| {k[0]} | {cell} | {kind} | {_num(pa)} → {_num(pb)} | {_change(pa, pb)}"
                    f" | {_num(cpu[0], '{:.1f}')} → {_num(cpu[1], '{:.1f}')}"
                    f" | {_num(flt[0], '{:.2f}')} → {_num(flt[1], '{:.2f}')}"
                    f" | {_num(p99[0])} → {_num(p99[1])} |"
                )
    for app in ("resp", "http"):
        old_apps = {r["backend"]: r for r in before.get(app, [])}
        new_apps = {r["backend"]: r for r in after.get(app, [])}
        backends = list(dict.fromkeys([*old_apps, *new_apps]))
        if not backends:
            continue
        lines += [
            "",
            f"| backend | {app} | polyloop / native before | after"
            " | polyloop req/s before → after |",
            "| --- | --- | ---: | ---: | ---: |",
        ]
        for spec in backends:
            x, y = old_apps.get(spec, {}), new_apps.get(spec, {})
            tests = ("set", "get") if app == "resp" else ("protocol/native",)
            for t in tests:
                rx = x.get("runs", {}).get("protocol", [])
                ry = y.get("runs", {}).get("protocol", [])
                if app == "resp":
                    pa = statistics.median(r[t]["rps"] for r in rx) if rx else None
                    pb = statistics.median(r[t]["rps"] for r in ry) if ry else None
                else:
                    pa, pb = _med(rx, "rps"), _med(ry, "rps")
                lines.append(
                    f"| {spec} | {t.upper() if app == 'resp' else 'GET /'}"
                    f" | {_fmt(x.get('ratios', {}).get(t))} | {_fmt(y.get('ratios', {}).get(t))}"
                    f" | {_num(pa)} → {_num(pb)} |"
                )
    return "\n".join(lines)
