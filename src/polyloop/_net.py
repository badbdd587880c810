"""Networking, written once: resolution, binding, the connect loop, servers, UDP, TLS.

Rule: these are functions of a session (anyio's ``_core/_sockets.py`` shape), and the
``Session`` class takes them as its methods (``session.listen_tcp(...)``), so that the
front end (``polyloop.listen_tcp``) and the session share one signature. They check every
argument, do the generic work, and hand the backend only sockets that are bound,
listening or connected (``serve_socket``, ``adopt_client_stream``, ``adopt_datagram``).
TLS runs in the backend's transports where it takes a stdlib context (``native_tls``), and
in the core's ``ssl.MemoryBIO`` layer (``TLSProtocol``) everywhere else.
"""

from __future__ import annotations

import socket
import ssl as _ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from . import _errors, _sockets
from ._contract import Acceptor
from ._protocols import DatagramProtocol
from ._protocols import Protocol as StreamProtocol
from ._server import Server, safe_factory
from ._tls import TLSProtocol
from ._transports import DatagramTransport, Transport

if TYPE_CHECKING:
    from ._session import Session

__all__ = [
    "adopt_connection",
    "adopt_udp",
    "connect_tcp",
    "connect_unix",
    "getaddrinfo",
    "listen_sockets",
    "listen_tcp",
    "listen_unix",
    "open_udp",
    "start_tls",
]

P = TypeVar("P", bound=StreamProtocol)
DP = TypeVar("DP", bound=DatagramProtocol)


async def getaddrinfo(
    session: Session,
    host: str | None,
    port: int | str | None,
    *,
    family: int = 0,
    type: int = 0,
    proto: int = 0,
    flags: int = 0,
) -> list[tuple[Any, Any, int, str, Any]]:
    """``socket.getaddrinfo`` without blocking the loop: a numeric host is resolved
    at once, a name by the framework's resolver or in a worker thread."""
    args = (host, port, family, type, proto, flags)
    found = _sockets.numeric_getaddrinfo(*args)  # type: ignore[arg-type]
    if found is not None:
        return found
    return await session.resolve(*args)  # type: ignore[arg-type]


