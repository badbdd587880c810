"""Twisted's own reactor tests (its ``ReactorBuilder`` suites) on the compat reactor.

Each backend runs in its own process (``tests/_reactorbuilder.py``: Twisted generates one
test class per reactor in ``ReactorBuilder._reactors``, which that script points at the
compat ``Reactor`` before the suites are imported), and so does Twisted's own epoll
reactor, the reference. What epoll passes and the compat reactor does not must be one of
``KNOWN_FAILURES`` below -- each listed, with its reason, in docs/compat-twisted.md -- so
a new failure fails here, and a known one that starts passing is reported.

The suites (``_reactorbuilder.MODULES``): test_core, test_time, test_threads, test_fdset,
test_tcp, test_unix, test_tls, test_socket, test_resolver, test_udp, test_process. About
a minute and a half per backend on one core.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("twisted", reason="the compat reactor needs polyloop[twisted]")
pytest.importorskip("hamcrest", reason="Twisted's test_tcp imports PyHamcrest")

HERE = Path(__file__).resolve().parent
DOCS = HERE.parent / "docs" / "compat-twisted.md"

BACKENDS = [
    "asyncio",
    "gevent",
    "tornado",
    "polyloop_conformance.example_backend:SelectorsBackend",
]

_FD_PASSING = (
    "sendFileDescriptor/SCM_RIGHTS: the session's transports read with recv, not recvmsg,"
    " so descriptors cannot be received (nor sent in order with the bytes)"
)

_UNIX_DATAGRAM = (
    "IReactorUNIXDatagram (listenUNIXDatagram) is not provided yet: it belongs with the"
    " reactor's UDP port"
)

_EXECVPE = (
    "it patches os.execvpe to fail, which subprocess.Popen (under subprocess_exec) does"
    " not call: the child's exec is done in C, by _posixsubprocess"
)

#: Twisted's tests that its epoll reactor passes and the compat reactor does not, on
#: every backend, with the reason (the class prefix is Twisted's, ``_make_reactorTests``
#: left out).
KNOWN_FAILURES = {
    "test_unix.UNIXTestsBuilder.test_sendFileDescriptor": _FD_PASSING,
    "test_unix.UNIXTestsBuilder.test_sendFileDescriptorTriggersPauseProducing": _FD_PASSING,
    "test_unix.UNIXTestsBuilder.test_descriptorDeliveredBeforeBytes": _FD_PASSING,
    "test_unix.UNIXTestsBuilder.test_fileDescriptorOverrun": _FD_PASSING,
    "test_unix.UNIXTestsBuilder.test_avoidLeakingFileDescriptors": _FD_PASSING,
    "test_unix.UNIXDatagramTestsBuilder.test_listenMode": _UNIX_DATAGRAM,
    "test_unix.UNIXDatagramTestsBuilder.test_listenOnLinuxAbstractNamespace": _UNIX_DATAGRAM,
    "test_unix.UNIXTestsBuilder.test_listenFailure": (
        "it patches Twisted's base.BasePort.createInternetSocket to fail; the compat"
        " reactor's listenUNIX makes its socket with socket.socket, so nothing fails (the"
        " test passes only in a folder where a file named not-used is left: bind fails)"
    ),
    "test_process.ProcessTestsBuilder.test_errorDuringExec": _EXECVPE,
    "test_process.PTYProcessTestsBuilder.test_errorDuringExec": _EXECVPE,
    "test_process.ProcessTestsBuilder.test_spawnProcessEarlyIsReaped": (
        "it spawns with childFDs={} (no fds 0, 1, 2 in the child), refused with ValueError:"
        " subprocess.Popen, under subprocess_exec, cannot close a child's standard fds"
    ),
    "test_process.PTYProcessTestsBuilder.test_spawnProcessEarlyIsReaped": (
        "it waits for the child's SIGCHLD before reactor.run(), but the compat reactor"
        " starts a child only once it runs (subprocess_exec needs its session), so the"
        " signal never comes and the test is cut after 15 s"
    ),
}


def _short(test_id: str) -> str:
    """``twisted.internet.test.test_tcp.X_make_reactorTests.test_y`` -> ``test_tcp.X.test_y``."""
    module, cls, name = test_id.rsplit(".", 2)
    return f"{module.rsplit('.', 1)[-1]}.{re.sub(r'_make_reactorTests$', '', cls)}.{name}"


def _run(backend: str) -> dict[str, Any]:
    # In a fresh folder: Twisted's process tests leave files in the working directory.
    with tempfile.TemporaryDirectory(prefix="reactorbuilder-") as cwd:
        done = subprocess.run(
            [sys.executable, str(HERE / "_reactorbuilder.py"), backend],
            capture_output=True,
            text=True,
            timeout=400,
            cwd=cwd,
        )
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = json.loads(done.stdout)
    report["passed"] = {_short(t) for t in report["passed"]}
    report["failed"] = {_short(t): why for t, why in report["failed"].items()}
    return report


@pytest.fixture(scope="module")
def reports() -> dict[str, dict[str, Any]]:
    """Every backend's report, and Twisted's own epoll reactor's (the reference, on the
    same suites on this machine), run two processes at a time (the suites take about a
    minute a backend on one core; CI has two)."""
    specs = ["twisted:epoll", *BACKENDS]
    with ThreadPoolExecutor(max_workers=max(1, min(2, os.cpu_count() or 1))) as pool:
        return dict(zip(specs, pool.map(_run, specs), strict=True))


#: Twisted's tests that its own epoll reactor may fail, for a reason of the machine (like
#: every test epoll fails, they are left out of the comparison).
EPOLL_MAY_FAIL = {
    name: (
        "as root, the child spawned with uid=1 cannot run an interpreter installed under"
        " /root (EACCES): it exits 1, on Twisted's reactor as on the compat one"
    )
    for name in (
        "test_process.ProcessTestsBuilder.test_changeUID",
        "test_process.PTYProcessTestsBuilder.test_changeUID",
    )
}


@pytest.fixture(scope="module")
def epoll(reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    report = reports["twisted:epoll"]
    unexpected = set(report["failed"]) - set(EPOLL_MAY_FAIL)
    assert not unexpected, {t: report["failed"][t] for t in unexpected}
    return report


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("backend", BACKENDS)
def test_twisted_reactor_tests_pass(
    backend: str, epoll: dict[str, Any], reports: dict[str, dict[str, Any]]
) -> None:
    ours = reports[backend]
    missing = epoll["passed"] - ours["passed"]
    unexpected = {t: ours["failed"].get(t, "skipped") for t in missing - set(KNOWN_FAILURES)}
    rate = len(epoll["passed"] & ours["passed"]) / len(epoll["passed"])
    print(
        f"{backend}: {len(epoll['passed'] & ours['passed'])} of the {len(epoll['passed'])}"
        f" tests epoll passes ({rate:.1%}); known failures now passing:"
        f" {sorted(set(KNOWN_FAILURES) - missing)}"
    )
    assert not unexpected, unexpected


def test_every_known_failure_is_in_the_docs() -> None:
    text = DOCS.read_text()
    for name, reason in KNOWN_FAILURES.items():
        assert f"`{name}`" in text, name
        assert reason in text, (name, reason)
