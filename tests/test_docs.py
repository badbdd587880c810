"""The documentation: every public name is in it, every example runs, the site builds
strictly and works in a real browser.

- Every ```python block of every page runs, as a script of its own in a fresh
  directory (``python snippet.py``; ``__file__`` is the script, ``MINIKV_PORT`` names a
  ``polyloop serve resp`` server, ``examples/`` is on the path). A block right after
  ``<!-- pytest -->`` is a test file and runs under pytest instead.
- ``mkdocs build --strict`` (mkdocs-material, mkdocstrings) into a temporary directory.
- The built site, served over loopback HTTP, in headless Chromium driven through the
  DevTools protocol: pages render, the navigation goes where it says, search finds.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import polyloop
import polyloop_conformance

DOCS = Path(__file__).resolve().parent.parent / "docs"
ROOT = DOCS.parent

#: Pages whose examples are not run, and why.
NOT_RUN = {
    "conformance.md": "fragments naming a third-party backend (MyBackend) that does not exist",
    "writing-a-backend.md": "a backend skeleton whose methods are `...` by design",
}


def test_every_public_name_is_in_the_api_index() -> None:
    index = (DOCS / "api.md").read_text()
    for name in polyloop.__all__:
        assert f"`polyloop.{name}`" in index, f"polyloop.{name} is missing from docs/api.md"
    for name in polyloop_conformance.__all__:
        assert f"`polyloop_conformance.{name}`" in index, name
    import polyloop_mixed
    from polyloop_twisted import compat as compat_twisted

    for name in compat_twisted.__all__:
        assert f"`polyloop_twisted.compat.{name}`" in index, name
    for name in polyloop.bridge.__all__:
        assert f"`polyloop.bridge.{name}`" in index, name
    for name in polyloop_mixed.__all__:
        assert f"`polyloop_mixed.{name}`" in index, name


def test_api_index_has_from_thread_lowlevel_and_the_fixture() -> None:
    index = (DOCS / "api.md").read_text()
    import polyloop.lowlevel
    import polyloop.pytest_plugin

    for module in (polyloop.from_thread, polyloop.lowlevel, polyloop.pytest_plugin):
        for name in module.__all__:
            assert f"`{module.__name__}.{name}`" in index, f"{module.__name__}.{name}"


def test_api_index_names_link_to_the_reference() -> None:
    """Every name in a row of the API index is a link to its reference entry (an
    autorefs link: ``[`polyloop.X`][polyloop.X]``, which the strict build resolves)."""
    index = (DOCS / "api.md").read_text()
    rows = re.findall(r"^\| (.+?) \|", index, flags=re.M)
    # The plugin's marker, option and ini options are not Python names.
    plugin_rows = ("`@pytest.mark.polyloop", "`--polyloop-backends", "`polyloop_backends`")
    names = [r for r in rows if "polyloop" in r and not r.startswith(plugin_rows)]
    assert len(names) > 100
    unlinked = [r for r in names if not re.fullmatch(r"\[`([\w.]+)`\]\[\1\]", r)]
    assert not unlinked, unlinked


def test_compat_names_have_docstrings() -> None:
    pytest.importorskip("twisted", reason="polyloop_twisted.compat needs polyloop[twisted]")
    from polyloop_twisted import compat as compat_twisted

    for name in compat_twisted.__all__:
        obj = getattr(compat_twisted, name)
        assert obj.__doc__, f"polyloop_twisted.compat.{name} has no docstring"
        assert obj.__module__ == "polyloop_twisted.compat", (name, obj.__module__)


def test_nav_pages_exist() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = re.findall(r":\s+(\S+\.md)\s*$", nav, flags=re.M)
    assert len(pages) >= 10
    for page in pages:
        assert (DOCS / page).is_file(), f"mkdocs.yml lists {page}, which does not exist"
    listed = set(pages)
    for path in DOCS.rglob("*.md"):
        page = path.relative_to(DOCS).as_posix()
        if not page.startswith("_"):
            assert page in listed, f"{page} is not in the mkdocs.yml nav"


def test_figures_are_what_their_source_draws(tmp_path: Path) -> None:
    """docs/img's explanatory figures are drawn by docs/_tools/figures.py: running it
    again gives the committed files, byte for byte (edit the source, not the SVG)."""
    out = subprocess.run(
        [sys.executable, str(DOCS / "_tools" / "figures.py"), str(tmp_path)],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    drawn = sorted(tmp_path.glob("*.svg"))
    assert [p.name for p in drawn] == ["host-mode.svg", "layering.svg", "mixed-mode.svg"]
    for path in drawn:
        committed = DOCS / "img" / path.name
        assert committed.is_file(), f"docs/img/{path.name} is not committed"
        assert committed.read_text() == path.read_text(), (
            f"docs/img/{path.name} differs from what docs/_tools/figures.py draws: run it"
        )


def test_figures_are_on_the_pages_read_first() -> None:
    wanted = {
        "index.md": ["layering"],
        "concepts.md": ["layering", "host-mode", "mixed-mode"],
        "library-authors.md": ["host-mode", "layering"],
        "mixed.md": ["mixed-mode"],
    }
    for page, figures in wanted.items():
        text = (DOCS / page).read_text()
        for figure in figures:
            assert re.search(rf"!\[[^\]]{{40,}}\]\(img/{figure}\.svg\)", text), (page, figure)


# --------------------------------------------------------------------------------------
# Every example runs
# --------------------------------------------------------------------------------------

_BLOCK = re.compile(r"(?:<!--\s*([\w-]+)\s*-->\s*\n)?```python\n(.*?)```", flags=re.S)


def _examples() -> list[Any]:
    found = []
    for path in sorted(DOCS.rglob("*.md")):
        page = path.relative_to(DOCS).as_posix()
        for i, match in enumerate(_BLOCK.finditer(path.read_text())):
            marks = [pytest.mark.skip(reason=NOT_RUN[page])] if page in NOT_RUN else []
            found.append(
                pytest.param(page, match.group(1), match.group(2), id=f"{page}-{i}", marks=marks)
            )
    return found


@pytest.mark.parametrize(("page", "how", "code"), _examples())
def test_example_runs(
    page: str, how: str | None, code: str, resp_server: tuple[str, int], tmp_path: Path
) -> None:
    env = dict(
        os.environ,
        MINIKV_PORT=str(resp_server[1]),
        PYTHONPATH=os.pathsep.join([str(ROOT / "examples"), os.environ.get("PYTHONPATH", "")]),
    )
    if how == "pytest":
        script = tmp_path / "test_snippet.py"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(script)]
    else:
        assert how is None, f"unknown marker <!-- {how} --> before a block of {page}"
        script = tmp_path / "snippet.py"
        cmd = [sys.executable, str(script)]
    script.write_text(code)
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 0, f"{page}:\n{code}\n{proc.stdout}\n{proc.stderr}"


# --------------------------------------------------------------------------------------
# The site builds strictly, and works in a browser
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = "the docs extra is not installed (pip install -e '.[docs]')"
    for module in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python"):
        pytest.importorskip(module, reason=reason)
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        env=dict(os.environ, NO_MKDOCS_2_WARNING="1"),
        capture_output=True, text=True, timeout=300, cwd=ROOT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_mkdocs_build_strict(site: Path) -> None:
    assert (site / "index.html").is_file()
    assert (site / "search" / "search_index.json").is_file()
    assert (site / "img" / "conformance-grid.svg").is_file()


def test_reference_has_every_public_name(site: Path) -> None:
    """The generated API reference has an entry (an anchor) for every public name."""
    html = (site / "reference" / "index.html").read_text()
    from polyloop_twisted import compat as compat_twisted

    names = [f"polyloop.{n}" for n in polyloop.__all__]
    names += [f"polyloop_twisted.compat.{n}" for n in compat_twisted.__all__]
    names += [f"polyloop_conformance.{n}" for n in polyloop_conformance.__all__]
    missing = [n for n in names if f'id="{n}"' not in html]
    assert not missing, missing


def test_api_index_links_reach_reference_entries(site: Path) -> None:
    api = (site / "api" / "index.html").read_text()
    reference = (site / "reference" / "index.html").read_text()
    targets = re.findall(r'href="\.\./reference/#([\w.]+)"', api)
    assert len(targets) > 100
    missing = [t for t in targets if f'id="{t}"' not in reference]
    assert not missing, missing


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def _serve(directory: Path) -> Iterator[str]:
    handler = functools.partial(_Quiet, directory=str(directory))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


class Browser:
    """Headless Chromium, one page, driven through the DevTools protocol."""

    def __init__(self, ws: Any) -> None:
        self._ws = ws
        self._id = 0

    def call(self, method: str, **params: Any) -> Any:
        self._id += 1
        self._ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv(timeout=30))
            if message.get("id") == self._id:
                assert "error" not in message, message
                return message.get("result")

    def wait_event(self, name: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = json.loads(self._ws.recv(timeout=max(deadline - time.monotonic(), 0.1)))
            if message.get("method") == name:
                return
        raise TimeoutError(name)

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired")

    def js(self, expression: str) -> Any:
        result = self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def until(self, expression: str, timeout: float = 15) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = self.js(expression)
            except AssertionError as exc:
                # Polled while a click's navigation replaces the page: Chromium answers
                # "Inspected target navigated or closed"; the next poll sees the new one.
                if "navigated or closed" not in str(exc):
                    raise
                value = None
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"never true: {expression}")


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    exe = _chromium()
    if exe is None:
        pytest.skip("no chromium here: it is in .ci/apt-packages (apt-get install chromium)")
    from websockets.sync.client import connect

    profile = tmp_path_factory.mktemp("chromium-profile")
    proc = subprocess.Popen(
        [
            exe, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
            "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
            "--window-size=1280,900", "about:blank",
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    drain: threading.Thread | None = None
    try:
        assert proc.stderr is not None
        port = None
        deadline = time.monotonic() + 30
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                break
            found = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            port = found and int(found.group(1))
        assert port, "chromium did not start its DevTools endpoint"
        drain = threading.Thread(target=proc.stderr.read, daemon=True)  # keep it drained
        drain.start()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            pages = [t for t in json.load(r) if t["type"] == "page"]
        with connect(pages[0]["webSocketDebuggerUrl"], max_size=None) as ws:
            b = Browser(ws)
            b.call("Page.enable")
            b.call("Runtime.enable")
            yield b
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            if drain is not None:
                drain.join(5)
            proc.stderr.close()


PAGES = {
    "": "Why polyloop",
    "getting-started/": "Getting started",
    "concepts/": "Concepts",
    "migrating/twisted/": "Twisted → asyncio",
    "compat-twisted/": "Twisted protocols on any backend",
    "results/": "Latest results",
    "reference/": "API reference",
}


def test_site_in_a_browser(site: Path, browser: Browser, tmp_path: Path) -> None:
    with _serve(site) as base:
        for path, title in PAGES.items():
            browser.open(base + path)
            h1 = browser.until("document.querySelector('.md-content h1')?.textContent")
            assert h1.strip().rstrip("¶").strip() == title, (path, h1)
            assert browser.js("document.title").endswith("polyloop")
            # the navigation is there, with every section
            nav = browser.js(
                "[...document.querySelectorAll('.md-nav--primary .md-nav__link')]"
                ".map(a => a.textContent.trim())"
            )
            for section in ("Getting started", "Concepts", "Migrating", "Reference"):
                assert any(section in n for n in nav), (path, section, nav)
        # pictures load
        browser.open(base + "results/")
        loaded = browser.until(
            "[...document.images].filter(i => i.src.endsWith('.svg'))"
            ".every(i => i.complete && i.naturalWidth > 0) && document.images.length"
        )
        assert loaded
        shot = browser.call("Page.captureScreenshot", format="png")
        (tmp_path / "results.png").write_bytes(__import__("base64").b64decode(shot["data"]))
        # a navigation link goes to its page
        browser.open(base)
        browser.js(
            "[...document.querySelectorAll('.md-nav--primary a.md-nav__link')]"
            ".find(a => a.textContent.trim() === 'Concepts').click()"
        )
        browser.until("location.pathname.endsWith('/concepts/')")
        browser.until("document.querySelector('.md-content h1')?.textContent.includes('Concepts')")
        # search finds a page by a word in it
        browser.open(base)
        browser.js(
            """(() => {
                const input = document.querySelector('input.md-search__input');
                input.focus();
                input.value = 'TimeoutMixin';
                input.dispatchEvent(new Event('focus'));
                input.dispatchEvent(new KeyboardEvent('keyup', {key: 'n'}));
                input.dispatchEvent(new Event('input', {bubbles: true}));
            })()"""
        )
        hits = browser.until(
            "[...document.querySelectorAll('.md-search-result__item a')]"
            ".map(a => a.getAttribute('href'))"
        )
        assert any("compat-twisted" in h or "migrating" in h for h in hits), hits
