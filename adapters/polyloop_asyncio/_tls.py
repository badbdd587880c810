"""asyncio's and uvloop's own TLS, held to polyloop's rule for a cut record.

Rule: this file puts asyncio's (or uvloop's) ``SSLProtocol`` on a socket transport, the
way ``loop.create_server(ssl=...)`` and ``loop.create_connection(ssl=...)`` do, with one
thin layer between the two: the ``RecordGuard``.

Why: both ``SSLProtocol``s read records inside OpenSSL, and OpenSSL 3 reports an EOF in
the middle of a record exactly as one between records (``UNEXPECTED_EOF_WHILE_READING``),
which they then take for a close without close_notify: the application got
``eof_received()`` and ``connection_lost(None)`` for a connection whose data was cut
short. docs/tls.md's rule is ``connection_lost(ssl.SSLEOFError)`` and no EOF, as on the
core's TLS layer. The guard follows the record boundaries of what the socket delivers
(the core's ``RecordCounter``) and, when the peer's EOF comes inside a record once the
handshake is done, aborts the socket (RST) and reports the ``SSLEOFError``.

Facts it relies on (CPython 3.11-3.13 ``asyncio.sslproto``, uvloop 0.21-0.23
``sslproto.pyx``): both ``SSLProtocol``s are buffered protocols
(``get_buffer``/``buffer_updated``) whose ``__init__`` takes ``(loop, app_protocol,
sslcontext, waiter, server_side, server_hostname, ...)``; ``waiter`` is resolved when the
handshake ends (its exception if it failed); ``connection_lost(exc)`` passes ``exc`` on
to the application's ``connection_lost`` once the handshake is done. uvloop's socket
transports take any object with ``get_buffer`` (not an ``asyncio.Protocol``) as a
buffered protocol -- its own ``SSLProtocol`` gets a C fast path that the guard gives up
(see the benchmark note in docs/tls.md).
"""

from __future__ import annotations

import asyncio
import sys
from asyncio import sslproto
from typing import Any

from polyloop.lowlevel import RecordCounter, set_reset_on_close

__all__ = ["RecordGuard", "ssl_protocol_class"]


def ssl_protocol_class(loop: asyncio.AbstractEventLoop) -> Any:
    """The ``SSLProtocol`` class that ``loop``'s own ``ssl=`` would use, or ``None`` for a
    loop of which we know neither (its own TLS is then used as it is)."""
    if isinstance(loop, asyncio.BaseEventLoop):
        return sslproto.SSLProtocol
    uvloop = sys.modules.get("uvloop")
    if uvloop is not None and isinstance(loop, uvloop.Loop):
        return uvloop.loop.SSLProtocol
    return None


def _retrieve(waiter: asyncio.Future[None]) -> None:
    # A server's handshake is awaited by nobody: its failure is not "never retrieved".
    if not waiter.cancelled():
        waiter.exception()


class RecordGuard(asyncio.BufferedProtocol):
    """The socket transport's protocol: passes everything on to ``tls`` (an
    ``SSLProtocol``), counting the records of what arrives; an EOF inside a record, after
    the handshake, becomes an abort and ``connection_lost(ssl.SSLEOFError)``."""

    __slots__ = ("_buffer", "_cut", "_records", "_tls", "_transport", "waiter")

    def __init__(self, cls: Any, loop: asyncio.AbstractEventLoop, app: Any, **kwargs: Any):
        #: Done when the handshake is (with its exception if it failed).
        self.waiter: asyncio.Future[None] = loop.create_future()
        self._tls = cls(loop, app, waiter=self.waiter, **kwargs)
        self._records = RecordCounter()
        self._buffer: Any = None
        self._transport: Any = None
        self._cut: BaseException | None = None

    def connection_made(self, transport: Any) -> None:
        self._transport = transport
        self._tls.connection_made(transport)

    def get_buffer(self, sizehint: int) -> Any:
        self._buffer = buffer = self._tls.get_buffer(sizehint)
        return buffer

    def buffer_updated(self, nbytes: int) -> None:
        self._records.feed(self._buffer[:nbytes])
        self._tls.buffer_updated(nbytes)

    def eof_received(self) -> bool | None:
        waiter = self.waiter
        handshaken = waiter.done() and not waiter.cancelled() and waiter.exception() is None
        if handshaken and self._records.mid_record():
            # docs/tls.md: cut in the middle of a record, never a clean end. The
            # SSLProtocol never hears of the EOF (it would close "cleanly").
            self._cut = RecordCounter.truncated()
            set_reset_on_close(self._transport.get_extra_info("socket"))
            self._transport.abort()
            return True  # the transport is closing already
        return self._tls.eof_received()  # type: ignore[no-any-return]

    def connection_lost(self, exc: BaseException | None) -> None:
        self._tls.connection_lost(self._cut or exc)

    def pause_writing(self) -> None:
        self._tls.pause_writing()

    def resume_writing(self) -> None:
        self._tls.resume_writing()


def server_guard(
    loop: asyncio.AbstractEventLoop, cls: Any, app: Any, ssl: Any, timeout: float | None
) -> RecordGuard:
    """A server connection's guard, with its ``SSLProtocol`` and the app's protocol."""
    guard = RecordGuard(
        cls, loop, app, sslcontext=ssl, server_side=True, ssl_handshake_timeout=timeout
    )
    guard.waiter.add_done_callback(_retrieve)
    return guard
