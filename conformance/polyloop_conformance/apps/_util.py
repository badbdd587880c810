"""Small pieces the apps share: a wake-up signal, bounded waits, socket buffer sizes.

Rule: only the polyloop API here, so that the apps stay backend-neutral.
"""

from __future__ import annotations

import socket
from collections.abc import Coroutine
from typing import Any, TypeVar

import polyloop

__all__ = ["Signal", "shrink_socket_buffers", "within"]

T = TypeVar("T")


class Signal:
    """Wakes every task waiting in ``wait()`` each time ``fire()`` is called.

    It carries no state: a waiter re-checks its own condition after each wake-up, so a
    ``fire()`` with nobody waiting is simply lost (and nothing needs it).
    """

    def __init__(self) -> None:
        self._waiters: list[polyloop.Future[None]] = []

    async def wait(self) -> None:
        """Suspend until the next ``fire()``."""
        fut: polyloop.Future[None] = polyloop.create_future()
        self._waiters.append(fut)
        await fut

    def fire(self) -> None:
        """Wake every current waiter."""
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)


async def within(seconds: float, coro: Coroutine[Any, Any, T], what: str) -> T:
    """Await ``coro``; an ``AssertionError`` naming ``what`` if it takes over ``seconds``."""
    try:
        return await polyloop.wait_for(coro, seconds)
    except TimeoutError:
        raise AssertionError(f"{what}: nothing within {seconds:g} s") from None


def shrink_socket_buffers(transport: polyloop.BaseTransport, size: int) -> bool:
    """Set the kernel's send and receive buffers of ``transport``'s socket to ``size``.

    Why: Linux grows a loopback socket's buffers to several MiB, which would absorb a
    whole flow-control scenario before any ``pause_writing`` fires. Apps that prove
    backpressure keep the kernel's share small so that their own buffers are what is
    measured. Returns False if the transport has no socket to tune (nothing happens).
    """
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    except (OSError, AttributeError):
        return False
    return True