async def listen_tcp(
    session: Session,
    protocol_factory: Callable[[], StreamProtocol],
    host: str | None = "127.0.0.1",
    port: int = 0,
    *,
    ssl: _ssl.SSLContext | None = None,
    backlog: int = 128,
    ssl_handshake_timeout: float | None = None,
) -> Server:
    """Listen on ``host:port`` (``None``: all interfaces); ``port=0`` picks one.

    Every address ``host`` resolves to is bound, all on one port. ``OSError`` with
    ``errno.EADDRINUSE`` if the address is taken. With ``ssl``, a client whose TLS
    handshake is not done within ``ssl_handshake_timeout`` seconds (default 60) is
    dropped, before the protocol is made.
    """
    _errors.check_callable("protocol_factory", protocol_factory)
    _errors.check_host(host, allow_none=True)
    _errors.check_port(port, allow_zero=True)
    _errors.check_ssl(ssl, server_side=True)
    backlog = _errors.check_backlog(backlog)
    session.check_open()
    infos = await getaddrinfo(
        session, host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    socks = _sockets.bind_tcp(infos, backlog)
    return await listen_sockets(
        session, protocol_factory, socks, backlog=backlog, ssl=ssl,
        ssl_handshake_timeout=ssl_handshake_timeout,
    )  # fmt: skip


async def listen_unix(
    session: Session,
    protocol_factory: Callable[[], StreamProtocol],
    path: str,
    *,
    ssl: _ssl.SSLContext | None = None,
    backlog: int = 128,
    ssl_handshake_timeout: float | None = None,
) -> Server:
    """Listen on a Unix socket at ``path``; ``close()`` removes the socket file.

    A stale socket file at ``path`` (nothing accepts on it) is removed first; one that
    a live server listens on gives ``OSError`` with ``errno.EADDRINUSE``.
    """
    _errors.check_callable("protocol_factory", protocol_factory)
    path = _errors.check_path(path)
    _errors.check_ssl(ssl, server_side=True)
    backlog = _errors.check_backlog(backlog)
    session.check_open()
    _errors.clear_stale_unix_socket(path)
    sock = _sockets.bind_unix(path, backlog)
    return await listen_sockets(
        session, protocol_factory, [sock], path=path, backlog=backlog, ssl=ssl,
        ssl_handshake_timeout=ssl_handshake_timeout,
    )  # fmt: skip


async def listen_sockets(
    session: Session,
    protocol_factory: Callable[[], StreamProtocol],
    socks: list[socket.socket],
    *,
    path: str | None = None,
    backlog: int = 128,
    ssl: _ssl.SSLContext | None = None,
    ssl_handshake_timeout: float | None = None,
) -> Server:
    """Serve on stream sockets the caller bound (listening already or not: each is put in
    ``listen(backlog)``); the server owns them now: ``close()`` closes them, and removes
    the socket file at ``path`` if one is given. The rest of ``listen_tcp``/``listen_unix``,
    for a caller that made its own sockets (asyncio's ``create_server(sock=...)``,
    Twisted's ``adoptStreamPort``). ``TypeError``/``ValueError`` as ``adopt_connection``."""
    _errors.check_callable("protocol_factory", protocol_factory)
    _errors.check_ssl(ssl, server_side=True)
    backlog = _errors.check_backlog(backlog)
    session.check_open()
    handshake_timeout = ssl_handshake_timeout
    if not isinstance(socks, (list, tuple)) or not socks:
        raise TypeError("listen_sockets takes a non-empty list of sockets")
    for sock in socks:
        _check_socket(sock, socket.SOCK_STREAM, "listen_sockets")
        if sock.getsockname() in ("", None):
            raise ValueError(f"listen_sockets needs bound sockets: {sock!r} is not bound")
    for sock in socks:
        sock.setblocking(False)
        sock.listen(backlog)
    if handshake_timeout is not None:
        handshake_timeout = _errors.check_sleep(handshake_timeout)
    factory = _tls_factory(
        session, safe_factory(protocol_factory), ssl, server_side=True, timeout=handshake_timeout
    )
    native = ssl if session.native_tls else None
    # Read now: each acceptor owns its socket, and may close it when it likes.
    addresses: list[Any] = [path] if path is not None else [s.getsockname() for s in socks]
    acceptors: list[Acceptor] = []
    try:
        for sock in socks:
            acceptors.append(
                await session.serve_socket(sock, factory, native, backlog, handshake_timeout)
            )
    except BaseException:
        for acceptor in acceptors:
            acceptor.close()
        for sock in socks[len(acceptors) :]:
            sock.close()
        raise
    server = Server(session, addresses, acceptors, path)
    session.resources.servers.add(server)
    return server


async def connect_tcp(
    session: Session,
    protocol_factory: Callable[[], P],
    host: str,
    port: int,
    *,
    ssl: _ssl.SSLContext | None = None,
    server_hostname: str | None = None,
) -> tuple[Transport, P]:
    """Connect to ``host:port``; returns once connected (and TLS handshaken).

    Each address ``host`` resolves to is tried in turn. ``ConnectionRefusedError`` if
    nothing listens; ``ssl.SSLCertVerificationError`` if the server's certificate does
    not verify. The protocol is made, and its ``connection_made`` called, before this
    returns; if either raises, the connection is aborted and the error raised here.
    """
    _errors.check_callable("protocol_factory", protocol_factory)
    _errors.check_host(host, allow_none=False)
    _errors.check_port(port, allow_zero=False)
    _errors.check_ssl(ssl, server_hostname, server_side=False)
    session.check_open()
    hostname = server_hostname if server_hostname is not None else host
    infos = await getaddrinfo(session, host, port, type=socket.SOCK_STREAM)
    errors: list[OSError] = []
    for family, type_, proto, _, addr in _sockets.unique(infos):
        try:
            sock = socket.socket(family, type_, proto)
        except OSError as exc:
            errors.append(exc)
            continue
        try:
            sock.setblocking(False)
            _sockets.set_nodelay(sock)
            await session.sock_connect(sock, addr)
        except OSError as exc:
            sock.close()
            errors.append(exc)
            continue
        except BaseException:
            sock.close()
            raise
        return await _connected(session, sock, protocol_factory, ssl, hostname)
    raise _sockets.pick_connect_error(errors)


async def connect_unix(
    session: Session,
    protocol_factory: Callable[[], P],
    path: str,
    *,
    ssl: _ssl.SSLContext | None = None,
    server_hostname: str | None = None,
) -> tuple[Transport, P]:
    """Connect to the Unix socket at ``path``.

    ``FileNotFoundError`` if there is no such file, ``ConnectionRefusedError`` if
    nothing listens on it.
    """
    _errors.check_callable("protocol_factory", protocol_factory)
    path = _errors.check_path(path)
    _errors.check_ssl(ssl, server_hostname, server_side=False)
    if ssl is not None and server_hostname is None and ssl.check_hostname:
        raise ValueError("server_hostname is required for TLS over a Unix socket")
    session.check_open()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        await session.sock_connect(sock, path)
    except BaseException:
        sock.close()
        raise
    return await _connected(session, sock, protocol_factory, ssl, server_hostname)


async def _connected(
    session: Session,
    sock: socket.socket,
    protocol_factory: Callable[[], P],
    ssl: _ssl.SSLContext | None,
    server_hostname: str | None,
    *,
    server_side: bool = False,
    handshake_timeout: float | None = None,
) -> tuple[Transport, P]:
    try:
        protocol = protocol_factory()
    except BaseException:
        sock.close()
        raise
    if ssl is None or (session.native_tls and not server_side):
        transport = await session.adopt_client_stream(sock, lambda: protocol, ssl, server_hostname)
        return transport, protocol
    tls = TLSProtocol(
        session, protocol, ssl, server_side, server_hostname, handshake_timeout=handshake_timeout
    )
    raw = await session.adopt_client_stream(sock, lambda: tls, None, None)
    try:
        await tls.handshake_done
    except BaseException:
        raw.abort()
        raise
    return tls.app_transport, protocol


def _check_socket(sock: object, kind: socket.SocketKind, what: str) -> socket.socket:
    if not isinstance(sock, socket.socket):
        raise TypeError(f"a socket.socket was expected, not {type(sock).__name__}")
    if sock.fileno() < 0:
        raise ValueError("the socket is closed")
    if sock.type != kind or sock.family not in _FAMILIES:
        raise ValueError(
            f"{what} takes a {kind.name} socket of AF_INET, AF_INET6 or AF_UNIX, not {sock!r}"
        )
    return sock


_FAMILIES = (socket.AF_INET, socket.AF_INET6, getattr(socket, "AF_UNIX", -1))


async def adopt_connection(
    session: Session,
    protocol_factory: Callable[[], P],
    sock: socket.socket,
    *,
    ssl: _ssl.SSLContext | None = None,
    server_side: bool = False,
    server_hostname: str | None = None,
    ssl_handshake_timeout: float | None = None,
) -> tuple[Transport, P]:
    """Wrap a stream socket that is connected already (TCP or Unix; one a client connected,
    or one a server accepted, then ``server_side=True``): the transport owns it now. The
    same transport, protocol calls and TLS as ``connect_tcp`` gives, with the same errors
    (``ssl.SSLError``, ``TimeoutError`` for a handshake past ``ssl_handshake_timeout``).
    ``TypeError`` for what is not a socket, ``ValueError`` for a closed socket or one of
    another type, ``OSError`` (``ENOTCONN``) for one that is not connected."""
    _errors.check_callable("protocol_factory", protocol_factory)
    sock = _check_socket(sock, socket.SOCK_STREAM, "adopt_connection")
    _errors.check_ssl(ssl, server_hostname, server_side=server_side)
    if ssl is not None and not server_side and server_hostname is None and ssl.check_hostname:
        raise ValueError("server_hostname is required to verify the server")
    if ssl_handshake_timeout is not None:
        ssl_handshake_timeout = _errors.check_sleep(ssl_handshake_timeout)
    session.check_open()
    sock.getpeername()  # OSError(ENOTCONN) if it is not connected
    sock.setblocking(False)
    if sock.family != getattr(socket, "AF_UNIX", -1):
        _sockets.set_nodelay(sock)
    return await _connected(
        session, sock, protocol_factory, ssl, server_hostname,
        server_side=server_side, handshake_timeout=ssl_handshake_timeout,
    )  # fmt: skip


async def adopt_udp(
    session: Session, protocol_factory: Callable[[], DP], sock: socket.socket
) -> tuple[DatagramTransport, DP]:
    """Wrap a UDP socket (bound, and connected if it has a peer: then ``sendto`` needs no
    address): the transport owns it now; the same transport as ``open_udp`` gives."""
    _errors.check_callable("protocol_factory", protocol_factory)
    sock = _check_socket(sock, socket.SOCK_DGRAM, "adopt_udp")
    session.check_open()
    try:
        remote = sock.getpeername()
    except OSError:
        remote = None
    sock.setblocking(False)
    try:
        protocol = protocol_factory()
    except BaseException:
        sock.close()
        raise
    transport = await session.adopt_datagram(sock, protocol, remote)
    return transport, protocol


async def open_udp(
    session: Session,
    protocol_factory: Callable[[], DP],
    local_addr: tuple[str, int] | None = None,
    remote_addr: tuple[str, int] | None = None,
) -> tuple[DatagramTransport, DP]:
    """Open a UDP endpoint bound to ``local_addr`` and/or connected to ``remote_addr``."""
    _errors.check_callable("protocol_factory", protocol_factory)
    if local_addr is None and remote_addr is None:
        raise ValueError("open_udp needs local_addr, remote_addr or both")
    for addr, zero in ((local_addr, True), (remote_addr, False)):
        if addr is not None:
            if not isinstance(addr, tuple) or len(addr) != 2:
                raise TypeError("addresses must be (host, port) tuples")
            _errors.check_host(addr[0], allow_none=False)
            _errors.check_port(addr[1], allow_zero=zero)
    session.check_open()
    family = 0
    remote = local = None
    if remote_addr is not None:
        infos = await getaddrinfo(session, *remote_addr, type=socket.SOCK_DGRAM)
        if local_addr is not None:
            local_infos = await getaddrinfo(session, *local_addr, type=socket.SOCK_DGRAM)
            families = {i[0] for i in local_infos}
            infos = [i for i in infos if i[0] in families] or infos
        family, remote = infos[0][0], infos[0][4]
    if local_addr is not None:
        infos = await getaddrinfo(
            session, *local_addr, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
        )
        if family:
            infos = [i for i in infos if i[0] == family] or infos
        family, local = infos[0][0], infos[0][4]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        if local is not None:
            sock.bind(local)
        if remote is not None:
            sock.connect(remote)
    except BaseException:
        sock.close()
        raise
    return await adopt_udp(session, protocol_factory, sock)


async def start_tls(
    session: Session,
    transport: Transport,
    protocol: StreamProtocol,
    sslcontext: _ssl.SSLContext,
    *,
    server_side: bool = False,
    server_hostname: str | None = None,
    ssl_handshake_timeout: float | None = None,
    leftover: bytes = b"",
) -> Transport:
    """Upgrade a plain connection to TLS (STARTTLS) and return the TLS transport.

    ``protocol`` (the connection's) keeps its identity: it is driven by the new
    transport from now on, and its ``connection_made`` is not called again. Raises
    the handshake's ``ssl.SSLError`` (the connection is then aborted), or
    ``TimeoutError`` after ``ssl_handshake_timeout`` seconds (default 60). The same
    on every backend: the core's TLS layer runs over the backend's transport.
    ``leftover``: bytes already read past the plain-text part (a Stream's buffer).
    """
    _errors.check_ssl(sslcontext, server_hostname, server_side=server_side)
    if sslcontext is None:
        raise TypeError("start_tls needs an ssl.SSLContext")
    if not server_side and server_hostname is None and sslcontext.check_hostname:
        raise ValueError("server_hostname is required to verify the server")
    tls = TLSProtocol(
        session, protocol, sslcontext, server_side, server_hostname,
        handshake_timeout=ssl_handshake_timeout, call_connection_made=False,
    )  # fmt: skip
    transport.set_protocol(tls)
    tls.connection_made(transport)
    if leftover:
        tls.data_received(leftover)
    try:
        await tls.handshake_done
    except BaseException:
        transport.abort()
        raise
    return tls.app_transport


def _tls_factory(
    session: Session,
    factory: Callable[[], StreamProtocol],
    ssl: _ssl.SSLContext | None,
    *,
    server_side: bool,
    timeout: float | None = None,
) -> Callable[[], StreamProtocol]:
    if ssl is None or session.native_tls:
        return factory

    def make() -> StreamProtocol:
        return TLSProtocol(
            session, None, ssl, server_side, None, handshake_timeout=timeout, app_factory=factory
        )

    return make
