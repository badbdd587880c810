"""A Twisted protocol on a polyloop transport: the transport Twisted code sees.

Rule: this file maps the callbacks of one connection, polyloop's onto Twisted's and back,
and nothing else. The clock, the ports and the connectors are in ``_twisted_reactor.py``;
the other direction (a polyloop protocol under Twisted's own reactor) is
``PolyloopFactory`` in ``_twisted_api.py``.

What Twisted promises a protocol, and how it is kept on a polyloop transport (each
sentence is checked in ``tests/test_compat_twisted.py``):

- ``makeConnection`` once, then ``dataReceived``, then ``connectionLost(reason)`` once,
  with ``reason`` a ``Failure`` of ``ConnectionDone`` after a clean close (either side),
  ``ConnectionAborted`` after ``abortConnection()``, ``ConnectionLost`` after a reset or
  any other error, or the exception a ``dataReceived`` raised (Twisted logs it and drops
  the connection).
- ``loseConnection()`` stops delivering data at once (no ``dataReceived`` after it:
  Twisted's ``LineReceiver`` relies on it), flushes, then closes -- but not while a pull
  producer or a paused push producer is registered: Twisted waits for
  ``unregisterProducer``. Meanwhile the connection is still read (and the data dropped),
  so a peer's close ends it with ``connectionLost``.
- A peer's EOF is ``readConnectionLost()`` for an ``IHalfCloseableProtocol`` (the
  connection stays half-open), else the end of the connection (``ConnectionDone``).
  Twisted drops unflushed writes there; polyloop flushes them first.
- A push producer is paused when the polyloop transport's write buffer passes its
  high-water mark (64 KiB, Twisted's ``bufferSize`` too) and resumed when it drains to the
  low one; a pull producer's ``resumeProducing`` is called whenever the buffer is empty
  (the write-buffer limits are set to 0 while it is registered, so that polyloop says so).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterable
from typing import Any

# Twisted at module level, on purpose: this module is loaded only when Twisted code asks
# polyloop_twisted.compat for a name (the package resolves them lazily; ``import
# polyloop_twisted`` does not load this package, tests/test_compat_twisted.py checks).
# None of these installs a reactor.
from twisted.internet import address, error, interfaces
from twisted.python import log as twisted_log
from twisted.python.failure import Failure
from zope.interface import implementer  # type: ignore[import-untyped]

import polyloop

__all__ = ["ProtocolAdapter", "TwistedTransport", "failure", "lost_reason", "twisted_address"]

log = logging.getLogger("polyloop")


def twisted_address(addr: Any, kind: str = "TCP") -> Any:
    """A socket address as Twisted's ``IAddress``: ``IPv4Address``, ``IPv6Address`` or
    ``UNIXAddress``."""
    if isinstance(addr, tuple):
        if len(addr) >= 4 or ":" in str(addr[0]):
            # As Twisted's reactors: a scope id is also written into the host
            # ("fe80::1%lo", getnameinfo's form), flow info and scope id kept.
            host = addr[0]
            if len(addr) >= 4 and addr[3]:
                flags = socket.NI_NUMERICHOST | socket.NI_NUMERICSERV
                host = socket.getnameinfo(addr, flags)[0]
            return address.IPv6Address(kind, host, addr[1], *addr[2:4])  # type: ignore[arg-type]
        return address.IPv4Address(kind, addr[0], addr[1])  # type: ignore[arg-type]
    if isinstance(addr, bytes):
        addr = os.fsdecode(addr)
    return address.UNIXAddress(addr or None)


def failure(exc: BaseException | None = None) -> Failure:
    """A ``Failure`` of ``exc`` (default: the exception being handled)."""
    return Failure(exc)  # type: ignore[no-untyped-call]


def lost_reason(exc: BaseException | None, aborted: bool = False) -> Failure:
    """The ``Failure`` Twisted hands ``connectionLost`` for polyloop's ``exc``."""
    if aborted or isinstance(exc, ConnectionAbortedError):
        reason: Exception = error.ConnectionAborted()
    elif exc is None:
        reason = error.ConnectionDone()
    else:
        reason = error.ConnectionLost()
        reason.__cause__ = exc
    return failure(reason)


