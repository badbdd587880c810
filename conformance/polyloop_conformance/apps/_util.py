"""Small pieces the apps share: a wake-up signal, bounded waits, socket buffer sizes.

Rule: only the polyloop API here, so that the apps stay backend-neutral.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Awaitable, Coroutine
from typing import TypeVar

import polyloop

from ..referee import waiting_for

__all__ = ["Signal", "aclose_within", "linger_close", "shrink_socket_buffers", "within"]

T = TypeVar("T")

#: The TCP segment size on Linux loopback (MTU 65,536).
LOOPBACK_MSS = 65483


class Signal:
    """Wakes every waiter each time ``fire()`` is called.

    It carries no state: a waiter re-checks its own condition after each wake-up.
    ``wait()`` registers the waiter when it is called, not when it is first awaited,
    so that handing it to ``within()`` (which runs it in a new task) cannot miss a
    ``fire()`` that comes before that task starts.
    """

    def __init__(self) -> None:
        self._waiters: list[polyloop.Future[None]] = []

    def wait(self) -> Awaitable[None]:
        """An awaitable that completes at the next ``fire()``."""
        fut: polyloop.Future[None] = polyloop.create_future()
        self._waiters.append(fut)
        return fut

    def fire(self) -> None:
        """Wake every current waiter."""
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)


async def _wrap(aw: Awaitable[T]) -> T:
    return await aw


async def within(seconds: float, aw: Awaitable[T], what: str) -> T:
    """Await ``aw``; an ``AssertionError`` naming ``what`` if it takes over ``seconds``.

    The timeout is the backend's (``wait_for``), so the wall clock confirms it: a
    backend whose timers fire early is told so, not that nothing came for 15 s.
    """
    coro = aw if isinstance(aw, Coroutine) else _wrap(aw)
    start = time.monotonic()
    try:
        with waiting_for(what):
            return await polyloop.wait_for(coro, seconds)
    except TimeoutError:
        took = time.monotonic() - start
        if took < seconds * 0.8:
            raise AssertionError(
                f"{what}: wait_for(..., {seconds:g}) timed out after {took:.4f} s of wall-clock"
                " time: timers fire early (rule: call_later(d) waits at least d seconds)"
            ) from None
        raise AssertionError(f"{what}: nothing within {seconds:g} s") from None


def shrink_socket_buffers(transport: polyloop.BaseTransport, size: int) -> bool:
    """Cap the kernel's buffers of ``transport``'s socket: ``size`` bytes to send.

    Why: Linux grows loopback socket buffers to several MiB, which would absorb a whole
    flow-control scenario before any ``pause_writing`` fires. Apps that prove
    backpressure keep the kernel's share small so that their own buffers are what is
    measured. The receive buffer gets at least four loopback segments: one near the
    segment size (~64 KiB) keeps the TCP window shut until it is empty, and measured
    here that stalled transfers for many seconds on persist-timer probes; a send
    buffer of 32 KiB made them crawl for the same reason.
    Returns False if the transport has no socket to tune (nothing happens).
    """
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, max(size, 4 * LOOPBACK_MSS))
    except (OSError, AttributeError):
        return False
    return True


async def aclose_within(stream: polyloop.Stream, seconds: float = 5.0) -> None:
    """Close ``stream`` (flushing), or abort it if the flush takes over ``seconds``.

    Why: a client that gives up half-way may have unsent bytes queued for a peer that
    has stopped reading; a plain ``aclose()`` would wait for that flush forever.
    """
    try:
        await polyloop.wait_for(stream.aclose(), seconds)
    except TimeoutError:
        stream.transport.abort()


def linger_close(transport: polyloop.Transport, linger: float) -> polyloop.Handle | None:
    """Close after an error reply without losing it: closing with unread request bytes in
    the kernel makes it send a reset, and the client may then lose the reply. So read on
    (the caller discards what comes), half-close, and abort after ``linger`` seconds
    unless the client's EOF comes first (the caller cancels the returned handle then).
    A transport that cannot half-close (TLS) is closed at once."""
    transport.resume_reading()  # reading was maybe paused: drain it all
    if transport.can_write_eof():
        transport.write_eof()
        return polyloop.call_later(linger, transport.abort)
    transport.close()
    return None
