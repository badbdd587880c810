"""The core on its own: exports, no framework imports, front-end errors, backend specs."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

import polyloop
from polyloop import BackendSpec


def test_every_public_name_is_exported_once_and_documented() -> None:
    assert len(polyloop.__all__) == len(set(polyloop.__all__))
    for name in polyloop.__all__:
        obj = getattr(polyloop, name)
        assert obj.__doc__, f"polyloop.{name} has no docstring"
        module = getattr(obj, "__module__", "polyloop")
        assert not module.startswith("polyloop._"), f"{name} shows as {module}"


def test_importing_the_core_imports_no_framework() -> None:
    code = (
        "import sys, polyloop, polyloop.pytest_plugin;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in"
        " ('twisted', 'gevent', 'tornado', 'uvloop', 'greenlet')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cancelled_is_asyncios() -> None:
    import asyncio

    assert polyloop.Cancelled is asyncio.CancelledError


@pytest.mark.parametrize(
    ("spec", "target", "options"),
    [
        ("asyncio", "asyncio", {}),
        ("asyncio:loop=uvloop", "asyncio", {"loop": "uvloop"}),
        ("twisted:reactor=select", "twisted", {"reactor": "select"}),
        ("my.pkg:MyBackend", "my.pkg:MyBackend", {}),
        ("my.pkg:MyBackend:a=1,b=2", "my.pkg:MyBackend", {"a": "1", "b": "2"}),
    ],
)
def test_backend_specs(spec: str, target: str, options: dict[str, str]) -> None:
    parsed = BackendSpec.parse(spec)
    assert (parsed.target, parsed.options) == (target, options)
    assert str(parsed) == spec


def test_bad_backend_specs() -> None:
    with pytest.raises(LookupError, match="unknown backend 'nope'"):
        polyloop.load_backend("nope")
    with pytest.raises(ValueError, match="bad backend option"):
        BackendSpec.parse("asyncio:=x")
    with pytest.raises(TypeError, match="unknown option"):
        polyloop.load_backend("asyncio:colour=blue")
    with pytest.raises(ImportError, match="cannot be loaded"):
        polyloop.load_backend("no_such_module_here:Backend")
    with pytest.raises(TypeError, match=r"not a polyloop\.Backend"):
        polyloop.load_backend("builtins:dict")


def test_run_wants_a_function_not_a_coroutine() -> None:
    async def main() -> None:
        pass

    coro = main()
    try:
        with pytest.raises(TypeError, match=r"run\(main, arg\)"):
            polyloop.run(coro)  # type: ignore[arg-type]
    finally:
        coro.close()


def test_run_returns_result_and_propagates_errors() -> None:
    async def ok(x: int) -> int:
        await polyloop.sleep(0)
        return x * 2

    async def bad() -> None:
        raise KeyError("boom")

    assert polyloop.run(ok, 21) == 42
    with pytest.raises(KeyError, match="boom"):
        polyloop.run(bad)


BAD_CALLS: list[tuple[type[Exception], str, Any]] = [
    (ValueError, r"port must be in 0\.\.65535, got 70000",
     lambda: polyloop.listen_tcp(polyloop.Protocol, "127.0.0.1", 70000)),
    (TypeError, "port must be an int, not str",
     lambda: polyloop.connect_tcp(polyloop.Protocol, "127.0.0.1", "80")),
    (ValueError, r"port must be in 1\.\.65535, got 0",
     lambda: polyloop.open_tcp_stream("127.0.0.1", 0)),
    (TypeError, "host must be a str", lambda: polyloop.connect_tcp(polyloop.Protocol, b"h", 80)),
    (TypeError, r"ssl must be an ssl\.SSLContext",
     lambda: polyloop.connect_tcp(polyloop.Protocol, "localhost", 80, ssl=True)),
    (ValueError, "server_hostname is only meaningful with ssl",
     lambda: polyloop.connect_tcp(polyloop.Protocol, "localhost", 80, server_hostname="x")),
    (TypeError, "protocol_factory must be callable",
     lambda: polyloop.listen_tcp(42, "127.0.0.1", 0)),
    (ValueError, "seconds must be >= 0", lambda: polyloop.sleep(-1)),
]  # fmt: skip


@pytest.mark.polyloop
async def test_front_end_checks_arguments_the_same_everywhere() -> None:
    for exc, match, call in BAD_CALLS:
        with pytest.raises(exc, match=match):
            await call()
