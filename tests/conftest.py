"""Shared fixtures: pytester, and a RESP server for the tests that need one."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

pytest_plugins = ["pytester"]


@pytest.fixture(scope="session")
def resp_server() -> Iterator[tuple[str, int]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "polyloop", "serve", "resp", "--backend", "asyncio"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("listening on "), line + (proc.stderr.read() if proc.stderr else "")
    host, _, port = line.split()[-1].rpartition(":")
    yield host, int(port)
    proc.terminate()
    proc.wait(10)
    if proc.stdout:
        proc.stdout.close()
    if proc.stderr:
        proc.stderr.close()
