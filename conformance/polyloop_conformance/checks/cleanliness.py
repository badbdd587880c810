"""Cleanliness: ``Backend.run`` disposes of everything it started.

These checks are synchronous: they take the backend factory and call ``run`` themselves,
because what they measure is the process before and after a whole run. A scenario opens
TCP, Unix and UDP servers and connections (plain and TLS), uses a worker thread, spawns
a task that never ends and schedules a timer far ahead -- then returns without closing
anything. Afterwards the open-fd count (``/proc/self/fd``) and the thread count must be
what they were, the task must have been cancelled, every left-open connection must have
seen ``connection_lost``, the timer must never fire, and no ``ResourceWarning`` may be
emitted. A warm-up run first lets lazy one-time set-up (imports, caches) happen.
"""

from __future__ import annotations

import gc
import os
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import polyloop

from .._registry import SkipCheck, check
from ..tls import material
from ._util import Accepted, Recorder, compact, temp_dir

Factory = Callable[[], polyloop.Backend]


class _Outcome:
    """What a scenario run left behind, for the checks to inspect."""

    def __init__(self) -> None:
        self.task_events: list[str] = []
        self.protocols: list[Recorder] = []
        self.timer_fired: list[float] = []
        self.session: polyloop.Session | None = None


async def _scenario(out: _Outcome, folder: str, fail: bool) -> None:
    """Open many things, close some, leave the rest for run() to dispose of."""
    session = out.session = polyloop.current_backend()
    tls = material()

    def keep(proto: Recorder) -> Recorder:
        out.protocols.append(proto)
        return proto

    accepted = Accepted(session, lambda: keep(Recorder(session)))
    tcp = await session.listen_tcp(accepted, "127.0.0.1", 0)
    await session.listen_tcp(accepted, "127.0.0.1", 0, ssl=tls.server_context())
    tls_server = await session.listen_tcp(accepted, "127.0.0.1", 0, ssl=tls.server_context())
    unix_path = os.path.join(folder, "clean.sock")
    await session.listen_unix(accepted, unix_path)

    new = lambda: keep(Recorder(session))  # noqa: E731
    for _ in range(3):
        await session.connect_tcp(new, "127.0.0.1", tcp.port)
    closed, _ = await session.connect_tcp(new, "127.0.0.1", tcp.port)
    closed.close()
    await session.connect_tcp(
        new, "127.0.0.1", tls_server.port, ssl=tls.client_context(), server_hostname="localhost"
    )
    await session.connect_unix(new, unix_path)
    t, _ = await session.connect_tcp(new, "127.0.0.1", tcp.port)
    t.write(b"x" * (1 << 20))  # data still buffered at the end of the run

    await session.open_udp(polyloop.DatagramProtocol, local_addr=("127.0.0.1", 0))
    stream = await polyloop.open_tcp_stream("127.0.0.1", tcp.port)
    await stream.send(b"left open")

    listener = await polyloop.open_tcp_listener("127.0.0.1", 0)

    async def handler(s: polyloop.Stream) -> None:
        await s.receive()

    session.spawn(listener.serve(handler))
    await polyloop.open_tcp_stream("127.0.0.1", listener.port)

    await session.run_in_thread(time.sleep, 0)

    started = session.create_future()

    async def forever() -> None:
        out.task_events.append("started")
        started.set_result(None)
        try:
            await session.create_future()
        except polyloop.Cancelled:
            out.task_events.append("cancelled")
            raise
        finally:
            out.task_events.append("finally")

    session.spawn(forever())
    await started
    session.call_later(0.05, lambda: out.timer_fired.append(time.monotonic()))
    for i in range(8):  # every connection above to `accepted` is up on both ends
        await accepted.get(i)
    if fail:
        raise _ScenarioError("main failed with everything open")


class _ScenarioError(Exception):
    pass


def _fd_count(collect: bool = True) -> int:
    if collect:
        gc.collect()
    return len(os.listdir("/proc/self/fd"))


def _run_scenario(make_backend: Factory, fail: bool = False, collect: bool = True) -> _Outcome:
    out = _Outcome()
    with temp_dir() as folder:
        try:
            make_backend().run(_scenario, out, folder, fail)
        except _ScenarioError:
            if not fail:
                raise
        except AssertionError:
            raise
        except Exception as exc:
            raise AssertionError(
                f"the cleanliness scenario could not open what it leaves open: {exc!r}"
                " (a listen, connect or TLS handshake failed; the other checks name the rule)"
            ) from exc
        else:
            assert not fail, "run() returned although main raised"
    if collect:
        gc.collect()
    return out


def _need_proc() -> None:
    if not os.path.isdir("/proc/self/fd"):
        raise SkipCheck("no /proc/self/fd on this platform to count open fds")


@check("cleanliness", clauses=["run.disposes_everything"], sync=True, timeout=30)
def check_no_fd_leak(make_backend: Factory) -> None:
    """A run that leaves servers, connections, TLS, UDP and streams open leaks no fd."""
    _need_proc()
    _run_scenario(make_backend)  # warm-up: lazy one-time set-up may keep fds for good
    before = _fd_count()
    _run_scenario(make_backend, collect=False)
    after = _fd_count(collect=False)  # run() must close fds itself, not leave it to gc
    assert after == before, f"{after - before} fd(s) leaked by one run ({before} -> {after})"


