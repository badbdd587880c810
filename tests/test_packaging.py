"""The wheel as a library's user gets it: ``pip install polyloop``, no extras, no network.

The core has no third-party dependency: the wheel, installed alone into a fresh venv
(no system site-packages, ``--no-index`` so that nothing else can come in), brings no
other distribution, runs the README's example on asyncio, and its command says which
extra the conformance kit needs. With the extra ``twisted`` (installed from wherever this
machine's pip finds packages), the same example runs on Twisted, and the kit still stays
out.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = [
    "polyloop",
    "polyloop_asyncio",
    "polyloop_twisted",
    "polyloop_gevent",
    "polyloop_tornado",
    "polyloop_mixed",
    "polyloop_conformance",
]


def _run(*cmd: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    # No pip configuration (this machine's find-links and indexes would otherwise be
    # added to the command line's), no inherited PYTHONPATH.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=240, env=env,
        stdin=subprocess.DEVNULL, **kwargs,  # type: ignore[arg-type]
    )  # fmt: skip


def _readme_example(folder: Path, backend: str) -> Path:
    """The README's ten lines, run on ``backend`` alone (not the loop over all four)."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Ten lines.*?```python\n(.*?)```", readme, flags=re.S)
    assert block is not None
    code, loop = block.group(1).split("\n\nfor backend in")
    assert backend in loop
    script = folder / "example.py"
    script.write_text(code + f"\n\nprint(polyloop.run(main, backend={backend!r}))\n")
    return script


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(dist), str(ROOT)],
        capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    (found,) = dist.glob("polyloop-*.whl")
    return found


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("venv")
    out = _run(sys.executable, "-m", "venv", "--without-pip", home)
    assert out.returncode == 0, out.stderr
    # pip itself comes from this interpreter's ensurepip bundle, not from an index.
    out = _run(home / "bin" / "python", "-m", "ensurepip", "--default-pip")
    assert out.returncode == 0, out.stderr
    out = _run(
        home / "bin" / "python", "-m", "pip", "install", "--no-index",
        "--find-links", wheel.parent, "polyloop",
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    yield home


@pytest.fixture(scope="module")
def twisted_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel with the extra ``twisted``. Twisted comes from wherever this machine's
    pip configuration finds packages (an index, a cache): that is what users do."""
    home = tmp_path_factory.mktemp("venv-twisted")
    out = _run(sys.executable, "-m", "venv", home)
    assert out.returncode == 0, out.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    out = subprocess.run(
        [str(home / "bin" / "python"), "-m", "pip", "install", "-q",
         "--find-links", str(wheel.parent), "polyloop[twisted]"],
        capture_output=True, text=True, timeout=240, env=env, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if out.returncode != 0 and "No matching distribution found for twisted" in out.stderr:
        pytest.skip("Twisted cannot be installed here: no index or cache pip can reach has it")
    assert out.returncode == 0, out.stdout + out.stderr
    return home


@pytest.mark.slow
def test_wheel_has_py_typed_and_license(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in PACKAGES:
        assert f"{package}/py.typed" in names, package
    assert any(n.endswith("licenses/LICENSE") for n in names), sorted(names)


@pytest.mark.slow
def test_no_extras_installs_polyloop_alone(venv: Path) -> None:
    out = _run(venv / "bin" / "python", "-m", "pip", "list", "--format=freeze")
    assert out.returncode == 0, out.stderr
    names = {line.split("==")[0].lower() for line in out.stdout.split()}
    assert names - {"pip", "setuptools"} == {"polyloop"}, out.stdout


@pytest.mark.slow
def test_readme_example_runs_on_the_core_alone(venv: Path, tmp_path: Path) -> None:
    script = _readme_example(tmp_path, "asyncio")
    out = _run(venv / "bin" / "python", script, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "b'hello from asyncio'\n"


@pytest.mark.slow
def test_command_on_the_core_alone(venv: Path) -> None:
    polyloop = venv / "bin" / "polyloop"
    out = _run(polyloop, "--version")
    assert out.returncode == 0 and out.stdout.strip() == "polyloop 0.1.0", out
    out = _run(polyloop, "backends")
    assert out.returncode == 0, out.stderr
    assert re.search(r"^asyncio\s+asyncio \(Python", out.stdout, flags=re.M), out.stdout
    # No framework is installed here: each line names its extra, brackets and all.
    assert "pip install 'polyloop[twisted]'" in out.stdout, out.stdout
    for command in (["conformance"], ["serve", "echo"]):
        out = _run(polyloop, *command)
        assert out.returncode == 2, out
        assert out.stderr.count("\n") == 1, out.stderr
        assert "pip install 'polyloop[conformance]'" in out.stderr, out.stderr


@pytest.mark.slow
def test_the_kit_names_its_extra_on_the_core_alone(venv: Path) -> None:
    out = _run(venv / "bin" / "python", "-c", "import polyloop_conformance")
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert last == (
        "ImportError: polyloop_conformance needs h11, wsproto, trustme, rich:"
        " pip install 'polyloop[conformance]'"
    ), out.stderr


@pytest.mark.slow
def test_readme_example_runs_on_twisted_with_its_extra(twisted_venv: Path, tmp_path: Path) -> None:
    out = _run(twisted_venv / "bin" / "python", "-m", "pip", "list", "--format=freeze")
    names = {line.split("==")[0].lower() for line in out.stdout.split()}
    assert {"polyloop", "twisted"} <= names, out.stdout
    assert not names & {"rich", "h11", "wsproto", "trustme"}, out.stdout  # not the kit
    script = _readme_example(tmp_path, "twisted")
    out = _run(twisted_venv / "bin" / "python", script, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "b'hello from twisted'\n"
