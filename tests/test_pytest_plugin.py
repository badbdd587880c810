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
