"""Lifecycle and addresses: running, callbacks order, extra info."""

from __future__ import annotations

import polyloop

from .._registry import check
from ._util import pair


@check("lifecycle")
async def check_current_backend(backend: polyloop.Backend) -> None:
    """current_backend() is the running backend, in coroutines and spawned tasks."""
    assert polyloop.current_backend() is backend

    async def inner() -> polyloop.Backend:
        return polyloop.current_backend()

    assert await polyloop.spawn(inner()) is backend


@check("lifecycle")
async def check_callback_order(backend: polyloop.Backend) -> None:
    """connection_made first, data, eof, connection_lost(None) last, once each."""
    server, srv, cli = await pair(backend)
    assert cli.transport is not None
    cli.transport.write(b"hello")
    cli.transport.write_eof()
    await srv.lost
    assert srv.events[0] == "made" and srv.events[-1] == "lost", srv.events
    assert srv.events.count("made") == 1 and srv.events.count("lost") == 1, srv.events
    assert bytes(srv.data) == b"hello", bytes(srv.data)
    assert "eof" in srv.events and srv.lost_exc is None, (srv.events, srv.lost_exc)
    await server.aclose()


@check("lifecycle")
async def check_addresses(backend: polyloop.Backend) -> None:
    """peername/sockname/socket/backend extra info agree on both ends."""
    server, srv, cli = await pair(backend)
    assert srv.transport is not None and cli.transport is not None
    assert cli.transport.get_extra_info("peername")[:2] == ("127.0.0.1", server.port)
    assert srv.transport.get_extra_info("sockname")[:2] == ("127.0.0.1", server.port)
    assert (
        srv.transport.get_extra_info("peername")[:2]
        == cli.transport.get_extra_info("sockname")[:2]
    )
    assert cli.transport.get_extra_info("backend") == backend.name
    assert cli.transport.get_extra_info("no-such-key", 42) == 42
    cli.transport.close()
    await srv.lost
    await server.aclose()
