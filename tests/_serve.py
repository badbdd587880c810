"""``polyloop serve APP --backend B`` in a subprocess, for the tests that need one.

``Served(app, backend, *args)`` starts it on a free port, waits (bounded) for its
``listening on HOST:PORT`` line and raises AssertionError, with the server's stderr, if
it exits first, says something else or says nothing in time. ``close()`` -- or leaving
``with Served(...)``, or the ``serve`` fixture of conftest.py after the test -- sends
SIGTERM, waits, and SIGKILLs it if it does not go, so no server outlives its test.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from types import TracebackType

STARTUP = 30.0  # seconds for the server to say where it listens
STOP = 15.0  # seconds for it to exit after SIGTERM (and again after SIGKILL)
POLYLOOP = (sys.executable, "-m", "polyloop")


class Served:
    """A ``polyloop serve`` subprocess and the address it announced.

    ``args`` are appended to ``serve APP --backend B --port 0`` (``--grace 1``, ``--tls-dir
    D``, ...). ``command`` replaces ``python -m polyloop`` (e.g. ``python -c BOOT``). The
    process is ``proc`` (to send it signals), its pid ``pid``; stdin is /dev/null and
    stderr goes to a file, read with ``errors()``.
    """

    def __init__(
        self, app: str, backend: str, *args: str, command: Sequence[str] = POLYLOOP
    ) -> None:
        self.app, self.backend = app, backend
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [*command, "serve", app, "--backend", backend, "--port", "0", *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.stderr,
        )  # fmt: skip
        self.pid = self.proc.pid
        try:
            self.host, self.port = self._announced()
        except BaseException:
            self.close()
            raise

    def _announced(self) -> tuple[str, int]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        got = b""
        deadline = time.monotonic() + STARTUP
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in got:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    raise AssertionError(
                        f"{self}: no 'listening on' line in {STARTUP:g} s (stdout so far "
                        f"{got!r}); stderr: {self.errors()}"
                    )
                chunk = os.read(fd, 4096)
                if not chunk:
                    try:
                        status: int | None = self.proc.wait(STOP)
                    except subprocess.TimeoutExpired:
                        status = None
                    raise AssertionError(
                        f"{self}: closed its stdout (exit status {status}) before listening "
                        f"(stdout {got!r}); stderr: {self.errors()}"
                    )
                got += chunk
        first = got.partition(b"\n")[0]
        match = re.fullmatch(rb"listening on (.+):(\d+)", first)
        if match is None:
            raise AssertionError(
                f"{self}: first line {first!r}, not 'listening on HOST:PORT'; "
                f"stderr: {self.errors()}"
            )
        return match[1].decode(), int(match[2])

    def errors(self) -> str:
        """The last 3,000 characters the server wrote to stderr."""
        if self.stderr.closed:
            return "(stderr is closed)"
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")[-3000:]

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Send ``sig`` if it still runs and wait; SIGKILL it if it does not exit within
        STOP seconds. Returns its exit status, or None if it had to be killed."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(STOP)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP)
                return None
        return self.proc.returncode

    def assert_clean_exit(self, sig: int = signal.SIGTERM) -> None:
        """It exits 0 on ``sig`` (within STOP seconds)."""
        status = self.stop(sig)
        name = signal.Signals(sig).name
        assert status == 0, f"{self} exited with {status} on {name}: {self.errors()}"

    def close(self) -> None:
        """Stop it (SIGTERM, then SIGKILL) and close its pipes; safe to call twice."""
        try:
            self.stop()
        finally:
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.stderr.close()

    def __enter__(self) -> Served:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"polyloop serve {self.app} --backend {self.backend}"


class Script:
    """``python -c CODE ARGS``, for tests that signal a program once it says ``ready``.

    ``with Script(code, *args) as proc:`` starts it, checks that its first line is
    ``ready`` (else AssertionError with its stderr) and gives the ``Popen`` (text mode,
    stdin /dev/null); at the end it is killed if it still runs, and its pipes closed.
    """

    def __init__(self, code: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip

    def __enter__(self) -> subprocess.Popen[str]:
        assert self.proc.stdout is not None and self.proc.stderr is not None
        line = self.proc.stdout.readline()
        if line != "ready\n":
            self.close()
            raise AssertionError(
                f"the script's first line was {line!r}, not 'ready'; stderr: "
                f"{self.proc.stderr.read()[-3000:] if not self.proc.stderr.closed else ''}"
            )
        return self.proc

    def close(self) -> None:
        """Kill it if it still runs, reap it; the pipes stay readable until ``__exit__``."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(STOP)

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
