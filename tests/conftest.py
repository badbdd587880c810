"""Shared fixtures: pytester, ``polyloop serve`` subprocesses, and a RESP server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest
from _serve import Served

pytest_plugins = ["pytester"]


@pytest.fixture
def serve() -> Iterator[Callable[..., Served]]:
    """``serve(app, backend, *args) -> Served``; every server is stopped after the test."""
    with ExitStack() as started:

        def start(app: str, backend: str, *args: str) -> Served:
            return started.enter_context(Served(app, backend, *args))

        yield start


@pytest.fixture(scope="session")
def resp_server() -> Iterator[tuple[str, int]]:
    with Served("resp", "asyncio") as served:
        yield served.host, served.port
