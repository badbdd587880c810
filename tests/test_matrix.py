"""The main job, as the README runs it: every check and app on every installed backend,
and every app across every ordered pair of backends, each side in its own process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polyloop
import polyloop_conformance as pc

INSTALLED = [b.name for b in polyloop.available_backends() if b.error is None]
#: Checks every mode runs (the rest need mixed mode's four frameworks in one thread).
N_CHECKS = sum(not c.mixed_only for c in pc.CHECKS.values())


def test_full_conformance_matrix_with_cross(tmp_path: Path) -> None:
    out_json = tmp_path / "matrix.json"
    proc = subprocess.run(
        [sys.executable, "-m", "polyloop", "conformance", "--cross", "--json", str(out_json),
         "--html", str(tmp_path / "matrix.html")],
        capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    records = json.loads(out_json.read_text())
    bad = [r for r in records if r["status"] != "pass"]
    assert not bad, "\n".join(f"{r['check']} {r['backend']}->{r['client_backend']}: "
                              f"{r['status']} {r['detail']}" for r in bad)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    same = [r for r in records if r["client_backend"] is None]
    cross = [r for r in records if r["client_backend"] is not None]
    n_cases = N_CHECKS + len(pc.APPS)
    assert len(same) == n_cases * len(INSTALLED)
    assert {(r["backend"], r["client_backend"]) for r in cross} == {
        (s, c) for s in INSTALLED for c in INSTALLED
    }
    assert len(cross) == len(pc.APPS) * len(INSTALLED) ** 2


def test_full_matrix_in_host_mode_with_cross(tmp_path: Path) -> None:
    """Every check and app started from inside a loop the framework itself runs (gevent
    also after patch_all), and every app across every pair of hosts."""
    out_json = tmp_path / "host.json"
    proc = subprocess.run(
        [sys.executable, "-m", "polyloop", "conformance", "--host", "--cross",
         "--json", str(out_json)],
        capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    records = json.loads(out_json.read_text())
    bad = [r for r in records if r["status"] != "pass"]
    assert not bad, "\n".join(f"{r['check']} {r['backend']}->{r['client_backend']}: "
                              f"{r['status']} {r['detail']}" for r in bad)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    same = [r for r in records if r["client_backend"] is None]
    hosts = {f"{b}@host" for b in INSTALLED} | (
        {"gevent@host+patch_all"} if "gevent" in INSTALLED else set()
    )
    assert {r["backend"] for r in same} == hosts
    assert len(same) == (N_CHECKS + len(pc.APPS)) * len(hosts)
    cross = [r for r in records if r["client_backend"] is not None]
    assert len(cross) == len(pc.APPS) * len(INSTALLED) ** 2


MIXED = ("asyncio", "tornado", "twisted", "gevent")


def test_full_matrix_in_mixed_mode_with_cross(tmp_path: Path) -> None:
    """Every check and app on each of the four sessions of the mixed thread, the
    bridge and wake-up checks included, and every app for all 16 server/client
    pairings, each pairing inside one thread."""
    out_json = tmp_path / "mixed.json"
    proc = subprocess.run(
        [sys.executable, "-m", "polyloop", "conformance", "--mixed", "--cross",
         "--json", str(out_json)],
        capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    records = json.loads(out_json.read_text())
    bad = [r for r in records if r["status"] != "pass"]
    assert not bad, "\n".join(f"{r['check']} {r['backend']}->{r['client_backend']}: "
                              f"{r['status']} {r['detail']}" for r in bad)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    same = [r for r in records if r["client_backend"] is None]
    labels = {f"{m}@mixed" for m in MIXED}
    assert {r["backend"] for r in same} == labels
    assert len(same) == (len(pc.CHECKS) + len(pc.APPS)) * len(labels)
    assert {r["check"].split(".")[0] for r in same} >= {"bridges", "wakeups"}
    cross = [r for r in records if r["client_backend"] is not None]
    assert {(r["backend"], r["client_backend"]) for r in cross} == {
        (s, c) for s in labels for c in labels
    }
    assert len(cross) == len(pc.APPS) * len(labels) ** 2


VARIANTS = [
    "asyncio:loop=uvloop",
    "asyncio:native_tls=false",  # TLS through the core's MemoryBIO layer
    "twisted:reactor=select",
    "twisted:reactor=poll",
    "twisted:reactor=asyncio",
    # The worked example of docs/writing-a-backend.md: tier 1 of the contract only.
    "polyloop_conformance.example_backend:SelectorsBackend",
]


def test_backend_variants_pass_every_check_and_app(tmp_path: Path) -> None:
    wanted = [v for v in VARIANTS if v.split(":")[0] in INSTALLED or "." in v.split(":")[0]]
    args = [a for v in wanted for a in ("--backend", v)]
    out_json = tmp_path / "variants.json"
    proc = subprocess.run(
        [sys.executable, "-m", "polyloop", "conformance", *args, "--json", str(out_json)],
        capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    records = json.loads(out_json.read_text())
    bad = [f"{r['check']} {r['backend']}: {r['status']} {r['detail']}" for r in records
           if r["status"] != "pass"]  # fmt: skip
    assert not bad, "\n".join(bad)
    assert proc.returncode == 0
    assert {r["backend"] for r in records} == set(wanted)
    assert len(records) == len(wanted) * (N_CHECKS + len(pc.APPS))
