"""Mutants of UDP, Unix sockets, TLS and errors: one bug each in the core's datagram
transport, in the worked example's session, or in the asyncio backend (native TLS, through
its ``session_class``/``transport_class`` hooks).
"""

from __future__ import annotations

import errno
import socket
import ssl as _ssl
from collections.abc import Callable
from typing import Any

import polyloop
from polyloop.lowlevel import SocketDatagramTransport, oserror
from polyloop_asyncio import AsyncioSession
from polyloop_asyncio._transport import AsyncioTransport

from ..example_backend import SelectorsSession
from . import mutant

# --- UDP ---


@mutant(
    "udp",
    "a datagram of up to 65,507 bytes is received whole",
    clauses=["datagram.sendto"],
    checks=["udp.large_datagrams"],
    expect=["is sent and received whole"],
)
class UdpTruncates(SocketDatagramTransport):
    """Reads with an 8 KiB buffer, as gevent's DatagramServer does."""

    def _on_readable(self) -> None:
        for _ in range(64):
            if self._closing:
                return
            try:
                data, addr = self._sock.recvfrom(8192)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._protocol.error_received(exc)
                return
            self._protocol.datagram_received(data, addr)


@mutant(
    "udp",
    "sendto after close() is a silent no-op",
    clauses=["datagram.close"],
    checks=["udp.sendto_after_close"],
    expect=["sendto after close() sent something"],
)
class UdpSendsAfterClose(SocketDatagramTransport):
    def sendto(self, data: Any, addr: Any = None) -> None:
        if self._closing:
            try:
                self._sock.sendto(data, addr)  # the socket is still open until it is lost
            except OSError:
                pass
            return
        super().sendto(data, addr)


@mutant(
    "udp",
    "connection_lost is never called from inside close()",
    clauses=["datagram.close"],
    checks=["udp.close"],
    expect=["from inside close()"],
)
class UdpLostInline(SocketDatagramTransport):
    def _lose(self, exc: BaseException | None) -> None:
        if self._lost:
            return
        self._lost = True
        self.finish_lost(exc)


@mutant(
    "udp",
    "abort() of a UDP endpoint gives connection_lost(ConnectionAbortedError)",
    clauses=["transport.abort.local_error"],
    checks=["udp.abort"],
    expect=["not ConnectionAbortedError"],
)
class UdpAbortIsClose(SocketDatagramTransport):
    def abort(self) -> None:
        self._queue.clear()
        self.close()


@mutant(
    "udp",
    "a failed send or receive (ICMP unreachable) reaches error_received",
    clauses=["datagram.error_received"],
    checks=["udp.error_received"],
    expect=["error_received never came"],
)
class UdpHidesErrors(SocketDatagramTransport):
    def __init__(self, session: Any, sock: Any, protocol: Any, remote: Any) -> None:
        super().__init__(session, sock, _Deaf(protocol), remote)  # type: ignore[arg-type]


class _Deaf:
    """Forwards everything to the protocol but errors."""

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol

    def __getattr__(self, name: str) -> Any:
        return getattr(self._protocol, name)

    def connection_made(self, transport: Any) -> None:
        self._protocol.connection_made(transport)

    def error_received(self, exc: OSError) -> None:
        pass


@mutant(
    "udp",
    "sendto(str) raises TypeError",
    clauses=["datagram.sendto.bytes_only"],
    checks=["udp.sendto_str"],
    expect=["did not raise TypeError"],
)
class UdpEncodesStr(SocketDatagramTransport):
    def sendto(self, data: Any, addr: Any = None) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            data = str(data).encode()
        super().sendto(data, addr)


@mutant(
    "udp",
    "sendto on a connected endpoint to another address raises ValueError",
    clauses=["datagram.connected"],
    checks=["udp.sendto_address_rules"],
    expect=["instead of ValueError"],
)
class UdpIgnoresAddress(SocketDatagramTransport):
    def sendto(self, data: Any, addr: Any = None) -> None:
        if self._remote is not None:
            addr = None  # "it is connected anyway"
        super().sendto(data, addr)


# --- Unix sockets ---


class UnixKeepsSocketFileSession(SelectorsSession, core_override=True):
    async def listen_unix(self, *args: Any, **kwargs: Any) -> polyloop.Server:
        server = await super().listen_unix(*args, **kwargs)
        server._path = None  # Server.close() then leaves the file behind
        return server


@mutant(
    "unix",
    "Server.close() removes the socket file",
    clauses=["listen.unix_file_removed"],
    checks=["unix.socket_file_removed"],
    expect=["still there after close()"],
)
class UnixKeepsSocketFile(UnixKeepsSocketFileSession):
    pass


@mutant(
    "unix",
    "connect_unix to a missing path raises FileNotFoundError",
    clauses=["connect.missing_path"],
    checks=["unix.missing_path"],
    expect=["did not raise FileNotFoundError"],
)
class UnixMissingIsRefused(SelectorsSession):
    async def sock_connect(self, sock: socket.socket, addr: Any) -> None:
        try:
            await super().sock_connect(sock, addr)
        except FileNotFoundError:
            raise oserror(errno.ECONNREFUSED) from None  # "nothing there to connect to"


# --- errors ---


