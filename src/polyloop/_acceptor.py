"""Accepting connections: the core's acceptor, and the policy every backend's shares.

Rule: what happens when ``accept()`` fails is decided here once -- a client that gave up
is skipped, running out of descriptors or memory pauses accepting for a while with one log
line, anything else is logged -- and the core's acceptor, Twisted's port and Tornado's
listener all go through ``accept_connections``.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ._sockets import set_nodelay

if TYPE_CHECKING:
    from ._protocols import Protocol as StreamProtocol
    from ._session import Session

__all__ = [
    "ACCEPTS_PER_EVENT",
    "ACCEPT_RESOURCE_ERRORS",
    "ACCEPT_RETRY_DELAY",
    "SocketAcceptor",
    "accept_connections",
    "pause_accepting",
]

log = logging.getLogger("polyloop")

#: Connections taken per readable event of a listening socket, before the others run.
ACCEPTS_PER_EVENT = 64
#: Errors of ``accept()`` that say the process or the system is out of something (file
#: descriptors, buffers, memory), not that one client went wrong: accepting pauses.
ACCEPT_RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: Seconds accepting pauses after one of them (asyncio's ``ACCEPT_RETRY_DELAY``).
ACCEPT_RETRY_DELAY = 1.0


def pause_accepting(
    session: Session, listener: object, exc: OSError, resume: Callable[[], None]
) -> Any:
    """For backends: ``accept()`` on ``listener`` failed with one of
    ``ACCEPT_RESOURCE_ERRORS``, and the caller has stopped watching the listening socket.
    Log it -- one line, no traceback -- and call ``resume`` (which watches it again,
    unless the listener was closed meanwhile) after ``ACCEPT_RETRY_DELAY`` seconds.
    Returns the timer's handle: cancel it when the listener closes.

    Why: the client stays queued and the socket readable; a loop still watching it fails
    again at once -- 19,000 tracebacks a second and a full core, measured on gevent."""
    log.error(
        "polyloop: accept() out of system resource on %s (%s): accepting again in %g s",
        listener, exc, ACCEPT_RETRY_DELAY,
    )  # fmt: skip
    return session.call_later(ACCEPT_RETRY_DELAY, resume)


def accept_connections(
    sock: socket.socket, pause: Callable[[OSError], None]
) -> Iterator[tuple[socket.socket, Any]]:
    """For backends: the ``(connection, address)`` pairs waiting on the listening ``sock``,
    at most ``ACCEPTS_PER_EVENT`` per readable event (a fast client cannot starve the
    others), with one error policy everywhere: a client that gave up before it was taken is
    skipped; out of a system resource (``ACCEPT_RESOURCE_ERRORS``), ``pause(exc)`` -- stop
    watching ``sock`` and call ``pause_accepting`` -- and stop; any other error is logged.
    The caller stops iterating once its listener is closed."""
    for _ in range(ACCEPTS_PER_EVENT):
        try:
            pair = sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                continue  # the client gave up before we took it
            if exc.errno in ACCEPT_RESOURCE_ERRORS:
                pause(exc)
            else:
                log.error("polyloop: accept() failed on %r", sock, exc_info=exc)
            return
        yield pair


class SocketAcceptor:
    """Accepts on a listening socket; each connection becomes a ``session.adopt_stream``."""

    def __init__(
        self, session: Session, sock: socket.socket, factory: Callable[[], StreamProtocol]
    ) -> None:
        self._session = session
        self._sock: socket.socket | None = sock
        self._factory = factory
        self._paused: Any = None  # the timer of a pause (see pause_accepting)
        session.add_reader(sock, self._accept)

    def _accept(self) -> None:
        sock = self._sock
        if sock is None:
            return
        for conn, _ in accept_connections(sock, self._pause):
            conn.setblocking(False)
            set_nodelay(conn)
            try:
                self._session.adopt_stream(conn, self._factory)
            except Exception:
                log.exception("polyloop: a protocol's connection_made raised; connection aborted")
            if self._sock is None:
                return  # closed by what the connection ran

    def _pause(self, exc: OSError) -> None:
        sock = self._sock
        assert sock is not None
        self._session.remove_reader(sock)
        self._paused = pause_accepting(self._session, sock, exc, self._resume)

    def _resume(self) -> None:
        self._paused = None
        if self._sock is not None:
            self._session.add_reader(self._sock, self._accept)

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if self._paused is not None:
            self._paused.cancel()
            self._paused = None
        if sock is not None:
            self._session.remove_reader(sock)
            sock.close()

    async def wait_closed(self) -> None:
        pass  # close() closed the socket already
