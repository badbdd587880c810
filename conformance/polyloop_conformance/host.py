"""Host mode: the code under test started from inside a loop the framework itself runs.

Rule: nothing here calls ``polyloop.run``. Each case starts the way an application on
that framework starts its own code, and the polyloop code inside finds its session by
itself (``polyloop.current_backend()``); the harness only checks that it found the right
kind, borrowed, and ends it the way that framework's application would.

- asyncio (and uvloop): ``asyncio.Runner`` per case, as ``asyncio.run`` does; the session
  ends when the runner shuts the loop down (``shutdown_asyncgens``), not by our hand.
- Tornado: ``IOLoop.current().run_sync(...)``, one IOLoop for the process, as a Tornado
  script does; the session is ended with ``aclose()`` at the end of each case.
- Twisted: the global reactor (``twisted.internet.reactor``, installed by the worker as an
  application does), run once by ``task.react`` in the main thread; each case is handed
  to it from a worker thread with ``blockingCallFromThread`` and runs as a
  ``Deferred.fromCoroutine`` coroutine; its session is ended with ``aclose()``.
- gevent: ``gevent.spawn`` a greenlet per case that calls ``polyloop_gevent.wait``, with the
  process patched (``patch_all()``) or not; the session is ended with ``aclose()``.

``HostBackend`` quacks like a ``polyloop.Backend`` for the checks (``run``, ``name``), so
every check and app runs unchanged, the synchronous ones (lifecycle, cleanliness)
included: their ``run(main)`` becomes one hosted application run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import polyloop

__all__ = ["HostBackend", "host_label", "parse_host_label", "under_twisted_reactor"]

T = TypeVar("T")

#: Suffixes of a host-mode column: ``gevent@host`` and ``gevent@host+patch_all``.
HOST = "@host"
PATCHED = "+patch_all"


def host_label(spec: str, patched: bool = False) -> str:
    """The report column of ``spec`` run in host mode."""
    return spec + HOST + (PATCHED if patched else "")


def parse_host_label(label: str) -> tuple[str, bool]:
    """``(spec, patched)`` of a host-mode label."""
    patched = label.endswith(PATCHED)
    if patched:
        label = label[: -len(PATCHED)]
    return label.removesuffix(HOST), patched


class HostBackend:
    """``run(main, *args)`` runs ``main`` the way a ``spec`` application runs its code."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.backend = polyloop.load_backend(spec)
        self.name = self.session_name = self.backend.name
        self._run = _RUNNERS[self.name]

    def __repr__(self) -> str:
        return f"<HostBackend {self.spec} (host mode)>"

    def run(self, main: Callable[..., Awaitable[T]], *args: Any) -> T:
        """One application run of ``main(*args)``; returns its result, raises its error."""
        return self._run(self, main, args)  # type: ignore[no-any-return]

    def _found(self, ends_itself: bool) -> polyloop.Session:
        """The session the code under test finds; it must be this backend's, borrowed.

        A spec with options (``asyncio:loop=uvloop``) is attached explicitly first, the
        way an application that wants non-default options would.
        """
        if self.backend.options and ":" in self.spec:
            self.backend.attach()
        session = polyloop.current_backend()
        if session.name != self.name or session.owned:
            raise AssertionError(
                f"in a {self.name} application, polyloop.current_backend() found {session!r}"
            )
        if not ends_itself and session.closed:
            raise AssertionError(f"{session!r} is closed at the start of a case")
        return session


async def _hosted(host: HostBackend, main: Callable[..., Awaitable[T]], args: Any, end: bool) -> T:
    session = host._found(ends_itself=not end)
    try:
        return await main(*args)
    finally:
        if end:
            await session.aclose()


def _run_asyncio(host: HostBackend, main: Callable[..., Awaitable[Any]], args: Any) -> Any:
    factory = None
    if getattr(host.backend, "loop_kind", "asyncio") == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    # What asyncio.run does (asyncio.Runner: one fresh loop, shut down at the end).
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(_hosted(host, main, args, end=False))


def _run_tornado(host: HostBackend, main: Callable[..., Awaitable[Any]], args: Any) -> Any:
    from tornado.ioloop import IOLoop

    return IOLoop.current().run_sync(lambda: _hosted(host, main, args, end=True))


def _run_gevent(host: HostBackend, main: Callable[..., Awaitable[Any]], args: Any) -> Any:
    import gevent

    import polyloop_gevent

    greenlet = gevent.spawn(polyloop_gevent.wait, _hosted(host, main, args, end=True))
    return greenlet.get()


def _run_twisted(host: HostBackend, main: Callable[..., Awaitable[Any]], args: Any) -> Any:
    # The application's side, not polyloop's: the --host Twisted column *is* an app on the
    # global reactor (its own worker process, see the module docstring). polyloop and its
    # adapters never import it; tests/test_twisted.py holds them to that.
    from twisted.internet import reactor, threads
    from twisted.internet.defer import Deferred

    def start() -> Deferred[Any]:
        return Deferred.fromCoroutine(_hosted(host, main, args, end=True))

    return threads.blockingCallFromThread(reactor, start)  # type: ignore[arg-type]


_RUNNERS: dict[str, Callable[[HostBackend, Callable[..., Awaitable[Any]], Any], Any]] = {
    "asyncio": _run_asyncio,
    "tornado": _run_tornado,
    "gevent": _run_gevent,
    "twisted": _run_twisted,
}


def under_twisted_reactor(body: Callable[[], int]) -> int:
    """Run ``body()`` in a worker thread while the global reactor runs in this one, as a
    Twisted application runs (``task.react``). Returns ``body``'s exit code.

    Installs the global reactor: only the --host worker for Twisted calls this."""
    from twisted.internet import task, threads

    code: list[int] = []

    def main(reactor: Any) -> Any:
        d = threads.deferToThread(body)
        d.addCallback(code.append)
        return d

    try:
        task.react(main)
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    return code[0] if code else 1