@implementer(
    interfaces.ITransport,
    interfaces.ITCPTransport,
    interfaces.ITLSTransport,
    interfaces.IConsumer,
    interfaces.IPushProducer,
    interfaces.ISystemHandle,
)
class TwistedTransport:
    """What a Twisted protocol's ``self.transport`` is, on any polyloop backend.

    It provides ``ITransport``, ``ITCPTransport``, ``IConsumer``, ``IPushProducer`` and
    ``ISystemHandle`` (``zope.interface.verify.verifyObject`` passes for each), and
    ``ISSLTransport`` on a TLS connection, over the polyloop ``Transport`` it wraps
    (``polyloop_transport``). The attributes Twisted code reads are there too:
    ``connected``, ``disconnecting``, ``disconnected``, ``producer``,
    ``streamingProducer``, ``reactor`` and ``negotiatedProtocol``.
    """

    def __init__(self, transport: polyloop.Transport, adapter: ProtocolAdapter) -> None:
        self._t = transport
        self._adapter = adapter
        #: The reactor-like object of this connection's session.
        self.reactor = adapter.reactor
        self.connected = 1
        #: The number of this connection on its listening port (Twisted's
        #: ``Server.sessionno``; 0 for a client connection).
        self.sessionno = adapter.sessionno
        self.disconnecting = False
        self.disconnected = False
        self.producer: Any = None
        self.streamingProducer = False
        self._write_closed = False
        self._aborting = False
        self._write_paused = False
        self._closing = False
        self._writes = 0
        self._tls_waiting: list[bytes] | None = None  # writes made during startTLS
        self._out: list[bytes] | None = None  # writes of this iteration (see write)
        self._dup: Any = None  # the socket attribute's socket
        self._making: bool | None = True  # reading wished for, during connection_made
        #: True once Twisted code took the connection out of the reactor
        #: (``removeReader``), to hand its socket on.
        self.handed_on = False
        self._kind = "UNIX" if self._family() == socket.AF_UNIX else "TCP"
        self._buffer_size = 65536  # Twisted's FileDescriptor.bufferSize
        self._iteration_bytes = 0  # written since the last iteration (see write)
        self._producer_held = False  # a push producer paused for _iteration_bytes
        #: The peer's socket address (Twisted's ``addr``/``client``).
        self.addr: Any = transport.get_extra_info("peername")
        self.logstr = "-"
        self.repstr = ""
        ssl_object = transport.get_extra_info("ssl_object")
        self.negotiatedProtocol: bytes | None = None
        if ssl_object is not None:
            from zope.interface import alsoProvides

            alsoProvides(self, interfaces.ISSLTransport)
            alpn = ssl_object.selected_alpn_protocol()
            self.negotiatedProtocol = alpn.encode() if alpn else None

    def _named(self, proto: Any, prefix: str) -> None:
        """Twisted's ``logstr`` and ``repr`` for this connection, once its protocol is
        known: a port's ``<Proto #sessionno on port>``, a client's ``<class to addr at
        id>``."""
        role = self._adapter.role
        sockname = self._t.get_extra_info("sockname")
        if role == "client":
            self.logstr = f"{prefix},client"
            return
        where = sockname if self._kind == "UNIX" else sockname[1]
        if role == "adopted" and self._kind == "TCP":
            self.sessionno = self.addr[1]  # as Twisted's Server._fromConnectedSocket
        name = type(proto).__name__
        self.repstr = f"<{name} #{self.sessionno} on {where}>"
        host = where if self._kind == "UNIX" else self.getPeer().host
        self.logstr = f"{prefix if role == 'server' else name},{self.sessionno},{host}"

    def __repr__(self) -> str:
        if self.repstr:
            return self.repstr
        return f"<{self.__class__} to {self.addr} at {id(self):x}>"

    @property
    def bufferSize(self) -> int:
        """The write buffer's high-water mark (Twisted's ``bufferSize``): past it a
        push producer is paused."""
        return self._buffer_size

    @bufferSize.setter
    def bufferSize(self, value: int) -> None:
        self._buffer_size = int(value)
        if self.producer is None or self.streamingProducer:
            self._t.set_write_buffer_limits(high=self._buffer_size)

    @property
    def polyloop_transport(self) -> polyloop.Transport:
        """The polyloop ``Transport`` underneath."""
        return self._t

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """The polyloop transport's ``get_extra_info``."""
        return self._t.get_extra_info(name, default)

    def _family(self) -> int:
        sock = self._t.get_extra_info("socket")
        return int(getattr(sock, "family", socket.AF_INET))

    # --- ITransport ---

    # Twisted's transports buffer the writes of one iteration and send them when the
    # reactor's writer runs: one send() per response. Each write handed straight to the
    # polyloop transport was a send() each (2 per request for twisted.web's static
    # resource, 3 for a deferred one: profiled under wrk). So the writes of an iteration
    # are gathered here and handed down together in a callback of the next one
    # (_flush); a close, a half-close and startTLS flush first, an abort drops them.

    def write(self, data: bytes) -> None:
        """Send ``data`` (bytes; ``str`` raises ``TypeError``), never blocking. Dropped
        once the connection is lost or its write side was closed, as Twisted does."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"Data must be bytes, not {type(data).__name__}")
        if self.disconnected or self._write_closed or self._closing:
            return
        if data:
            self._writes += 1
            self._gather([data if type(data) is bytes else bytes(data)])
            if self.streamingProducer:
                self._account(len(data))

    def writeSequence(self, data: Iterable[bytes]) -> None:
        """Write each item of ``data`` in turn."""
        items = []
        item: Any
        for item in data:  # Any: callers pass str too, which must raise
            if type(item) is not bytes:
                if isinstance(item, str):
                    raise TypeError("Data must be bytes")  # Twisted's words, its tests check
                item = bytes(item)
            if item:
                items.append(item)
        if self.disconnected or self._write_closed or self._closing:
            return
        if items:
            self._writes += 1
            self._gather(items)
            if self.streamingProducer:
                self._account(sum(map(len, items)))

    def _gather(self, items: list[bytes]) -> None:
        if self._tls_waiting is not None:
            self._tls_waiting.extend(items)
        elif self._out is not None:
            self._out.extend(items)
        else:
            self._out = items
            self.reactor.session.call_soon(self._flush)

    def _flush(self) -> None:
        out, self._out = self._out, None
        if not out or self.disconnected or self._aborting:
            return
        if self._tls_waiting is not None:
            self._tls_waiting.extend(out)
        elif len(out) == 1:
            self._t.write(out[0])
        else:
            self._t.writelines(out)

    def _account(self, size: int) -> None:
        """Twisted buffers every write until the next iteration, and pauses a push
        producer once that buffer passes ``bufferSize``; a polyloop transport sends at
        once, so its own buffer stays small. Count what was written in this iteration
        too, so that a producer is paused where Twisted's would be (and resumed on the
        next iteration, once the polyloop buffer is under the mark)."""
        if not self._iteration_bytes:
            self.reactor.callLater(0, self._next_iteration)
        self._iteration_bytes += size
        if (
            not self._producer_held
            and self._iteration_bytes + self._t.get_write_buffer_size() > self._buffer_size
        ):
            self._producer_held = True
            if not self._write_paused:
                self.producer.pauseProducing()

    def _next_iteration(self) -> None:
        self._iteration_bytes = 0
        if self._producer_held:
            self._producer_held = False
            producer = self.producer
            if producer is not None and self.streamingProducer and not self._write_paused:
                producer.resumeProducing()

    def loseConnection(self) -> None:
        """Stop reading, flush, then close (``connectionLost`` with ``ConnectionDone``).
        With a pull producer or a paused push producer registered, the close waits for
        ``unregisterProducer()``, as Twisted's does."""
        if self.disconnecting or self.disconnected:
            return
        self.disconnecting = True
        if self.producer is not None and (not self.streamingProducer or self._write_paused):
            # The close waits for the producer; reading goes on (the data is dropped,
            # see data_received) so that a peer that closes first is still seen, and
            # connectionLost comes.
            return
        self._t.pause_reading()
        self._close()

    def _close(self) -> None:
        if not self._closing:
            self._flush()
            self._closing = True
            if self._tls_waiting is None:
                self._t.close()

    # --- ITLSTransport ---

    def startTLS(self, contextFactory: Any, normal: bool = True) -> None:
        """Switch to TLS now: the handshake starts at once, and what is written from
        now on is sent encrypted once it is done. ``normal``: the client if this side
        connected, else the server (``False`` swaps). ``contextFactory`` is a stdlib
        ``ssl.SSLContext`` (or a factory whose ``getContext()`` returns one); pyOpenSSL
        ones raise ``TypeError``. A failed handshake ends the connection
        (``connectionLost``)."""
        from ._twisted_tcp import as_ssl_context

        context = as_ssl_context(contextFactory)
        if self._tls_waiting is not None or self._t.get_extra_info("ssl_object") is not None:
            raise RuntimeError("startTLS was called already on this connection")
        server_side = self._adapter.server_side == bool(normal)
        hostname = None
        if not server_side and context.check_hostname:
            hostname = str(getattr(self.getPeer(), "host", "")) or None
        self._flush()  # what was written before goes out in the clear
        self._tls_waiting = []
        session = self.reactor.session
        session.spawn(self._upgrade(session, context, server_side, hostname))

    async def _upgrade(
        self, session: Any, context: Any, server_side: bool, hostname: str | None
    ) -> None:
        try:
            self._t = await session.start_tls(
                self._t, self._adapter, context, server_side=server_side,
                server_hostname=hostname,
            )  # fmt: skip
        except Exception:
            self._tls_waiting = None
            return  # the connection was aborted: connectionLost tells the protocol
        from zope.interface import alsoProvides

        alsoProvides(self, interfaces.ISSLTransport)
        waiting, self._tls_waiting = self._tls_waiting or [], None
        if waiting and not self.disconnected:
            self._t.writelines(waiting)
        if self._closing:
            self._t.close()

    def getPeer(self) -> Any:
        """The remote address: ``IPv4Address``/``IPv6Address`` (``"TCP"``) or
        ``UNIXAddress``."""
        return twisted_address(self._t.get_extra_info("peername"), self._kind)

    def getHost(self) -> Any:
        """The local address, as ``getPeer``."""
        return twisted_address(self._t.get_extra_info("sockname"), self._kind)

    # --- ITCPTransport ---

    def loseWriteConnection(self) -> None:
        """Half-close: flush, then send EOF; reading goes on. Later writes are dropped.
        On TLS (which cannot half-close in polyloop) only the later writes are dropped."""
        if self._write_closed or self.disconnected or self._closing:
            return
        self._flush()
        self._write_closed = True
        if self._t.can_write_eof():
            self._t.write_eof()
            half = self._adapter._half
            if half is not None:
                self.reactor.callLater(0, self._write_lost, half)

    def _write_lost(self, half: Any) -> None:
        if not self.disconnected:
            half.writeConnectionLost()

    def abortConnection(self) -> None:
        """Close at once, dropping buffered data; the peer sees a reset, and
        ``connectionLost`` gets ``ConnectionAborted``, later."""
        if self.disconnected or self._aborting:
            return
        self._aborting = self.disconnecting = True
        self._out = None
        self._t.abort()

    def _socket(self) -> socket.socket | None:
        return self._t.get_extra_info("socket")  # type: ignore[no-any-return]

    def _option(self, level: int, name: int) -> bool:
        sock = self._socket()
        return bool(sock.getsockopt(level, name)) if sock is not None else False

    def _set_option(self, level: int, name: int, enabled: bool) -> None:
        sock = self._socket()
        if sock is not None:
            sock.setsockopt(level, name, int(bool(enabled)))

    def getTcpNoDelay(self) -> bool:
        """Whether ``TCP_NODELAY`` is set (polyloop sets it on every TCP connection)."""
        if self._kind != "TCP":
            return False
        return self._option(socket.IPPROTO_TCP, socket.TCP_NODELAY)

    def setTcpNoDelay(self, enabled: bool) -> None:
        """Set or clear ``TCP_NODELAY``."""
        if self._kind == "TCP":
            self._set_option(socket.IPPROTO_TCP, socket.TCP_NODELAY, enabled)

    def getTcpKeepAlive(self) -> bool:
        """Whether ``SO_KEEPALIVE`` is set."""
        return self._option(socket.SOL_SOCKET, socket.SO_KEEPALIVE)

    def setTcpKeepAlive(self, enabled: bool) -> None:
        """Set or clear ``SO_KEEPALIVE``."""
        self._set_option(socket.SOL_SOCKET, socket.SO_KEEPALIVE, enabled)

    @property
    def socket(self) -> Any:
        """The connection's socket, as Twisted's transports have it: a duplicate of the
        one the polyloop transport owns (options set on it hold for both), so Twisted
        code that closes it closes its copy, not the socket under the session's
        transport; after ``reactor.removeReader(transport)`` (the connection handed on,
        as ``adoptStreamConnection`` callers do) closing it also closes the polyloop
        transport, without a reset. ``None`` once the connection is gone."""
        if self._dup is None and not self.disconnected:
            real = self._socket()
            if real is not None and real.fileno() != -1:
                self._dup = _SocketCopy(real, self)
        return self._dup

    def fileno(self) -> int:
        """The socket's file descriptor (-1 once it is gone), as Twisted's transports."""
        sock = self._socket()
        return sock.fileno() if sock is not None else -1

    def logPrefix(self) -> str:
        """What Twisted puts in the ``system`` of log events from this connection's
        callbacks: the protocol's ``logPrefix()``, as Twisted's transports."""
        return self.logstr

    # --- ISystemHandle ---

    def getHandle(self) -> Any:
        """The socket (``None`` once the connection is gone, or where the backend has
        none to give)."""
        return self._socket()

    # --- ISSLTransport (declared on TLS connections only) ---

    def getPeerCertificate(self) -> Any:
        """The peer's certificate as the stdlib gives it (``SSLObject.getpeercert()``, a
        dict), not a pyOpenSSL ``X509``."""
        return self._t.get_extra_info("peercert")

    # --- IConsumer ---

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        """Register ``producer``: a push producer (``streaming``) is paused and resumed
        with the write buffer; a pull producer's ``resumeProducing`` is called whenever
        the buffer is empty. ``RuntimeError`` if one is registered already."""
        if self.producer is not None:
            raise RuntimeError(
                f"Cannot register producer {producer}, because producer {self.producer}"
                " was never unregistered."
            )
        if self.disconnected:
            producer.stopProducing()
            return
        self.producer = producer
        self.streamingProducer = bool(streaming)
        if streaming:
            if self._write_paused:
                producer.pauseProducing()
        else:
            # high = low = 0: pause_writing as soon as anything is buffered,
            # resume_writing once it is all gone: Twisted's "the buffer is empty".
            self._t.set_write_buffer_limits(0, 0)
            wrote_before = self._writes
            self._pull()
            if wrote_before and not self._write_paused:
                # Twisted asks again once what was written before is flushed (its
                # buffer holds it until the next iteration; ours may have sent it).
                self.reactor.callLater(0, self._pull)

    def stopConsuming(self) -> None:
        """``unregisterProducer()`` then ``loseConnection()``, as Twisted's transports."""
        self.unregisterProducer()
        self.loseConnection()

    def unregisterProducer(self) -> None:
        """Stop consuming from the producer (the connection stays open, and a pending
        ``loseConnection()`` goes ahead)."""
        producer, self.producer = self.producer, None
        self._producer_held = False
        if producer is not None and not self.streamingProducer and not self.disconnected:
            self._t.set_write_buffer_limits()
        self.streamingProducer = False
        if self.disconnecting and not self.disconnected and not self._aborting:
            self._close()

    def _pull(self) -> None:
        """Ask the pull producer for more while the buffer is empty; call again if it
        wrote (Twisted asks again only after a write, so an idle producer rests)."""
        producer = self.producer
        if producer is None or self.streamingProducer or self.disconnected:
            return
        if self._write_paused:
            return  # resume_writing calls again
        before = self._writes
        producer.resumeProducing()
        if self._writes != before:
            self.reactor.callLater(0, self._pull)

    # --- IPushProducer: this connection produces the bytes it reads ---

    def pauseProducing(self) -> None:
        """Stop reading (``pause_reading``): the kernel pushes back on the peer."""
        self._reading(False)

    def resumeProducing(self) -> None:
        """Read again (``resume_reading``), unless ``loseConnection()`` was called."""
        if not self.disconnecting:
            self._reading(True)

    def stopReading(self) -> None:
        """Stop reading (Twisted's ``FileDescriptor.stopReading``)."""
        self._reading(False)

    def startReading(self) -> None:
        """Read again (Twisted's ``FileDescriptor.startReading``)."""
        self._reading(True)

    def _reading(self, on: bool) -> None:
        if self.disconnected:
            return
        if self._making is not None:
            # Inside connection_made the polyloop transport may not read yet: the
            # Tornado adapter's arms its read after connection_made returns, and a
            # resume_reading before that arms a second one ("Already reading"). Keep
            # the last wish and apply it once connection_made returned (see made()).
            self._making = on
        elif on:
            self._t.resume_reading()
        else:
            self._t.pause_reading()

    def _made(self) -> None:
        """connection_made returned: apply a pause asked for during it."""
        wish, self._making = self._making, None
        if wish is False and not self.disconnected:
            self._t.pause_reading()

    def stopProducing(self) -> None:
        """``loseConnection()``, as Twisted's transports do."""
        self.loseConnection()

    # --- from the adapter ---

    def _paused(self) -> None:
        self._write_paused = True
        producer = self.producer
        if producer is not None and self.streamingProducer and not self._producer_held:
            producer.pauseProducing()

    def _resumed(self) -> None:
        self._write_paused = False
        producer = self.producer
        if producer is None:
            return
        if self.streamingProducer:
            if not self._producer_held:
                producer.resumeProducing()
            if self.disconnecting and not self._aborting and self.producer is producer:
                self._close()  # Twisted closes once the buffer drained, producer or not
        else:
            self._pull()

    def _lost(self) -> None:
        if self._dup is not None:
            self._dup.close()
        self.connected = 0
        self.disconnected = True
        self.disconnecting = True
        producer, self.producer = self.producer, None
        if producer is not None:
            producer.stopProducing()


