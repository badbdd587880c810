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
from the marker, else the command line's ``--polyloop-backends=asyncio,twisted``, else
the ini option ``polyloop_backends``, else every installed one; a backend that cannot
load is reported as a skip naming the missing extra. ``--polyloop-backends`` also
narrows a marker's list. Only tests with this marker are touched, so pytest-asyncio
(strict mode) and anyio's plugin keep theirs.

Async fixtures (``async def``, and async generators for set-up and tear-down) that a
marked test uses run on the test's backend, in the same loop as the test. Rule: a loop
cannot be paused between pytest's set-up, call and tear-down, so a test that uses async
fixtures runs, with them, on a loop kept in a thread of its own (a blocking portal, one
per backend spec), which ends once no fixture holds it any more: after the test for
function-scoped fixtures, after the module (or session) for wider ones. A test without
async fixtures runs in ``polyloop.run`` on the main thread, as before.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import inspect
import time
from collections.abc import Callable, Coroutine, Generator, Iterator
from typing import Any

import pytest

import polyloop

from .from_thread import BlockingPortal, start_blocking_portal

__all__ = ["polyloop_backend"]

DEFAULT_TIMEOUT = 30.0
#: pytest's scopes, narrowest first.
SCOPES = ("function", "class", "module", "package", "session")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("polyloop")
    group.addoption(
        "--polyloop-backends",
        metavar="SPECS",
        help="comma-separated backend specs for @pytest.mark.polyloop tests"
        " (e.g. asyncio,twisted); also narrows a marker's backends= list",
    )
    parser.addini("polyloop_backends", "backend specs for @pytest.mark.polyloop tests", "args")
    parser.addini("polyloop_timeout", "seconds before a polyloop test is cancelled", "string")
    parser.addini(
        "polyloop_backend_scope",
        "scope of the polyloop_backend fixture, the widest an async fixture may have"
        " (default: module)",
        "string",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "polyloop(backends=None, timeout=None): run this async test on each polyloop backend",
    )
    _backend_scope("polyloop_backend", config)  # a bad value is a usage error at once
    _selected(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    # Fixtures release their loops as pytest finalizes them; this is the safety net
    # for a run that was interrupted before that.
    for runner in list(_runners.values()):
        runner.close()
    _runners.clear()


def _backend_scope(fixture_name: str, config: pytest.Config) -> Any:
    scope = config.getini("polyloop_backend_scope") or "module"
    if scope not in SCOPES:
        raise pytest.UsageError(
            f"polyloop_backend_scope must be one of {', '.join(SCOPES)}, not {scope!r}"
        )
    return scope


def _selected(config: pytest.Config) -> list[str] | None:
    option = config.getoption("polyloop_backends", None)
    if not option:
        return None
    specs = [spec.strip() for spec in str(option).split(",") if spec.strip()]
    if not specs:
        raise pytest.UsageError("--polyloop-backends needs at least one backend spec")
    return specs


def _matches(spec: str, selected: list[str]) -> bool:
    """Whether ``spec`` is one of ``selected``: the same spec, or the same backend name
    (``--polyloop-backends=twisted`` selects ``twisted:reactor=select`` too)."""
    target = polyloop.BackendSpec.parse(spec).target
    return spec in selected or target in selected


def _backends(metafunc: pytest.Metafunc, marker: pytest.Mark) -> list[Any]:
    selected = _selected(metafunc.config)
    specs = marker.kwargs.get("backends")
    params = []
    if specs:
        for spec in specs:
            marks = []
            if selected is not None and not _matches(spec, selected):
                reason = f"backend {spec} not selected by --polyloop-backends"
                marks.append(pytest.mark.skip(reason=reason))
            params.append(pytest.param(spec, id=spec, marks=marks))
        return params
    specs = selected or metafunc.config.getini("polyloop_backends")
    if specs:
        return [pytest.param(spec, id=spec) for spec in specs]
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


@pytest.fixture(scope=_backend_scope)
def polyloop_backend(request: pytest.FixtureRequest) -> str:
    """The backend spec this run of a ``@pytest.mark.polyloop`` test uses."""
    return str(getattr(request, "param", "asyncio"))


# --------------------------------------------------------------------------------------
# Loops that outlive one pytest phase: one blocking portal per backend spec, leased
# --------------------------------------------------------------------------------------


class _Runner:
    """A loop of one backend spec in a thread of its own, while any lease holds it."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.leases = 0
        self._stack = contextlib.ExitStack()
        self.portal: BlockingPortal = self._stack.enter_context(start_blocking_portal(spec))

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on the loop; an interruption here (a timeout of pytest-timeout,
        Ctrl-C) cancels it there before it goes on."""
        future = self.portal.start_task_soon(fn, *args)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def close(self) -> None:
        self._stack.close()


_runners: dict[str, _Runner] = {}


@contextlib.contextmanager
def _lease(spec: str) -> Iterator[_Runner]:
    runner = _runners.get(spec)
    if runner is None:
        runner = _runners[spec] = _Runner(spec)
    runner.leases += 1
    try:
        yield runner
    finally:
        runner.leases -= 1
        if not runner.leases:
            del _runners[spec]
            runner.close()


async def _run_fixture(
    fn: Callable[..., Any], kwargs: dict[str, Any], ready: concurrent.futures.Future[Any]
) -> None:
    """One task for the whole life of an async fixture, as anyio's runner does: a cancel
    scope or task group opened before an async generator fixture's ``yield`` is closed
    after it in the same task."""
    if not inspect.isasyncgenfunction(fn):
        ready.set_result((await fn(**kwargs), None))
        return
    agen = fn(**kwargs)
    try:
        value = await agen.__anext__()
    except StopAsyncIteration:
        raise RuntimeError(f"the async generator fixture {fn.__name__} did not yield") from None
    finish = polyloop.Event()
    ready.set_result((value, finish))
    await finish.wait()
    try:
        await agen.__anext__()
    except StopAsyncIteration:
        return
    await agen.aclose()
    raise RuntimeError(f"the async generator fixture {fn.__name__} yielded more than once")


def _fixture_wrapper(
    func: Callable[..., Any], pass_backend: bool, pass_request: bool
) -> Callable[..., Generator[Any]]:
    @functools.wraps(func)
    def wrapper(polyloop_backend: str, request: pytest.FixtureRequest, **kwargs: Any) -> Any:
        fn = func
        if request.instance is not None and inspect.ismethod(func):
            fn = func.__func__.__get__(request.instance)  # rebind to the test's instance
        if pass_backend:
            kwargs["polyloop_backend"] = polyloop_backend
        if pass_request:
            kwargs["request"] = request
        with _lease(polyloop_backend) as runner:
            ready: concurrent.futures.Future[Any] = concurrent.futures.Future()
            task = runner.portal.start_task_soon(_run_fixture, fn, kwargs, ready)
            try:
                concurrent.futures.wait([ready, task], return_when="FIRST_COMPLETED")
            except BaseException:  # interrupted (pytest-timeout, Ctrl-C): stop it there
                task.cancel()
                raise
            if not ready.done():
                task.result()  # the set-up's error
                raise RuntimeError(f"the async fixture {func.__name__} ended before its value")
            value, finish = ready.result()
            try:
                yield value
            finally:
                if finish is not None:
                    runner.portal.call(finish.set)
                task.result()  # the tear-down's error, if any, is this fixture's

    wrapper.__signature__ = None  # type: ignore[attr-defined]
    return wrapper


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef: Any, request: Any) -> Generator[None]:
    func = fixturedef.func
    is_async = inspect.isasyncgenfunction(func) or inspect.iscoroutinefunction(func)
    # Only the async fixtures of a polyloop test: pytest-asyncio's and anyio's own tests
    # (and pytest_asyncio.fixture fixtures, which are sync wrappers by now) are theirs.
    # Not "polyloop_backend in request.fixturenames": pytest prunes that name from the
    # closure of a test that does not ask for it, though the parameter stays.
    item = request._pyfuncitem
    callspec = getattr(item, "callspec", None)
    if (
        not is_async
        or item.get_closest_marker("polyloop") is None
        or callspec is None
        or "polyloop_backend" not in callspec.params
    ):
        yield
        return
    backend_scope = _backend_scope("polyloop_backend", request.config)
    if SCOPES.index(fixturedef.scope) > SCOPES.index(backend_scope):
        spec = callspec.params["polyloop_backend"]
        raise pytest.UsageError(
            f"the {fixturedef.scope}-scoped async fixture {fixturedef.argname!r} cannot run"
            f" on the polyloop backend {spec or 'asyncio'!r} of {item.nodeid}: it would outlive"
            f" the {backend_scope}-scoped polyloop_backend fixture. Set"
            f" polyloop_backend_scope = {fixturedef.scope} in the ini file (the tests are"
            f" then grouped by backend across that scope), or narrow the fixture's scope"
        )
    argnames = fixturedef.argnames
    fixturedef.func = _fixture_wrapper(func, "polyloop_backend" in argnames, "request" in argnames)
    fixturedef.argnames = tuple(n for n in argnames if n not in ("polyloop_backend", "request"))
    fixturedef.argnames += ("polyloop_backend", "request")
    try:
        yield
    finally:
        fixturedef.func = func
        fixturedef.argnames = argnames


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
    runner = _runners.get(spec)
    if runner is not None:  # its async fixtures hold a loop: the test runs on it too
        runner.call(_bounded, pyfuncitem.obj, kwargs, timeout)
    else:
        polyloop.run(_bounded, pyfuncitem.obj, kwargs, timeout, backend=spec)
    return True
