"""Host mode: the code under test started from inside a loop the framework itself runs.

Rule: nothing here calls ``polyloop.run``, and nothing here knows a framework. Each case
starts the way an application on that framework starts its own code -- the backend's own
``Backend.run_hosted`` (and, for the worker's whole life, ``Backend.host_process``) --
and the polyloop code inside finds its session by itself (``polyloop.current_backend()``);
the harness only checks that it found the right kind, borrowed, and ends it with
``aclose()`` as the case ends. The first-party backends' entries:

- asyncio (and uvloop): ``asyncio.Runner`` per case, as ``asyncio.run`` does.
- Tornado: ``IOLoop.current().run_sync(...)``, one IOLoop for the process, as a Tornado
  script does.
- Twisted: the global reactor (``twisted.internet.reactor``, installed by the worker as an
  application does), run once by ``task.react`` in the main thread; each case is handed
  to it from a worker thread with ``blockingCallFromThread`` and runs as a
  ``Deferred.fromCoroutine`` coroutine.
- gevent: ``gevent.spawn`` a greenlet per case that calls ``polyloop_gevent.wait``, with the
  process patched (``patch_all()``, a ``+patch_all`` column) or not.

A backend without ``run_hosted`` fails every ``--host`` case with one message that says
so. ``HostBackend`` quacks like a ``polyloop.Backend`` for the checks (``run``, ``name``),
so every check and app runs unchanged, the synchronous ones (run, cleanliness)
included: their ``run(main)`` becomes one hosted application run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import polyloop

__all__ = ["HostBackend", "host_label", "parse_host_label"]

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

    #: For checks: the runs are hosted (``Backend.run_hosted``), not ``polyloop.run``.
    hosted = True

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.backend = polyloop.load_backend(spec)
        self.name = self.session_name = self.backend.name

    def __repr__(self) -> str:
        return f"<HostBackend {self.spec} (host mode)>"

    def run(self, main: Callable[..., Awaitable[T]], *args: Any) -> T:
        """One application run of ``main(*args)``; returns its result, raises its error."""
        return self.backend.run_hosted(lambda: _hosted(self, main, args))

    def _found(self) -> polyloop.Session:
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
        if session.closed:
            raise AssertionError(f"{session!r} is closed at the start of a case")
        return session


async def _hosted(host: HostBackend, main: Callable[..., Awaitable[T]], args: Any) -> T:
    session = host._found()
    try:
        return await main(*args)
    finally:
        if not session.closed:
            await session.aclose()
