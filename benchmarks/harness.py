"""Runs the servers and the load generators, round after round, and keeps every number.

Rule: the load never comes from Python. Echo load is ``pingpong`` (``pingpong.c``, built
here with gcc), RESP load is ``redis-benchmark``, HTTP load is ``wrk``; each runs as its
own process against a server process that is either the framework's own code
(``native/``) or ``polyloop serve APP --backend SPEC``. The harness only starts
processes, reads what they print and the servers' memory from ``/proc``.

Interleaving: every server of one backend stays up for that backend's whole group, and
each round measures them one after the other, so a drift of the machine (other
processes, thermal, the scheduler) hits every server alike. The order changes from round
to round (``round_order``: a balanced Latin square), so that no server always goes
first, or always right after the same other one. A ratio is taken per round (polyloop's
round r over native's round r) and reported as min / median / max over the rounds.
"""

from __future__ import annotations

import csv
import io
import json
import os
import resource
import select
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

HERE = Path(__file__).resolve().parent
BUILD = HERE / ".build"
NATIVE = HERE / "native"
FAMILIES = ("asyncio", "twisted", "gevent", "tornado")
#: How long a server may take to print ``listening on``.
START_TIMEOUT = 60.0

WRK_SCRIPT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "seconds": %.6f, "bytes": %d, "p50_us": %d, "p99_us": %d, "errors": %d}\\n',
    summary.requests, summary.duration / 1e6, summary.bytes,
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


# --- backends and the servers that stand for them ---


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``NAME[:k=v,...]`` or ``module:Class[:k=v,...]`` -> (target, options)."""
    parts = spec.split(":")
    options: dict[str, str] = {}
    if len(parts) > 1 and "=" in parts[-1]:
        for item in parts.pop().split(","):
            key, _, value = item.partition("=")
            options[key] = value
    return ":".join(parts), options


def family(spec: str) -> str | None:
    """The framework whose native servers are the baseline; None for a third party."""
    target, _ = parse_spec(spec)
    return target if target in FAMILIES else None


@dataclass(frozen=True)
class Server:
    """One server process to measure: ``kind`` names its role in the ratios."""

    kind: str  # native | protocol | stream | asyncio-streams | anyio-streams
    label: str
    cmd: tuple[str, ...]


def native_server(spec: str, app: str) -> Server:
    fam = family(spec)
    _, options = parse_spec(spec)
    py = sys.executable
    if fam is None:
        # No framework of its own that we know of: the plain asyncio server is the
        # reference, and the label says so.
        return Server(
            "native", "asyncio (reference)", (py, str(NATIVE / "asyncio_server.py"), app)
        )
    cmd: tuple[str, ...] = (py, str(NATIVE / f"{fam}_server.py"), app)
    label = fam
    if fam == "asyncio" and options.get("loop") == "uvloop":
        cmd, label = (*cmd, "--uvloop"), "uvloop"
    if fam == "twisted":
        reactor = options.get("reactor", "epoll")
        reactor = reactor if reactor in ("epoll", "poll", "select") else "epoll"
        cmd, label = (*cmd, "--reactor", reactor), f"twisted ({reactor})"
    return Server("native", label, cmd)


def polyloop_server(spec: str, app: str, kind: str = "protocol") -> Server:
    cmd = (sys.executable, "-m", "polyloop", "serve", app, "--backend", spec)
    return Server(kind, f"polyloop {app}", cmd)


def echo_servers(spec: str) -> list[Server]:
    """Native, polyloop's Protocol and Stream echo, and on plain asyncio the anchors."""
    servers = [
        native_server(spec, "echo"),
        polyloop_server(spec, "echo"),
        polyloop_server(spec, "echo-stream", "stream"),
    ]
    if spec == "asyncio":
        py = sys.executable
        servers.append(
            Server("asyncio-streams", "asyncio streams",
                   (py, str(NATIVE / "asyncio_server.py"), "streams"))
        )  # fmt: skip
        servers.append(
            Server("anyio-streams", "anyio streams", (py, str(NATIVE / "anyio_server.py")))
        )
    return servers


