"""mkdocs hooks: the pages that are generated at build time.

- The API reference lists every public name of each module's ``__all__`` (so a new name
  appears without anyone editing the page).
- The results page shows the benchmark charts that exist under ``docs/bench/``. The
  charts are made by the benchmark harness (benchmarks/), not by the docs build; a
page that named a missing picture would fail ``mkdocs build --strict``, so the page
names only what is there, and says so when nothing is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MARKER = "<!-- bench-charts -->"
PICTURES = (".svg", ".png", ".jpg", ".jpeg", ".webp")


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Fill in the markers of the results page and of the API reference."""
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, bench_markdown(Path(config["docs_dir"])))
    if REFERENCE_MARKER in markdown:
        markdown = markdown.replace(REFERENCE_MARKER, reference_markdown())
    return markdown


def bench_markdown(docs_dir: Path) -> str:
    """The benchmark charts found in ``docs/bench/``, as pictures."""
    bench = docs_dir / "bench"
    charts = sorted(p for p in bench.glob("*") if p.suffix.lower() in PICTURES)
    if not charts:
        body = (
            "No benchmark charts in `docs/bench/` in this build: the numbers are in"
            " [Benchmarks](benchmarks.md)."
        )
    else:
        names = [(p.name, p.stem.replace("-", " ").replace("_", " ")) for p in charts]
        body = "\n\n".join(f"![Benchmark chart: {title}](bench/{name})" for name, title in names)
    return body


REFERENCE_MARKER = "<!-- api-reference -->"

#: (title, module, intro) of each section of the API reference, in order.
SECTIONS = [
    ("polyloop", "polyloop", ""),
    ("polyloop.from_thread", "polyloop.from_thread", ""),
    ("polyloop.bridge", "polyloop.bridge", "Bridges between the frameworks' futures: see"
     " [Mixed mode](mixed.md#bridges)."),
    ("polyloop.lowlevel", "polyloop.lowlevel", "The backend author's kit: see"
     " [Writing a backend](writing-a-backend.md)."),
    ("polyloop_twisted", "polyloop_twisted", "The Twisted backend's host-mode entries."),
    ("polyloop_twisted.compat", "polyloop_twisted.compat", "Twisted protocols on any"
     " backend, and the reverse: see [Twisted protocols on any backend](compat-twisted.md)."),
    ("polyloop_gevent", "polyloop_gevent", "The gevent backend's host-mode entries."),
    ("polyloop_mixed", "polyloop_mixed", "The four frameworks in one thread: see"
     " [Mixed mode](mixed.md)."),
    ("polyloop_asyncio", "polyloop_asyncio", ""),
    ("polyloop_tornado", "polyloop_tornado", ""),
    ("polyloop_conformance", "polyloop_conformance", "The conformance suite's public API:"
     " see [The conformance suite](conformance.md)."),
    ("polyloop.pytest_plugin", "polyloop.pytest_plugin", "The pytest plugin's fixture: see"
     " [The pytest plugin](pytest.md)."),
]  # fmt: skip

#: Submodules that get a section of their own instead of an entry in their parent's.
OWN_SECTION = {"polyloop": {"bridge", "from_thread", "lowlevel"}}


def reference_markdown() -> str:
    """The ``:::`` directives of every public name, module by module."""
    import importlib

    out: list[str] = []
    for title, module_name, intro in SECTIONS:
        module = importlib.import_module(module_name)
        out += [f"## {title}", ""]
        if intro:
            out += [intro, ""]
        # The module itself (its docstring, and the anchor its name links to), then each
        # public name on its own.
        out += [f"::: {module_name}", "    options:", "      members: false", ""]
        skip = OWN_SECTION.get(module_name, set())
        for name in getattr(module, "__all__", []):
            if name not in skip:
                out += [f"::: {module_name}.{name}", ""]
    return "\n".join(out)
