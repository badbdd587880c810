"""The Twisted backend's class: options, detection, host mode, bridges.

Rule: this file imports no Twisted (``polyloop.current_backend()`` loads every installed
backend class to ask its ``detect``); Twisted is imported once a session is made
(``_session.py``), or once Twisted objects are met (``sys.modules`` tells).
"""

from __future__ import annotations

import asyncio
import select
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import polyloop
from polyloop.lowlevel import Session, hosts

if TYPE_CHECKING:
    from polyloop.bridge import Source

__all__ = ["KINDS", "TwistedBackend", "default_kind"]

T = TypeVar("T")

KINDS = ("epoll", "poll", "select", "asyncio")


def default_kind() -> str:
    """The best reactor this platform has."""
    if hasattr(select, "epoll"):
        return "epoll"
    return "poll" if hasattr(select, "poll") else "select"


class TwistedBackend(polyloop.Backend):
    """polyloop on Twisted. Options: ``reactor="epoll"`` (default; else ``poll``,
    ``select``, or ``asyncio`` for an ``AsyncioSelectorReactor`` on a fresh asyncio loop);
    ``transports="core"`` (default: the core's socket transports on the reactor's
    readiness) or ``"twisted"`` (Twisted's ``tcp.Port`` and ``tcp.Connection``: slower,
    see docs/backends/twisted.md).
    """

    name = "twisted"
    native_tls = False  # listenSSL & co. use the global reactor: the core's TLS layer
    options: ClassVar[tuple[str, ...]] = ("reactor", "transports")
    requires = ("twisted", "twisted")
    detect_order = 20  # before asyncio's: a reactor may sit on a running asyncio loop

    def __init__(self, *, reactor: str | None = None, transports: str = "core") -> None:
        super().__init__()
        if transports not in ("core", "twisted"):
            raise ValueError(f"transports must be 'core' or 'twisted', not {transports!r}")
        self.transports = transports
        kind = reactor or default_kind()
        if kind not in KINDS:
            raise ValueError(f"reactor must be one of {', '.join(KINDS)}, not {kind!r}")
        if kind == "epoll":
            kind = default_kind()  # no epoll on this platform: poll, then select
        self.reactor_kind = kind

    @classmethod
    def framework_version(cls) -> str:
        import twisted

        return f"Twisted {twisted.__version__}"

    def __repr__(self) -> str:
        extra = ", Twisted's transports" if self.transports == "twisted" else ""
        return f"<polyloop twisted backend, {self.reactor_kind} reactor{extra}>"

    def own_loop(self, body: Callable[[Session], Coroutine[Any, Any, T]]) -> T:
        from ._session import own_reactor

        return own_reactor(self, body)

    def borrow_loop(self, native: Any) -> Session:
        from ._session import borrow_reactor

        return borrow_reactor(self, native)

    # --- host mode ---

    @classmethod
    def running_native(cls, *, soon: bool = False) -> Any:
        # Only a reactor the application installed: importing twisted.internet.reactor
        # here would install one. Running in this thread, or (soon=True) about to:
        # task.react() and many a main() call application code before reactor.run(), and
        # what polyloop schedules meanwhile (timers, readers, triggers) runs once the
        # reactor does.
        reactor = sys.modules.get("twisted.internet.reactor")
        threadable = sys.modules.get("twisted.python.threadable")
        if reactor is None or threadable is None or not hasattr(reactor, "callLater"):
            return None
        if getattr(reactor, "running", False):
            return reactor if threadable.isInIOThread() else None
        if not soon or getattr(reactor, "_startedBefore", True):
            return None
        # Never run yet, no thread registered as its I/O thread, and we are the main
        # thread: the reactor an application is about to run (task.react calls main first).
        if threadable.ioThread is None and threading.current_thread() is threading.main_thread():
            return reactor
        return None

    @classmethod
    def detect(cls, *, foreign: bool = False) -> Session | None:
        loop = asyncio._get_running_loop()
        if loop is None:
            return super().detect(foreign=foreign)
        # An AsyncioSelectorReactor on this loop, when Twisted's runner runs the caller:
        # it steps coroutines from reactor callbacks, which run as plain loop callbacks,
        # so no asyncio task is current, and only the Twisted session can suspend such a
        # coroutine. Inside an asyncio task the runner is asyncio's: not ours to answer.
        if asyncio.current_task(loop) is not None and not foreign:
            return None
        for session in hosts():
            if getattr(session.native, "_asyncioEventloop", None) is loop:
                return session if isinstance(session.backend, TwistedBackend) else None
        reactor = sys.modules.get("twisted.internet.reactor")
        if reactor is not None and getattr(reactor, "_asyncioEventloop", None) is loop:
            return cls().attach(reactor)
        return None

    def run_hosted(self, main: Callable[[], Awaitable[T]]) -> T:
        # The application's side, not polyloop's: a --host Twisted worker *is* an app on
        # the global reactor, which host_process runs in the main thread. polyloop and its
        # adapters never import it otherwise; tests/test_twisted.py holds them to that.
        from twisted.internet import threads
        from twisted.internet.defer import Deferred

        reactor = sys.modules["twisted.internet.reactor"]  # host_process installed it

        async def hosted() -> T:
            return await main()

        def start() -> Deferred[T]:
            return Deferred.fromCoroutine(hosted())

        return threads.blockingCallFromThread(reactor, start)  # type: ignore[arg-type]

    def host_process(self, body: Callable[[], int]) -> int:
        # Run body() in a worker thread while the global reactor runs in this one, as a
        # Twisted application runs (task.react, which installs the global reactor: this
        # is the application's side, for the --host worker only).
        from twisted.internet import task, threads

        code: list[int] = []

        def main(reactor: Any) -> Any:
            d = threads.deferToThreadPool(reactor, reactor.getThreadPool(), body)
            d.addCallback(code.append)
            return d

        try:
            task.react(main)
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise
        return code[0] if code else 1

    # --- bridges ---

    @classmethod
    def bridge_source(cls, x: Any) -> Source | None:
        defer = sys.modules.get("twisted.internet.defer")
        if defer is None or not isinstance(x, defer.Deferred):
            return None
        from ._bridge import deferred_source

        return deferred_source(x)
