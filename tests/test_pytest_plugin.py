"""The pytest plugin: one run per backend, a fresh loop each, timeouts, coexistence."""

from __future__ import annotations

import pytest

import polyloop

INSTALLED = [b.name for b in polyloop.available_backends() if b.error is None]
UNAVAILABLE = [b.name for b in polyloop.available_backends() if b.error is not None]
INI = """
[pytest]
asyncio_mode = strict
asyncio_default_fixture_loop_scope = function
"""


@pytest.fixture(autouse=True)
def _ini(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)


def test_runs_once_per_installed_backend(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest, polyloop
        SEEN = []

        @pytest.mark.polyloop
        async def test_backend(polyloop_backend):
            assert polyloop.current_backend().name == polyloop_backend
            await polyloop.sleep(0)
            SEEN.append(polyloop_backend)

        def test_all_seen():
            assert sorted(set(SEEN)) == sorted(SEEN)  # a fresh run each time
            assert sorted(SEEN) == sorted(INSTALLED)
        """.replace("INSTALLED", repr(INSTALLED))
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    # A backend that cannot load here is a skip that names the reason.
    result.assert_outcomes(passed=len(INSTALLED) + 1, skipped=len(UNAVAILABLE))


def test_marker_backends_and_timeout(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest, polyloop

        @pytest.mark.polyloop(backends=["asyncio", "asyncio:loop=uvloop"], timeout=0.2)
        async def test_times_out():
            await polyloop.sleep(10)

        @pytest.mark.polyloop(backends=["asyncio"])
        async def test_failure_is_reported():
            assert 1 + 1 == 3
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(["*timed out after 0.2 s*"])
    result.stdout.fnmatch_lines(["*assert (1 + 1) == 3*"])


def test_coexists_with_pytest_asyncio_strict_and_anyio(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import asyncio, pytest, polyloop

        @pytest.mark.asyncio
        async def test_pytest_asyncio():
            await asyncio.sleep(0)
            # pytest-asyncio's loop is an application's loop: polyloop borrows it.
            session = polyloop.current_backend()
            assert session.name == "asyncio" and not session.owned

        @pytest.mark.anyio
        async def test_anyio():
            await asyncio.sleep(0)

        @pytest.fixture
        def anyio_backend():
            return "asyncio"

        @pytest.mark.polyloop(backends=["asyncio"])
        async def test_polyloop():
            assert polyloop.current_backend().name == "asyncio"
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_unknown_backend_in_marker_fails_clearly(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.polyloop(backends=["no-such-backend"])
        async def test_x():
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*unknown backend 'no-such-backend'*"])


def test_module_class_specs_and_the_documented_example(pytester: pytest.Pytester) -> None:
    """docs/pytest.md's example, with a third-party module:Class spec from the ini option
    and from the marker (the worked example backend of docs/writing-a-backend.md)."""
    from pathlib import Path

    page = (Path(__file__).parent.parent / "docs" / "pytest.md").read_text()
    example = page.split("<!-- pytest -->\n```python\n", 1)[1].split("```", 1)[0]
    pytester.makeini(
        INI + "polyloop_backends = polyloop_conformance.example_backend:SelectorsBackend"
        " asyncio:loop=asyncio\n"
    )
    pytester.makepyfile(test_example=example)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-v")
    # test_roundtrip on both ini specs, test_on_two on its two, the third-party one once.
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(
        ["*test_roundtrip*polyloop_conformance.example_backend:SelectorsBackend*PASSED*"]
    )


def test_timeout_on_early_timers_names_the_fault(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest, polyloop

        @pytest.mark.polyloop(
            backends=["polyloop_conformance.mutants.loop:CallLaterAtOnce"], timeout=30
        )
        async def test_slow():
            await polyloop.create_future()
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*timers fire early*"])


# --------------------------------------------------------------------------------------
# Async fixtures
# --------------------------------------------------------------------------------------

EVERY = [*INSTALLED, "mixed"] if "twisted" in INSTALLED and "gevent" in INSTALLED else INSTALLED


def test_async_fixtures_run_with_the_test_on_every_backend(pytester: pytest.Pytester) -> None:
    """A coroutine fixture and an async generator fixture run on the test's backend, in
    the same session as the test; a task group opened before the yield is closed after
    it (one task for the fixture's whole life); the tear-down runs after the test."""
    pytester.makepyfile(
        """
        import pytest, polyloop
        EVENTS = []

        @pytest.fixture
        async def session():
            await polyloop.sleep(0)
            return polyloop.current_backend()

        @pytest.fixture
        async def server(polyloop_backend):
            async def handler(stream):
                await stream.send(polyloop_backend.encode())
                await stream.aclose()

            async with polyloop.TaskGroup() as tg:
                listener = await polyloop.open_tcp_listener("127.0.0.1", 0)
                tg.start_soon(listener.serve, handler)
                yield listener.port
                EVENTS.append("teardown " + polyloop.current_backend().name)
                tg.cancel()
            await listener.aclose()

        @pytest.fixture
        def port_text(server):  # a sync fixture on top of an async one
            return str(server)

        @pytest.mark.polyloop(backends=EVERY)
        async def test_fixtures(polyloop_backend, session, server, port_text):
            assert session is polyloop.current_backend() and not session.closed
            assert port_text == str(server)
            async with await polyloop.open_tcp_stream("127.0.0.1", server) as stream:
                got = await stream.receive_exactly(len(polyloop_backend))
            assert got == polyloop_backend.encode()
            EVENTS.append("test " + session.name)

        def test_order():
            names = [polyloop.load_backend(b).name if b != "mixed" else "asyncio" for b in EVERY]
            assert EVENTS == [e for n in names for e in ("test " + n, "teardown " + n)]
        """.replace("EVERY", repr(EVERY))
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly")
    result.assert_outcomes(passed=len(EVERY) + 1)


def test_without_async_fixtures_a_test_runs_on_the_main_thread(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import threading, pytest, polyloop

        @pytest.fixture
        async def thread_name():
            return threading.current_thread().name

        @pytest.mark.polyloop(backends=["asyncio", "gevent"])
        async def test_plain():
            assert threading.current_thread() is threading.main_thread()

        @pytest.mark.polyloop(backends=["asyncio", "gevent"])
        async def test_with_fixture(thread_name):
            assert threading.current_thread().name == thread_name
            assert threading.current_thread() is not threading.main_thread()

        def test_no_loop_thread_left():
            assert [t for t in threading.enumerate() if "polyloop-portal" in t.name] == []
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=5)


def test_module_scoped_async_fixture_shares_one_loop(pytester: pytest.Pytester) -> None:
    """A module-scoped async fixture is made once per backend for the module, and the
    module's tests on that backend run in its session; function scope gets a fresh
    session per test."""
    pytester.makepyfile(
        """
        import pytest, polyloop
        MADE = []

        @pytest.fixture(scope="module")
        async def shared(polyloop_backend):
            MADE.append(polyloop_backend)
            yield polyloop.current_backend()
            assert not polyloop.current_backend().closed

        @pytest.fixture
        async def mine():
            return polyloop.current_backend()

        @pytest.mark.polyloop(backends=["asyncio", "twisted"])
        async def test_one(shared, mine):
            assert shared is polyloop.current_backend() is mine

        @pytest.mark.polyloop(backends=["asyncio", "twisted"])
        async def test_two(shared, mine):
            assert shared is polyloop.current_backend() is mine

        def test_made_once_per_backend():
            assert sorted(MADE) == ["asyncio", "twisted"]
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=5)


def test_session_scope_needs_the_ini_option(pytester: pytest.Pytester) -> None:
    test = """
        import pytest, polyloop

        @pytest.fixture(scope="session")
        async def everywhere():
            return polyloop.current_backend()

        @pytest.mark.polyloop(backends=["twisted"])
        async def test_it(everywhere):
            assert everywhere is polyloop.current_backend()
        """
    pytester.makepyfile(test)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*the session-scoped async fixture 'everywhere' cannot run on the polyloop backend"
         " 'twisted'*polyloop_backend_scope = session*"]
    )  # fmt: skip
    pytester.makeini(INI + "polyloop_backend_scope = session\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_fixture_errors_are_reported_where_they_happen(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest, polyloop

        @pytest.fixture
        async def broken_setup():
            await polyloop.sleep(0)
            raise LookupError("set-up failed on " + polyloop.current_backend().name)

        @pytest.fixture
        async def broken_teardown():
            yield 1
            await polyloop.sleep(0)
            raise KeyError("tear-down failed")

        @pytest.fixture
        async def yields_twice():
            yield 1
            yield 2

        @pytest.mark.polyloop(backends=["tornado"])
        async def test_setup(broken_setup):
            pass

        @pytest.mark.polyloop(backends=["tornado"])
        async def test_teardown(broken_teardown):
            pass

        @pytest.mark.polyloop(backends=["tornado"])
        async def test_twice(yields_twice):
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    # test_teardown and test_twice pass, then error in their tear-down.
    result.assert_outcomes(passed=2, errors=3)
    result.stdout.fnmatch_lines(["*LookupError: set-up failed on tornado*"])
    result.stdout.fnmatch_lines(["*KeyError: 'tear-down failed'*"])
    result.stdout.fnmatch_lines(["*yields_twice yielded more than once*"])


def test_async_fixtures_coexist_with_pytest_asyncio_and_anyio(pytester: pytest.Pytester) -> None:
    """The same module has pytest-asyncio (strict) and anyio tests with their own async
    fixtures, and polyloop tests with theirs: each plugin runs its own."""
    pytester.makepyfile(
        """
        import asyncio, pytest, pytest_asyncio, sniffio, polyloop

        @pytest_asyncio.fixture
        async def asyncio_loop():
            return asyncio.get_running_loop()

        @pytest.mark.asyncio
        async def test_pytest_asyncio(asyncio_loop):
            assert asyncio_loop is asyncio.get_running_loop()

        @pytest.fixture
        def anyio_backend():
            return "asyncio"

        @pytest.fixture
        async def anyio_library(anyio_backend):
            return sniffio.current_async_library()

        @pytest.mark.anyio
        async def test_anyio(anyio_library):
            assert anyio_library == "asyncio"

        @pytest.fixture
        async def polyloop_session():
            return polyloop.current_backend()

        @pytest.mark.polyloop(backends=["asyncio", "twisted"])
        async def test_polyloop(polyloop_session):
            assert polyloop_session is polyloop.current_backend()
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)


def test_command_line_chooses_backends(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest, polyloop

        @pytest.mark.polyloop
        async def test_default(polyloop_backend):
            assert polyloop_backend in ("asyncio", "twisted")

        @pytest.mark.polyloop(backends=["asyncio", "gevent", "twisted:reactor=select"])
        async def test_marked(polyloop_backend):
            pass
        """
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-rs", "--polyloop-backends=asyncio,twisted"
    )
    # test_default on the two; test_marked on asyncio and twisted:reactor=select (a
    # name selects its specs), gevent skipped and saying why.
    result.assert_outcomes(passed=4, skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED*backend gevent not selected by --polyloop-backends"])
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--polyloop-backends=,")
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_timeout_with_async_fixtures(pytester: pytest.Pytester) -> None:
    """A test that runs on a fixture's loop (in its thread) still times out, and its
    fixture's tear-down still runs."""
    pytester.makepyfile(
        """
        import pytest, polyloop
        TORN_DOWN = []

        @pytest.fixture
        async def fx(polyloop_backend):
            yield 1
            TORN_DOWN.append(polyloop_backend)

        @pytest.mark.polyloop(backends=["twisted", "gevent"], timeout=0.2)
        async def test_slow(fx):
            await polyloop.sleep(30)

        def test_torn_down():
            assert sorted(TORN_DOWN) == ["gevent", "twisted"]
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=2, passed=1)
    result.stdout.fnmatch_lines(["*polyloop test timed out after 0.2 s*"])
