"""Transports: the contract every backend's connection object keeps.

Rule: every sentence in these docstrings is a promise that the conformance suite checks
(``polyloop_conformance.checks``). Change one only together with its check.
"""

from __future__ import annotations

import abc
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["BaseTransport", "DatagramTransport", "Transport"]

#: Default high-water mark of a transport's write buffer, in bytes.
DEFAULT_HIGH_WATER = 64 * 1024


class BaseTransport(abc.ABC):
    """What stream and datagram transports share."""

    __slots__ = ()

    @abc.abstractmethod
    def close(self) -> None:
        """Close the transport.

        Buffered data is flushed first; then the protocol's ``connection_lost(None)`` is
        called, once, never from inside ``close()`` itself. Calling it again is a no-op.
        """

    @abc.abstractmethod
    def is_closing(self) -> bool:
        """True once ``close()`` or ``abort()`` was called or the connection was lost."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Close at once, dropping buffered data.

        A stream peer sees a reset (``ConnectionResetError``), not a clean EOF. The local
        protocol's ``connection_lost`` is called later with a ``ConnectionAbortedError``,
        never from inside ``abort()`` (it is not re-entrant); so is a datagram
        protocol's (UDP has no peer to reset). After a ``close()`` that is still flushing,
        ``abort()`` drops the rest the same way. A no-op once the connection is lost.
        """

    @abc.abstractmethod
    def set_protocol(self, protocol: Any) -> None:
        """Drive ``protocol`` from now on instead of the current one (``start_tls`` puts
        the TLS layer in between this way). Its ``connection_made`` is not called."""

    @abc.abstractmethod
    def get_protocol(self) -> Any:
        """The protocol this transport drives."""

    @abc.abstractmethod
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """Optional information about the connection.

        Keys every backend answers: ``"peername"``, ``"sockname"`` (socket addresses, as
        the ``socket`` module gives them), ``"socket"`` (the socket, or ``None``),
        ``"backend"`` (the backend's name, such as ``"twisted"``). TLS transports add
        ``"ssl_object"`` (an ``ssl.SSLObject`` or ``ssl.SSLSocket``) and ``"peercert"``.
        """


class Transport(BaseTransport):
    """A bidirectional byte stream (TCP, Unix socket, TLS)."""

    __slots__ = ()

    @abc.abstractmethod
    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data`` for sending; never blocks.

        ``str`` (or anything not bytes-like) raises ``TypeError``. After ``close()``,
        ``abort()`` or connection loss, a write is a silent no-op. After ``write_eof()`` a
        write raises ``RuntimeError``. The data is copied or sent before this returns, so
        the caller may reuse a ``bytearray`` at once.
        """

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        """Write each item in turn (as one write where the backend can)."""
        self.write(b"".join(list_of_data))

    @abc.abstractmethod
    def write_eof(self) -> None:
        """Flush, then half-close: the peer reads EOF and this side can still read."""

    @abc.abstractmethod
    def can_write_eof(self) -> bool:
        """Whether ``write_eof`` is supported (False for TLS)."""

    @abc.abstractmethod
    def pause_reading(self) -> None:
        """Stop calling ``data_received`` until ``resume_reading()``.

        The backend stops reading from the socket, so the kernel pushes back on the peer.
        Idempotent.
        """

    @abc.abstractmethod
    def resume_reading(self) -> None:
        """Undo ``pause_reading()``. Idempotent."""

    @abc.abstractmethod
    def is_reading(self) -> bool:
        """False between ``pause_reading()`` and ``resume_reading()``, and once closing."""

    @abc.abstractmethod
    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """Set the flow-control marks.

        ``pause_writing()`` is called when the buffer grows past ``high`` (default 64 KiB),
        ``resume_writing()`` when it drains to ``low`` or below (default ``high // 4``).
        ``ValueError`` unless ``0 <= low <= high``.
        """

    @abc.abstractmethod
    def get_write_buffer_size(self) -> int:
        """Bytes written but not yet handed to the kernel."""


class DatagramTransport(BaseTransport):
    """A datagram endpoint (UDP)."""

    __slots__ = ()

    @abc.abstractmethod
    def sendto(self, data: bytes | bytearray | memoryview, addr: Any = None) -> None:
        """Send one datagram to ``addr`` (or to the connected remote address if None).

        ``str`` raises ``TypeError``; after ``close()`` a send is a silent no-op. A
        datagram of up to 65,507 bytes (IPv4) is sent whole.
        """


def check_buffer_limits(high: int | None, low: int | None) -> tuple[int, int]:
    """Resolve and validate ``set_write_buffer_limits`` arguments (for backends)."""
    if high is None:
        high = DEFAULT_HIGH_WATER if low is None else 4 * low
    if low is None:
        low = high // 4
    if not 0 <= low <= high:
        raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
    return high, low


def datagram_address(remote: Any, addr: Any) -> Any:
    """For backends: where ``sendto(data, addr)`` goes on an endpoint connected to
    ``remote`` (``None`` if not connected): ``None`` means "the connected peer"; any other
    address is a ``ValueError`` on a connected endpoint, and required on another."""
    if remote is not None:
        if addr is not None and tuple(addr[:2]) != tuple(remote[:2]):
            raise ValueError(f"this endpoint is connected to {remote!r}, not {addr!r}")
        return None
    if addr is None:
        raise ValueError("this endpoint is not connected: sendto() needs an address")
    return addr


def drain_datagrams(
    queue: deque[tuple[bytes, Any]],
    send: Callable[[bytes, Any], object],
    error_received: Callable[[OSError], object],
) -> bool:
    """For backends: send queued ``(data, addr)`` datagrams in order until the socket
    would block. A datagram whose send fails otherwise is dropped and reported to
    ``error_received``, as UDP loses it anyway. True once the queue is empty."""
    while queue:
        data, addr = queue[0]
        try:
            send(data, addr)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            error_received(exc)
        queue.popleft()
    return True
