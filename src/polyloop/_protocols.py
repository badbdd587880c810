"""Protocols: PEP 3156's callback interface, verbatim.

Rule: nothing here does I/O or knows a backend. These classes exist so that users have
something to subclass and read; the backends only ever call the methods by name, so any
object with the same methods -- an unmodified ``asyncio.Protocol`` subclass included --
works as a polyloop protocol.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._transports import BaseTransport, DatagramTransport, Transport

__all__ = ["BaseProtocol", "DatagramProtocol", "Protocol"]


class BaseProtocol:
    """Callbacks common to stream and datagram protocols.

    A backend calls ``connection_made`` exactly once, first, and ``connection_lost``
    exactly once, last. ``pause_writing``/``resume_writing`` alternate, starting with
    ``pause_writing``, and only between those two.
    """

    __slots__ = ()

    def connection_made(self, transport: BaseTransport) -> None:
        """The connection is up; ``transport`` is how to write to it."""

    def connection_lost(self, exc: BaseException | None) -> None:
        """The connection is gone: ``None`` after a clean close or EOF, else the reason."""

    def pause_writing(self) -> None:
        """The transport's write buffer rose above its high-water mark (64 KiB)."""

    def resume_writing(self) -> None:
        """The transport's write buffer drained below its low-water mark."""


class Protocol(BaseProtocol):
    """A stream protocol (TCP, Unix sockets, TLS)."""

    __slots__ = ()

    def connection_made(self, transport: Transport) -> None:  # type: ignore[override]
        """The connection is up; ``transport`` is how to write to it."""

    def data_received(self, data: bytes) -> None:
        """Some bytes arrived. Chunk boundaries carry no meaning."""

    def eof_received(self) -> bool | None:
        """The peer sent EOF (half-close).

        Return a true value to keep the connection half-open, so that this side can go on
        writing and then call ``close()``; otherwise the transport closes itself. TLS
        transports cannot be half-open and ignore the return value.
        """
        return None


class DatagramProtocol(BaseProtocol):
    """A datagram protocol (UDP)."""

    __slots__ = ()

    def connection_made(self, transport: DatagramTransport) -> None:  # type: ignore[override]
        """The endpoint is bound; ``transport`` is how to send."""

    def datagram_received(self, data: bytes, addr: Any) -> None:
        """One whole datagram arrived from ``addr``."""

    def error_received(self, exc: OSError) -> None:
        """A send or receive failed (for example ICMP port unreachable)."""
