"""asyncio's transports, held to the polyloop contract.

Rule: the data path stays asyncio's. The ``Bridge`` is the protocol asyncio first sees;
once ``connection_made`` has run, ``set_protocol`` hands the user's protocol to asyncio,
which then calls ``data_received`` directly, and the wrappers here only check what asyncio
does not. What asyncio does differently, and is fixed here:
- ``abort()`` closes the socket plainly, so the peer usually reads a clean EOF; we set
  ``SO_LINGER`` to 0 first so that the kernel sends RST.
- ``abort()`` reports ``connection_lost(None)``; the contract says ``ConnectionAbortedError``.
- ``write()`` after ``close()`` still queues data while the buffer is non-empty; the
  contract makes it a no-op.
- uvloop's ``write(None)`` is a silent no-op; the contract says ``TypeError``. A write
  after connection loss raises ``RuntimeError`` there; the contract says no-op.
- uvloop ignores ``pause_reading()`` called inside ``connection_made``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import polyloop
from polyloop.lowlevel import (
    aborted,
    check_buffer_limits,
    check_bytes,
    datagram_address,
    set_reset_on_close,
    write_after_eof,
)

if TYPE_CHECKING:
    from ._session import AsyncioSession

log = logging.getLogger("polyloop")


class _Aborted(asyncio.Protocol):
    """Stands in for the user's protocol after abort(), to report the right error."""

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol

    def connection_lost(self, exc: BaseException | None) -> None:
        self.protocol.connection_lost(exc or aborted())


def _still_open(t: Any) -> bool:
    """Whether ``connection_lost`` is still to come (open, or closing with data queued).

    asyncio's own ``abort()`` is not safe after the end: a transport whose ``close()``
    flushed its buffer has dropped its loop, and ``abort()`` then fails on it; its TLS
    transport has dropped its protocol.
    """
    try:
        return not t.is_closing() or t.get_write_buffer_size() > 0
    except AttributeError:
        return False


def abort_native(t: Any) -> None:
    """Abort an asyncio transport the polyloop way: RST, ``ConnectionAbortedError``.

    A no-op once ``connection_lost`` has run or is scheduled.
    """
    if not _still_open(t):
        return
    set_reset_on_close(t.get_extra_info("socket"))
    protocol = t.get_protocol()
    if not isinstance(protocol, _Aborted):
        t.set_protocol(_Aborted(protocol))
    if hasattr(t, "abort"):
        t.abort()
    else:  # asyncio's read-pipe transport has only close() (it has nothing to drop)
        t.close()


NT = TypeVar("NT", asyncio.Transport, asyncio.DatagramTransport)


class _Wrapper(Generic[NT]):
    """What the stream and datagram wrappers share: closing, and the extra info."""

    __slots__ = ("_closing", "_session", "_t")
    _t: NT
    _closing: bool
    _session: AsyncioSession

    def close(self) -> None:
        self._closing = True
        self._t.close()

    def is_closing(self) -> bool:
        return self._closing or self._t.is_closing()

    def set_protocol(self, protocol: Any) -> None:
        self._t.set_protocol(protocol)

    def get_protocol(self) -> Any:
        return self._t.get_protocol()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "backend":
            return self._session.name
        return self._t.get_extra_info(name, default)


