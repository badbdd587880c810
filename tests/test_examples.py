"""The examples in README.md and docs/ run, on every installed backend."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

import polyloop

ROOT = Path(__file__).resolve().parent.parent
INSTALLED = [b.name for b in polyloop.available_backends() if b.error is None]


@pytest.mark.parametrize("backend", INSTALLED)
def test_readme_echo_example(backend: str) -> None:
    main = runpy.run_path(str(ROOT / "examples" / "echo.py"))["main"]
    assert polyloop.run(main, backend=backend) == f"hello from {backend}".encode()


def test_readme_shows_the_example_verbatim() -> None:
    readme = (ROOT / "README.md").read_text()
    example = (ROOT / "examples" / "echo.py").read_text()
    body = example.split('"""', 2)[2].split('if __name__ == "__main__":')[0].strip()
    body = body.replace("\n\n\n", "\n\n")
    assert body in readme.replace("\n\n\n", "\n\n")
