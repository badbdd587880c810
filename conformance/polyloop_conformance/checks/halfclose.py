"""Half-close: ``write_eof`` and the return value of ``eof_received``.

Covers the peer's ``eof_received`` after ``write_eof`` (which flushes first), this side
still reading afterwards, a true ``eof_received`` keeping the connection half-open and a
falsy one closing it, ``can_write_eof()`` on TCP, and ``write`` after ``write_eof``
raising ``RuntimeError``.
"""

from __future__ import annotations

import polyloop

from .._registry import check
from ._util import PausedReader, Recorder, compact, fill_until_paused, pair, transport_of


@check("halfclose")
async def check_can_write_eof(session: polyloop.Session) -> None:
    """can_write_eof() is True for plain TCP on both ends."""
    server, srv, cli = await pair(session)
    assert transport_of(cli).can_write_eof() is True
    assert transport_of(srv).can_write_eof() is True
    transport_of(cli).close()
    await srv.lost
    await server.aclose()


@check("halfclose")
async def check_peer_eof_and_reply(session: polyloop.Session) -> None:
    """After write_eof the peer gets eof_received, and this side still reads its reply."""

    class Replier(Recorder):
        def eof_received(self) -> bool:
            super().eof_received()
            transport_of(self).write(b"reply to " + bytes(self.data))
            transport_of(self).close()
            return True

    server, srv, cli = await pair(session, lambda: Replier(session))
    transport_of(cli).write(b"request")
    transport_of(cli).write_eof()
    assert "lost" not in cli.events and not cli.eof.done()
    exc = await cli.wait_lost()
    assert bytes(cli.data) == b"reply to request", bytes(cli.data)
    assert exc is None, f"connection_lost({exc!r})"
    assert srv.events.count("eof") == 1, compact(srv.events)
    await srv.lost
    await server.aclose()


@check("halfclose")
async def check_true_keeps_open(session: polyloop.Session) -> None:
    """eof_received returning True keeps the connection half-open: it can still write."""
    server, srv, cli = await pair(session, lambda: Recorder(session, keep_open_on_eof=True))
    transport_of(cli).write_eof()
    await srv.eof
    await session.sleep(0.02)  # a wrong self-close would have started by now
    assert not transport_of(srv).is_closing(), "the transport closed although eof_received -> True"
    assert "lost" not in srv.events, compact(srv.events)
    transport_of(srv).write(b"still talking")
    assert await cli.wait_bytes(13) == b"still talking"
    transport_of(srv).close()
    assert await cli.wait_lost() is None, cli.lost_exc
    assert await srv.wait_lost() is None, srv.lost_exc
    await server.aclose()


@check("halfclose")
async def check_falsy_closes(session: polyloop.Session) -> None:
    """eof_received returning None/False closes the transport: connection_lost(None) on both."""
    for result in (None, False):

        class Closer(Recorder):
            answer = result

            def eof_received(self) -> bool:
                super().eof_received()
                return self.answer  # type: ignore[return-value]

        server, srv, cli = await pair(session, lambda: Closer(session))
        transport_of(cli).write_eof()
        assert await srv.wait_lost() is None, f"eof_received -> {result}: {srv.lost_exc!r}"
        assert await cli.wait_lost() is None, f"eof_received -> {result}: {cli.lost_exc!r}"
        assert cli.events[-2:] == ["eof", "lost"], compact(cli.events)
        await server.aclose()


@check("halfclose")
async def check_write_eof_flushes(session: polyloop.Session) -> None:
    """write_eof with a large write buffered: the peer reads every byte, then EOF."""
    server, srv, cli = await pair(session, lambda: PausedReader(session))
    total = await fill_until_paused(session, cli)
    transport_of(cli).write_eof()
    transport_of(srv).resume_reading()
    await srv.eof
    assert len(srv.data) == total, f"EOF after {len(srv.data)} of {total} bytes"
    await srv.lost
    await cli.lost
    await server.aclose()


@check("halfclose")
async def check_write_after_eof(session: polyloop.Session) -> None:
    """write() after write_eof() raises RuntimeError."""
    server, srv, cli = await pair(session, lambda: Recorder(session, keep_open_on_eof=True))
    transport_of(cli).write_eof()
    try:
        transport_of(cli).write(b"too late")
    except RuntimeError:
        pass
    else:
        raise AssertionError("write() after write_eof() did not raise RuntimeError")
    await srv.eof
    transport_of(srv).close()
    await cli.lost
    assert bytes(srv.data) == b"", bytes(srv.data)
    await server.aclose()
