"""The benchmark harness's smoke path runs and writes its results (no timing asserted)."""

from __future__ import annotations

import http.client
import json
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc builds benchmarks/pingpong.c")
@pytest.mark.timeout(300)
def test_quick_run(tmp_path: Path) -> None:
    sections = ["echo", "sizes", "scale"]
    sections += [
        s
        for s, tool in (("resp", "redis-benchmark"), ("http", "wrk"), ("twistedweb", "wrk"))
        if shutil.which(tool)
    ]
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--backend", "asyncio",
         "--only", ",".join(sections), "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["machine"]["cores"] >= 1
    cell, sized = results["echo"]
    # The sizes section: its client caps each recv at 64 KiB, and the tables say so.
    assert (sized["size"], sized["read"], cell["read"]) == (32768, 65536, 0), sized
    assert "32 KiB × 10, reads ≤ 64 KiB" in out.stdout
    assert all("server_faults_per_request" in r for r in sized["runs"]["stream"])
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
    loads = [s for s in sections if s not in ("scale", "sizes")]  # sizes: in echo
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


def _metronome(
    listener: socket.socket, connections: int, size: int, period: float, stop: threading.Event
) -> None:
    """An echo server that answers only on the ticks of its clock: from the first message
    on, every ``period`` seconds it echoes each connection's message. Every round trip then
    ends on a tick, however fast or slow the machine is, so how many end inside a window
    is known in advance."""
    conns = [listener.accept()[0] for _ in range(connections)]
    for c in conns:
        c.setblocking(False)
    select.select(conns, [], [], 30)  # pingpong sends every first message at once
    origin, pending, tick = time.monotonic(), [0] * connections, 0
    try:
        while not stop.is_set():
            tick += 1
            time.sleep(max(0.0, origin + tick * period - time.monotonic()))
            for i, c in enumerate(conns):
                try:
                    pending[i] += len(c.recv(65536))
                except BlockingIOError:
                    pass
                while pending[i] >= size:
                    c.sendall(b"x" * size)
                    pending[i] -= size
    except OSError:
        pass  # pingpong closed its connections
    finally:
        for c in conns:
            c.close()


def metronome_run(
    pingpong: str, connections: int, period: float, size: int = 64, read: int = 0
) -> dict[str, Any]:
    """``pingpong echo`` against a metronome: 2.5 periods of warm-up, 5 measured."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=connections)
    stop = threading.Event()
    server = threading.Thread(
        target=_metronome, args=(listener, connections, size, period, stop), daemon=True
    )
    server.start()
    try:
        out = subprocess.run(
            [pingpong, "echo", "127.0.0.1", str(listener.getsockname()[1]), str(connections),
             str(size), str(5 * period), str(2.5 * period), str(read)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        stop.set()
        server.join(10)
        listener.close()
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc builds benchmarks/pingpong.c")
@pytest.mark.timeout(120)
def test_pingpong_counts_what_completes_in_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """Against a server that answers on the ticks of a 0.2 s clock, a window from 2.5 to 7.5
    ticks holds exactly 5 completions per connection, each half a period from either edge
    (the margin for a loaded machine). Counting only round trips that also started inside
    the window would give 4: the one each connection has in flight when it opens is lost."""
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import harness

    connections = 10
    r = metronome_run(str(harness.build_pingpong()), connections, period=0.2)
    assert r["requests"] == 5 * connections, r
    # Ticks 1-7 before the deadline; the run ends at the deadline, before tick 8.
    assert r["total_requests"] == 7 * connections, r


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc builds benchmarks/pingpong.c")
@pytest.mark.timeout(120)
def test_pingpong_counts_the_same_when_each_recv_is_capped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With READ (the sizes section's client, which reads at most 64 KiB a ``recv``), an
    echo takes several reads and is still counted once, when its last byte arrives."""
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import harness

    r = metronome_run(str(harness.build_pingpong()), 4, period=0.2, size=5000, read=1000)
    assert r["read"] == 1000 and r["size"] == 5000, r
    assert r["requests"] == 5 * 4 and r["total_requests"] == 7 * 4, r


