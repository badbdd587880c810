"""A backend: one framework, adapted; the type that makes sessions.

Rule: a ``Backend`` holds configuration (its options) and knows the ways to a live loop:
``run`` *owns* one (a fresh loop, run to completion, disposed of), ``attach`` *borrows*
the one an application runs, and ``detect`` finds the one running the caller (host
mode). Everything done on a loop goes through the ``Session`` it makes; a backend
instance may make any number of them. A backend class must import without its framework
(the framework is imported once the backend runs or attaches): every installed backend
class is loaded to ask its ``detect``.
"""

from __future__ import annotations

import abc
import importlib
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from ._context import check_not_nested, find_host, register_host
from ._errors import Cancelled
from ._signals import cancel_main_on

if TYPE_CHECKING:
    from ._session import Session
    from .bridge import Source

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

    #: ``(module, extra)``: the framework's module, and the extra that installs it; the
    #: default ``check_available`` imports the module.
    requires: ClassVar[tuple[str, str] | None] = None

    @classmethod
    def check_available(cls) -> None:
        """Raise ``ImportError`` saying what to install if the framework is missing
        (``pip install 'polyloop[twisted]'``). Called when the backend is loaded to run or
        listed, never to detect. Default: import ``requires``'s module, if any."""
        if cls.requires is None:
            return
        module, extra = cls.requires
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ImportError(f"{exc} (pip install 'polyloop[{extra}]')") from exc

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

        Ctrl-C (in the main thread, where SIGINT has Python's default handler) cancels
        ``main``, which then cleans up; ``run`` raises ``KeyboardInterrupt`` unless
        ``main`` returned anyway, and a second Ctrl-C interrupts a clean-up that hangs.
        ``handle_sigterm=True`` does the same for SIGTERM and raises ``SystemExit(143)``.
        """
        if not callable(main):
            raise TypeError(
                "run() takes an async function and its arguments, not"
                f" {type(main).__name__}: write run(main, arg), not run(main(arg))"
            )
        check_not_nested()
        signums = (signal.SIGINT, signal.SIGTERM) if handle_sigterm else (signal.SIGINT,)
        fired: list[int] = []

        async def body(session: Session) -> T:
            restore = cancel_main_on(session, signums, fired)
            try:
                return await main(*args)
            finally:
                restore()
                await session.end()

        try:
            return self.own_loop(body)
        except BaseException as exc:
            if fired and isinstance(exc, Cancelled):
                if fired[0] == signal.SIGTERM:
                    raise SystemExit(128 + signal.SIGTERM) from None
                raise KeyboardInterrupt() from None
            raise

    @abc.abstractmethod
    def own_loop(self, body: Callable[[Session], Coroutine[Any, Any, T]]) -> T:
        """Own a loop: make a fresh one and an owned session on it, run ``body(session)``
        to completion in ``session.context``, then dispose of the loop (no fd, thread or
        global state left). ``body`` ends the session itself before it returns."""

    # --- borrowing a loop ---

    def attach(self, native: Any = None) -> Session:
        """The session on ``native``, a loop the application runs (made on first use).

        ``native`` is the framework's live object (an asyncio loop, a Tornado ``IOLoop``,
        a Twisted reactor, a gevent hub); ``None`` means the one running the caller. The
        session never closes, stops or replaces it; it ends when that loop shuts down
        (or on ``session.aclose()``) and then closes only what polyloop opened.
        """
        if native is None:
            native = self.running_native(soon=True)
            if native is None:
                raise RuntimeError(f"the {self.name} backend finds no running loop here")
        found = find_host(native)
        if found is not None:
            return found
        session = self.borrow_loop(native)
        register_host(session)
        return session

    def borrow_loop(self, native: Any) -> Session:
        """A borrowed session on ``native``, with its end hooked to the loop's shutdown
        (``session.end()`` while the loop still runs). Default: host mode unsupported."""
        raise RuntimeError(f"the {self.name} backend cannot attach to a running loop")

    # --- host mode: detection (polyloop._context) ---

    #: Where this backend is asked in the detection order (lowest first; the first-party
    #: ones use 10-50, see ``docs/writing-a-backend.md``).
    detect_order: ClassVar[int] = 100
    #: True if ``polyloop.run`` may be called where this framework runs the caller
    #: (gevent: a greenlet blocks only itself); else ``run`` there is refused.
    nests: ClassVar[bool] = False

    @classmethod
    def running_native(cls, *, soon: bool = False) -> Any:
        """The framework's live object running the caller in this thread, or ``None``.

        Never import the framework here: look for it in ``sys.modules`` (an application
        that runs it has imported it). ``soon=True`` may also answer an object that does
        not run yet but will run what is scheduled on it once it starts (Twisted's
        reactor under ``task.react`` before ``reactor.run()``). Default: ``None``."""
        return None

    @classmethod
    def detect(cls, *, foreign: bool = False) -> Session | None:
        """The borrowed session of the loop running the caller, if this backend's
        framework runs it; ``None`` otherwise. Called by ``polyloop.current_backend()``
        for every installed backend, in ``detect_order``, until one answers. Default:
        ``running_native(soon=True)``, attached.

        ``foreign=True``: a coroutine runner that is neither the core's nor asyncio's sent
        a polyloop future back (see "Foreign runners"), also when an asyncio task is the
        current one (Twisted's ``Deferred.fromCoroutine`` runs a first step inline):
        answer if this backend's runner may be the one."""
        native = cls.running_native(soon=True)
        return None if native is None else cls().attach(native)

    @classmethod
    def release_thread(cls) -> None:
        """Release what the framework keeps for the calling thread, which is about to end
        (polyloop calls it in threads it made: a blocking portal's). Look for the
        framework in ``sys.modules``; never import it. Default: nothing."""
        return None

    # --- the conformance suite's --host mode ---

    def run_hosted(self, main: Callable[[], Awaitable[T]]) -> T:
        """Run ``main()`` the way an application of this framework runs its own code --
        its loop started by the framework's own API, never through ``polyloop.run`` --
        and return its result or raise its error. ``main`` finds its session by detection
        and ends it (``aclose``) before it returns. For ``polyloop conformance --host``."""
        raise NotImplementedError(
            f"the {self.name} backend has no run_hosted(): polyloop conformance --host"
            " needs it (see docs/writing-a-backend.md, 'Host mode')"
        )

    def host_process(self, body: Callable[[], int]) -> int:
        """Run ``body()`` (a ``--host`` worker's whole life) where this framework's
        application would run it; return its exit code. Default: just call it. (Twisted's
        runs the global reactor in the main thread, and ``body`` in a worker thread.)"""
        return body()

    # --- bridges (polyloop.bridge) ---

    @classmethod
    def bridge_source(cls, x: Any) -> Source | None:
        """``x`` as a ``polyloop.bridge.Source`` if it is this framework's own future-like
        object (a ``Deferred``, a ``Greenlet``...), else ``None``. Look for the framework in
        ``sys.modules``; never import it. Default: ``None``."""
        return None
