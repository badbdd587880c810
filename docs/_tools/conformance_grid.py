"""Draw the conformance results as an SVG picture for the docs' results page.

    polyloop conformance --cross --json results.json
    python docs/_tools/conformance_grid.py results.json docs/img/conformance-grid.svg

Two grids: per category and backend, the checks and apps that passed; and the cross
matrix, server backend by client backend, the apps that passed. Only the standard
library is used, so the picture can be remade anywhere the suite runs.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from datetime import date
from html import escape
from pathlib import Path

CELL_W, CELL_H, LABEL_W, HEAD_H = 110, 26, 170, 34
GREEN, AMBER, RED, GREY = "#2e7d32", "#f9a825", "#c62828", "#9e9e9e"


def colour(passed: int, total: int) -> str:
    if total == 0:
        return GREY
    if passed == total:
        return GREEN
    return AMBER if passed >= 0.9 * total else RED


def grid(
    x0: int,
    y0: int,
    title: str,
    rows: list[str],
    cols: list[str],
    cells: dict[tuple[str, str], tuple[int, int]],
) -> tuple[list[str], int]:
    out = [
        f'<text x="{x0}" y="{y0 + 18}" font-size="16" font-weight="bold">{escape(title)}</text>'
    ]
    y = y0 + HEAD_H
    for j, col in enumerate(cols):
        cx = x0 + LABEL_W + j * CELL_W + CELL_W // 2
        out.append(f'<text x="{cx}" y="{y + 16}" text-anchor="middle" font-weight="bold">'
                   f"{escape(col)}</text>")  # fmt: skip
    y += CELL_H
    for row in rows:
        out.append(f'<text x="{x0}" y="{y + 17}">{escape(row)}</text>')
        for j, col in enumerate(cols):
            passed, total = cells.get((row, col), (0, 0))
            x = x0 + LABEL_W + j * CELL_W
            out.append(
                f'<rect x="{x + 2}" y="{y + 2}" width="{CELL_W - 4}" height="{CELL_H - 4}"'
                f' rx="3" fill="{colour(passed, total)}"/>'
                f'<text x="{x + CELL_W // 2}" y="{y + 17}" text-anchor="middle"'
                f' fill="white">{passed}/{total}</text>'
            )
        y += CELL_H
    return out, y


def render(records: list[dict[str, object]], day: str) -> str:
    own: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    cross: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    backends: list[str] = []
    categories: list[str] = []
    for r in records:
        backend, client = str(r["backend"]), r.get("client_backend")
        if backend not in backends:
            backends.append(backend)
        ok = r["status"] == "pass"
        if client is None:
            name = str(r["check"])
            category = name.split(".")[0] if "." in name else "apps"
            if category not in categories:
                categories.append(category)
            cell = own[(category, backend)]
        else:
            cell = cross[(backend, str(client))]
        cell[0] += ok
        cell[1] += 1
    categories.sort(key=lambda c: (c == "apps", c))
    first, y = grid(10, 10, "Checks and apps, per backend", categories, backends,
                    {k: (v[0], v[1]) for k, v in own.items()})  # fmt: skip
    second, y = grid(10, y + 20, "Cross matrix: server (rows) x client (columns), apps",
                     backends, backends, {k: (v[0], v[1]) for k, v in cross.items()})  # fmt: skip
    passed = sum(r["status"] == "pass" for r in records)
    foot = (f'<text x="10" y="{y + 24}" fill="#555">{passed} of {len(records)} cases passed'
            f" ({escape(day)}; polyloop conformance --cross)</text>")  # fmt: skip
    width = LABEL_W + CELL_W * len(backends) + 20
    body = "\n".join([*first, *second, foot])
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y + 40}"'
        f' font-family="sans-serif" font-size="13">\n'
        f'<rect width="100%" height="100%" fill="white"/>\n{body}\n</svg>\n'
    )


def main(argv: list[str]) -> None:
    records = json.loads(Path(argv[1]).read_text())
    day = argv[3] if len(argv) > 3 else date.today().isoformat()
    Path(argv[2]).write_text(render(records, day))


if __name__ == "__main__":
    main(sys.argv)
