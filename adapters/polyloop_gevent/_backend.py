"""The gevent backend's class: detection, host mode, bridges.

Rule: this file imports no gevent (``polyloop.current_backend()`` loads every installed
backend class to ask its ``detect``); gevent is imported once a session is made
(``_session.py``), or once gevent objects are met (``sys.modules`` tells).
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import polyloop
from polyloop.lowlevel import Session

if TYPE_CHECKING:
    from polyloop.bridge import Source

__all__ = ["GeventBackend"]

T = TypeVar("T")


class GeventBackend(polyloop.Backend):
    """polyloop on gevent greenlets and the thread's hub. No options.

    Works whether or not ``gevent.monkey.patch_all()`` ran, and never patches anything.
    """

    name = "gevent"
    native_tls = False  # stdlib contexts go through the core's MemoryBIO layer
    options: ClassVar[tuple[str, ...]] = ()
    requires = ("gevent", "gevent")
    detect_order = 50  # last of the four: a running asyncio loop is more specific
    nests = True  # polyloop.run in a greenlet blocks that greenlet only

    @classmethod
    def framework_version(cls) -> str:
        import gevent
        import greenlet as greenlet_module

        return f"gevent {gevent.__version__}, greenlet {greenlet_module.__version__}"

    def own_loop(self, body: Callable[[Session], Coroutine[Any, Any, T]]) -> T:
        from ._session import own_hub

        return own_hub(self, body)

    def borrow_loop(self, native: Any) -> Session:
        from ._session import borrow_hub

        return borrow_hub(self, native)

    # --- host mode ---

    @classmethod
    def running_native(cls, *, soon: bool = False) -> Any:
        # The hub of this thread, if it exists already, from any greenlet but the hub
        # (code on the hub itself must not block, so it gets no session).
        hub_local = sys.modules.get("gevent._hub_local")
        hub = hub_local.get_hub_if_exists() if hub_local is not None else None
        if hub is None:
            return None
        return None if sys.modules["greenlet"].getcurrent() is hub else hub

    @classmethod
    def release_thread(cls) -> None:
        # gevent keeps one hub per thread after a run (own_hub does not destroy it), and a
        # thread that ends does not destroy its hub either: measured, each ended thread
        # leaves its hub's two loop fds open.
        hub_local = sys.modules.get("gevent._hub_local")
        hub = hub_local.get_hub_if_exists() if hub_local is not None else None
        if hub is not None:
            hub.destroy(destroy_loop=True)

    def run_hosted(self, main: Callable[[], Awaitable[T]]) -> T:
        import gevent

        from . import wait

        async def hosted() -> T:
            return await main()

        return gevent.spawn(wait, hosted()).get()  # type: ignore[no-any-return]

    # --- bridges ---

    @classmethod
    def bridge_source(cls, x: Any) -> Source | None:
        if "gevent" not in sys.modules:
            return None
        from ._bridge import greenlet_source

        return greenlet_source(x)
