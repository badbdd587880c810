"""A backend: one framework, adapted; the type that makes sessions.

Rule: a ``Backend`` holds configuration (its options) and knows two ways to a live loop:
``run`` *owns* one (a fresh loop, run to completion, disposed of) and ``attach`` *borrows*
the one an application runs. Everything done on a loop goes through the ``Session`` it
makes (``polyloop._session``); a backend instance may make any number of them.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from . import _context
from ._errors import Cancelled

if TYPE_CHECKING:
    from ._session import Session

__all__ = ["Backend"]

T = TypeVar("T")


class Backend(abc.ABC):
    """One framework, adapted: its options, its version, and how to own or borrow a loop.

    Third-party backends subclass this (and ``polyloop.lowlevel.Session``), register under
    the entry-point group ``polyloop.backends``, and prove themselves with
    ``polyloop conformance --backend their_pkg:TheirBackend``.
    """

    #: The name users pass as ``backend=``.
    name: ClassVar[str] = "?"
    #: False if the backend cannot take a stdlib ``ssl.SSLContext`` itself; the core TLS
    #: layer (``ssl.MemoryBIO``) then runs over its plain transports.
    native_tls: ClassVar[bool] = False
    #: Option names accepted by ``__init__`` (for the CLI and error messages). Values from
    #: a spec string (``asyncio:loop=uvloop``) arrive as strings.
    options: ClassVar[tuple[str, ...]] = ()
    #: True for a backend made of other backends' sessions (``mixed``): left out of
    #: "every backend" (``available_backends()``, the conformance matrix by default).
    composite: ClassVar[bool] = False

    @property
    def session_name(self) -> str:
        """The ``name`` of the session ``run`` gives ``main``: this backend's own, or for
        a composite backend the framework's whose session ``main`` runs on."""
        return self.name

    def __init__(self, **options: Any) -> None:
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            known = ", ".join(self.options) or "none"
            raise TypeError(
                f"unknown option(s) for the {self.name} backend: {', '.join(unknown)}"
                f" (known: {known})"
            )

    @classmethod
    def framework_version(cls) -> str:
        """The adapted framework's version, for reports."""
        return "?"

    def __repr__(self) -> str:
        return f"<polyloop {self.name} backend>"

    # --- owning a loop ---

    def run(
        self, main: Callable[..., Awaitable[T]], *args: Any, handle_sigterm: bool = False
    ) -> T:
        """Run ``main(*args)`` on a fresh loop in a new session, and return its result.

        Everything is disposed of before returning: tasks left running are cancelled,
        servers and connections closed, timers and threads gone, no fd leaked; then the
        session's ``on_close`` hooks run. Called from inside a running loop, it raises
        ``RuntimeError`` (await the code there instead: see host mode).

        ``handle_sigterm=True`` (main thread only): SIGTERM cancels ``main``, which then
        cleans up as it would after Ctrl-C, and ``run`` raises ``SystemExit(143)`` unless
        ``main`` returned anyway.
        """
        if not callable(main):
            raise TypeError(
                "run() takes an async function and its arguments, not"
                f" {type(main).__name__}: write run(main, arg), not run(main(arg))"
            )
        check_not_nested()
        if handle_sigterm:
            import threading

            if threading.current_thread() is not threading.main_thread():
                raise RuntimeError("handle_sigterm=True needs polyloop.run in the main thread")
        terminated: list[bool] = []

        async def body(session: Session) -> T:
            restore = _cancel_on_sigterm(session, terminated) if handle_sigterm else None
            try:
                return await main(*args)
            finally:
                if restore is not None:
                    restore()
                await session._end()

        try:
            return self._run(body)
        except BaseException as exc:
            if terminated and isinstance(exc, Cancelled):
                raise SystemExit(128 + 15) from None
            raise

    @abc.abstractmethod
    def _run(self, body: Callable[[Session], Coroutine[Any, Any, T]]) -> T:
        """Own a loop: make a fresh one and an owned session on it, run ``body(session)``
        to completion in ``session.context``, then dispose of the loop (no fd, thread or
        global state left). ``body`` disposes of the session itself before it returns."""

    # --- borrowing a loop ---

    def attach(self, native: Any = None) -> Session:
        """The session on ``native``, a loop the application runs (made on first use).

        ``native`` is the framework's live object (an asyncio loop, a Tornado ``IOLoop``,
        a Twisted reactor, a gevent hub); ``None`` means the one running the caller. The
        session never closes, stops or replaces it; it ends when that loop shuts down
        (or on ``session.aclose()``) and then closes only what polyloop opened.
        """
        if native is None:
            native = self._running_native()
        found = _context._hosts.get(id(native))
        if found is not None and found.native is native and not found.closed:
            return found
        session = self._attach(native)
        _context.register_host(session)
        return session

    def _running_native(self) -> Any:
        """The framework object running the caller, for ``attach()`` with no argument."""
        raise RuntimeError(f"the {self.name} backend cannot find a running loop here")

    def _attach(self, native: Any) -> Session:
        """A borrowed session on ``native``, with its end hooked to the loop's shutdown."""
        raise RuntimeError(f"the {self.name} backend cannot attach to a running loop")


def _cancel_on_sigterm(session: Session, terminated: list[bool]) -> Callable[[], None]:
    """SIGTERM cancels the task running ``main``; returns how to put the old handler back.

    The handler only asks the loop (``call_soon_threadsafe``, which wakes it); a timer
    every 0.2 s gives Python the chance to run the handler on a loop blocked in C code
    (gevent's libev, a reactor) that would otherwise not return to Python until its
    next event. The first SIGTERM puts the previous handler back at once, so that a
    second one ends a clean-up that hangs (as a second Ctrl-C does); a cancellation
    still queued when ``main`` has returned is dropped, not delivered to the session's end.
    """
    import signal

    from ._cancel import _host

    host = _host()
    returned: list[bool] = []

    def cancel_main() -> None:
        if not returned:
            host.cancel()

    def on_sigterm(signum: int, frame: object) -> None:
        if not terminated:
            terminated.append(True)
            signal.signal(signal.SIGTERM, previous)
            session.call_soon_threadsafe(cancel_main)

    timers: list[Any] = []

    def tick() -> None:
        timers[:] = [session.call_later(0.2, tick)]

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    tick()

    def restore() -> None:
        returned.append(True)
        for timer in timers:
            timer.cancel()
        signal.signal(signal.SIGTERM, previous)

    return restore


def check_not_nested() -> None:
    """``run()`` inside a running loop would block that loop: refuse, the same everywhere."""
    where = None
    session = _context._session_var.get(None)
    if session is not None and not session.closed:
        where = f"the {session.name} session #{session.id}"
    else:
        import asyncio

        if asyncio._get_running_loop() is not None:
            where = "a running asyncio loop"
        elif _context._twisted_global_reactor(running_only=True) is not None:
            where = "the running Twisted reactor"
    if where is not None:
        raise RuntimeError(
            f"polyloop.run() called inside {where}: it would block that loop. Await the"
            " code instead: polyloop runs on the loop that is already running (host mode)"
        )
