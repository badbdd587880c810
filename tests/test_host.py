"""Host mode on asyncio: polyloop code on a loop the application runs, no polyloop.run.

The other frameworks' host mode is tested next to their adapters (test_twisted.py,
test_gevent.py, test_tornado.py) and, for every check and app, by ``polyloop conformance
--host`` (test_matrix.py).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from typing import Any

import pytest

import polyloop


async def _echo_round_trip(payload: bytes) -> bytes:
    async def echo(stream: polyloop.Stream) -> None:
        while data := await stream.receive():
            await stream.send(data)

    async with await polyloop.open_tcp_listener("127.0.0.1", 0) as listener:
        serving = polyloop.spawn(listener.serve(echo))
        async with await polyloop.open_tcp_stream("127.0.0.1", listener.port) as stream:
            await stream.send(payload)
            got = await stream.receive_exactly(len(payload))
    await serving
    return got


def test_no_session_outside_any_loop() -> None:
    # In a process of its own: here, other tests may have left a gevent hub, and a hub
    # (with the caller not on it) means gevent host mode.
    proc = subprocess.run(
        [sys.executable, "-c", "import polyloop; polyloop.current_backend()"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "RuntimeError: no polyloop session runs here" in proc.stderr, proc.stderr


def test_asyncio_app_calls_polyloop_on_its_own_loop() -> None:
    sessions: list[polyloop.Session] = []

    async def caller(i: int) -> bytes:
        sessions.append(polyloop.current_backend())
        await polyloop.sleep(0.001)
        return await _echo_round_trip(b"call %d" % i)

    async def app() -> list[bytes]:
        return await asyncio.gather(*(caller(i) for i in range(20)))

    results = asyncio.run(app())
    assert results == [b"call %d" % i for i in range(20)]
    assert len({id(s) for s in sessions}) == 1, "callers on one loop got different sessions"
    session = sessions[0]
    assert session.name == "asyncio" and not session.owned
    assert session.closed, "the session did not end with asyncio.run"


def test_session_ends_while_the_loop_still_runs_and_closes_what_polyloop_opened() -> None:
    seen: dict[str, Any] = {}

    class Held(polyloop.Protocol):
        def connection_lost(self, exc: BaseException | None) -> None:
            seen.setdefault("lost", []).append(exc)

    def on_close(session: polyloop.Session) -> None:
        seen["loop running"] = asyncio._get_running_loop() is not None
        seen["session"] = session

    async def app() -> polyloop.Session:
        session = polyloop.current_backend()
        session.on_close(on_close)
        server = await polyloop.listen_tcp(Held, "127.0.0.1", 0)
        await polyloop.connect_tcp(Held, "127.0.0.1", server.port)  # left open
        return session

    session = asyncio.run(app())
    assert seen["session"] is session
    assert seen["loop running"], "on_close ran after the loop had stopped"
    assert len(seen["lost"]) == 2, f"connection_lost calls: {seen.get('lost')}"


def test_aclose_leaves_the_application_loop_running() -> None:
    async def app() -> None:
        first = polyloop.current_backend()
        assert await _echo_round_trip(b"one") == b"one"
        await first.aclose()
        assert first.closed
        # The application's loop goes on: native asyncio networking still works.
        server = await asyncio.start_server(_native_echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"native")
        assert await reader.readexactly(6) == b"native"
        writer.close()
        server.close()
        await server.wait_closed()
        # And the next polyloop call gets a new session.
        second = polyloop.current_backend()
        assert second is not first and not second.closed
        assert await _echo_round_trip(b"two") == b"two"
        with pytest.raises(RuntimeError, match="has ended"):
            await first.listen_tcp(polyloop.Protocol)

    asyncio.run(app())


async def _native_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(await reader.read(100))
    await writer.drain()
    writer.close()


def test_uvloop_loop_is_hosted_too() -> None:
    uvloop = pytest.importorskip("uvloop", reason="polyloop[uvloop]")

    async def app() -> tuple[str, bytes]:
        return polyloop.current_backend().name, await _echo_round_trip(b"uv")

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(app()) == ("asyncio", b"uv")


def test_run_inside_a_running_loop_is_refused_with_a_pointer_to_host_mode() -> None:
    async def main() -> None:
        pass

    async def app() -> None:
        with pytest.raises(RuntimeError, match="host mode"):
            polyloop.run(main, backend="asyncio")

    asyncio.run(app())

    async def inside_run() -> None:
        with pytest.raises(RuntimeError, match="inside the asyncio session"):
            polyloop.run(main, backend="asyncio")

    polyloop.run(inside_run)


def test_call_soon_threadsafe_from_worker_and_foreign_threads() -> None:
    async def app() -> None:
        session = polyloop.current_backend()
        got: list[str] = []
        done = session.create_future()

        def worker() -> None:  # a run_in_thread worker knows its session
            polyloop.call_soon_threadsafe(got.append, "worker")

        await polyloop.run_in_thread(worker)
        errors: list[BaseException] = []

        def foreign() -> None:  # a thread of its own knows none...
            try:
                polyloop.call_soon_threadsafe(got.append, "nope")
            except RuntimeError as exc:
                errors.append(exc)
            # ...but may use a session object it was handed.
            session.call_soon_threadsafe(lambda: done.set_result(None))

        thread = threading.Thread(target=foreign)
        thread.start()
        await done
        thread.join()
        assert got == ["worker"], got
        assert len(errors) == 1 and "session object" in str(errors[0]), errors

    asyncio.run(app())


def test_from_thread_portal() -> None:
    async def double(x: int) -> int:
        await polyloop.sleep(0)
        return 2 * x

    async def fail() -> None:
        raise LookupError("from the loop")

    async def app() -> None:
        session = polyloop.current_backend()

        def worker() -> tuple[int, str]:
            return polyloop.from_thread.run(double, 21), polyloop.from_thread.run_sync(
                lambda: polyloop.current_backend().name
            )

        assert await polyloop.run_in_thread(worker) == (42, "asyncio")

        outcome: list[Any] = []

        def foreign() -> None:
            outcome.append(polyloop.from_thread.run(double, 5, session=session))
            try:
                polyloop.from_thread.run(fail, session=session)
            except LookupError as exc:
                outcome.append(str(exc))

        thread = threading.Thread(target=foreign)
        thread.start()
        while thread.is_alive():
            await polyloop.sleep(0.005)
        assert outcome == [10, "from the loop"], outcome
        with pytest.raises(RuntimeError, match="own loop thread"):
            polyloop.from_thread.run(double, 1)

    asyncio.run(app())


@pytest.mark.asyncio
async def test_pytest_asyncio_tests_can_call_polyloop_code() -> None:
    assert await _echo_round_trip(b"pytest-asyncio") == b"pytest-asyncio"
    assert polyloop.current_backend().name == "asyncio"
