"""The conformance check catalogue: every check passes on asyncio, and checks can fail.

The meta-tests run the catalogue's checks against deliberately broken subclasses of the
asyncio backend: a check that cannot tell a broken backend from a good one is no check.
The full catalogue of such backends, each run in conformance workers, is
``polyloop_conformance.mutants`` (``tests/test_mutants.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import polyloop
import polyloop_conformance as pc
from polyloop_asyncio import AsyncioBackend, AsyncioSession
from polyloop_asyncio._transport import AsyncioTransport

# The mixed-only checks (bridges, wake-ups) need the four frameworks in one thread; they
# run in tests/test_mixed.py and tests/test_matrix.py (--mixed).
NAMES = sorted(n for n, c in pc.CHECKS.items() if not c.mixed_only)


def _run(name: str, make: Callable[[], polyloop.Backend]) -> pc.CheckResult:
    return pc.run_check(pc.CHECKS[name], make, "test")


@pytest.mark.parametrize("name", NAMES)
def test_check_passes_on_asyncio(name: str) -> None:
    result = _run(name, AsyncioBackend)
    assert result.status == "pass", result.detail


def test_catalogue_covers_every_category() -> None:
    categories = {c.category for c in pc.CHECKS.values()}
    assert categories >= {
        "run", "session", "scheduling", "timers", "readiness", "threads", "protocol",
        "addresses", "listen", "errors", "writes", "close", "halfclose", "abort", "flow",
        "tls", "cleanliness", "streams", "udp", "unix", "tasks",
    }  # fmt: skip
    for chk in pc.CHECKS.values():
        assert chk.doc and chk.doc != chk.name.split(".")[1], f"{chk.name} has no docstring"


# --- deliberately broken backends ---


class _WritesAfterClose(AsyncioTransport):
    """Breaks "a write after close() is a silent no-op"."""

    __slots__ = ()

    def write(self, data: Any) -> None:
        self._t.write(data)


class _AbortIsClose(AsyncioTransport):
    """Breaks abort(): a clean close instead of a reset, connection_lost(None)."""

    __slots__ = ()

    def abort(self) -> None:
        self.close()


def _backend_with(session_class: type[AsyncioSession]) -> type[AsyncioBackend]:
    class Broken(AsyncioBackend):
        pass

    Broken.session_class = session_class
    return Broken


def _transport_with(transport_class: type[AsyncioTransport]) -> type[AsyncioBackend]:
    class Broken(AsyncioSession):
        pass

    Broken.transport_class = transport_class
    return _backend_with(Broken)


class _NoDispose(AsyncioSession, core_override=True):
    """Breaks run(): leaves servers and connections open at the end."""

    async def end(self) -> None:
        self.mark_ended()


class _ReversedCallSoon(AsyncioSession):
    """Breaks call_soon FIFO order (runs each new callback before the queued ones)."""

    def call_soon(self, fn: Callable[..., object], *args: Any) -> polyloop.Handle:
        # Each call is due 10 us before the previous one (far more than a call takes).
        self._order = getattr(self, "_order", 0.0) - 1e-5
        return self.loop.call_later(0.01 + self._order, fn, *args)


class _InlineThreads(AsyncioSession):
    """Breaks run_in_thread: runs the function on the loop's thread."""

    async def run_in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(*args)


@pytest.mark.parametrize(
    ("make", "names"),
    [
        (_transport_with(_WritesAfterClose), ["close.write_after_close_buffered"]),
        (
            _transport_with(_AbortIsClose),
            ["abort.local_aborted_error", "abort.peer_reset", "abort.drops_buffer"],
        ),
        (_backend_with(_ReversedCallSoon), ["scheduling.call_soon_fifo"]),
        (_backend_with(_InlineThreads), ["threads.run_in_thread_result"]),
    ],
    ids=["write-after-close", "abort-is-close", "call-soon-lifo", "inline-threads"],
)
def test_checks_catch_broken_backend(
    make: Callable[[], polyloop.Backend], names: list[str]
) -> None:
    for name in names:
        result = _run(name, make)
        assert result.status == "fail", f"{name} did not notice the broken backend"
        assert result.detail, f"{name} failed without saying why"
    assert _run("session.current_backend", make).status == "pass"  # broken, not useless


# A backend that disposes of nothing leaves sockets for the garbage collector, which
# warns: here that is the expected outcome, not a test failure.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_cleanliness_catches_missing_dispose() -> None:
    names = ("no_fd_leak", "no_fd_leak_on_error", "connections_lost", "no_resource_warnings")
    for name in (f"cleanliness.{n}" for n in names):
        result = _run(name, _backend_with(_NoDispose))
        assert result.status == "fail", f"{name} did not notice that run() disposes of nothing"
    import gc

    gc.collect()


def test_known_failures_pass_loudly_and_say_when_to_go(monkeypatch: pytest.MonkeyPatch) -> None:
    """A KNOWN_FAILURES entry turns its failing case into a pass marked KNOWN FAILURE, and
    says to remove the entry once the case passes (the list is empty today: this keeps the
    mechanism working for the day it is not)."""
    from polyloop_conformance import _registry

    entry = _registry.KnownFailure("close.write_after_close_buffered", "broken*", "a test")
    monkeypatch.setattr(_registry, "KNOWN_FAILURES", [entry])
    chk = pc.CHECKS["close.write_after_close_buffered"]
    broken = pc.run_check(chk, _transport_with(_WritesAfterClose), "broken-asyncio")
    assert broken.status == "pass" and broken.detail.startswith("KNOWN FAILURE (a test)")
    healthy = pc.run_check(chk, AsyncioBackend, "broken-but-fixed")
    assert healthy.status == "pass" and "remove it from KNOWN_FAILURES" in healthy.detail
    elsewhere = pc.run_check(chk, _transport_with(_WritesAfterClose), "other")
    assert elsewhere.status == "fail", "an entry applies only to the backends it names"
