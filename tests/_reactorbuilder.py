"""Run Twisted's own ``ReactorBuilder`` suites against one reactor; print a JSON report.

    python tests/_reactorbuilder.py BACKEND [MODULE ...]

``BACKEND`` is a polyloop backend spec (``asyncio``, ``gevent``, ``tornado``,
``polyloop_conformance.example_backend:ExampleBackend``) for the compat reactor, or
``twisted:epoll`` for Twisted's own epoll reactor (the reference). Twisted generates one
test class per reactor named in ``ReactorBuilder._reactors`` when a test module is
imported, so that list is replaced by this script's ``make_reactor`` before the modules
are loaded: the classes built are exactly Twisted's tests, run on our reactor.

Each test gets a short reactor timeout (``runReactor``) and a hard per-test alarm, so a
hang is a failure, never a stuck run. The report is ``{"passed": [...], "failed": {id:
reason}, "skipped": {id: reason}}``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from typing import Any

#: The suites run by default: Twisted's reactor tests for what the compat reactor
#: provides (core, time, threads, FD set, TCP, Unix, TLS, socket adoption, resolvers,
#: UDP, processes).
MODULES = [
    "twisted.internet.test.test_core",
    "twisted.internet.test.test_time",
    "twisted.internet.test.test_threads",
    "twisted.internet.test.test_fdset",
    "twisted.internet.test.test_tcp",
    "twisted.internet.test.test_unix",
    "twisted.internet.test.test_tls",
    "twisted.internet.test.test_socket",
    "twisted.internet.test.test_resolver",
    "twisted.internet.test.test_udp",
    "twisted.internet.test.test_process",
]

#: ``runReactor``'s timeout, seconds (Twisted's default is 120).
REACTOR_TIMEOUT = 8
#: A test still running after this many seconds is interrupted and failed.
HARD_TIMEOUT = 15

BACKEND = sys.argv[1] if __name__ == "__main__" and len(sys.argv) > 1 else "asyncio"


class make_reactor:
    """A fresh reactor for one test (ReactorBuilder's ``reactorFactory``)."""

    def __new__(cls) -> Any:  # type: ignore[misc]
        if BACKEND == "twisted:epoll":
            from twisted.internet.epollreactor import EPollReactor

            return EPollReactor()
        from polyloop_twisted.compat import Reactor

        return Reactor.for_backend(BACKEND)


class _Alarm(Exception):
    pass


def _on_alarm(signum: int, frame: Any) -> None:
    raise _Alarm(f"test still running after {HARD_TIMEOUT} s (hung)")


def main(modules: list[str]) -> None:
    from twisted.internet.test import reactormixins
    from twisted.trial import reporter, runner, unittest

    reactormixins.ReactorBuilder._reactors = [f"{__name__}.make_reactor"]
    reactormixins.DEFAULT_TIMEOUT_DURATION = REACTOR_TIMEOUT  # type: ignore[attr-defined]

    passed: list[str] = []
    failed: dict[str, str] = {}
    skipped: dict[str, str] = {}

    class Result(reporter.TestResult):  # type: ignore[misc]
        def startTest(self, test: Any) -> None:
            super().startTest(test)
            signal.setitimer(signal.ITIMER_REAL, HARD_TIMEOUT)

        def stopTest(self, test: Any) -> None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            super().stopTest(test)

        def addSuccess(self, test: Any) -> None:
            passed.append(test.id())

        def addFailure(self, test: Any, fail: Any) -> None:
            failed[test.id()] = _why(fail)

        def addError(self, test: Any, error: Any) -> None:
            failed[test.id()] = _why(error)

        def addExpectedFailure(self, test: Any, fail: Any, todo: Any = None) -> None:
            skipped[test.id()] = f"todo: {todo}"

        def addUnexpectedSuccess(self, test: Any, todo: Any = None) -> None:
            passed.append(test.id())

        def addSkip(self, test: Any, reason: Any) -> None:
            skipped[test.id()] = str(reason)

    signal.signal(signal.SIGALRM, _on_alarm)
    loader = runner.TestLoader()
    for name in modules:
        try:
            suite = loader.loadByName(name, recurse=True)
        except Exception as exc:
            failed[name] = f"import: {exc!r}"
            continue
        # Only the generated ReactorBuilder classes (the module's other cases test
        # helpers, not a reactor).
        tests = [
            t
            for t in _flatten(suite)
            if isinstance(t, reactormixins.ReactorBuilder) and "make_reactor" in t.id()
        ]
        result = Result()
        for test in tests:
            try:
                unittest.TestSuite([test]).run(result)
            except _Alarm as exc:
                failed[test.id()] = str(exc)
    json.dump({"passed": passed, "failed": failed, "skipped": skipped}, sys.stdout)


def _why(err: Any) -> str:
    if os.environ.get("REACTORBUILDER_VERBOSE"):
        print(
            err if not isinstance(err, tuple) else traceback.format_exception(*err),
            file=sys.stderr,
        )
    try:
        if isinstance(err, tuple):
            text = "".join(traceback.format_exception_only(err[0], err[1]))
        else:
            text = err.getErrorMessage()
            text = f"{err.type.__name__}: {text}"
    except Exception:
        text = repr(err)
    return text.strip().splitlines()[-1][:300] if text.strip() else "?"


def _flatten(suite: Any) -> list[Any]:
    if hasattr(suite, "_tests"):
        return [test for item in suite._tests for test in _flatten(item)]
    return [suite]


if __name__ == "__main__":
    main(sys.argv[2:] or MODULES)
