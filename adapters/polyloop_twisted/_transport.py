"""Twisted's TCP and Unix connections and listening ports, held to the polyloop contract.

One Twisted protocol (``Bridge``) sits on each connection. It is the Twisted side:
``IProtocol`` for the callbacks, ``IHalfCloseableProtocol`` so that a peer's EOF is a
half-close instead of the end, and ``IPushProducer`` so that Twisted tells it when its
write buffer drained. ``TwistedTransport`` is what the user's protocol holds.

The data path stays off the front end: ``Bridge.dataReceived`` *is* the user's bound
``data_received`` (set as an instance attribute), and ``write`` hands bytes straight to
Twisted's buffer.

What Twisted does differently, and is fixed here:
- ``write`` keeps a reference to the object, it does not copy: a ``bytearray`` the
  caller reuses would be sent changed. Anything but ``bytes`` is copied first.
- ``write`` after ``loseConnection`` still queues (the socket is open until flushed);
  the contract makes it a no-op. After ``write_eof`` it raises, as asyncio does.
- With a paused streaming producer registered, the final flush of ``loseConnection``
  or ``loseWriteConnection`` resumes the producer *instead of* closing
  (``FileDescriptor.doWrite``), so the connection would stay open for ever: we
  unregister the producer before closing.
- After the write side is shut, ``loseConnection`` calls ``connectionLost`` from inside
  itself; the contract forbids that re-entrancy, so we close on the next iteration.
- ``bufferSize`` is two things at once: the write-buffer size past which Twisted
  pauses its producer, *and* the size of every ``recv()``. Setting it to a small high
  mark would make reads tiny (and ``recv(0)`` reads as EOF), so it stays a read size
  (``READ_SIZE``, Twisted's own 64 KiB) and the high mark is checked here, on each write.
- Measured: at a 256 KiB ``bufferSize`` the echo benchmark ran at 0.55-0.86x native
  Twisted (``recv(256 KiB)`` of a 64-byte message costs ~10x ``recv(64 KiB)``).
- Twisted resumes a paused producer only when its buffer is *empty*: so
  ``resume_writing`` comes when the buffer is at 0, which is at or below any low mark.
- ``abortConnection`` already sets ``SO_LINGER`` 0 (the peer sees a reset) and reports
  ``ConnectionAborted`` on the next iteration: we only translate it.
- Twisted's TCP ports and connections never set ``TCP_NODELAY``; the core's own sockets
  (and asyncio's) do, so every transport here does too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from twisted.internet import interfaces, protocol, tcp, unix
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from zope.interface import implementer  # type: ignore[import-untyped]

import polyloop
from polyloop.lowlevel import (
    DEFAULT_HIGH_WATER,
    READ_SIZE,
    aborted,
    call_logged,
    check_buffer_limits,
    check_bytes,
    set_nodelay,
    write_after_eof,
)

from ._deferreds import future_of
from ._errors import lost_reason

if TYPE_CHECKING:
    from ._session import TwistedSession

__all__ = ["Bridge", "BridgeFactory", "Listening", "TwistedTransport", "UnixPort"]

log = logging.getLogger("polyloop")

F = TypeVar("F", bound=Callable[..., Any])


class TwistedTransport(polyloop.Transport):
    """A polyloop ``Transport`` over a Twisted ``ITCPTransport``/``IUNIXTransport``."""

    __slots__ = (
        "__weakref__",
        "_aborted",
        "_bridge",
        "_closing",
        "_eof_in",
        "_eof_out",
        "_extra",
        "_high",
        "_lost",
        "_read_paused",
        "_session",
        "_t",
    )

    def __init__(self, t: Any, bridge: Bridge, session: TwistedSession) -> None:
        self._t = t
        self._bridge = bridge
        self._session = session
        self._closing = self._aborted = self._lost = False
        self._eof_in = self._eof_out = self._read_paused = False
        self._high = DEFAULT_HIGH_WATER
        t.bufferSize = READ_SIZE
        sock = t.getHandle()
        set_nodelay(sock)
        self._extra: dict[str, Any] = {"socket": sock, "backend": session.name}
        for key, get in (("sockname", sock.getsockname), ("peername", sock.getpeername)):
            try:
                self._extra[key] = get()
            except OSError:
                self._extra[key] = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if type(data) is not bytes:
            check_bytes(data)
            data = bytes(data)  # Twisted keeps a reference; the caller may reuse theirs
        if self._closing:
            return
        if self._eof_out:
            raise write_after_eof()
        if data:
            self._t.write(data)
            # Our high-water mark, not Twisted's bufferSize (see the module docstring).
            if self.get_write_buffer_size() > self._high:
                self._bridge.pause()

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def write_eof(self) -> None:
        if self._closing or self._eof_out:
            return
        self._eof_out = True
        self._t.unregisterProducer()  # see the module docstring: else the flush may stall
        self._t.loseWriteConnection()

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        t = self._t
        t.unregisterProducer()
        if getattr(t, "_writeDisconnected", False):
            # Twisted would call connectionLost from inside loseConnection().
            self._session.call_soon(t.loseConnection)
        else:
            t.loseConnection()

    def is_closing(self) -> bool:
        return self._closing

    def abort(self) -> None:
        if self._aborted or self._lost:
            return
        self._aborted = self._closing = True
        self._t.abortConnection()

    def pause_reading(self) -> None:
        if not self._read_paused:
            self._read_paused = True
            if not self._lost:
                self._t.pauseProducing()

    def resume_reading(self) -> None:
        if self._read_paused:
            self._read_paused = False
            # After EOF, reading again would report the EOF a second time.
            if not (self._closing or self._eof_in):
                self._t.resumeProducing()

    def is_reading(self) -> bool:
        return not (self._read_paused or self._closing)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high, _ = check_buffer_limits(high, low)
        if self.get_write_buffer_size() > self._high:
            self._bridge.pause()

    def get_write_buffer_size(self) -> int:
        if self._lost:
            return 0
        # What abstract.FileDescriptor buffers: ``dataBuffer`` (being sent, from
        # ``offset``) and the list of later writes, ``_tempDataLen`` bytes long.
        t = self._t
        return len(t.dataBuffer) - t.offset + t._tempDataLen  # type: ignore[no-any-return]

    def set_protocol(self, protocol: Any) -> None:
        bridge = self._bridge
        bridge.user = protocol
        bridge.dataReceived = bridge.session._bind(protocol.data_received)  # type: ignore[method-assign]

    def get_protocol(self) -> Any:
        return self._bridge.user

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)


def _entered(method: F) -> F:
    """A ``Bridge`` method that the reactor calls: run it where the session is current."""

    def run(self: Bridge, *args: Any) -> Any:
        return self.session._enter(method, self, *args)

    return run  # type: ignore[return-value]


@implementer(interfaces.IHalfCloseableProtocol, interfaces.IPushProducer)
class Bridge(protocol.Protocol):
    """The Twisted protocol of one connection; it drives the user's protocol.

    It makes the user's protocol in ``connectionMade`` (a server's factory never raises:
    the core made it safe). If the user's ``connection_made`` raises, the connection is
    aborted and the error goes to ``failed`` (a client's connect raises it) or to the log.
    """

    def __init__(
        self,
        session: TwistedSession,
        factory: Callable[[], polyloop.Protocol],
        failed: list[BaseException] | None,
    ) -> None:
        self.session = session
        self.factory = factory
        self.failed = failed
        self.user: Any = None
        self.tr: TwistedTransport | None = None
        self.write_paused = False

    @_entered
    def connectionMade(self) -> None:
        tr = self.tr = TwistedTransport(self.transport, self, self.session)
        self.session._track(tr)
        user = self.user = self.factory()
        # The hot path: Twisted now calls the user's method directly.
        self.dataReceived = self.session._bind(user.data_received)  # type: ignore[method-assign]
        self.transport.registerProducer(self, True)  # type: ignore[union-attr]
        try:
            user.connection_made(tr)
        except Exception as exc:
            if self.failed is None:
                log.exception("polyloop: %r.connection_made raised; connection aborted", user)
            else:
                self.failed.append(exc)
            tr.abort()

    def dataReceived(self, data: bytes) -> None:  # replaced in connectionMade
        pass

    # IHalfCloseableProtocol
    @_entered
    def readConnectionLost(self) -> None:
        tr = self.tr
        assert tr is not None
        tr._eof_in = True
        if not self.user.eof_received():
            tr.close()

    def writeConnectionLost(self) -> None:
        pass  # our write_eof() was flushed and the socket shut for writing

    @_entered
    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        tr = self.tr
        if tr is None:
            return
        exc = lost_reason(reason)
        if tr._aborted:
            if not isinstance(exc, ConnectionAbortedError):
                exc = aborted()
        elif tr._closing and exc is not None and tr.get_write_buffer_size() == 0:
            # close() with nothing left to send is a clean close: asyncio then never
            # touches the socket again. Twisted's loseConnection still send()s the empty
            # buffer once, which fails with EPIPE on a Unix socket whose peer is gone.
            exc = None
        tr._lost = tr._closing = True
        tr._extra["socket"] = None
        self.session._untrack(tr)
        user = self.user
        # Break the Bridge <-> transport <-> protocol cycle here, so that a closed
        # connection is freed by reference counting, not left to the cycle collector
        # (measured with gc disabled: 1.6 KB held per closed connection otherwise).
        self.tr = self.user = None
        self.__dict__.pop("dataReceived", None)
        user.connection_lost(exc)

    def pause(self) -> None:
        """The write buffer passed our high-water mark."""
        if not self.write_paused:
            self.write_paused = True
            # Twisted resumes its producer after draining only if *it* paused it.
            self.transport.producerPaused = True  # type: ignore[union-attr]
            call_logged(self.user, "pause_writing")  # never raises out of write()

    # IPushProducer: Twisted's write buffer passed ``bufferSize`` (ignored: our own
    # mark is checked on write), or drained completely.
    def pauseProducing(self) -> None:
        pass

    @_entered
    def resumeProducing(self) -> None:
        if self.write_paused:
            self.write_paused = False
            call_logged(self.user, "resume_writing")

    def stopProducing(self) -> None:
        pass  # the connection is going away; connectionLost follows


class BridgeFactory(protocol.Factory):
    """Makes the ``Bridge`` of each connection a port accepts, or of one adopted socket."""

    noisy = False  # no "Starting factory" log lines

    def __init__(
        self,
        session: TwistedSession,
        factory: Callable[[], polyloop.Protocol],
        failed: list[BaseException] | None = None,
    ) -> None:
        self.session = session
        self.factory = factory
        self.failed = failed

    def buildProtocol(self, addr: Any) -> Bridge:
        return Bridge(self.session, self.factory, self.failed)


class UnixPort(unix.Port):
    """A Unix listening port that leaves its socket file alone (the core's ``Server``
    removes it, at once, on ``close()``).

    Twisted's own unlinks the file one iteration after ``stopListening``, without
    looking: a new server on the same path by then loses its file, and if the file is
    already gone the ``FileNotFoundError`` skips closing the socket (an fd leak).
    """

    def connectionLost(self, reason: Any) -> None:
        tcp.Port.connectionLost(self, reason)  # type: ignore[no-untyped-call]


class Listening:
    """An ``Acceptor``: one Twisted listening port on a socket the core bound."""

    def __init__(self, session: TwistedSession, port: Any) -> None:
        self._session = session
        self._port = port
        self._closed: polyloop.Future[None] | None = None

    def close(self) -> None:
        port, self._port = self._port, None
        if port is None:
            return
        # The socket is closed on the next reactor iteration, when this Deferred fires.
        d: Deferred[None] | None = port.stopListening()
        if d is not None:
            self._closed = future_of(self._session, d, cancel=False)

    async def wait_closed(self) -> None:
        closed, self._closed = self._closed, None
        if closed is not None:
            await closed
