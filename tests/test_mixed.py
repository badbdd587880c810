"""Mixed mode: the four frameworks in one thread, and the checks that guard it.

The conformance matrix (``tests/test_matrix.py``) runs every check on each session and
every app across the 16 pairings. Here: that those checks fail when the things they
guard are broken (a loop not woken from a greenlet; bridges that give the wrong
cancellation type, lose a traceback or do not pass a cancellation on), the API around
the mixed run, and mixed mode reached from an application that runs one framework.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _serve import Script

import polyloop
import polyloop_gevent
import polyloop_mixed
import polyloop_mixed._session as mixed_session
import polyloop_twisted
from polyloop import bridge
from polyloop_conformance._registry import CHECKS
from polyloop_conformance.checks import bridges as bridge_checks

pytestmark = pytest.mark.timeout(300)


def run_check(name: str, on: str = "asyncio") -> None:
    async def main() -> None:
        await CHECKS[name].fn(polyloop.current_backend())

    polyloop.run(main, backend="mixed", session=on)


def test_four_sessions_and_which_is_current() -> None:
    async def main() -> dict[str, Any]:
        sessions = polyloop_mixed.sessions()
        seen = {"main": polyloop.current_backend()}
        for name, session in sessions.items():

            async def where() -> polyloop.Session:
                return polyloop.current_backend()

            seen[name] = await session.spawn(where())
        seen["sessions"] = sessions
        return seen

    seen = polyloop.run(main, backend="mixed", session="twisted")
    sessions = seen.pop("sessions")
    assert list(sessions) == ["asyncio", "tornado", "twisted", "gevent"]
    assert seen.pop("main") is sessions["twisted"]
    for name, found in seen.items():
        assert found is sessions[name] and found.name == name
    assert all(s.closed for s in sessions.values()), "a session outlived the mixed run"


def test_session_option_is_checked_and_sessions_need_a_mixed_run() -> None:
    with pytest.raises(ValueError, match="session must be one of"):
        polyloop.load_backend("mixed", session="trio")
    with pytest.raises(RuntimeError, match="not in mixed mode"):
        polyloop_mixed.sessions()

    async def main() -> None:
        polyloop_mixed.session("curio")

    with pytest.raises(LookupError, match="no 'curio' session"):
        polyloop.run(main, backend="mixed")


def test_mixed_is_not_in_every_backend() -> None:
    names = [b.name for b in polyloop.available_backends()]
    assert "mixed" not in names
    assert "mixed" in [b.name for b in polyloop.available_backends(composite=True)]


def test_sniffio_names_asyncio_where_asyncio_tasks_run() -> None:
    import sniffio

    async def main() -> dict[str, str]:
        out = {}
        for name, session in polyloop_mixed.sessions().items():

            async def library() -> str:
                try:
                    return str(sniffio.current_async_library())
                except sniffio.AsyncLibraryNotFoundError:
                    return "-"

            out[name] = await session.spawn(library())
        return out

    # asyncio's and Tornado's sessions run asyncio tasks; Twisted's and gevent's do not,
    # and an asyncio-only library (anyio, httpx) must not believe it runs there.
    got = polyloop.run(main, backend="mixed")
    assert got == {"asyncio": "asyncio", "tornado": "asyncio", "twisted": "-", "gevent": "-"}


# --- the checks catch what they guard ---


def test_wakeup_check_fails_when_the_loop_is_not_woken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mixed_session.MixedLoop, "_wake_if_elsewhere", lambda self: None)
    monkeypatch.setattr("polyloop_conformance.checks.wakeups.DEADLINE", 0.6)
    monkeypatch.setattr("polyloop_conformance.checks.wakeups.LATE", 0.3)
    with pytest.raises(AssertionError, match="waited for a timer") as info:
        run_check("wakeups.wakeups_are_immediate")
    assert "asyncio call_soon from a greenlet" in str(info.value)
    assert "a gevent hub callback" in str(info.value)


@pytest.fixture
def broken(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str, Any], None]]:
    def patch(name: str, value: Any, module: Any = bridge) -> None:
        monkeypatch.setattr(module, name, value)

    yield patch


def test_call_soon_threadsafe_writes_the_self_pipe_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """From another thread or another greenlet, one thread-safe call is one write to the
    loop's self-pipe (asyncio's call_soon_threadsafe and the mixed loop's wake-up both
    wrote it), and the callback still runs."""
    import threading

    writes: list[int] = []
    write = mixed_session.MixedLoop._write_to_self  # type: ignore[attr-defined]

    def counted(self: Any) -> None:
        writes.append(1)
        write(self)

    monkeypatch.setattr(mixed_session.MixedLoop, "_write_to_self", counted, raising=False)

    async def main() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        ran: list[str] = []
        for where in ("thread", "greenlet"):
            before = len(writes)
            if where == "thread":
                thread = threading.Thread(
                    target=loop.call_soon_threadsafe, args=(ran.append, where)
                )
                thread.start()
                thread.join()
            else:
                import gevent

                gevent.spawn(loop.call_soon_threadsafe, ran.append, where).join()
            await polyloop.sleep(0.05)
            assert ran[-1:] == [where], ran
            assert len(writes) - before == 1, f"{len(writes) - before} writes from a {where}"
        return len(ran), len(writes)

    ran, total = polyloop.run(main, backend="mixed", session="asyncio")
    assert ran == 2 and total >= 2


def test_bridge_check_catches_asyncio_cancellation_in_a_deferred(
    broken: Callable[[str, Any], None],
) -> None:
    from twisted.internet.defer import Deferred

    def from_future(x: Any) -> Any:  # what Twisted's own Deferred.fromFuture does
        return Deferred.fromFuture(bridge.to_asyncio(x))

    import polyloop_twisted

    broken("to_deferred", from_future, polyloop_twisted)
    with pytest.raises(AssertionError) as info:
        run_check("bridges.from_asyncio_future")
    assert "to_deferred, cancel source: the target's side saw asyncio.exceptions.Cancel" in str(
        info.value
    )


def test_bridge_check_catches_a_lost_traceback(broken: Callable[[str, Any], None]) -> None:
    real = bridge.future_outcome

    def fresh_error(f: Any) -> Any:
        kind, value = real(f)
        if kind == bridge.ERROR:
            value = type(value)(*value.args)  # same type and message, no traceback
        return kind, value

    broken("future_outcome", fresh_error)
    with pytest.raises(AssertionError, match="lost its traceback"):
        run_check("bridges.from_asyncio_task")


def test_bridge_check_catches_a_cancellation_not_passed_on(
    broken: Callable[[str, Any], None],
) -> None:
    real = bridge.into

    def one_way(src: Any, fut: Any, home: Any) -> None:
        src.cancel = lambda: None  # the source never hears of it
        real(src, fut, home)

    broken("into", one_way)
    with pytest.raises(AssertionError, match="did not cancel the source") as info:
        run_check("bridges.from_deferred")
    assert "Deferred -> to_asyncio, cancel target" in str(info.value)


def test_bridge_check_catches_a_result_not_delivered(broken: Callable[[str, Any], None]) -> None:
    def never(src: Any) -> Any:
        from gevent.event import AsyncResult

        return AsyncResult()  # nobody ever sets it

    from polyloop_gevent import _bridge as gevent_bridge

    broken("_async_result", never, gevent_bridge)
    with pytest.raises(AssertionError, match="wait\\(\\) in a greenlet, result"):
        run_check("bridges.from_greenlet")


def test_every_source_type_has_a_check() -> None:
    names = {n for n in CHECKS if n.startswith("bridges.")}
    assert len(names) == 10 + 2 * 4
    assert all(CHECKS[n].mixed_only for n in names | {"wakeups.wakeups_are_immediate"})
    assert bridge_checks.KINDS == ("result", "error", "cancel source", "cancel target")


# --- bridges, the cases the checks leave out ---


def test_wait_refuses_to_block_the_loop_it_needs() -> None:
    async def main() -> str:
        loop = asyncio.get_running_loop()
        with pytest.raises(RuntimeError, match="would block the asyncio loop"):
            polyloop_gevent.wait(loop.create_future())
        return "refused"

    assert polyloop.run(main, backend="mixed") == "refused"


def test_wait_timeout_cancels_the_source() -> None:
    import gevent

    async def main() -> bool:
        f = asyncio.get_running_loop().create_future()
        g = gevent.spawn(polyloop_gevent.wait, f, 0.05)
        with pytest.raises(gevent.Timeout):
            await bridge.future(g)
        return f.cancelled()

    assert polyloop.run(main, backend="mixed") is True


def test_bridge_rejects_what_it_cannot_bridge() -> None:
    async def main() -> None:
        with pytest.raises(TypeError, match="not int"):
            bridge.future(3)

    polyloop.run(main, backend="mixed")


def test_asyncio_future_of_another_thread_awaited_in_twisted_runner() -> None:
    """Between threads, each with its own loop, in a plain Twisted run (no mixed mode)."""
    import threading

    from twisted.internet.defer import Deferred

    other = asyncio.new_event_loop()
    thread = threading.Thread(target=other.run_forever, daemon=True)
    thread.start()
    try:
        fut = asyncio.run_coroutine_threadsafe(asyncio.sleep(0.02, "from the other loop"), other)

        async def main() -> Any:
            async def twisted_code() -> Any:
                return await polyloop_twisted.to_deferred(fut)

            return await polyloop.bridge.future(Deferred.fromCoroutine(twisted_code()))

        assert polyloop.run(main, backend="twisted") == "from the other loop"
    finally:
        other.call_soon_threadsafe(other.stop)
        thread.join(10)
        other.close()


# --- reached from an application that runs one framework ---


def test_twisted_app_on_asyncio_reactor_adds_the_other_sessions(tmp_path: Any) -> None:
    script = textwrap.dedent(
        """
        import asyncio
        from twisted.internet import asyncioreactor
        asyncioreactor.install(asyncio.new_event_loop())
        from twisted.internet import reactor, task
        from twisted.internet.defer import Deferred, ensureDeferred
        import polyloop, polyloop_mixed, polyloop_twisted

        async def app(reactor):
            sessions = polyloop_mixed.attach(reactor)
            assert sorted(sessions) == ["asyncio", "tornado", "twisted"], sessions
            assert sessions["twisted"].native is reactor
            from tornado.ioloop import IOLoop
            async def on(name):
                return polyloop.current_backend().name
            got = [await polyloop_twisted.to_deferred(s.spawn(on(n)))
                   for n, s in sessions.items()]
            assert got == ["asyncio", "tornado", "twisted"], got
            assert polyloop_mixed.attach(reactor) == sessions  # one set per loop
            print("ok")

        task.react(lambda r: ensureDeferred(app(r)))
        """
    )
    path = tmp_path / "app.py"
    path.write_text(script)
    proc = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "ok", proc.stdout + proc.stderr
    assert proc.returncode == 0, proc.stderr


# --- signals ---

SIGNAL_SCRIPT = textwrap.dedent(
    """
    import signal, sys, polyloop

    # A child of a background job inherits SIGINT ignored; Python then installs no
    # KeyboardInterrupt handler. Install it, as an interactive python has it.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    async def main():
        print("ready", flush=True)
        try:
            await polyloop.sleep(3600)
        except polyloop.Cancelled:
            print("main cancelled", flush=True)
            raise
        finally:
            await polyloop.sleep(0.01)
            print("cleaned up", flush=True)

    try:
        polyloop.run(main, backend="mixed", session=sys.argv[1], handle_sigterm=True)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    """
)


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("on", ["asyncio", "tornado", "twisted", "gevent"])
def test_ctrl_c_and_sigterm_cancel_main_wherever_it_runs(on: str, signame: str) -> None:
    """Ctrl-C cancels main and the run raises KeyboardInterrupt, on each session: a
    KeyboardInterrupt left to land in whichever greenlet runs (the hub, the loop's, the
    caller's) was measured to skip main's clean-up when it ran on gevent's session."""
    import signal

    with Script(SIGNAL_SCRIPT, on) as proc:
        proc.send_signal(getattr(signal, signame))
        out, err = proc.communicate(timeout=30)
    if signame == "SIGINT":
        assert out.splitlines() == ["main cancelled", "cleaned up", "interrupted"], (out, err)
        assert proc.returncode == 0, err
    else:
        assert out.splitlines() == ["main cancelled", "cleaned up"], (out, err)
        assert proc.returncode == 143, (proc.returncode, err)
    assert "Traceback" not in err, err


def test_mixed_is_not_in_every_backend_even_when_it_cannot_load() -> None:
    """With one framework missing, "mixed" cannot load; it is still not a framework, so it
    stays out of ``available_backends()`` (and of the pytest plugin's every-backend list)."""
    code = (
        "import sys; sys.modules['gevent'] = None; import polyloop;"
        "print([b.name for b in polyloop.available_backends()]);"
        "print([b.name for b in polyloop.available_backends(composite=True) if b.error])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    every, broken = out.stdout.splitlines()
    assert "mixed" not in every and "gevent" in every, every
    assert "mixed" in broken, broken  # listed, with its error, when asked for composites


def test_systemexit_in_a_loop_callback_comes_out_as_it_is_and_nothing_is_left_open() -> None:
    """``sys.exit(3)`` in an asyncio callback of the mixed thread ends ``polyloop.run``
    with that SystemExit (as on the asyncio backend), not with the RuntimeError of a
    shutdown that cannot run, and the machinery's fds are closed all the same."""
    code = textwrap.dedent(
        """
        import asyncio, os, sys, polyloop

        async def main():
            asyncio.get_running_loop().call_soon(lambda: sys.exit(3))
            await polyloop.sleep(5)

        polyloop.run(lambda: polyloop.sleep(0), backend="mixed")  # warm-up: imports
        before = len(os.listdir("/proc/self/fd"))
        try:
            polyloop.run(main, backend="mixed")
        except SystemExit as exc:
            print("exit", exc.code, len(os.listdir("/proc/self/fd")) - before)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["exit", "3", "0"], (out.stdout, out.stderr)


def test_the_first_case_of_a_process_watches_twisteds_log_too() -> None:
    """Mixed mode imports Twisted only as the run starts: the referee must still see what
    Twisted logs in the very first case (it did not, so this check failed when run alone
    and passed inside the whole catalogue)."""
    proc = subprocess.run(
        [sys.executable, "-m", "polyloop", "conformance", "--mixed",
         "--check", "protocol.data_received_raises"],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "4 passed, 0 failed" in proc.stdout, proc.stdout[-2000:]