class _SocketCopy(socket.socket):
    """``TwistedTransport.socket``: a duplicate of the connection's socket."""

    def __init__(self, real: socket.socket, transport: TwistedTransport) -> None:
        super().__init__(real.family, real.type, real.proto, fileno=os.dup(real.fileno()))
        self._transport = transport

    def close(self) -> None:
        super().close()
        transport = self._transport
        if transport.handed_on and not transport.disconnected:
            transport.polyloop_transport.close()


def _prefix(proto: Any) -> str:
    try:
        if interfaces.ILoggingContext.providedBy(proto):
            return str(proto.logPrefix())
    except Exception:
        return "(buggy logPrefix method)"
    return "-"


class ProtocolAdapter(polyloop.Protocol):
    """A polyloop protocol that runs one Twisted protocol.

    ``build(addr)`` makes the Twisted protocol once the connection is up, with the
    peer's address (a factory's ``buildProtocol``); ``None`` closes the connection, as
    Twisted's ports do. ``reactor`` is the reactor-like object its transport names and
    that ``TimeoutMixin`` users schedule on. ``on_lost(protocol, reason)`` is called
    after ``connectionLost`` (for ``clientConnectionLost``).
    """

    def __init__(
        self,
        build: Callable[[Any], Any],
        reactor: Any,
        on_lost: Callable[[Any, Failure], object] | None = None,
        *,
        sessionno: int = 0,
        role: str = "client",
    ) -> None:
        self._build = build
        #: ``"server"`` (a port accepted it), ``"adopted"`` (``adoptStreamConnection``)
        #: or ``"client"``: Twisted names and numbers them differently.
        self.role = role
        #: True for a connection a port accepted (``startTLS``'s ``normal`` side).
        self.server_side = role != "client"
        #: The transport's ``sessionno``.
        self.sessionno = sessionno
        self.reactor = reactor
        self._on_lost = on_lost
        #: The Twisted protocol (``None`` until the connection is up, or if refused).
        self.protocol: Any = None
        #: The transport the Twisted protocol holds.
        self.transport: TwistedTransport | None = None
        self._half: Any = None
        self._error: Failure | None = None
        #: The ``system`` of Twisted log events from the protocol's callbacks.
        self.log_prefix = "-"
        self._context: dict[str, str] = {"system": "-"}

    def connection_made(self, transport: polyloop.Transport) -> None:  # type: ignore[override]
        tt = self.transport = TwistedTransport(transport, self)
        proto = self._build(tt.getPeer())
        if proto is None:
            tt.disconnecting = True
            transport.close()
            return
        from ._twisted_reactor import point_clock

        point_clock(proto, self.reactor)
        self.protocol = proto
        self.log_prefix = _prefix(proto)
        tt._named(proto, self.log_prefix)
        self._context = {"system": tt.logstr}
        self.reactor._transports.add(tt)
        self._half = interfaces.IHalfCloseableProtocol(proto, None)
        try:
            proto.makeConnection(tt)
        finally:
            tt._made()

    def data_received(self, data: bytes) -> None:
        tt = self.transport
        if self.protocol is None or tt is None or tt.disconnecting:
            return  # Twisted reads nothing after loseConnection()
        try:
            twisted_log.callWithContext(self._context, self.protocol.dataReceived, data)  # type: ignore[no-untyped-call]
        except Exception:
            log.exception("polyloop_twisted.compat: %r.dataReceived raised", self.protocol)
            self._error = failure()
            twisted_log.err(self._error, "Unhandled error in dataReceived")  # type: ignore[no-untyped-call]
            tt.disconnecting = True
            tt._t.abort()

    def eof_received(self) -> bool | None:
        if self.protocol is None or (self.transport is not None and self.transport.disconnecting):
            return None  # closing already (loseConnection waits for a producer): close
        if self._half is not None:
            try:
                self._half.readConnectionLost()
            except Exception:
                log.exception("polyloop_twisted.compat: readConnectionLost raised")
                self._error = failure()
                assert self.transport is not None
                self.transport._t.abort()
            return True
        return None

    def pause_writing(self) -> None:
        if self.transport is not None:
            self.transport._paused()

    def resume_writing(self) -> None:
        if self.transport is not None:
            self.transport._resumed()

    def connection_lost(self, exc: BaseException | None) -> None:
        tt, proto = self.transport, self.protocol
        if tt is None:
            return
        aborting = tt._aborting
        tt._lost()
        self.reactor._transports.discard(tt)
        if proto is None:
            return
        reason = self._error or lost_reason(exc, aborting)
        try:
            proto.connectionLost(reason)
        finally:
            if self._on_lost is not None:
                self._on_lost(proto, reason)
