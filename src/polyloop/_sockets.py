"""Sockets, once for every backend: resolving, binding, connecting, socket options.

Rule: plain ``socket`` work that needs no loop lives here (anyio's ``_core/_sockets.py``
shape: the core resolves and binds, a backend only wraps a bound or connected socket).
The one wait it needs, for a non-blocking connect, is the session's.

Facts that shaped it:
- ``getaddrinfo`` is called on the C module ``_socket``: ``gevent.monkey.patch_all()``
  replaces ``socket.getaddrinfo`` with one that resolves in the hub's thread pool, whose
  threads outlive a run. A numeric host needs no lookup at all (``AI_NUMERICHOST``).
- Binding ``host=None`` (or a name) gives one socket per address; with ``port=0`` each
  would get its own port, and ``Server.port`` would name only one. The first socket
  picks the port, the others bind to it, and a collision (free for one family only) is
  retried with a new port, a few times. IPv6 sockets are ``IPV6_V6ONLY`` so that the
  IPv4 socket on the same port does not collide with a dual-stack one.
- asyncio folds a connect that failed on every address into a bare
  ``OSError("Multiple exceptions: ...")`` that has lost the errno: the loop here keeps
  each error and ``pick_connect_error`` chooses one (``ConnectionRefusedError`` first).
"""

from __future__ import annotations

import _socket
import errno
import os
import socket
import stat
import struct
from typing import Any

__all__ = [
    "LINGER_RST",
    "MAX_DATAGRAM",
    "READ_SIZE",
    "bind_tcp",
    "bind_unix",
    "fd_of",
    "numeric_getaddrinfo",
    "pick_connect_error",
    "set_nodelay",
    "set_reset_on_close",
    "unlink_socket_file",
]

#: ``SO_LINGER`` on with a timeout of 0: ``close()`` then sends RST, not FIN.
LINGER_RST = struct.pack("ii", 1, 0)
#: Bytes asked of one ``recv``. Not asyncio's 256 KiB: CPython allocates the whole size
#: (past malloc's mmap threshold) before shrinking it to what arrived; measured on the
#: Twisted adapter, ``recv(256 KiB)`` of a 64-byte message cost ~13 us against ~1.3 us.
READ_SIZE = 64 * 1024
#: The largest datagram a ``recvfrom`` takes whole (the IPv4 payload maximum is 65,507).
MAX_DATAGRAM = 65535

AddrInfo = tuple[Any, Any, int, str, Any]


def numeric_getaddrinfo(
    host: str | None, port: int, family: int, type_: int, proto: int, flags: int
) -> list[AddrInfo] | None:
    """``getaddrinfo`` for a numeric host (or ``None`` host); ``None`` if it is a name."""
    try:
        return _socket.getaddrinfo(
            host, port, family, type_, proto, flags | _socket.AI_NUMERICHOST
        )
    except _socket.gaierror:
        return None


def blocking_getaddrinfo(
    host: str | None, port: int, family: int, type_: int, proto: int, flags: int
) -> list[AddrInfo]:
    """``getaddrinfo`` that may block on a name server (run it in a thread)."""
    return _socket.getaddrinfo(host, port, family, type_, proto, flags)


def unique(infos: list[AddrInfo]) -> list[AddrInfo]:
    """Drop repeated (family, address) entries, keeping the resolver's order."""
    seen: set[tuple[Any, Any]] = set()
    out = []
    for info in infos:
        key = (info[0], info[4])
        if key not in seen:
            seen.add(key)
            out.append(info)
    return out


def fd_of(fileobj: Any) -> int:
    """The fd of an int or of an object with ``fileno()``, for ``add_reader`` and friends:
    ``ValueError`` for anything else or a negative fd (a closed socket's ``fileno()`` is
    -1), with the words of ``selectors``, which asyncio's loops and uvloop use, so that a
    bad argument fails alike on every backend."""
    if isinstance(fileobj, int):
        fd = fileobj
    else:
        try:
            fd = int(fileobj.fileno())
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"Invalid file object: {fileobj!r}") from None
    if fd < 0:
        raise ValueError(f"Invalid file descriptor: {fd}")
    return fd


def set_nodelay(sock: socket.socket) -> None:
    """``TCP_NODELAY``, on every backend as asyncio sets it: small writes go out at once."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


def set_reset_on_close(sock: Any) -> None:
    """Make the next ``close()`` of a TCP socket send RST (``abort``'s promise)."""
    try:
        if sock.type == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
    except (OSError, AttributeError, ValueError):
        pass  # closed already, or not a socket with linger


def _bind_once(infos: list[AddrInfo], backlog: int) -> list[socket.socket]:
    socks: list[socket.socket] = []
    port = 0
    try:
        for family, type_, proto, _, addr in infos:
            sock = socket.socket(family, type_, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if addr[1] == 0 and port:
                addr = (addr[0], port, *addr[2:])
            try:
                sock.bind(addr)
            except OSError as exc:
                if socks[:-1] and exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                    socks.pop().close()  # no such family here (no IPv6), as asyncio skips it
                    continue
                raise
            sock.listen(backlog)
            sock.setblocking(False)
            port = port or sock.getsockname()[1]
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


def bind_tcp(infos: list[AddrInfo], backlog: int) -> list[socket.socket]:
    """Listening, non-blocking sockets for every address in ``infos``, on one port."""
    infos = unique(infos)
    wildcard_port = all(info[4][1] == 0 for info in infos)
    for attempt in range(5):
        try:
            return _bind_once(infos, backlog)
        except OSError as exc:
            # Port 0 chosen by the first family may be taken in another: try a new one.
            if exc.errno != errno.EADDRINUSE or not wildcard_port or len(infos) < 2:
                raise
            if attempt == 4:
                raise
    raise AssertionError("unreachable")


def bind_unix(path: str, backlog: int) -> socket.socket:
    """A listening, non-blocking Unix socket at ``path`` (a stale file was cleared)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def unlink_socket_file(path: str) -> None:
    """Remove the socket file at ``path`` if there is one (a server's ``close()``)."""
    if path.startswith("\0"):
        return  # Linux abstract namespace: no file
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    except OSError:
        pass


def connect_error(sock: socket.socket) -> int:
    """The outcome of a non-blocking connect, once the socket is writable (0: connected)."""
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)


def pick_connect_error(errors: list[OSError]) -> OSError:
    """One error for a connect that failed on every resolved address.

    ``ConnectionRefusedError`` if any address refused (``localhost`` refusing on both
    ``::1`` and ``127.0.0.1``), then ``TimeoutError``, else the first error.
    """
    for kind in (ConnectionRefusedError, TimeoutError):
        for exc in errors:
            if isinstance(exc, kind):
                return exc
    return errors[0]


def oserror(code: int) -> OSError:
    """``OSError(code, strerror)``: the builtin subclass for the errno, the system's text."""
    return OSError(code, os.strerror(code))