#: The environment every server starts with, native and polyloop alike: glibc's malloc
#: with fixed thresholds. By default the mmap threshold starts at 128 KiB and moves up
#: only when a process frees a mapped block, so whether asyncio's ``recv(256 KiB)`` costs
#: an ``mmap``, an ``mremap`` and a ``munmap`` per read depends on what the process
#: allocated before: the same native asyncio echo ran at 35-45k or at 131k req/s by that
#: alone (strace: one mmap per 1 KiB message in the slow state). Fixed for both sides, a
#: ratio compares code, not allocator history. ``--malloc default`` leaves it as it is.
FIXED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "4194304", "MALLOC_TRIM_THRESHOLD_": "8388608"}
SERVER_ENV: dict[str, str] = dict(FIXED_MALLOC)


class Running:
    """A started server: its process and port; ``stop()`` ends it by its pid."""

    def __init__(self, server: Server, log: Path) -> None:
        self.server = server
        log.parent.mkdir(parents=True, exist_ok=True)  # .build/ is made on first use
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            server.cmd, stdout=subprocess.PIPE, stderr=self._log, cwd=HERE.parent,
            env={**os.environ, **SERVER_ENV},
        )  # fmt: skip
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], START_TIMEOUT)
        line = self.proc.stdout.readline().decode() if ready else ""
        if not line.startswith("listening on"):
            self.stop()
            raise RuntimeError(f"{server.label} did not start ({' '.join(server.cmd)}); see {log}")
        self.port = int(line.rsplit(":", 1)[1])

    def rss(self) -> int:
        """Resident memory in bytes (VmRSS)."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def cpu_seconds(self) -> float:
        """CPU time the server has used, all threads (``schedstat``: nanoseconds)."""
        total = 0
        for task in os.listdir(f"/proc/{self.proc.pid}/task"):
            try:
                with open(f"/proc/{self.proc.pid}/task/{task}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (FileNotFoundError, ProcessLookupError):
                pass  # a thread that just ended
        return total / 1e9

    def minor_faults(self) -> int:
        """Page faults the server has taken (``minflt`` of ``/proc/PID/stat``): pages that
        malloc handed out fresh. A server whose every read lands on fresh pages (an
        ``mmap`` per 256 KiB ``recv``, a heap trimmed and grown again) runs at a fraction of
        its speed, depending on its allocation history more than on its code."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[7])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


@contextmanager
def running(servers: list[Server], log: Path) -> Iterator[list[Running]]:
    started: list[Running] = []
    try:
        for server in servers:
            started.append(Running(server, log))
        yield started
    finally:
        for r in started:
            r.stop()


# --- the load generators ---


def build_pingpong() -> Path:
    """Compile ``pingpong.c`` into ``.build/`` (again only if the source is newer)."""
    BUILD.mkdir(exist_ok=True)
    source, binary = HERE / "pingpong.c", BUILD / "pingpong"
    if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
        gcc = shutil.which("gcc") or shutil.which("cc")
        if gcc is None:
            raise RuntimeError("gcc is needed to build benchmarks/pingpong.c")
        subprocess.run([gcc, "-O2", "-Wall", "-o", str(binary), str(source)], check=True)
    return binary


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise RuntimeError(f"{tool} not found (Debian: see .ci/apt-packages)")
    return path


def run_json(cmd: list[str], timeout: float) -> dict[str, Any]:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {out.stderr.strip() or out.stdout.strip()}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def echo_load(
    pingpong: Path,
    port: int,
    connections: int,
    size: int,
    seconds: float,
    warmup: float,
    read: int = 0,
) -> dict[str, Any]:
    """``pingpong echo``; ``read`` caps each ``recv`` (0: what is left of the echo)."""
    cmd = [str(pingpong), "echo", "127.0.0.1", str(port), str(connections), str(size),
           str(seconds), str(warmup), str(read)]  # fmt: skip
    r = run_json(cmd, timeout=seconds + warmup + 60)
    if not (r["requests"] > 0 and r["rps"] > 0):  # nothing echoed: no measurement at all
        raise RuntimeError(
            f"pingpong echo against 127.0.0.1:{port} got no echo back"
            f" (requests {r['requests']}, rps {r['rps']})"
        )
    return r