def test_compare_puts_two_runs_side_by_side(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import report

    def results(ratio: float, rps: float, faults: float) -> dict[str, Any]:
        spread = {"min": ratio - 0.1, "median": ratio, "max": ratio + 0.1}
        run = {"rps": rps, "server_cpu_us_per_request": 10.0, "p99_us": 300,
               "server_faults_per_request": faults}  # fmt: skip
        cell = {"backend": "asyncio", "size": 60000, "connections": 10, "read": 65536,
                "ratios": {"stream/asyncio-streams": spread},
                "runs": {"stream": [run], "asyncio-streams": [run]}}  # fmt: skip
        machine = {"date": "today", "load_average_at_start": [1.0, 1.0, 1.0]}
        return {"machine": machine, "echo": [cell], "resp": [], "http": []}

    out = report.compare(results(0.42, 20000, 14.0), results(1.05, 50000, 0.5), "a", "b")
    assert "| asyncio | 60,000 B × 10, reads ≤ 64 KiB | stream/asyncio-streams |" in out, out
    assert "0.42 (0.32–0.52) | 1.05 (0.95–1.15) |" in out, out
    assert "20,000 → 50,000 | 2.50 |" in out and "14.00 → 0.50" in out, out


def test_round_order_varies_place_and_predecessor(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each round measures every server once; over a full cycle each server takes every
    place equally often and comes right after every other one equally often."""
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import harness

    assert harness.round_order(["native", "protocol"], 0) == ["native", "protocol"]
    assert harness.round_order(["native", "protocol"], 1) == ["protocol", "native"]
    for k in range(1, 8):
        items = list(range(k))
        cycle = [harness.round_order(items, n) for n in range(2 * k if k % 2 else k)]
        assert cycle[0] == items
        assert all(sorted(row) == items for row in cycle)
        places = Counter((x, i) for row in cycle for i, x in enumerate(row))
        assert len(places) == k * k and len(set(places.values())) == 1, (k, cycle)
        after = Counter(pair for row in cycle for pair in pairwise(row))
        assert len(after) == k * (k - 1) and len(set(after.values())) <= 1, (k, cycle)
        # The first k rounds already give every server every place once.
        assert len({(x, i) for row in cycle[:k] for i, x in enumerate(row)}) == k * k


def test_echo_chart_draws_each_backends_goal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each backend's own goal, across its Protocol rows only. Issue 25's goal is 1.0 on
    every backend; the chart still draws a goal per row, so two different goals are
    patched in here to see that each row gets its own."""
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import chart, report

    assert {report.echo_goal(s) for s in ("asyncio", "asyncio:loop=uvloop", "twisted")} == {1.0}
    monkeypatch.setattr(report, "echo_goal", lambda spec: 0.9 if "uvloop" in spec else 0.95)

    one = {"min": 0.8, "median": 1.0, "max": 1.2}
    cells = [
        {"backend": spec, "size": size, "connections": 10,
         "ratios": {"protocol/native": one, "stream/native": one}}
        for spec in ("asyncio", "asyncio:loop=uvloop", "twisted")
        for size in (1024, 65536)
    ]  # fmt: skip
    results = {"config": {"rounds": 1}, "machine": {"cores": 2, "cpu": "test"},
               "echo": cells, "resp": [], "http": [], "scale": []}  # fmt: skip
    chart.write_all(results, tmp_path)
    svg = (tmp_path / "echo.svg").read_text()
    assert svg.count(">goal 0.95<") == 2 and svg.count(">goal 0.9<") == 1, svg


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


@pytest.mark.timeout(120)
def test_process_benchmark_tiny(tmp_path: Path) -> None:
    """The process benchmark at 2 MiB, one round on asyncio: both sides pipe every byte
    through cat (the benchmark checks the count) and the ratio is a finite positive
    number; its size is not judged (speed is for ``python -m benchmarks``)."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.processes", "--mb", "2", "--rounds", "1",
         "--backend", "asyncio", "--json", str(tmp_path / "p.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=110,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    (record,) = json.loads((tmp_path / "p.json").read_text())
    assert record["backend"] == "asyncio" and record["mib"] == 2
    assert len(record["runs"]["native"]) == len(record["runs"]["polyloop"]) == 1
    ratio = record["ratio"]["median"]
    assert 0 < ratio < float("inf"), record
    assert "| asyncio |" in out.stdout


@pytest.mark.parametrize("framework", ["asyncio", "twisted", "tornado", "gevent"])
def test_native_h11_servers_answer_like_the_http_app(framework: str) -> None:
    """The ``http-h11`` native servers (the HTTP section's same-parser reference) answer
    two keep-alive ``GET /`` on one connection with the app's greeting, and end when the
    client closes."""
    from benchmarks import harness

    server = harness.native_server(framework, "http-h11")
    with harness.running([server], harness.BUILD / "servers.log") as (running,):
        conn = http.client.HTTPConnection("127.0.0.1", running.port, timeout=10)
        try:
            for _ in range(2):
                conn.request("GET", "/")
                reply = conn.getresponse()
                assert (reply.status, reply.read()) == (200, b"hello, world\n")
                assert reply.getheader("content-type") == "text/plain"
        finally:
            conn.close()
