"""The open core (issue 19): ``src/polyloop`` names no framework and no adapter, and what a
backend implements is the public contract, the same for a fifth framework as for the four.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import polyloop
from polyloop.lowlevel import Session, SessionContract

CORE = Path(polyloop.__file__).parent
FORBIDDEN = ("twisted", "gevent", "greenlet", "tornado", "zope")
# The conformance kit too: the core's command finds its subcommands through entry points.
ADAPTER = re.compile(r"^polyloop_(asyncio|twisted|gevent|tornado|mixed|conformance)\b")


def _imports(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):  # module level and inside functions alike
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.lineno, node.module))
    return found


def test_the_core_imports_no_framework_and_no_adapter() -> None:
    bad = []
    for path in sorted(CORE.rglob("*.py")):
        for line, name in _imports(ast.parse(path.read_text())):
            if name.split(".")[0] in FORBIDDEN or ADAPTER.match(name):
                bad.append(f"{path.relative_to(CORE)}:{line} imports {name}")
    assert not bad, "\n".join(bad)


def test_the_core_names_no_framework_in_code() -> None:
    """Names in code, and strings that name a module or an attribute (docstrings, comments
    and help texts may explain): no framework's module, private attribute or adapter."""
    pattern = re.compile(
        r"^(twisted|gevent|greenlet|tornado|zope|polyloop_(asyncio|twisted|gevent|tornado|mixed))"
        r"(\.|$)|_asyncioEventloop|_ioloop_for|_polyloop_|_hub_local|_startedBefore"
    )
    names = re.compile(r"twisted|gevent|greenlet|tornado")
    bad = []
    for path in sorted(CORE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            text = None
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if id(node) not in docstrings:
                    text = node.value
            elif isinstance(node, ast.Name) and names.search(node.id.lower()):
                text = node.id
            elif isinstance(node, ast.Attribute) and names.search(node.attr.lower()):
                text = node.attr
            if text and (pattern.search(text) or (names.search(text.lower()) and " " not in text)):
                bad.append(f"{path.relative_to(CORE)}:{node.lineno}: {text[:60]!r}")
    assert not bad, "\n".join(bad)


def test_no_core_file_is_over_500_lines_and_the_session_is_at_most_400() -> None:
    sizes = {p.name: len(p.read_text().splitlines()) for p in CORE.rglob("*.py")}
    assert sizes["_session.py"] <= 400, sizes["_session.py"]
    assert all(n <= 500 for n in sizes.values()), {k: v for k, v in sizes.items() if v > 500}


def test_a_backend_overrides_no_core_method_and_old_hooks_are_named() -> None:
    with pytest.raises(TypeError, match="the core's, not a hook"):

        class Sleeps(Session):
            async def sleep(self, seconds: float) -> None: ...

    with pytest.raises(TypeError, match="now 'serve_socket'"):

        class Serves(Session):
            async def _serve(self) -> None: ...


def test_the_contract_hooks_are_public_and_documented() -> None:
    hooks = [n for n, v in vars(SessionContract).items() if callable(v) and not n.startswith("__")]
    assert hooks and not [n for n in hooks if n.startswith("_")], hooks
    undocumented = [n for n in hooks if not (getattr(SessionContract, n).__doc__ or "").strip()]
    assert not undocumented, undocumented
    page = (Path(__file__).parent.parent / "docs" / "writing-a-backend.md").read_text()
    missing = [n for n in hooks if not re.search(rf"`[^`]*\b{n}\b", page)]
    assert not missing, f"docs/writing-a-backend.md does not name {missing}"


def test_importing_the_adapters_imports_no_framework() -> None:
    """Every installed backend class is loaded to ask its detect(): that must not import
    a framework into an application that never uses it."""
    code = (
        "import sys, asyncio, polyloop\n"
        "for b in polyloop.available_backends.__globals__['entry_point_targets']().values():\n"
        "    polyloop._plugins.import_target(b)\n"
        "async def main():\n"
        "    return polyloop.current_backend().name\n"
        "print(asyncio.run(main()))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in"
        " ('twisted', 'gevent', 'greenlet', 'tornado')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["asyncio", "[]"], out.stdout


def test_the_backend_page_matches_the_contract_signatures() -> None:
    """Where docs/writing-a-backend.md spells a hook's call (``name(a, b)``), the
    arguments are the code's, in order; the tier-1 table lists exactly the abstract
    methods."""
    import inspect

    page = (Path(__file__).parent.parent / "docs" / "writing-a-backend.md").read_text()
    wrong = []
    for name, value in vars(SessionContract).items():
        if name.startswith("_") or not inspect.isfunction(value):
            continue
        params = [
            ("*" if p.kind is p.VAR_POSITIONAL else "") + p.name
            for p in inspect.signature(value).parameters.values()
            if p.name != "self" and p.kind is not p.KEYWORD_ONLY
        ]
        for spelled in re.findall(rf"`(?:async )?{name}\(([^)`]*)\)", page):
            args = [a.strip().split("=")[0].strip() for a in spelled.split(",") if a.strip()]
            if args != params:
                page_args, code_args = ", ".join(args), ", ".join(params)
                wrong.append(f"{name}({page_args}) on the page, ({code_args}) in code")
    assert not wrong, "\n".join(wrong)
    tier1 = page[page.index("## Tier 1: required") : page.index("## Owning a loop")]
    listed = set(re.findall(r"^\| `(\w+)\(", tier1, flags=re.M))
    listed |= set(re.findall(r"/ `(\w+)\(", tier1))
    abstract = set(SessionContract.__abstractmethods__)
    assert listed == abstract, f"tier-1 table {sorted(listed)} vs abstract {sorted(abstract)}"
