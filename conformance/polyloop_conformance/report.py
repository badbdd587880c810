"""Reports of a conformance run: the terminal matrix, JSON records, a self-contained HTML page.

Rule: reports only read ``CheckResult`` records; they never run anything. A file is
always whole: ``LiveReport`` rewrites it (a temporary file, then a rename) as records come,
so a run that is killed leaves a valid report of what finished, every other planned case
listed as not run.
"""

from __future__ import annotations

import datetime
import html
import json
import os
import platform
import time
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ._registry import CheckResult

__all__ = [
    "LiveReport",
    "environment",
    "exit_code",
    "print_matrix",
    "write_html",
    "write_json",
]

_MARK = {
    "pass": "[green]✓[/]",
    "fail": "[bold red]✗[/]",
    "skip": "[yellow]skip[/]",
    "not-run": "[dim]not run[/]",
}
_TEXT = {"pass": "✓", "fail": "✗", "skip": "skip", "not-run": "not run"}
#: The detail of a planned case that has no record yet (what a killed run leaves).
PENDING = "not run: the run ended before this case (stopped or killed)"


def environment() -> dict[str, Any]:
    """Python, platform and the version of every backend's framework."""
    import polyloop

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "polyloop": polyloop.__version__,
        "backends": {
            b.name: b.version or f"unavailable: {b.error}" for b in polyloop.available_backends()
        },
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def _split(results: list[CheckResult]) -> tuple[list[CheckResult], list[CheckResult]]:
    same = [r for r in results if r.client_backend is None]
    cross = [r for r in results if r.client_backend is not None]
    return same, cross