class AsyncioTransport(_Wrapper[asyncio.Transport], polyloop.Transport):
    __slots__ = ("__weakref__", "_aborted", "_paused")

    def __init__(self, transport: asyncio.Transport, session: AsyncioSession) -> None:
        self._t = transport
        self._session = session
        self._closing = False
        self._aborted = False
        self._paused = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        # As few bytecodes as will keep the contract: on uvloop this frame is most of
        # the Python a message costs (callgrind). bytes need no call.
        t = self._t
        if type(data) is not bytes:
            data = self._other(data)
        # uvloop raises RuntimeError on a write after connection_lost; the contract
        # makes it a no-op, like a write after close().
        if self._closing or t.is_closing():
            return
        try:
            t.write(data)
        except RuntimeError:
            if t.can_write_eof() and getattr(t, "_eof", True):
                raise write_after_eof() from None  # one text on every backend
            raise

    def _other(self, data: Any) -> bytes | bytearray | memoryview:
        """What to hand the loop for a ``data`` that is not ``bytes``."""
        # uvloop silently accepts write(None); the contract says TypeError for any
        # non-bytes-like value, so check here rather than trust the loop.
        check_bytes(data)
        if self._session.copy_writes:
            # uvloop's write() keeps a reference to a bytearray or memoryview it has to
            # buffer (asyncio's copies it into its buffer): the caller may reuse theirs.
            return bytes(data)
        return data  # type: ignore[no-any-return]

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))  # one buffer of our own, as write() keeps

    def write_eof(self) -> None:
        self._t.write_eof()

    def can_write_eof(self) -> bool:
        return self._t.can_write_eof()

    def abort(self) -> None:
        if self._aborted:
            return
        self._aborted = self._closing = True
        abort_native(self._t)

    def pause_reading(self) -> None:
        self._paused = True
        if self._t.is_reading():
            self._t.pause_reading()

    def resume_reading(self) -> None:
        self._paused = False
        if not self._t.is_closing() and not self._t.is_reading():
            self._t.resume_reading()

    def _made(self) -> None:
        """The user's ``connection_made`` has returned."""
        if self._paused:
            self._session.loop.call_soon(self._apply_pause)

    def _apply_pause(self) -> None:
        # uvloop starts reading only after connection_made returns, ignoring a
        # pause_reading() made inside it (is_reading() is False there): re-apply it.
        if self._paused and self._t.is_reading():
            self._t.pause_reading()

    def is_reading(self) -> bool:
        # Our own state: inside connection_made uvloop says False although it will read.
        return not self._paused and not self.is_closing()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        check_buffer_limits(high, low)
        self._t.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._t.get_write_buffer_size()


class SelectorSocketTransport(AsyncioTransport):
    """The wrapper of the standard selector loop's own socket transport
    (``selector_events._SelectorSocketTransport``, and no subclass of it).

    The same ``write``, one Python call a message fewer: that transport's
    ``is_closing()`` is a Python method returning its ``_closing`` (CPython 3.11 to
    3.13), which close(), an abort, a fatal error and the close after EOF all set, so
    the flag is read here directly. Its ``write()`` copies what it has to buffer
    (``bytearray.extend``), so nothing is copied here either. Its reader is pointed at
    the read method itself (``_read_directly``).
    """

    __slots__ = ()

    def _made(self) -> None:
        super()._made()
        # asyncio registers the reader in a callback queued behind connection_made's.
        self._session.loop.call_soon(_read_directly, self._t)

    def resume_reading(self) -> None:
        super().resume_reading()
        _read_directly(self._t)  # resume_reading registered a new reader

    def set_protocol(self, protocol: Any) -> None:
        super().set_protocol(protocol)
        _read_directly(self._t)  # the read method depends on the protocol's kind

    def write(self, data: bytes | bytearray | memoryview) -> None:
        # The leanest frame that keeps the contract: our close() and abort() set the
        # transport's _closing too, and its write() rejects what is not bytes-like with
        # the test check_bytes makes (isinstance of bytes, bytearray, memoryview), before
        # doing anything: only the text is replaced.
        t: Any = self._t
        if t._closing:
            check_bytes(data)
            return
        try:
            t.write(data)
        except TypeError:
            check_bytes(data)
            raise
        except RuntimeError:
            if getattr(t, "_eof", True):
                raise write_after_eof() from None
            raise


