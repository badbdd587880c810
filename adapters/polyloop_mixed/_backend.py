"""The mixed backend's class: options, and its part of detection.

Rule: this file imports no framework (``polyloop.current_backend()`` loads every installed
backend class to ask its ``detect``); the machinery is in ``_session.py``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar, TypeVar

import polyloop
from polyloop.lowlevel import Session

__all__ = ["FRAMEWORKS", "MixedBackend"]

T = TypeVar("T")

FRAMEWORKS = ("asyncio", "tornado", "twisted", "gevent")
"""The names of the four sessions, in the order they are made (and ended in reverse)."""


class MixedBackend(polyloop.Backend):
    """polyloop on all four frameworks in one thread: ``polyloop.run(main,
    backend="mixed")``. Option ``session``: the framework whose session ``main`` runs on
    (default ``"asyncio"``)."""

    name = "mixed"
    options: ClassVar[tuple[str, ...]] = ("session",)
    composite = True
    # First: asyncio's "running loop" is per thread, and the mixed loop runs in one
    # greenlet of it, so every greenlet sees it running. A greenlet other than the loop's
    # is gevent's (its hub runs it), not the loop's frameworks'.
    detect_order = 10

    def __init__(self, *, session: str = "asyncio") -> None:
        super().__init__()
        if session not in FRAMEWORKS:
            raise ValueError(f"session must be one of {', '.join(FRAMEWORKS)}, not {session!r}")
        self.main = session

    @property
    def session_name(self) -> str:
        return self.main

    @classmethod
    def check_available(cls) -> None:
        for name in FRAMEWORKS:
            polyloop.load_backend(name)

    @classmethod
    def framework_version(cls) -> str:
        return "; ".join(polyloop.load_backend(n).framework_version() for n in FRAMEWORKS)

    def own_loop(self, body: Callable[[Session], Coroutine[Any, Any, T]]) -> T:
        from ._session import own_mixed

        return own_mixed(self, body)

    @classmethod
    def detect(cls, *, foreign: bool = False) -> Session | None:
        loop = asyncio._get_running_loop()
        runner = getattr(loop, "_polyloop_greenlet", None)
        if runner is None or sys.modules["greenlet"].getcurrent() is runner:
            return None  # not mixed mode, or the loop's own greenlet: its frameworks'
        return polyloop.load_backend("gevent").detect(foreign=foreign)
