"""The reference end: a plain blocking socket of the standard library, for the rules that
involve two ends of a connection.

Rule: when a check puts the backend under test at both ends, a failure cannot say which
end broke the rule (a reset never sent looks like a reset reported as EOF). So the other
end is this: a plain socket whose behaviour is the kernel's, read or reset from a real OS
thread, never run by the backend. A verdict then names the end at fault.

After gevent's ``patch_all()`` the originals are used (gevent's would switch to the hub,
and a blocking read would park in it).
"""

from __future__ import annotations

import select
import socket
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

import polyloop

from ..referee import Failed, os_threads, waiting_for
from ._util import Recorder, fill_until_paused

__all__ = [
    "ReferenceReader",
    "accept",
    "buffered_then_ended",
    "plain",
    "reference_peer",
    "reset",
    "written_then_aborted",
]


def plain() -> tuple[Any, Any, Any]:
    """The standard library's ``socket.socket``, ``socket.socketpair`` and
    ``select.select``, also after gevent's ``patch_all()``.

    After ``patch_all()`` the original class is not enough: its ``accept()`` and the
    module's ``socketpair()`` are Python code that builds the new sockets with the
    module's global ``socket``, which is gevent's by then (a gevent socket read from
    another OS thread fails: "Cannot switch to a different thread"). So the sockets are
    made from ``_socket``'s and wrapped in the original class (``accept`` below).
    """
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("socket"):
        import _socket

        (sock_cls,) = monkey.get_original("socket", ["socket"])
        (sel,) = monkey.get_original("select", ["select"])

        def pair() -> tuple[Any, Any]:
            a, b = _socket.socketpair()
            return sock_cls(fileno=a.detach()), sock_cls(fileno=b.detach())

        return sock_cls, pair, sel
    return socket.socket, socket.socketpair, select.select


def accept(listener: Any) -> Any:
    """``listener.accept()``'s socket, of ``listener``'s own class (see ``plain``)."""
    fd, _ = listener._accept()
    return type(listener)(listener.family, listener.type, listener.proto, fileno=fd)


async def reference_peer(session: polyloop.Session, factory: Callable[[], Any]) -> tuple[Any, Any]:
    """The backend under test connects to a plain listening socket: ``(its transport,
    the reference peer socket)``; the peer is blocking, with a 10 s timeout."""
    listener = plain()[0](socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        with waiting_for("connect_tcp to a plain listening socket"):
            transport, _ = await session.connect_tcp(factory, "127.0.0.1", port)
        listener.settimeout(5.0)  # connected already: accept takes it from the backlog
        peer = accept(listener)
    finally:
        listener.close()
    peer.settimeout(10.0)
    return transport, peer


def reset(sock: Any) -> None:
    """Close ``sock`` with a reset (RST), as ``abort()`` must: SO_LINGER on, 0 s."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class ReferenceReader:
    """Reads a reference socket to its end, in a real OS thread: how many bytes, and how
    it ended (``"eof"``: a clean FIN; ``"reset"``: ``ConnectionResetError``; else the
    error's name)."""

    def __init__(self, sock: Any, limit: int | None = None) -> None:
        self.sock = sock
        self.limit = limit
        self.received = 0
        self.data = bytearray()
        self.ending: str | None = None
        self.error: BaseException | None = None
        start, _, allocate = os_threads()
        self._done = allocate()
        self._done.acquire()
        start(self._read, ())

    def _read(self) -> None:
        try:
            while True:
                chunk = self.sock.recv(256 * 1024)
                if not chunk:
                    self.ending = "eof"
                    return
                self.received += len(chunk)
                if len(self.data) < 4096:
                    self.data += chunk[: 4096 - len(self.data)]
                if self.limit is not None and self.received >= self.limit:
                    self.ending = "limit"
                    return
        except ConnectionResetError as exc:
            self.ending, self.error = "reset", exc
        except BaseException as exc:
            self.ending, self.error = type(exc).__name__, exc
        finally:
            self._done.release()

    def done(self) -> bool:
        return self.ending is not None

    async def wait(self, session: polyloop.Session, what: str, seconds: float = 10.0) -> str:
        """Wait (on the loop: the backend must run meanwhile) until the reader is done;
        returns how it ended. ``AssertionError`` if it takes over ``seconds``."""
        deadline = time.monotonic() + seconds
        with waiting_for(lambda: f"{what} ({self.received} bytes read so far)"):
            while not self.done():
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"the reference peer (a plain socket) was still waiting after"
                        f" {seconds:g} s for {what}, having read {self.received} bytes"
                    )
                await session.sleep(0.005)
        assert self.ending is not None
        return self.ending


async def buffered_then_ended(
    session: polyloop.Session, proto: Recorder, transport: Any, peer: Any, end: str, *,
    who: str, rule: str, clause: str,
) -> None:  # fmt: skip
    """Write to ``transport`` until it pauses (``peer`` does not read yet), call its
    ``end`` method (``"close"`` or ``"write_eof"``), then require the reference ``peer`` to
    read every byte written and a clean EOF. ``Failed`` naming ``clause`` otherwise: ``who``
    (the end under test) broke ``rule``."""
    total = await fill_until_paused(session, proto)
    buffered = transport.get_write_buffer_size()
    assert buffered > 0, f"nothing was buffered after pause_writing ({total} bytes written)"
    getattr(transport, end)()
    reader = ReferenceReader(peer)
    ending = await reader.wait(session, f"the {total} bytes written, then EOF")
    if reader.received != total or ending != "eof":
        how = "a clean EOF" if ending == "eof" else f"{ending} ({reader.error!r})"
        raise Failed(
            f"{who} (the backend under test) broke the rule: after writing {total} bytes"
            f" ({buffered} still buffered) and {end}(), the peer, a plain socket of the"
            f" standard library, read {reader.received} bytes, then {how}; {rule}",
            clause=clause,
        )


async def written_then_aborted(
    session: polyloop.Session, transport: Any, peer: Any, data: bytes, *, before: str = ""
) -> None:
    """Write ``data``, let the reference ``peer`` read it, ``abort()``, and require the
    peer to read a reset. ``Failed`` (clause ``transport.abort.resets_peer``) otherwise;
    ``before`` tells what came first, for the message."""
    transport.write(data)
    reader = ReferenceReader(peer, limit=len(data))
    await reader.wait(session, f"the {len(data)} bytes written before abort()")
    transport.abort()
    reader = ReferenceReader(peer)
    ending = await reader.wait(session, "the end of the connection after abort()")
    if ending != "reset":
        seen = "a clean EOF (FIN)" if ending == "eof" else f"{ending} ({reader.error!r})"
        raise Failed(
            f"the aborting end (the backend under test) broke the rule: {before}after its"
            f" abort() the peer, a plain socket of the standard library, read {seen} instead"
            " of a reset (ECONNRESET); abort() must reset the connection (close the socket"
            " with SO_LINGER set to 0)",
            clause="transport.abort.resets_peer",
        )
