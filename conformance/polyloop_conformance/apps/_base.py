"""What an app is: a server and a client, written once against the polyloop API.

Rule: an app's parsing is sans-io (h11, wsproto, its own RESP parser); polyloop moves the
bytes. ``serve`` starts the server and returns at once; ``exercise`` runs a client
scenario against an address and raises (``AssertionError`` with a clear message) if
anything came back wrong. The harness runs both in one process on one backend, and
in two processes on any two backends (``--cross``).
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["APPS", "App", "AppConfig", "Running", "register"]


@dataclass
class AppConfig:
    """Where to listen or connect, and the TLS material if the app uses TLS."""

    host: str = "127.0.0.1"
    port: int = 0
    server_ssl: ssl.SSLContext | None = None
    client_ssl: ssl.SSLContext | None = None
    server_hostname: str = "localhost"
    options: dict[str, Any] = field(default_factory=dict)


class Running:
    """A started server: its address, and how to stop it."""

    def __init__(self, address: tuple[str, int], close: Callable[[], Awaitable[None]]) -> None:
        self.address = address
        self._close = close

    @property
    def port(self) -> int:
        return self.address[1]

    async def aclose(self) -> None:
        await self._close()


@dataclass(frozen=True)
class App:
    """A conformance app: a server, a client scenario, and how they talk."""

    name: str
    summary: str
    serve: Callable[[AppConfig], Awaitable[Running]]
    exercise: Callable[[AppConfig, tuple[str, int]], Awaitable[None]]
    udp: bool = False
    tls: bool = False
    timeout: float = 30.0


APPS: dict[str, App] = {}


def register(app: App) -> App:
    """Add an app to the catalogue (``polyloop conformance --app NAME``)."""
    if app.name in APPS:
        raise ValueError(f"app {app.name!r} registered twice")
    APPS[app.name] = app
    return app
