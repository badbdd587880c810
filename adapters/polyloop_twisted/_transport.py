"""Twisted's TCP and Unix connections and listening ports, held to the polyloop contract.

One object sits on each connection, ``TwistedTransport``:
the Twisted protocol of the connection (``IProtocol`` for the callbacks,
``IHalfCloseableProtocol`` so that a peer's EOF is a half-close instead of the end,
``IPushProducer`` so that Twisted tells it when its write buffer drained), and the
polyloop transport that the user's protocol holds.

The data path stays off the front end: ``dataReceived`` is the user's bound
``data_received`` behind one frame that lets a SystemExit out (``bind_received``, set
in a slot), and ``write`` hands bytes straight to Twisted's buffer.

Memory: an idle connection holds, over what native Twisted holds, this one slotted
object and the user's protocol. The extra info is two slots: the sockname tuple is shared
with the previous connection when equal (all that a listener on one address accepts), the
peername is the tuple Twisted's ``tcp.Server`` already keeps (``client``). Measured at
10,000 idle connections: 2.6 -> 2.0 KiB a connection (1.51x -> 1.15x native Twisted).

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
import socket
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
    SocketTransport,
    aborted,
    accept_connections,
    call_logged,
    check_buffer_limits,
    check_bytes,
    pause_accepting,
    set_nodelay,
    write_after_eof,
)

from ._deferreds import future_of
from ._errors import lost_reason

if TYPE_CHECKING:
    from ._session import TwistedSession

__all__ = ["BridgeFactory", "Listening", "SendAfterReads", "TwistedTransport", "UnixPort"]

log = logging.getLogger("polyloop")

F = TypeVar("F", bound=Callable[..., Any])


def _entered(method: F) -> F:
    """A method that the reactor calls: run it where the session is current; a
    SystemExit or KeyboardInterrupt goes to the session's ``escape`` (as in
    ``bind_received``: the reactor would log it and go on)."""

    def run(self: TwistedTransport, *args: Any) -> Any:
        try:
            return self._session._enter(method, self, *args)
        except (SystemExit, KeyboardInterrupt) as exc:
            self._session.escape(exc)
            return None

    return run  # type: ignore[return-value]


#: The most bytes a ``SendAfterReads`` holds back until the end of a reactor iteration;
#: a write that would pass it sends them all at once, as the core's transport does.
#: Small: what holding saves is a wake-up of the peer per reply, which only counts when
#: replies are small (echo of 16 KiB messages, 10 connections: held, 9.3 us of CPU a
#: message; sent at once, 8.1).
HOLD_LIMIT = 4 * 1024


class SendAfterReads(SocketTransport):
    """The core's socket transport (what the Twisted session serves sockets with), whose
    small writes made while the reactor dispatches what its poll returned (the
    protocols' ``data_received``), after the first one, go out once it has dispatched
    it all, as native Twisted's do.

    Why: the core sends at once from ``write``; on loopback that ``send()`` wakes the
    peer (wrk, redis-benchmark) for each reply, and the kernel's cost of those wake-ups
    is the server's CPU. Native Twisted buffers each write and sends it when epoll next
    reports the socket writable, so the replies to all the requests one ``epoll_wait``
    returned go out together. Measured with wrk (50 connections, ``GET /`` of the HTTP
    app, interleaved rounds, 3 rounds each): 87-103 us of server CPU a request when sent
    at once, 72-92 us held until the reads are done, 75-101 us for native Twisted
    running the same h11 code (one run per pair of figures). No epoll registration is
    made for it (native Twisted's ``startWriting`` / ``stopWriting`` cost two
    ``epoll_ctl`` a reply): the session sends every held write from one ``call_soon``
    per iteration (``TwistedSession.hold``).

    The first write of an iteration goes at once, and so do the later ones of the same
    transport: with one busy connection (ping-pong) there is nothing to batch, and
    holding its writes cost a reactor iteration a message (pingpong, 1 connection x
    1 KiB: 80k -> 55k round trips a second).

    Not on gevent: there a connection's reader greenlet reads again right after its
    write, and under a fast client (pingpong, 50 connections x 1 KiB) the next message
    is often there already; held, the reply is not, the reader parks, and CPU a message
    went from 5.8-6.7 us to 7.2-8.2 (native gevent 7.3), for 85 -> 78 us a wrk request.

    What the contract sees is unchanged: at most ``HOLD_LIMIT`` bytes are held, and
    never past ``close``, ``write_eof`` or an error (they send or drop them first), so
    flow control (``get_write_buffer_size``, ``pause_writing``) counts what the kernel
    did not take, as before.
    """

    __slots__ = ("_eof", "_held", "_held_size")

    def __init__(
        self, session: TwistedSession, sock: socket.socket, factory: Callable[[], Any]
    ) -> None:
        self._held: list[bytes] | None = None
        self._held_size = 0
        self._eof = False
        super().__init__(session, sock, factory)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is not None:
            if type(data) is not bytes:
                check_bytes(data)
                data = bytes(data)  # held: the caller may reuse a bytearray at once
            if self._held_size + len(data) <= HOLD_LIMIT:
                held.append(data)
                self._held_size += len(data)
                return
            self.send_held()
        elif (
            0 < len(data) <= HOLD_LIMIT
            and self._session.batching(self)  # type: ignore[attr-defined]
            and not (self._eof or self.is_closing() or self.get_write_buffer_size())
        ):
            if type(data) is not bytes:
                check_bytes(data)
                data = bytes(data)
            self._held = [data]
            self._held_size = len(data)
            self._session.hold(self)  # type: ignore[attr-defined]
            return
        # The core's rules: sent now (the rest queued for the writer callback), a no-op
        # after close, an error after EOF.
        super().write(data)

    def send_held(self) -> None:
        """Send what is held now (the session calls it once the reads are done)."""
        held = self._held
        if held is not None:
            self._held = None
            super().write(held[0] if len(held) == 1 else b"".join(held))

    def write_eof(self) -> None:
        self.send_held()
        self._eof = True
        super().write_eof()

    def close(self) -> None:
        self.send_held()
        super().close()

    def abort(self) -> None:
        self._held = None
        super().abort()

    def fail(self, exc: BaseException) -> None:
        self._held = None
        super().fail(exc)


def _discard(data: bytes) -> None:
    """``dataReceived`` before ``connectionMade`` and after ``connectionLost``."""


@implementer(
    interfaces.IProtocol,
    interfaces.ILoggingContext,
    interfaces.IHalfCloseableProtocol,
    interfaces.IPushProducer,
)
class TwistedTransport(polyloop.Transport):
    """A polyloop ``Transport`` over a Twisted ``ITCPTransport``/``IUNIXTransport``, and
    the Twisted protocol of that connection, which drives the user's protocol.

    One object, with ``__slots__``, is both sides, as asyncio's transports are: an idle
    connection costs this object and the user's protocol over what native Twisted holds
    (a ``protocol.Protocol`` subclass always has a ``__dict__``, so ``IProtocol`` is
    implemented here directly). The Twisted side: ``IProtocol`` for the callbacks,
    ``IHalfCloseableProtocol`` so that a peer's EOF is a half-close instead of the end,
    ``IPushProducer`` so that Twisted tells it when its write buffer drained.

    It makes the user's protocol in ``connectionMade`` (a server's factory never raises:
    the core made it safe). If the user's ``connection_made`` raises, the connection is
    aborted and the error goes to ``failed`` (a client's connect raises it) or to the log.
    """

    __slots__ = (
        "__weakref__",
        "_aborted",
        "_closing",
        "_eof_in",
        "_eof_out",
        "_factory",
        "_failed",
        "_high",
        "_lost",
        "_peername",
        "_read_paused",
        "_session",
        "_sockname",
        "_t",
        "_user",
        "_write_paused",
        "dataReceived",
    )

    def __init__(
        self,
        session: TwistedSession,
        factory: Callable[[], polyloop.Protocol],
        failed: list[BaseException] | None,
    ) -> None:
        self._session = session
        self._factory = factory
        self._failed = failed
        self._user: Any = None
        self._t: Any = None  # Twisted's transport, from makeConnection on
        self._closing = self._aborted = self._lost = False
        self._eof_in = self._eof_out = self._read_paused = self._write_paused = False
        self._high = DEFAULT_HIGH_WATER
        self._sockname: Any = None
        self._peername: Any = None
        # The hot path: from connectionMade on, the user's data_received (bind_received).
        self.dataReceived: Callable[[bytes], object] = _discard

    # --- polyloop.Transport ---

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
                self._pause_writing()

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
            self._pause_writing()

    def get_write_buffer_size(self) -> int:
        if self._lost:
            return 0
        # What abstract.FileDescriptor buffers: ``dataBuffer`` (being sent, from
        # ``offset``) and the list of later writes, ``_tempDataLen`` bytes long.
        t = self._t
        return len(t.dataBuffer) - t.offset + t._tempDataLen  # type: ignore[no-any-return]

    def set_protocol(self, protocol: Any) -> None:
        self._user = protocol
        self.dataReceived = self._session.bind_received(protocol.data_received)

    def get_protocol(self) -> Any:
        return self._user

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._peername
        if name == "sockname":
            return self._sockname
        if name == "socket":
            return None if self._lost else self._t.getHandle()
        if name == "backend":
            return self._session.name
        return default

    def _pause_writing(self) -> None:
        """The write buffer passed our high-water mark."""
        if not self._write_paused:
            self._write_paused = True
            # Twisted resumes its producer after draining only if *it* paused it.
            self._t.producerPaused = True
            call_logged(self._user, "pause_writing")  # never raises out of write()

    # --- IProtocol, ILoggingContext ---

    def logPrefix(self) -> str:
        return "polyloop"

    def makeConnection(self, transport: Any) -> None:
        self._t = transport
        self.connectionMade()

    @_entered
    def connectionMade(self) -> None:
        t = self._t
        t.bufferSize = READ_SIZE
        sock = t.getHandle()
        set_nodelay(sock)
        # The extra info is read now, as on every backend, and kept in two slots, not a
        # dict; the socket is Twisted's (``getHandle()``), ``backend`` the session's.
        self._sockname = _sockname(sock)
        self._peername = _peername(sock, t)
        session = self._session
        session.resources.track(self)
        user = self._user = self._factory()
        # Twisted now calls the user's method directly.
        self.dataReceived = session.bind_received(user.data_received)
        t.registerProducer(self, True)
        try:
            user.connection_made(self)
        except Exception as exc:
            if self._failed is None:
                log.exception("polyloop: %r.connection_made raised; connection aborted", user)
            else:
                self._failed.append(exc)
            self.abort()

    @_entered
    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if self._lost or self._t is None:
            return
        exc = lost_reason(reason)
        if self._aborted:
            if not isinstance(exc, ConnectionAbortedError):
                exc = aborted()
        elif self._closing and exc is not None and self.get_write_buffer_size() == 0:
            # close() with nothing left to send is a clean close: asyncio then never
            # touches the socket again. Twisted's loseConnection still send()s the empty
            # buffer once, which fails with EPIPE on a Unix socket whose peer is gone.
            exc = None
        self._lost = self._closing = True  # get_extra_info("socket") is None from now on
        self._session.resources.untrack(self)
        user = self._user
        # Break the transport <-> protocol cycle here, so that a closed connection is
        # freed by reference counting, not left to the cycle collector (measured with gc
        # disabled: 1.6 KB held per closed connection otherwise).
        self._user = None
        self.dataReceived = _discard
        user.connection_lost(exc)

    # --- IHalfCloseableProtocol ---

    @_entered
    def readConnectionLost(self) -> None:
        self._eof_in = True
        if not self._user.eof_received():
            self.close()

    def writeConnectionLost(self) -> None:
        pass  # our write_eof() was flushed and the socket shut for writing

    # --- IPushProducer: Twisted's write buffer passed ``bufferSize`` (ignored: our own
    # mark is checked on write), or drained completely. ---

    def pauseProducing(self) -> None:
        pass

    @_entered
    def resumeProducing(self) -> None:
        if self._write_paused:
            self._write_paused = False
            call_logged(self._user, "resume_writing")

    def stopProducing(self) -> None:
        pass  # the connection is going away; connectionLost follows


#: The sockname of the last connection made (one per process, shared by every session: a
#: race only costs a miss). The connections a listener accepts on one address all have
#: the same one; they share this tuple instead of holding equal copies.
_last_sockname: list[Any] = [None]


def _sockname(sock: Any) -> Any:
    try:
        name = sock.getsockname()
    except OSError:
        return None
    last = _last_sockname[0]
    if name == last and type(name) is type(last):
        return last
    _last_sockname[0] = name
    return name


def _peername(sock: Any, t: Any) -> Any:
    try:
        name = sock.getpeername()
    except OSError:
        return None
    # Twisted's ``tcp.Server`` keeps the address ``accept()`` returned (``client``; a Unix
    # server keeps it as ``hostname``): when it is the same, hold that one, not a copy.
    for known in (getattr(t, "client", None), getattr(t, "hostname", None)):
        if known == name and type(known) is type(name):
            return known
    return name


class BridgeFactory(protocol.Factory):
    """Makes the ``TwistedTransport`` of each connection a port accepts, or of one
    adopted socket."""

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

    def buildProtocol(self, addr: Any) -> TwistedTransport:  # type: ignore[override]
        # An IProtocol provider, not a protocol.Protocol subclass (see TwistedTransport).
        return TwistedTransport(self.session, self.factory, self.failed)


class _PausingAccept:
    """``doRead`` of a listening port that pauses accepting when ``accept()`` runs out of
    a resource (the core's rule, ``pause_accepting``), for ``tcp.Port`` and ``unix.Port``.

    Twisted's own (``tcp._accept``) meets EMFILE by releasing a descriptor it keeps in
    reserve, accepting every queued client with it and closing them at once -- clients
    dropped, and logged only to Twisted's log -- and ENFILE, ENOBUFS and ENOMEM by
    returning, with the port still watched: the reactor calls it again at once. Here,
    as on every backend: stop reading, log one line, read again a second later; queued
    clients wait in the backlog.
    """

    socket: Any
    factory: Any
    reactor: Any
    sessionno: int
    transport: Any
    connected: bool
    disconnecting: bool
    _paused: Any = None

    if TYPE_CHECKING:  # tcp.Port's and unix.Port's (never defined here: the MRO)

        def _buildAddr(self, address: Any) -> Any: ...

        def startReading(self) -> None: ...

        def stopReading(self) -> None: ...

    def _listening(self) -> bool:
        return bool(self.connected) and not self.disconnecting

    def doRead(self) -> None:
        if not self._listening():
            return
        for skt, addr in accept_connections(self.socket, self._pause):
            if isinstance(addr, tuple) and len(addr) == 4:  # IPv6: with its scope id
                host = socket.getnameinfo(addr, socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)
                addr = (host[0], *addr[1:])
            proto = self.factory.buildProtocol(self._buildAddr(addr))
            if proto is None:
                skt.close()
            else:
                s, self.sessionno = self.sessionno, self.sessionno + 1
                proto.makeConnection(self.transport(skt, proto, addr, self, s, self.reactor))
            if not self._listening():
                return

    def _pause(self, exc: OSError) -> None:
        self.stopReading()
        self._paused = pause_accepting(self.factory.session, self.socket, exc, self._resume)

    def _resume(self) -> None:
        self._paused = None
        if self.connected and not self.disconnecting:
            self.startReading()

    def _unpause(self) -> None:
        if self._paused is not None:
            self._paused.cancel()
            self._paused = None


class TCPPort(_PausingAccept, tcp.Port):  # type: ignore[misc]
    """A TCP listening port that pauses accepting when out of descriptors."""

    def connectionLost(self, reason: Any) -> None:
        self._unpause()
        tcp.Port.connectionLost(self, reason)  # type: ignore[no-untyped-call]


class UnixPort(_PausingAccept, unix.Port):  # type: ignore[misc]
    """A Unix listening port that leaves its socket file alone (the core's ``Server``
    removes it, at once, on ``close()``).

    Twisted's own unlinks the file one iteration after ``stopListening``, without
    looking: a new server on the same path by then loses its file, and if the file is
    already gone the ``FileNotFoundError`` skips closing the socket (an fd leak).
    """

    def connectionLost(self, reason: Any) -> None:
        self._unpause()
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