def _order(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def print_matrix(results: list[CheckResult], console: Console) -> None:
    """Cases × backends, the cross grid (server rows × client columns), then every
    failure and skip with its detail."""
    same, cross = _split(results)
    if same:
        backends = _order([r.backend for r in same])
        table = Table(title="polyloop conformance", show_lines=False, header_style="bold")
        table.add_column("case")
        for backend in backends:
            table.add_column(backend, justify="center")
        cell: dict[tuple[str, str], CheckResult] = {(r.check, r.backend): r for r in same}
        for case in _order([r.check for r in same]):
            row = [case]
            for backend in backends:
                r = cell.get((case, backend))
                row.append(_MARK[r.status] if r else "")
            table.add_row(*row)
        totals = ["[bold]passed[/]"]
        for backend in backends:
            mine = [r for r in same if r.backend == backend]
            ok = sum(r.status == "pass" for r in mine)
            colour = "green" if ok == len(mine) else "red"
            totals.append(f"[{colour}]{ok}/{len(mine)}[/]")
        table.add_row(*totals, end_section=True)
        console.print(table)
    if cross:
        backends = _order([r.backend for r in cross] + [r.client_backend or "" for r in cross])
        grid = Table(
            title="cross: server backend (rows) × client backend (columns), apps passed",
            header_style="bold",
        )
        grid.add_column("server ↓ client →")
        for backend in backends:
            grid.add_column(backend, justify="center")
        by_pair: dict[tuple[str, str], list[CheckResult]] = defaultdict(list)
        for r in cross:
            by_pair[(r.backend, r.client_backend or "")].append(r)
        for server in backends:
            row = [server]
            for client in backends:
                rs = by_pair.get((server, client), [])
                ok = sum(r.status == "pass" for r in rs)
                colour = "green" if rs and ok == len(rs) else "red"
                bad = [r.check.removeprefix("app.") for r in rs if r.status != "pass"]
                row.append(
                    f"[{colour}]{ok}/{len(rs)}[/]" + (f"\n✗ {', '.join(bad)}" if bad else "")
                )
            grid.add_row(*row)
        console.print(grid)
    problems = [r for r in results if r.status in ("fail", "skip")]
    not_run = [r for r in results if r.status == "not-run"]
    for r in problems:
        where = r.backend if r.client_backend is None else f"{r.backend} → {r.client_backend}"
        colour = "red" if r.status == "fail" else "yellow"
        console.print(
            f"[{colour}]{r.status.upper()}[/] {r.check} on {escape(where)}: {escape(r.detail)}"
        )
    for r in results:  # recorded as passes so that the matrix stays green, but said loudly
        if r.status == "pass" and r.detail.startswith("KNOWN FAILURE"):
            rest = r.detail.removeprefix("KNOWN FAILURE ")
            console.print(
                f"[bold magenta]KNOWN FAILURE[/] {r.check} on {escape(r.backend)}: {escape(rest)}"
            )
        elif r.status == "pass" and r.detail:
            console.print(
                f"[bold magenta]NOTE[/] {r.check} on {escape(r.backend)}: {escape(r.detail)}"
            )
    n_pass = sum(r.status == "pass" for r in results)
    n_fail = sum(r.status == "fail" for r in results)
    n_skip = sum(r.status == "skip" for r in results)
    if not_run:
        reasons: dict[str, list[str]] = defaultdict(list)
        for r in not_run:
            where = r.backend if r.client_backend is None else f"{r.backend} → {r.client_backend}"
            reason = r.detail.split(")", 1)[0] + ")" if ")" in r.detail else r.detail
            reasons[reason].append(f"{r.check} on {where}")
        for reason, cases in reasons.items():
            shown = ", ".join(cases[:5]) + (
                f" and {len(cases) - 5} more" if len(cases) > 5 else ""
            )
            console.print(
                f"[bold]NOT RUN[/] {len(cases)} cases ({escape(reason)}): {escape(shown)}"
            )
    tail = f", {len(not_run)} not run" if not_run else ""
    console.print(f"{n_pass} passed, {n_fail} failed, {n_skip} skipped{tail}")


def exit_code(results: list[CheckResult], allow_skip: bool = False) -> int:
    """0 if every case passed (``allow_skip``: or skipped), else 1; a case that did not
    run is never a pass, and no case at all is a failure."""
    ok = {"pass", "skip"} if allow_skip else {"pass"}
    return 0 if results and all(r.status in ok for r in results) else 1


def _replace(path: str, text: str) -> None:
    """Write ``text`` to ``path`` whole: a reader (or a kill) never sees half a file."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def write_json(results: list[CheckResult], path: str) -> None:
    """One record per case, as the foundation issue specifies."""
    _replace(path, json.dumps([r.to_json() for r in results], indent=1) + "\n")


class LiveReport:
    """The ``--json``/``--html`` files of a run, rewritten as its records come.

    Every planned case is listed from the start, as ``not-run`` with ``PENDING`` until
    its record replaces it; the JSON is rewritten on every record, the HTML at most
    every ``html_every`` seconds and at ``close()``. Paths of ``None`` write nothing.
    """

    def __init__(
        self,
        planned: Iterable[tuple[str, str, str | None]],
        json_path: str | None,
        html_path: str | None,
        html_every: float = 2.0,
    ) -> None:
        self.json_path = json_path
        self.html_path = html_path
        self.html_every = html_every
        self._html_at = 0.0
        self._env = environment() if html_path else None
        self.records: dict[tuple[str, str, str | None], CheckResult] = {}
        for case, backend, client in planned:
            self.records[(case, backend, client)] = CheckResult(
                case, backend, client, "not-run", 0.0, PENDING
            )
        self._write(html=True)

    def add(self, record: CheckResult) -> None:
        """Record one case (a case not planned is added at the end)."""
        self.records[(record.check, record.backend, record.client_backend)] = record
        self._write(html=time.monotonic() - self._html_at >= self.html_every)

    def close(self) -> None:
        """Write both files a last time."""
        self._write(html=True)

    def _write(self, html: bool) -> None:
        if self.json_path is None and self.html_path is None:
            return
        results = list(self.records.values())
        if self.json_path is not None:
            write_json(results, self.json_path)
        if self.html_path is not None and html:
            write_html(results, self.html_path, self._env)
            self._html_at = time.monotonic()


_CSS = """
body{font:14px system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:center}
td:first-child,th:first-child{text-align:left}
td.pass{background:#c8f0c8}td.fail{background:#f5b5b5;cursor:pointer}
td.skip{background:#f7e3a1;cursor:pointer}td.mixed{background:#f5d0a0;cursor:pointer}
td.not-run{background:#e4e4e4;color:#666;cursor:pointer}
pre#detail{background:#f4f4f4;padding:1em;white-space:pre-wrap;min-height:3em;
position:sticky;top:0;border:1px solid #ccc;max-height:40vh;overflow:auto}
"""

_JS = """
document.querySelectorAll('td[data-detail]').forEach(function(td){
  td.addEventListener('click', function(){
    document.getElementById('detail').textContent = td.getAttribute('data-detail');
  });
});
"""


def _td(status: str, text: str, detail: str) -> str:
    return (
        f'<td class="{status}" data-detail="{html.escape(detail, quote=True)}"'
        f' title="{html.escape(detail[:300], quote=True)}">{html.escape(text)}</td>'
    )


def write_html(results: list[CheckResult], path: str, env: dict[str, Any] | None = None) -> None:
    """A self-contained page: the coloured grids; click a cell for its details."""
    env = env if env is not None else environment()
    same, cross = _split(results)
    out = [
        "<!doctype html><html><head><meta charset='utf-8'><title>polyloop conformance</title>",
        f"<style>{_CSS}</style></head><body><h1>polyloop conformance</h1>",
    ]
    n_pass = sum(r.status == "pass" for r in results)
    n_not_run = sum(r.status == "not-run" for r in results)
    not_run = f" {n_not_run} did not run." if n_not_run else ""
    out.append(
        f"<p>{n_pass} of {len(results)} cases passed.{not_run} Click a cell for details.</p>"
    )
    out.append("<pre id='detail'>(details)</pre>")
    if cross:
        backends = _order([r.backend for r in cross] + [r.client_backend or "" for r in cross])
        by_pair: dict[tuple[str, str], list[CheckResult]] = defaultdict(list)
        for r in cross:
            by_pair[(r.backend, r.client_backend or "")].append(r)
        out.append("<h2>Cross: server backend (rows) × client backend (columns)</h2>")
        out.append("<table><tr><th>server ↓ client →</th>")
        out += [f"<th>{html.escape(b)}</th>" for b in backends]
        out.append("</tr>")
        for server in backends:
            out.append(f"<tr><td>{html.escape(server)}</td>")
            for client in backends:
                rs = by_pair.get((server, client), [])
                ok = sum(r.status == "pass" for r in rs)
                status = "pass" if rs and ok == len(rs) else ("fail" if ok == 0 else "mixed")
                detail = "\n".join(
                    f"{r.check}: {r.status} ({r.seconds:.2f} s) {r.detail}" for r in rs
                )
                out.append(_td(status, f"{ok}/{len(rs)}", f"{server} → {client}\n{detail}"))
            out.append("</tr>")
        out.append("</table>")
    if same:
        backends = _order([r.backend for r in same])
        cell = {(r.check, r.backend): r for r in same}
        out.append("<h2>Checks and apps, per backend</h2><table><tr><th>case</th>")
        out += [f"<th>{html.escape(b)}</th>" for b in backends]
        out.append("</tr>")
        for case in _order([r.check for r in same]):
            out.append(f"<tr><td>{html.escape(case)}</td>")
            for b in backends:
                r = cell.get((case, b))
                if r is None:
                    out.append("<td></td>")
                else:
                    text = _TEXT.get(r.status, r.status)
                    detail = f"{case} on {b}: {r.status} in {r.seconds:.2f} s\n{r.detail}"
                    out.append(_td(r.status, text, detail))
            out.append("</tr>")
        out.append("</table>")
    out.append("<h2>Environment</h2><table>")
    for key, value in env.items():
        if isinstance(value, dict):
            value = "; ".join(f"{k}: {v}" for k, v in value.items())
        out.append(f"<tr><td>{html.escape(key)}</td><td>{html.escape(str(value))}</td></tr>")
    out.append(f"</table><script>{_JS}</script></body></html>\n")
    _replace(path, "".join(out))
