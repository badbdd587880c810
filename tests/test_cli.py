"""The ``polyloop`` command, run as users run it: in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import polyloop

INSTALLED = [b.name for b in polyloop.available_backends() if b.error is None]


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "polyloop", *args],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_backends_lists_every_entry_point() -> None:
    out = cli("backends")
    assert out.returncode == 0, out.stderr
    for info in polyloop.available_backends():
        assert info.name in out.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["conformance", "--backend", "nope"], "unknown backend 'nope'"),
        (["conformance", "--backend", "asyncio:loop=bogus"], "loop must be 'asyncio' or 'uvloop'"),
        (["conformance", "--app", "nope"], "unknown app 'nope'"),
        (["conformance", "--check", "nope.*"], "no check matches 'nope.*'"),
        (["serve", "echo", "--port", "70000"], "--port must be in 0..65535"),
        (["serve", "nope"], "unknown app 'nope'"),
        (["serve", "echo", "--backend", "nope"], "unknown backend 'nope'"),
    ],
)
def test_bad_input_is_one_clear_line(args: list[str], message: str) -> None:
    out = cli(*args)
    assert out.returncode == 2
    assert out.stderr.startswith("polyloop: error: ") and message in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_conformance_json_records(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    out = cli("conformance", "--backend", "asyncio", "--check", "addresses", "--app", "echo",
              "--json", str(path))  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    records = json.loads(path.read_text())
    assert {r["check"] for r in records} >= {"addresses.extra_info", "app.echo"}
    for r in records:
        assert set(r) == {"check", "backend", "client_backend", "status", "seconds", "detail"}
        assert r["status"] == "pass" and r["backend"] == "asyncio" and r["client_backend"] is None
        assert isinstance(r["seconds"], float)


def test_third_party_backend_that_breaks_a_promise_fails(tmp_path: Path) -> None:
    # A third-party backend named as module:Class, whose clock stands still.
    (tmp_path / "broken_backend.py").write_text(
        "from polyloop_asyncio import AsyncioBackend\n"
        "class Broken(AsyncioBackend):\n"
        "    name = 'broken'\n"
        "    def time(self):\n"
        "        return 0.0\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "polyloop", "conformance", "--backend", "broken_backend:Broken",
         "--check", "run", "--check", "session", "--check", "protocol", "--check", "addresses",
         "--check", "listen", "--check", "readiness", "--check", "timers.time_monotonic",
         "--app", "echo",
         "--json", str(tmp_path / "r.json"), "--html", str(tmp_path / "r.html")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )  # fmt: skip
    assert out.returncode == 1, out.stdout + out.stderr
    records = json.loads((tmp_path / "r.json").read_text())
    failed = {r["check"] for r in records if r["status"] == "fail"}
    assert failed and "app.echo" not in failed, failed  # the echo app does not use time()
    page = (tmp_path / "r.html").read_text()
    assert "broken_backend:Broken" in page and 'class="fail"' in page


def test_cross_matrix_between_two_loop_kinds(tmp_path: Path) -> None:
    path = tmp_path / "cross.json"
    out = cli("conformance", "--backend", "asyncio", "--backend", "asyncio:loop=uvloop",
              "--app", "echo", "--cross", "--json", str(path))  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    cross = [r for r in json.loads(path.read_text()) if r["client_backend"] is not None]
    pairs = {(r["backend"], r["client_backend"]) for r in cross}
    assert len(pairs) == 4 and all(r["status"] == "pass" for r in cross)
    assert "server ↓ client →" in out.stdout


@pytest.mark.parametrize("backend", INSTALLED)
def test_serve_echo_answers_a_plain_tcp_client(serve: Any, backend: str) -> None:
    s = serve("echo", backend)
    with socket.create_connection((s.host, s.port), timeout=10) as sock:
        sock.sendall(b"hello polyloop\n")
        sock.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := sock.recv(4096):
            got += chunk
    assert got == b"hello polyloop\n"
    s.assert_clean_exit()


@pytest.mark.parametrize("backend", INSTALLED)
def test_serve_echo_answers_nc(serve: Any, backend: str) -> None:
    nc = shutil.which("nc")
    if nc is None:
        pytest.skip("nc is not installed (Debian netcat-openbsd, see .ci/apt-packages)")
    s = serve("echo", backend)
    out = subprocess.run(
        [nc, "-N", s.host, str(s.port)], input=b"ping\n", capture_output=True, timeout=15
    )
    assert out.stdout == b"ping\n", out
    s.assert_clean_exit()


def test_serve_on_a_taken_port_is_a_clear_error(serve: Any) -> None:
    s = serve("echo", "asyncio")
    out = cli("serve", "echo", "--port", str(s.port))
    assert out.returncode == 2 and "cannot serve on 127.0.0.1" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    s.assert_clean_exit()


def test_version() -> None:
    out = cli("--version")
    assert out.returncode == 0 and out.stdout == f"polyloop {polyloop.__version__}\n", out


@pytest.mark.parametrize("option", ["--json", "--html"])
@pytest.mark.parametrize("where", ["missing-folder/r.out", "."])
def test_unwritable_report_path_fails_before_the_run(
    option: str, where: str, tmp_path: Path
) -> None:
    path = tmp_path / where
    out = cli("conformance", "--backend", "asyncio", "--check", "lifecycle", option, str(path))
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.startswith(f"polyloop: error: {option} {path}: cannot be written")
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stdout == ""  # nothing ran
    assert not (tmp_path / "missing-folder").exists()


def test_report_path_check_leaves_nothing_behind(tmp_path: Path) -> None:
    from polyloop._cli import check_writable

    check_writable("--json", str(tmp_path / "r.json"))
    assert list(tmp_path.iterdir()) == []


def test_backends_prints_the_extra_of_an_unavailable_backend(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # rich reads "[twisted]" as markup and drops it unless the text is escaped.
    from polyloop import _cli

    error = "backend 'twisted' cannot be loaded: No module named 'twisted'"
    error += " (pip install 'polyloop[twisted]')"
    fake = [polyloop.BackendInfo("twisted", "polyloop_twisted:TwistedBackend", None, error)]
    monkeypatch.setattr(_cli, "available_backends", lambda composite=False: fake)
    monkeypatch.setenv("COLUMNS", "300")
    assert _cli.main(["backends"]) == 0
    assert "pip install 'polyloop[twisted]'" in capsys.readouterr().out


def test_backends_without_rich_prints_a_plain_table(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from polyloop import _cli

    monkeypatch.setitem(sys.modules, "rich.console", None)  # import rich.console fails
    assert _cli.main(["backends"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(_cli.TITLE + "\n\nname ")
    for info in polyloop.available_backends(composite=True):
        assert f"\n{info.name} " in out, out


@pytest.mark.parametrize("command", [["conformance"], ["serve", "echo"]])
def test_without_the_kit_one_line_names_the_extra(
    command: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from polyloop import _cli

    monkeypatch.setitem(sys.modules, "wsproto", None)
    assert _cli.main(command) == 2
    err = capsys.readouterr().err
    # The same line whether the kit was imported before (its command checks again) or not
    # (importing it fails, and the core's command prints why).
    assert err == (
        f"polyloop: error: 'polyloop {command[0]}': polyloop_conformance needs wsproto:"
        " pip install 'polyloop[conformance]'\n"
    )


def test_a_command_plugin_that_cannot_load_says_why_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Subcommands come from the entry-point group ``polyloop.commands``; one that fails to
    import leaves ``backends`` working and says why when it is run."""
    from importlib.metadata import EntryPoint

    from polyloop import _cli

    broken = EntryPoint("lint", "polyloop_no_such_plugin:add", _cli.COMMANDS_GROUP)
    real = _cli.entry_points

    def fake(group: str) -> list[EntryPoint]:
        return [*real(group=group), broken] if group == _cli.COMMANDS_GROUP else real(group=group)

    monkeypatch.setattr(_cli, "entry_points", fake)
    assert _cli.main(["backends"]) == 0
    capsys.readouterr()
    assert _cli.main(["lint"]) == 2
    err = capsys.readouterr().err
    assert err == ("polyloop: error: 'polyloop lint': No module named 'polyloop_no_such_plugin'\n")
    assert _cli.main(["conformance", "--list", "--tier", "1"]) == 0  # the kit's still there