@check("cleanliness", clauses=["run.disposes_everything"], sync=True, timeout=30)
def check_no_fd_leak_on_error(make_backend: Factory) -> None:
    """When main raises with everything open, run still disposes of it: no fd leaks."""
    _need_proc()
    _run_scenario(make_backend, fail=True)
    before = _fd_count()
    _run_scenario(make_backend, fail=True, collect=False)
    after = _fd_count(collect=False)
    assert after == before, f"{after - before} fd(s) leaked by a failing run ({before} -> {after})"


@check("cleanliness", clauses=["run.disposes_everything"], sync=True, timeout=30)
def check_no_thread_leak(make_backend: Factory) -> None:
    """After run returns, no thread it started (worker pool included) is left alive."""
    _run_scenario(make_backend)
    before = {t.ident for t in threading.enumerate()}
    _run_scenario(make_backend)
    extra = [t for t in threading.enumerate() if t.ident not in before]
    assert not extra, f"threads left running after run(): {[t.name for t in extra]}"


@check("cleanliness", clauses=["run.end_cancels_tasks"], sync=True, timeout=30)
def check_tasks_cancelled(make_backend: Factory) -> None:
    """A task still waiting when main returns is cancelled, its cleanup run, before run returns."""
    out = _run_scenario(make_backend)
    assert out.task_events == ["started", "cancelled", "finally"], (
        f"a task left waiting when main returned went through {out.task_events}, expected"
        " ['started', 'cancelled', 'finally'] (rule: run cancels leftover tasks and lets"
        " them unwind before it returns)"
    )


@check("cleanliness", clauses=["run.end_loses_connections"], sync=True, timeout=30)
def check_connections_lost(make_backend: Factory) -> None:
    """Every connection left open gets connection_lost, exactly once, before run returns."""
    out = _run_scenario(make_backend)
    assert len(out.protocols) >= 10, f"the scenario made only {len(out.protocols)} protocols"
    bad = [compact(p.events) for p in out.protocols if p.events.count("lost") != 1]
    assert not bad, (
        f"{len(bad)} of {len(out.protocols)} connections left open did not get exactly one"
        f" connection_lost before run() returned: {bad[:3]}"
    )


@check("cleanliness", clauses=["run.pending_timers_never_fire"], sync=True, timeout=30)
def check_timer_never_fires(make_backend: Factory) -> None:
    """A call_later still pending when run returns never fires afterwards."""
    out = _run_scenario(make_backend)
    time.sleep(0.1)  # the timer was due 0.05 s after scheduling: it would have fired by now
    assert not out.timer_fired, (
        "a call_later scheduled in the run fired after run() returned (rule: the end of a"
        " session cancels its timers)"
    )


@check("cleanliness", clauses=["run.disposes_everything"], sync=True, timeout=30)
def check_no_resource_warnings(make_backend: Factory) -> None:
    """A run that leaves everything open emits no ResourceWarning (nothing unclosed)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        _run_scenario(make_backend)
        _run_scenario(make_backend, fail=True)
        gc.collect()
    found = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert not found, f"{len(found)} ResourceWarning(s), first: {found[0].message}"


@check("cleanliness", clauses=["run.nothing_global_stays"], sync=True, timeout=30)
def check_current_backend_restored(make_backend: Factory) -> None:
    """After a run (also a failed one) current_backend() outside run raises RuntimeError."""

    def current() -> Any:
        try:
            return polyloop.current_backend()
        except RuntimeError:
            return None

    before = current()
    out = _run_scenario(make_backend, fail=True)
    after = current()
    # The run's session has ended and never comes back. Outside any loop that means the
    # RuntimeError again; where an application's loop runs the caller (gevent host mode:
    # the main greenlet), the next session of that loop.
    assert after is not out.session, f"current_backend() after a failed run: {after!r}"
    assert (after is None) == (before is None), f"before the run {before!r}, after {after!r}"


@check("cleanliness", clauses=["run.end_order"], sync=True, timeout=30)
def check_end_order(make_backend: Factory) -> None:
    """The end of a run goes in order: leftover tasks are cancelled while their
    connections are still open, then servers close, then connections are aborted, then
    the on_close hooks run."""
    seen: dict[str, object] = {}

    async def main() -> None:
        session = polyloop.current_backend()
        accepted = Accepted(session)
        server = await session.listen_tcp(accepted, "127.0.0.1", 0)
        _, cli = await session.connect_tcp(lambda: Recorder(session), "127.0.0.1", server.port)
        await accepted.get()
        started = session.create_future()

        async def holder() -> None:
            started.set_result(None)
            try:
                await session.create_future()
            except polyloop.Cancelled:
                assert cli.transport is not None
                seen["closing at Cancelled"] = cli.transport.is_closing()
                seen["lost at Cancelled"] = "lost" in cli.events
                raise

        def hook(s: polyloop.Session) -> None:
            seen["serving at hook"] = server.is_serving()
            seen["lost at hook"] = "lost" in cli.events

        session.spawn(holder())
        await started
        session.on_close(hook)

    make_backend().run(main)
    assert seen.get("lost at Cancelled") is False and seen.get("closing at Cancelled") is False, (
        f"a leftover task got Cancelled after its connection was already closing or lost"
        f" ({seen}) (rule: tasks are cancelled first, so a handler sees Cancelled rather than"
        " its connection vanishing)"
    )
    assert seen.get("serving at hook") is False, (
        f"on_close hooks ran while a server still served: {seen} (rule: the hooks run last)"
    )
    assert seen.get("lost at hook") is True, (
        f"on_close hooks ran before connection_lost of the connections left open: {seen}"
    )
