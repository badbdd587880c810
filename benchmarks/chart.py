"""SVG charts of the ratios, written by hand so that the harness needs no plotting library.

Rule: one kind of chart, a horizontal bar per case at the median ratio with a whisker
from the lowest to the highest round, grouped by backend, with the goal and 1.0 drawn
as vertical lines. Where the goal differs between rows (the echo's goal is drawn on
the Protocol rows, none on the Stream API's), each row's own goal is drawn across that
row only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from html import escape
from pathlib import Path
from typing import Any

from . import report

Row = tuple[str, str, dict[str, float]]  # group, label, spread
Goal = Callable[[str, str], float | None]  # (group, label) -> that row's goal, if any

WIDTH, LEFT, RIGHT, ROW, TOP = 820, 230, 30, 17, 62
COLOURS = ["#4c78a8", "#f58518", "#54a24b", "#b279a2", "#e45756", "#72b7b2", "#9d755d"]


def bar_chart(
    title: str,
    subtitle: str,
    rows: list[Row],
    marks: list[tuple[float, str]],
    path: Path,
    goal: Goal | None = None,
) -> None:
    """``marks``: lines across the whole chart. ``goal``: each row's own goal (or None),
    drawn across each run of adjacent rows of one group that share it."""
    groups: list[str] = list(dict.fromkeys(g for g, _, _ in rows))
    goals = [goal(g, label) if goal else None for g, label, _ in rows]
    peak = max(
        [s["max"] for _, _, s in rows] + [v for v, _ in marks] + [g for g in goals if g] + [1.0]
    )
    xmax = math.ceil(peak * 1.05 / 0.25) * 0.25
    plot = WIDTH - LEFT - RIGHT

    def x(v: float) -> float:
        return LEFT + plot * min(v, xmax) / xmax

    height = TOP + ROW * (len(rows) + len(groups)) + 40
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}"'
        f' viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
        f'<text x="10" y="20" font-size="15" font-weight="bold">{escape(title)}</text>',
        f'<text x="10" y="38" fill="#555">{escape(subtitle)}</text>',
    ]
    bottom = height - 30
    step = 0.25 if xmax <= 2.5 else 0.5
    tick = 0.0
    while tick <= xmax + 1e-9:
        out.append(f'<line x1="{x(tick):.1f}" y1="{TOP - 6}" x2="{x(tick):.1f}" y2="{bottom}"'
                   ' stroke="#eee"/>')  # fmt: skip
        out.append(f'<text x="{x(tick):.1f}" y="{bottom + 14}" text-anchor="middle"'
                   f' fill="#555">{tick:g}</text>')  # fmt: skip
        tick += step
    y = TOP
    segments: list[tuple[float, float, float]] = []  # goal, top, bottom
    for gi, group in enumerate(groups):
        colour = COLOURS[gi % len(COLOURS)]
        out.append(f'<text x="10" y="{y + 12}" font-weight="bold">{escape(group)}</text>')
        y += ROW
        previous = None
        for (g, label, s), row_goal in zip(rows, goals, strict=True):
            if g != group:
                continue
            if row_goal is not None:
                if row_goal == previous:
                    segments[-1] = (row_goal, segments[-1][1], y + ROW)
                else:
                    segments.append((row_goal, y, y + ROW))
            previous = row_goal
            mid = y + ROW / 2
            out.append(
                f'<text x="{LEFT - 8}" y="{mid + 4:.1f}" text-anchor="end">{escape(label)}</text>'
            )
            out.append(f'<rect x="{LEFT}" y="{y + 3}" width="{x(s["median"]) - LEFT:.1f}"'
                       f' height="{ROW - 6}" fill="{colour}" opacity="0.8"/>')  # fmt: skip
            out.append(f'<line x1="{x(s["min"]):.1f}" y1="{mid:.1f}" x2="{x(s["max"]):.1f}"'
                       f' y2="{mid:.1f}" stroke="black"/>')  # fmt: skip
            for end in (s["min"], s["max"]):
                out.append(f'<line x1="{x(end):.1f}" y1="{mid - 4:.1f}" x2="{x(end):.1f}"'
                           f' y2="{mid + 4:.1f}" stroke="black"/>')  # fmt: skip
            out.append(f'<text x="{min(x(s["max"]) + 4, WIDTH - 4):.1f}" y="{mid + 4:.1f}"'
                       f' fill="#333">{s["median"]:.2f}</text>')  # fmt: skip
            y += ROW
    for value, top, end in segments:
        # The row's own goal, labelled just above its first row (in the group's title row).
        out.append(f'<line x1="{x(value):.1f}" y1="{top}" x2="{x(value):.1f}" y2="{end}"'
                   ' stroke="#c00" stroke-dasharray="4 3"/>')  # fmt: skip
        out.append(f'<text x="{x(value) - 3:.1f}" y="{top - 4}" text-anchor="end"'
                   f' fill="#c00">goal {value:g}</text>')  # fmt: skip
    for i, (value, label) in enumerate(sorted(marks)):
        # The lower mark's label to the left of its line, the higher one's to the right.
        anchor, dx = ("end", -3) if i == 0 else ("start", 3)
        out.append(f'<line x1="{x(value):.1f}" y1="{TOP - 6}" x2="{x(value):.1f}" y2="{bottom}"'
                   ' stroke="#c00" stroke-dasharray="4 3"/>')  # fmt: skip
        out.append(f'<text x="{x(value) + dx:.1f}" y="{TOP - 10}" text-anchor="{anchor}"'
                   f' fill="#c00">{escape(label)}</text>')  # fmt: skip
    out.append("</svg>")
    path.write_text("\n".join(out) + "\n")


def _cell(c: dict[str, Any]) -> str:
    return report.cell_label(c)


def write_all(results: dict[str, Any], out: Path) -> list[Path]:
    rounds = results["config"]["rounds"]
    where = f"{results['machine']['cores']} cores, {results['machine']['cpu']}"
    sub = f"median, whisker min–max over {rounds} interleaved rounds; {where}"
    written = []
    if results["echo"]:
        rows: list[Row] = []
        for c in results["echo"]:
            rows.append((c["backend"], f"Protocol {_cell(c)}", c["ratios"]["protocol/native"]))
        for c in results["echo"]:
            rows.append((c["backend"], f"Stream {_cell(c)}", c["ratios"]["stream/native"]))
        rows.sort(
            key=lambda r: list(dict.fromkeys(x["backend"] for x in results["echo"])).index(r[0])
        )
        path = out / "echo.svg"

        def echo_goal(backend: str, label: str) -> float | None:
            # The goals are the Protocol echo's, each backend's own (docs/benchmarks.md).
            return report.echo_goal(backend) if label.startswith("Protocol") else None

        bar_chart("Echo (pingpong.c): polyloop / native requests/s", sub, rows,
                  [(1.0, "1.0")], path, goal=echo_goal)  # fmt: skip
        written.append(path)
        anchored = [c for c in results["echo"] if "stream/asyncio-streams" in c["ratios"]]
        if anchored:
            rows = [(f"{c['backend']}: Stream API / asyncio streams", _cell(c),
                     c["ratios"]["stream/asyncio-streams"]) for c in anchored]  # fmt: skip
            rows += [(f"{c['backend']}: Stream API / anyio streams", _cell(c),
                      c["ratios"]["stream/anyio-streams"]) for c in anchored]  # fmt: skip
            path = out / "streams.svg"
            bar_chart("Stream API echo against asyncio's and anyio's streams", sub, rows,
                      [(1.0, "1.0"), (2.0, "2.0")], path)  # fmt: skip
            written.append(path)
    rows = []
    for r in results["resp"]:
        for t in ("set", "get"):
            rows.append((r["backend"], f"RESP {t.upper()} (redis-benchmark)", r["ratios"][t]))
    for r in results["http"]:
        rows.append((r["backend"], f"HTTP GET / (wrk) vs {r['labels']['native']}",
                     r["ratios"]["protocol/native"]))  # fmt: skip
    if rows:
        rows.sort(
            key=lambda r: [x["backend"] for x in results["resp"] + results["http"]].index(r[0])
        )
        path = out / "apps.svg"
        bar_chart("RESP and HTTP apps: polyloop / native requests/s", sub, rows,
                  [(0.9, "goal 0.9"), (1.0, "1.0")], path)  # fmt: skip
        written.append(path)
    rows = []
    for r in results["scale"]:
        for kind in ("protocol", "stream"):
            ratio = r["memory_ratios"].get(f"{kind}/native")
            if ratio:
                name = "Protocol" if kind == "protocol" else "Stream"
                rows.append((r["backend"], f"{name}: memory per idle connection", ratio))
    if rows:
        n = results["scale"][0]["connections"]
        path = out / "memory.svg"
        bar_chart(f"{n:,} idle connections: polyloop / native resident memory per connection",
                  sub.replace(f"{rounds} interleaved", f"{results['config']['scale_rounds']}"),
                  rows, [(1.0, "1.0"), (1.2, "goal ≤ 1.2")], path)  # fmt: skip
        written.append(path)
    return written
