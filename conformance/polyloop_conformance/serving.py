"""``polyloop serve``: the apps as servers, until a signal, then a graceful wind-down.

Rule: the same signals, the same grace and the same exit on every backend and in mixed
mode. The first SIGINT or SIGTERM stops accepting and starts the grace
(``Session.shutdown(grace)``); a second one, of either kind, cuts the grace short: the
connections still open are closed cleanly at once (the peer reads EOF, as at the grace's
end) and the process exits 0. An operator who pressed Ctrl-C twice wants it gone now,
not in ``--grace`` seconds.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import polyloop

from ._registry import app_config
from .apps import APPS, Running

__all__ = ["Signals", "serve_apps"]

#: How often the serving coroutine looks at the signals it has seen, in seconds.
POLL = 0.1


class Signals:
    """SIGINT and SIGTERM, counted, seen the same way by every backend: the handler only
    counts, and a coroutine polls the count. A signal handler runs only when the main
    thread runs Python code, and a hub or reactor blocked in C may not give it the chance
    until a timer fires, so a short poll is the one wake-up path that works the same on
    all four (and on their one thread in mixed mode)."""

    def __init__(self) -> None:
        self.seen = 0
        self._previous = {
            s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)
        }

    def _handle(self, signum: int, frame: Any) -> None:
        self.seen += 1

    async def wait(self, count: int) -> None:
        """Return once ``count`` signals have come, in all."""
        while self.seen < count:
            await polyloop.sleep(POLL)

    def restore(self) -> None:
        """Put the handlers that were there before back."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


async def _cut_short(signals: Signals, grace: polyloop.CancelScope) -> None:
    await signals.wait(2)
    grace.cancel()


async def serve_apps(
    names: list[str],
    host: str,
    port: int,
    tls_dir: str | None,
    announce: Callable[[str, Running], None],
    grace: float = 5.0,
) -> None:
    """Start each app's server, announce its address, serve until SIGINT/SIGTERM; then
    wind down gracefully (``Session.shutdown(grace)``): stop accepting, give the open
    connections ``grace`` seconds to end, close the rest cleanly (the peer reads EOF).
    A second signal during the grace ends it at once (``shutdown(0)``)."""
    signals = Signals()
    running: list[Running] = []
    session = polyloop.current_backend()
    try:
        for name in names:
            app = APPS[name]
            config = app_config(app, tls_dir)
            config.host, config.port = host, (port if len(names) == 1 else 0)
            running.append(await app.serve(config))
            announce(name, running[-1])
        await signals.wait(1)
        with polyloop.CancelScope() as scope:
            watcher = polyloop.spawn(_cut_short(signals, scope))
            try:
                await session.shutdown(grace)
            finally:
                watcher.cancel()
        if scope.cancelled_caught:
            await session.shutdown(0)
    finally:
        signals.restore()
        for server in running:
            await server.aclose()