def resp_load(port: int, connections: int, size: int, requests: int) -> dict[str, Any]:
    """``redis-benchmark`` SET and GET with ``size``-byte values; one record per test."""
    cmd = [need("redis-benchmark"), "-h", "127.0.0.1", "-p", str(port), "-c", str(connections),
           "-n", str(requests), "-d", str(size), "-t", "set,get", "--csv"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"redis-benchmark failed: {out.stderr.strip()}")
    result: dict[str, Any] = {}
    for row in csv.DictReader(io.StringIO(out.stdout)):
        try:
            rps = float(row.get("rps") or 0)
        except ValueError:
            rps = 0.0
        if not rps > 0:
            raise RuntimeError(
                f"redis-benchmark against 127.0.0.1:{port}: no rate for {row.get('test')!r}"
                f" (rps {row.get('rps')!r}): {out.stdout!r} {out.stderr!r}"
            )
        result[row["test"].lower()] = {
            "rps": rps,
            "p50_us": float(row["p50_latency_ms"]) * 1000,
            "p99_us": float(row["p99_latency_ms"]) * 1000,
        }
    if set(result) != {"set", "get"}:
        raise RuntimeError(f"redis-benchmark printed no results: {out.stdout!r} {out.stderr!r}")
    # One figure for the round: the mean of the two tests' rates.
    result["rps"] = (result["set"]["rps"] + result["get"]["rps"]) / 2
    result["total_requests"] = 2 * requests
    return result


def http_load(port: int, connections: int, seconds: int) -> dict[str, Any]:
    script = BUILD / "wrk-json.lua"
    if not script.exists():
        BUILD.mkdir(exist_ok=True)
        script.write_text(WRK_SCRIPT)
    cmd = [need("wrk"), "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script),
           f"http://127.0.0.1:{port}/"]  # fmt: skip
    r = run_json(cmd, timeout=seconds + 60)
    if r["errors"] > 0 or r["requests"] == 0:
        # Errors are socket errors and non-2xx/3xx answers: a server answering 500s fast
        # must not look fast.
        raise RuntimeError(
            f"wrk against http://127.0.0.1:{port}/: {r['errors']} errors"
            f" in {r['requests']} requests"
        )
    r["rps"] = r["requests"] / r["seconds"]
    r["total_requests"] = r["requests"]
    r["mbps"] = r["bytes"] / r["seconds"] / 1e6
    return r


def idle_load(pingpong: Path, server: Running, connections: int, settle: float) -> dict[str, Any]:
    """Open ``connections`` idle connections; the server's memory before and after."""
    before = server.rss()
    cmd = [str(pingpong), "idle", "127.0.0.1", str(server.port), str(connections), "32"]
    client = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert client.stdin is not None and client.stdout is not None
    try:
        ready, _, _ = select.select([client.stdout], [], [], 120)
        line = client.stdout.readline() if ready else ""
        if not line:
            raise RuntimeError(
                f"pingpong idle failed: {client.stderr.read() if client.stderr else ''}"
            )
        accepted = json.loads(line)
        time.sleep(settle)  # let the server finish what accepting left to do
        after = server.rss()
    finally:
        client.stdin.close()  # the client closes its connections and exits
        try:
            client.wait(30)
        except subprocess.TimeoutExpired:
            client.kill()
            client.wait()
    return {
        "connections": connections,
        "accept_seconds": accepted["seconds"],
        "rss_before": before,
        "rss_after": after,
        "bytes_per_connection": (after - before) / connections,
    }


