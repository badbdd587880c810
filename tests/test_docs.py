"""Every public name is documented in docs/, and the mkdocs nav points at real pages."""

from __future__ import annotations

import re
from pathlib import Path

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
