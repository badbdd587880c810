"""gevent connections held to the polyloop Transport contract.

Rule: only reading is gevent's own here; writing and closing are the core's
``SocketTransport`` (sent at once when nothing is queued, the rest flushed by the
session's writer callback from the hub). Reading: one greenlet per connection, ``recv``
-> ``data_received``, parked on its own read watcher when the socket is dry and on
nothing at all while reading is paused -- so the kernel's buffers fill and the peer is
pushed back. Because the protocol's reading callbacks run in that greenlet, they may
call gevent's blocking API (in a hub callback that raises ``BlockingSwitchOutError``).

The session binds, connects and accepts; a transport only gets a connected socket. UDP
is the core's ``SocketDatagramTransport`` on this session's readiness.

Why not gevent's own pieces: a gevent socket in blocking mode parks the *writer* when the
kernel is full (``write`` must not), ``DatagramServer`` truncates datagrams at 8192 bytes,
and ``StreamServer`` given a stdlib ``SSLContext`` blocks the whole thread in the
handshake (TLS here is the core's MemoryBIO layer over these plain transports).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from polyloop.lowlevel import READ_SIZE, SocketTransport

if TYPE_CHECKING:
    from ._session import GeventSession, SessionGreenlet

#: Reads in a row before the reader lets other greenlets run.
READS_PER_TURN = 16


class GeventTransport(SocketTransport):
    """A TCP or Unix stream connection on the gevent hub, read by a greenlet of its own."""

    __slots__ = ("_reader", "_rw")

    def __init__(
        self, session: GeventSession, sock: socket.socket, factory: Callable[[], Any]
    ) -> None:
        self._rw = session.loop.io(sock.fileno(), 1)
        self._reader: SessionGreenlet | None = None
        super().__init__(session, sock, factory)

    # --- reading (the reader greenlet) ---

    def start_reader(self) -> None:
        if self._reader is None:
            session: GeventSession = self.session  # type: ignore[assignment]
            self._reader = session._spawn_reader(self._read_loop)
        else:
            self._wake_reader()

    def stop_reader(self) -> None:
        self._rw.stop()
        self._wake_reader()  # it sees the new state: parks, or ends once closing

    def _wake_reader(self) -> None:
        if self._reader is not None:
            self.session.loop.run_callback(self._reader.resume)  # type: ignore[attr-defined]

    def _read_loop(self) -> None:
        reader = self._reader
        assert reader is not None
        recv = self.sock.recv
        turn = 0
        while not self.is_closing():
            if not self.is_reading():
                reader.park()  # resume_reading() or closing wakes us
                continue
            try:
                data = recv(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                turn = 0
                reader.park(self._rw)
                continue
            except OSError as exc:
                self.fail(exc)
                return
            if not data:
                self.feed_eof()
                return
            self.feed_data(data)
            turn += 1
            if turn == READS_PER_TURN:  # a fast peer must not starve the others
                turn = 0
                self._wake_reader()
                reader.park()

    def finish_lost(self, exc: BaseException | None) -> None:
        self._rw.close()
        super().finish_lost(exc)
