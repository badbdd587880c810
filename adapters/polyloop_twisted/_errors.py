"""The one place where Twisted's errors become the builtin ones asyncio raises.

Rule: every ``Failure`` and every ``twisted.internet.error`` exception that can reach a
polyloop caller passes through ``translate``; user code never sees a Twisted type.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from collections.abc import Callable, Iterator

from twisted.internet import defer, error
from twisted.python.failure import Failure

from polyloop import Cancelled
from polyloop.lowlevel import aborted, map_exceptions
from polyloop.lowlevel import translate as _translate

__all__ = ["map_errors", "translate"]


def _oserror(number: object, default: int, text: str) -> OSError:
    # Twisted keeps the errno of a failed connect() in ``osError`` (an int), and the
    # socket.error of a failed bind() in ``socketError``; OSError(errno, ...) then
    # picks the builtin subclass itself (ECONNREFUSED -> ConnectionRefusedError,
    # ENOENT -> FileNotFoundError ...).
    if isinstance(number, OSError):
        return number
    code = number if isinstance(number, int) else default
    return OSError(code, os.strerror(code) if code else text)


def _listen_error(exc: BaseException) -> BaseException:
    assert isinstance(exc, error.CannotListenError)
    inner = exc.socketError
    if isinstance(inner, OSError) and inner.errno is not None:
        return OSError(inner.errno, inner.strerror or os.strerror(inner.errno))
    return OSError(errno.EADDRINUSE, str(exc))


def _connect_error(default: int) -> Callable[[BaseException], BaseException]:
    def make(exc: BaseException) -> BaseException:
        assert isinstance(exc, error.ConnectError)
        return _oserror(exc.osError, default, str(exc))

    return make


# Order matters: the first matching class wins, so subclasses come before their bases.
_TABLE: dict[type[BaseException], Callable[[BaseException], BaseException]] = {
    defer.CancelledError: lambda e: Cancelled(),
    error.ConnectingCancelledError: lambda e: Cancelled(),
    error.ConnectionRefusedError: _connect_error(errno.ECONNREFUSED),
    error.TCPTimedOutError: lambda e: TimeoutError(errno.ETIMEDOUT, "connect timed out"),
    error.TimeoutError: lambda e: TimeoutError(errno.ETIMEDOUT, "connect timed out"),
    error.NoRouteError: _connect_error(errno.ENETUNREACH),
    error.UnknownHostError: lambda e: socket.gaierror(socket.EAI_NONAME, str(e)),
    error.DNSLookupError: lambda e: socket.gaierror(socket.EAI_NONAME, str(e)),
    error.ConnectError: _connect_error(0),
    error.CannotListenError: _listen_error,
    error.ConnectionAborted: lambda e: aborted(),
    # Twisted folds every read/write error after connect into one ConnectionLost and
    # drops the errno; a reset is what it nearly always is (asyncio says the same).
    error.ConnectionLost: lambda e: ConnectionResetError(errno.ECONNRESET, "connection lost"),
    error.MessageLengthError: lambda e: OSError(errno.EMSGSIZE, "message too long"),
    error.InvalidAddressError: lambda e: OSError(errno.EINVAL, str(e)),
}


def translate(exc: BaseException | Failure) -> BaseException:
    """The exception a polyloop caller sees for a Twisted exception or ``Failure``."""
    value: BaseException = exc.value if isinstance(exc, Failure) else exc  # type: ignore[assignment]
    return _translate(value, _TABLE)


def lost_reason(reason: Failure) -> BaseException | None:
    """``connection_lost``'s argument for a Twisted ``connectionLost`` reason."""
    if isinstance(reason.value, error.ConnectionDone):
        return None
    return translate(reason)


@contextlib.contextmanager
def map_errors() -> Iterator[None]:
    """Translate Twisted exceptions raised in the block (``map_exceptions`` on the table)."""
    with map_exceptions(_TABLE):
        yield