@mutant(
    "errors",
    "a refused connect raises ConnectionRefusedError",
    clauses=["connect.refused"],
    checks=["errors.connect_refused"],
    expect=["expected ConnectionRefusedError"],
)
class RefusedIsPlainOSError(SelectorsSession):
    async def sock_connect(self, sock: socket.socket, addr: Any) -> None:
        try:
            await super().sock_connect(sock, addr)
        except ConnectionRefusedError as exc:
            error = _ConnectFailed(f"connect failed: {exc.strerror}")
            error.errno = exc.errno  # a plain OSError with the right errno
            raise error from None


class _ConnectFailed(OSError):
    """The framework's own error type, not translated to the builtin one."""


@mutant(
    "errors",
    "a client's connection_made that raises makes connect_tcp raise it",
    clauses=["connect.connection_made_error"],
    checks=["errors.client_connection_made_raises"],
    expect=["but the call returned"],
)
class ConnectSwallowsMadeError(SelectorsSession):
    def adopt_stream(self, sock: socket.socket, factory: Callable[[], Any]) -> Any:
        try:
            return super().adopt_stream(sock, factory)
        except Exception:
            return _Closed()  # "the connection is gone, and that is all"


class _Closed:
    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


@mutant(
    "errors",
    "after a server protocol's connection_made raises, the server goes on",
    clauses=["listen.factory_error_dropped"],
    checks=["errors.server_connection_made_raises"],
    expect=["stopped accepting"],
)
class AcceptorStopsOnError(SelectorsSession):
    async def serve_socket(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        acceptor = await super().serve_socket(*args, **kwargs)
        adopt = self.adopt_stream

        def fragile(conn: Any, protocol_factory: Any) -> Any:
            try:
                return adopt(conn, protocol_factory)
            except Exception:
                acceptor.close()  # one bad connection takes the listener down
                raise

        self.adopt_stream = fragile  # type: ignore[method-assign,assignment]
        return acceptor


# --- TLS, on the asyncio backend's native TLS ---


def _is_tls(transport: AsyncioTransport) -> bool:
    return transport._t.get_extra_info("sslcontext") is not None


@mutant(
    "tls",
    "can_write_eof() is False for TLS",
    clauses=["transport.can_write_eof"],
    checks=["tls.cannot_write_eof"],
    expect=["of TLS, not False"],
)
class TlsClaimsHalfClose(AsyncioTransport):
    __slots__ = ()

    def can_write_eof(self) -> bool:
        return True


@mutant(
    "tls",
    "TLS transports give the ssl_object and peercert extra info",
    clauses=["tls.extra_info"],
    checks=["tls.extra_info"],
    expect=["ssl_object is None"],
)
class TlsHidesSslObject(AsyncioTransport):
    __slots__ = ()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name in ("ssl_object", "peercert"):
            return default
        return super().get_extra_info(name, default)


@mutant(
    "tls",
    "a write after close() on TLS is a silent no-op",
    clauses=["transport.write.after_close_noop"],
    checks=["tls.write_after_close"],
    expect=["silent no-op"],
)
class TlsWriteAfterCloseRaises(AsyncioTransport):
    __slots__ = ()

    def write(self, data: Any) -> None:
        if self._closing and _is_tls(self):
            raise RuntimeError("this TLS transport is closing")  # as uvloop does
        super().write(data)


@mutant(
    "tls",
    "abort() over TLS gives connection_lost(ConnectionAbortedError)",
    clauses=["transport.abort.local_error"],
    checks=["tls.abort"],
    expect=["not ConnectionAbortedError"],
)
class TlsAbortIsClose(AsyncioTransport):
    __slots__ = ()

    def abort(self) -> None:
        self.close()


class _NoHostnameCheckSession(AsyncioSession):
    async def adopt_client_stream(
        self,
        sock: socket.socket,
        factory: Callable[[], polyloop.Protocol],
        ssl: _ssl.SSLContext | None,
        server_hostname: str | None,
    ) -> polyloop.Transport:
        if ssl is not None and ssl.check_hostname:
            relaxed = _ssl.create_default_context()
            relaxed.load_verify_locations(cadata=_trusted(ssl))
            relaxed.check_hostname = False  # "the CA check is what matters"
            ssl = relaxed
        return await super().adopt_client_stream(sock, factory, ssl, server_hostname)


def _trusted(ctx: _ssl.SSLContext) -> str:
    return "".join(_ssl.DER_cert_to_PEM_cert(der) for der in ctx.get_ca_certs(binary_form=True))


@mutant(
    "tls",
    "a certificate for another host name fails with SSLCertVerificationError",
    clauses=["tls.verification"],
    checks=["tls.wrong_hostname"],
    expect=["accepted a certificate for another host name"],
)
class TlsSkipsHostname(_NoHostnameCheckSession):
    pass


class _AbortedNotReported(AsyncioTransport):
    __slots__ = ()

    def abort(self) -> None:
        if self._aborted:
            return
        self._aborted = self._closing = True
        self._t.abort()  # asyncio's own abort: FIN, connection_lost(None)


@mutant(
    "transports",
    "abort() resets, and reports ConnectionAbortedError (asyncio's does not)",
    clauses=["transport.abort.resets_peer", "transport.abort.local_error"],
    checks=["abort.peer_reset", "abort.local_aborted_error"],
    expect=["instead of a reset (ECONNRESET)", "ConnectionAbortedError"],
)
class AsyncioNativeAbort(_AbortedNotReported):
    pass
