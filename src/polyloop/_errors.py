"""Exceptions, and the argument checks that make bad input fail the same on every backend.

Rule: user code sees builtin exceptions (``ConnectionRefusedError``, ``OSError`` with
``errno.EADDRINUSE``, ``ssl.SSLError`` ...) and the few polyloop types below; never a
framework's own. Each adapter translates its framework's errors in one place, with
``map_exceptions``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import ssl as _ssl
import stat
from asyncio import CancelledError
from collections.abc import Callable, Iterator, Mapping
from typing import Any

__all__ = [
    "BrokenResourceError",
    "BusyResourceError",
    "Cancelled",
    "ClosedResourceError",
    "EndOfStream",
    "IncompleteReadError",
    "LimitOverrunError",
    "WouldBlock",
    "aborted",
    "call_logged",
    "map_exceptions",
    "translate",
    "write_after_eof",
]

#: The one cancellation type. It *is* ``asyncio.CancelledError`` (a ``BaseException``):
#: asyncio and Tornado raise it natively, and the Twisted and gevent backends translate
#: their own (``twisted.internet.defer.CancelledError``, ``GreenletExit``) into it, so
#: ``except polyloop.Cancelled`` works everywhere and interoperates with asyncio code.
Cancelled = CancelledError


class BrokenResourceError(RuntimeError):
    """The other side is gone: every receive end of a memory object stream was closed."""


class EndOfStream(Exception):
    """Nothing more will come: every send end of a memory object stream was closed."""


class WouldBlock(Exception):
    """A ``*_nowait`` call could not proceed without waiting."""


class BusyResourceError(RuntimeError):
    """Two tasks used one side of a stream at once (two ``receive`` or two ``send``)."""


class ClosedResourceError(RuntimeError):
    """The stream or listener was closed by this side, with ``aclose()``."""


class IncompleteReadError(EOFError):
    """EOF came before ``receive_exactly``/``receive_until`` had what it needed."""

    def __init__(self, partial: bytes, expected: int | None) -> None:
        self.partial = partial
        self.expected = expected
        want = "the delimiter" if expected is None else f"{expected} bytes"
        super().__init__(f"EOF after {len(partial)} bytes, before {want}")


class LimitOverrunError(ValueError):
    """``receive_until`` found no delimiter within ``max_bytes``."""


Table = Mapping[type[BaseException], Callable[[BaseException], BaseException]]


def translate(exc: BaseException, table: Table) -> BaseException:
    """``exc`` as polyloop code sees it, by ``{NativeError: lambda e: OurError(...)}``.

    The first matching entry (in the table's order) wins; the original is chained as
    ``__cause__``, so nothing is lost when debugging. No match: ``exc`` itself.
    """
    for native, make in table.items():
        if isinstance(exc, native):
            new = make(exc)
            new.__cause__ = exc
            return new
    return exc


@contextlib.contextmanager
def map_exceptions(table: Table) -> Iterator[None]:
    """Translate native exceptions raised in the block (see ``translate``)."""
    try:
        yield
    except BaseException as exc:
        new = translate(exc, table)
        if new is exc:
            raise
        raise new from exc


def call_logged(protocol: Any, name: str) -> None:
    """For transports: call ``protocol.<name>()`` (``pause_writing``, ``resume_writing``),
    logging what it raises instead of letting it out: flow-control callbacks are advice,
    and an error in one never escapes ``write()`` nor ends the connection."""
    try:
        getattr(protocol, name)()
    except Exception:
        logging.getLogger("polyloop").exception("polyloop: %r.%s() raised", protocol, name)


def write_after_eof() -> RuntimeError:
    """What ``write()`` after ``write_eof()`` raises: one text everywhere."""
    return RuntimeError("write() after write_eof()")


def aborted() -> ConnectionAbortedError:
    """What ``connection_lost`` gets after ``abort()``: one errno and one text everywhere."""

    return ConnectionAbortedError(errno.ECONNABORTED, "connection aborted")


# --- argument checks (the core calls these before any backend sees the arguments) ---


def check_callable(name: str, value: object) -> None:
    if not callable(value):
        raise TypeError(f"{name} must be callable, not {type(value).__name__}")


def check_host(host: object, *, allow_none: bool) -> None:
    if host is None and allow_none:
        return
    if not isinstance(host, str):
        raise TypeError(f"host must be a str, not {type(host).__name__}")
    if not host:
        raise ValueError("host must not be empty")


def check_port(port: object, *, allow_zero: bool) -> int:
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port must be an int, not {type(port).__name__}")
    low = 0 if allow_zero else 1
    if not low <= port <= 65535:
        raise ValueError(f"port must be in {low}..65535, got {port}")
    return port


def check_ssl(ssl: object, server_hostname: object = None, *, server_side: bool) -> None:
    if ssl is not None and not isinstance(ssl, _ssl.SSLContext):
        raise TypeError(f"ssl must be an ssl.SSLContext or None, not {type(ssl).__name__}")
    if server_hostname is not None:
        if server_side:
            raise ValueError("server_hostname is only meaningful for a client")
        if ssl is None:
            raise ValueError("server_hostname is only meaningful with ssl")
        if not isinstance(server_hostname, str):
            raise TypeError("server_hostname must be a str")


def check_path(path: object) -> str:

    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, not {type(path).__name__}")
    result = os.fsdecode(os.fspath(path))
    if not result:
        raise ValueError("path must not be empty")
    return result


def clear_stale_unix_socket(path: str) -> None:
    """Before listening on ``path``: remove a stale socket file, refuse a live one.

    Frameworks disagree here: asyncio unlinks any socket file and silently steals the path
    from a live server; gevent and Twisted fail on any existing file, stale or not. A
    connect tells the two cases apart without waiting: on a Unix socket it succeeds or is
    refused at once.
    """

    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            return  # not a socket (or missing): let bind() report it as it will
    except OSError:
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return
    except OSError:
        return
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"a server is listening on {path}")


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if value != value:
        raise ValueError(f"{name} must not be NaN")
    return float(value)


def check_delay(delay: object) -> float:
    """``call_later``'s delay: a number, not NaN; negative means now, ``inf`` never."""
    return max(0.0, _number("delay", delay))


def check_sleep(seconds: object) -> float:
    """``sleep``'s duration: a number >= 0 (``inf``: for ever), not NaN."""
    value = _number("seconds", seconds)
    if value < 0:
        raise ValueError(f"seconds must be >= 0, got {seconds!r}")
    return value


def check_timeout(timeout: object) -> float | None:
    """A timeout: ``None`` (none), or a number >= 0 (``inf``: none), not NaN."""
    if timeout is None:
        return None
    value = _number("timeout", timeout)
    if value < 0:
        raise ValueError(f"timeout must be >= 0, got {timeout!r}")
    return value


def check_backlog(backlog: object) -> int:
    if isinstance(backlog, bool) or not isinstance(backlog, int):
        raise TypeError(f"backlog must be an int, not {type(backlog).__name__}")
    if backlog < 0:
        raise ValueError(f"backlog must be >= 0, got {backlog}")
    return backlog


def check_bytes(data: Any) -> None:
    """Raise the ``TypeError`` the Transport contract promises for non-bytes data."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes-like, not {type(data).__name__}")
