"""Every public name is documented in docs/, and the mkdocs nav points at real pages."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import polyloop
import polyloop_conformance

DOCS = Path(__file__).resolve().parent.parent / "docs"
ROOT = DOCS.parent


def test_every_public_name_is_in_the_api_index() -> None:
    index = (DOCS / "api.md").read_text()
    for name in polyloop.__all__:
        assert f"`polyloop.{name}`" in index, f"polyloop.{name} is missing from docs/api.md"
    for name in polyloop_conformance.__all__:
        assert f"`polyloop_conformance.{name}`" in index, name


def test_nav_pages_exist() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = re.findall(r":\s+(\S+\.md)\s*$", nav, flags=re.M)
    assert len(pages) >= 10
    for page in pages:
        assert (DOCS / page).is_file(), f"mkdocs.yml lists {page}, which does not exist"


def _python_blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), flags=re.S)


@pytest.mark.parametrize("index", range(len(_python_blocks("library-authors.md"))))
def test_library_authors_snippets_run(index: int, resp_server: tuple[str, int]) -> None:
    """Every snippet of the library authors' page runs, against polyloop serve resp."""
    code = _python_blocks("library-authors.md")[index]
    env = dict(os.environ, MINIKV_PORT=str(resp_server[1]), PYTHONPATH=str(ROOT / "examples"))
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 0, code + proc.stdout + proc.stderr