def raise_nofile(want: int) -> int:
    """Raise the soft ``RLIMIT_NOFILE`` (the servers and clients inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --- numbers ---


def spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def ratios(runs: dict[str, list[dict[str, Any]]], metric: str, over: str) -> dict[str, Any]:
    """Per-round ratios ``kind/over`` of ``metric``, for every kind measured beside it."""
    out: dict[str, Any] = {}
    base = [r[metric] for r in runs[over]]
    for kind, values in runs.items():
        if kind == over:
            continue
        per_round = [v[metric] / b for v, b in zip(values, base, strict=True) if b]
        if per_round:
            out[f"{kind}/{over}"] = spread(per_round)
    return out


@dataclass
class Progress:
    """One line per measurement on stderr: how far, how long, how long still."""

    total: int
    done: int = 0
    start: float = field(default_factory=time.monotonic)
    out: Any = sys.stderr

    def step(self, label: str, result: str) -> None:
        self.done += 1
        elapsed = time.monotonic() - self.start
        left = elapsed / self.done * (self.total - self.done)
        print(
            f"[{self.done:>4}/{self.total}  {_clock(elapsed)} elapsed, ~{_clock(left)} left]"
            f"  {label}: {result}",
            file=self.out,
            flush=True,
        )


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}:{s:02d}"


Measure = Callable[[Running], dict[str, Any]]
T = TypeVar("T")


def round_order(items: list[T], n: int) -> list[T]:
    """The order of round ``n`` (from 0): row ``n`` of a balanced Latin square (Williams
    design) over ``items``, the same in every run.

    With k items, row n is 0, 1, k-1, 2, k-2, ... each shifted by n (mod k), its numbers
    then renamed so that row 0 is the given order: in rounds 0 to k-1, and in each next
    block of k, every item takes every place once. For an odd k those k rows cannot also
    balance what follows what, so the next k rows are the same reversed. Over k rounds
    (even k) or 2k (odd k) each item then comes right after every other one equally
    often: neither a server's place in the round nor the server measured just before it,
    whose after-effects it inherits, is always the same. With 2 servers the rounds
    alternate which one goes first.
    """
    k = len(items)
    if k == 0:
        return []
    first, low, high = [0], 1, k - 1
    while len(first) < k:
        first.append(low)
        low += 1
        if len(first) < k:
            first.append(high)
            high -= 1
    rows = [[(x + shift) % k for x in first] for shift in range(k)]
    if k % 2:
        rows += [row[::-1] for row in rows]
    name = {x: items[place] for place, x in enumerate(first)}  # row 0: the given order
    return [name[x] for x in rows[n % len(rows)]]


def interleave(
    servers: list[Running],
    rounds: int,
    measure: Measure,
    progress: Progress,
    label: str,
    show: Callable[[dict[str, Any]], str],
) -> dict[str, list[dict[str, Any]]]:
    """``rounds`` rounds, each measuring every server once, in ``round_order``.

    Each result records its ``position`` in its round (0: measured first).
    """
    runs: dict[str, list[dict[str, Any]]] = {s.server.kind: [] for s in servers}
    for n in range(rounds):
        for position, s in enumerate(round_order(servers, n)):
            cpu, faults = s.cpu_seconds(), s.minor_faults()
            try:
                result = measure(s)
            except RuntimeError as e:  # name the server the load generator ran against
                raise RuntimeError(f"{label} round {n + 1}/{rounds} {s.server.label}: {e}") from e
            cpu, faults = s.cpu_seconds() - cpu, s.minor_faults() - faults
            # The server's CPU per request: a second opinion that the scheduler's noise
            # (two cores shared by server, client and anything else) moves far less.
            requests = max(1, result["total_requests"])
            result["server_cpu_us_per_request"] = cpu * 1e6 / requests
            result["server_faults_per_request"] = faults / requests
            result["position"] = position
            runs[s.server.kind].append(result)
            progress.step(f"{label} round {n + 1}/{rounds} {s.server.label}", show(result))
    return runs
