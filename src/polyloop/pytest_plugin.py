"""The pytest plugin (entry point ``pytest11``): run ``async def`` tests on every backend.

Mark a test ``@pytest.mark.polyloop`` and it runs once per installed backend, each time
in a fresh ``polyloop.run`` with a timeout::

    @pytest.mark.polyloop
    async def test_echo(polyloop_backend):        # the fixture is optional
        stream = await polyloop.open_tcp_stream(...)

    @pytest.mark.polyloop(backends=["asyncio", "twisted:reactor=select"], timeout=5)
    async def test_something(): ...

    @pytest.mark.polyloop(backends=["my_pkg.backend:MyBackend"])  # a third party's
    async def test_mine(): ...

The ``polyloop_backend`` fixture is the backend spec of the current run. Backends come
from the marker, else the ini option ``polyloop_backends``, else every installed one; a
backend that cannot load is reported as a skip naming the missing extra. Only tests with
this marker are touched, so pytest-asyncio (strict mode) and anyio's plugin keep theirs.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

import polyloop

__all__ = ["polyloop_backend"]

DEFAULT_TIMEOUT = 30.0


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("polyloop_backends", "backend specs for @pytest.mark.polyloop tests", "args")
    parser.addini("polyloop_timeout", "seconds before a polyloop test is cancelled", "string")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "polyloop(backends=None, timeout=None): run this async test on each polyloop backend",
    )


def _backends(metafunc: pytest.Metafunc, marker: pytest.Mark) -> list[Any]:
    specs = marker.kwargs.get("backends") or metafunc.config.getini("polyloop_backends")
    params = []
    if specs:
        for spec in specs:
            params.append(pytest.param(spec, id=spec))
        return params
    for info in polyloop.available_backends():
        if info.error is None:
            params.append(pytest.param(info.name, id=info.name))
        else:
            reason = f"backend {info.name} unavailable: {info.error}"
            params.append(
                pytest.param(info.name, id=info.name, marks=pytest.mark.skip(reason=reason))
            )
    return params


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("polyloop")
    if marker is None:
        return
    if not inspect.iscoroutinefunction(metafunc.function):
        raise TypeError(
            f"@pytest.mark.polyloop needs an async def test: {metafunc.function.__name__}"
        )
    if "polyloop_backend" not in metafunc.fixturenames:
        metafunc.fixturenames.append("polyloop_backend")
    metafunc.parametrize("polyloop_backend", _backends(metafunc, marker), indirect=True)


@pytest.fixture
def polyloop_backend(request: pytest.FixtureRequest) -> str:
    """The backend spec this run of a ``@pytest.mark.polyloop`` test uses."""
    return str(getattr(request, "param", "asyncio"))


async def _bounded(
    fn: Callable[..., Coroutine[Any, Any, Any]], kwargs: dict[str, Any], timeout: float
) -> None:
    # The timeout runs on the backend's timers; the wall clock confirms it, so that a
    # backend whose timers fire early is told so instead of "timed out after 30 s".
    start = time.monotonic()
    try:
        await polyloop.wait_for(fn(**kwargs), timeout)
    except TimeoutError:
        took = time.monotonic() - start
        if took < timeout * 0.8:
            pytest.fail(
                f"polyloop test timed out after {took:.3f} s of wall-clock time, not"
                f" {timeout:g} s: the backend's timers fire early",
                pytrace=False,
            )
        pytest.fail(f"polyloop test timed out after {timeout:g} s", pytrace=False)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    marker = pyfuncitem.get_closest_marker("polyloop")
    if marker is None:
        return None
    spec = str(pyfuncitem.callspec.params["polyloop_backend"])
    timeout = marker.kwargs.get("timeout") or pyfuncitem.config.getini("polyloop_timeout")
    timeout = float(timeout) if timeout else DEFAULT_TIMEOUT
    argnames = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in argnames}
    polyloop.run(_bounded, pyfuncitem.obj, kwargs, timeout, backend=spec)
    return True