class UVStreamTransport(AsyncioTransport):
    """The wrapper of uvloop's TCP and Unix transports: the same ``write``, with the
    transport's ``_closing`` read instead of a call to ``is_closing()``, which only
    returns it (uvloop 0.23, ``handles/basetransport.pyx``: a ``readonly bint``). Our
    close() and abort() set it too, so ``self._closing`` needs no look."""

    __slots__ = ()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        t: Any = self._t
        if type(data) is not bytes:
            data = self._other(data)
        if t._closing:
            return
        try:
            t.write(data)
        except RuntimeError:
            if getattr(t, "_eof", True):
                raise write_after_eof() from None
            raise


def _read_directly(t: Any) -> None:
    """Make the loop's reader of ``t`` (a standard selector socket transport) call the
    read method for its protocol (``_read_ready__data_received``, or
    ``_read_ready__get_buffer`` for a ``BufferedProtocol``) itself, one Python call a
    read fewer than native asyncio code makes.

    asyncio registers ``_read_ready``, which only calls ``self._read_ready_cb()``, so
    that ``set_protocol`` can switch the read method of a transport that is reading
    (CPython 3.11 to 3.13). The reader's ``Handle`` is kept, with its context; only its
    callback changes. Anything that could switch the method again goes through our
    wrapper, which calls this again: ``set_protocol`` (start_tls does), and
    ``resume_reading`` (asyncio's registers ``_read_ready`` anew). A no-op when ``t``
    is not reading or its reader is not one of its own methods.
    """
    loop = t._loop
    if loop is None:
        return  # connection_lost has run
    try:
        reader = loop._selector.get_key(t._sock_fd).data[0]
    except (KeyError, RuntimeError, ValueError):  # not registered; selector closed
        return
    read = getattr(t, "_read_ready_cb", None)
    if (
        read is not None
        and reader is not None
        and getattr(reader._callback, "__self__", None) is t
    ):
        reader._callback = read


class AsyncioDatagramTransport(_Wrapper[asyncio.DatagramTransport], polyloop.DatagramTransport):
    __slots__ = ("__weakref__", "_remote")

    def __init__(
        self, transport: asyncio.DatagramTransport, session: AsyncioSession, remote: Any
    ) -> None:
        self._t = transport
        self._session = session
        self._remote = remote
        self._closing = False

    def sendto(self, data: bytes | bytearray | memoryview, addr: Any = None) -> None:
        check_bytes(data)
        if not self._closing:
            self._t.sendto(data, datagram_address(self._remote, addr))

    def abort(self) -> None:
        if self._closing:
            return
        self._closing = True
        abort_native(self._t)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._remote
        return super().get_extra_info(name, default)


_STREAM = object()


class Bridge(asyncio.BaseProtocol):
    """The protocol asyncio first sees: it wraps the transport, then steps aside.

    It makes the user's protocol in ``connection_made`` (a server's factory never raises:
    the core made it safe). If the user's ``connection_made`` raises, the connection is
    aborted and the error goes to ``failed`` (a client's connect raises it) or to the log.
    """

    __slots__ = ("factory", "failed", "remote", "session", "transport")

    def __init__(
        self,
        factory: Callable[[], Any],
        session: AsyncioSession,
        failed: list[BaseException] | None,
        remote: Any = _STREAM,
    ) -> None:
        self.factory = factory
        self.session = session
        self.failed = failed
        self.remote = remote
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        protocol = self.factory()
        if self.remote is _STREAM:
            self.transport = self.session._wrap_stream(transport)
        else:
            self.transport = AsyncioDatagramTransport(transport, self.session, self.remote)
        self.session._keep_native(transport)
        transport.set_protocol(protocol)
        try:
            protocol.connection_made(self.transport)
        except Exception as exc:
            if self.failed is None:
                log.exception("polyloop: %r.connection_made raised; connection aborted", protocol)
            else:
                self.failed.append(exc)
            self.transport.abort()
            return
        if isinstance(self.transport, AsyncioTransport):
            self.transport._made()

    def connection_lost(self, exc: BaseException | None) -> None:
        pass  # only reached if connection_made never ran
