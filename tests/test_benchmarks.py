"""The benchmark harness's smoke path runs and writes its results (no timing asserted)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc builds benchmarks/pingpong.c")
@pytest.mark.timeout(300)
def test_quick_run(tmp_path: Path) -> None:
    sections = ["echo", "scale"]
    sections += [
        s for s, tool in (("resp", "redis-benchmark"), ("http", "wrk")) if shutil.which(tool)
    ]
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--backend", "asyncio",
         "--only", ",".join(sections), "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["machine"]["cores"] >= 1
    (cell,) = results["echo"]
    assert set(cell["runs"]) == {
        "native",
        "protocol",
        "stream",
        "asyncio-streams",
        "anyio-streams",
    }
    assert "protocol/native" in cell["ratios"]
    # Every load section measured something: a load that got nothing back would show as a
    # rate (and a ratio) of 0, which the harness must refuse rather than report.
    loads = [s for s in sections if s != "scale"]
    assert all(results[s] for s in loads), {s: results[s] for s in loads}
    measured = [c for s in loads for c in results[s]]
    for c in measured:
        for kind, runs in c["runs"].items():
            assert runs and all(r["rps"] > 0 for r in runs), (kind, runs)
        assert c["ratios"]
        for name, ratio in c["ratios"].items():
            assert all(v > 0 for v in ratio.values()), (name, ratio)
    assert results["scale"][0]["runs"]["protocol"][0]["connections"] == 500
    assert (tmp_path / "echo.svg").read_text().startswith("<svg")
    assert "| target |" in out.stdout
    assert "[" in out.stderr  # the progress lines


def test_third_party_spec_has_a_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import harness

    spec = "polyloop_conformance.example_backend:SelectorsBackend"
    assert harness.family(spec) is None
    assert harness.native_server(spec, "echo").label == "asyncio (reference)"
    assert harness.family("twisted:reactor=select") == "twisted"
    assert "--reactor" in harness.native_server("twisted:reactor=select", "echo").cmd


@pytest.mark.timeout(120)
def test_mixed_wakeups_quick_run(tmp_path: Path) -> None:
    """``benchmarks.mixed`` times every wake-up case of the mixed thread (no timing asserted:
    only that each of the 75 cases was measured, in microseconds)."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.mixed", "--only", "wakeups", "--wakeups", "3",
         "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=110,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = json.loads((tmp_path / "mixed.json").read_text())["wakeups"]
    assert len({r["case"] for r in rows}) == 75  # the wakeups check's 5 places x 15 wake-ups
    assert all(0 < r["median_us"] <= r["p99_us"] <= r["max_us"] for r in rows), rows
    assert "| wake-up | median µs |" in out.stdout
