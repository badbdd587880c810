"""Streams: the generic ``Stream``/``Listener`` API on top of each backend's transports.

Covers ``receive`` (up to ``max_bytes``, ``b""`` if and only if EOF, and again after),
``receive_exactly``/``receive_until`` with ``IncompleteReadError`` and
``LimitOverrunError`` (data kept), ``send`` waiting on flow control, ``send_eof``,
``BusyResourceError`` for two receivers or two senders, ``ClosedResourceError`` after
``aclose`` (idempotent), errors after a reset, and ``Listener.accept``/``serve``
(a task per connection, close on return, abort and log on error, cancellation).
"""

from __future__ import annotations

import logging

import polyloop

from .._registry import check


async def _connected(
    session: polyloop.Session,
) -> tuple[polyloop.Listener, polyloop.Stream, polyloop.Stream]:
    listener = await polyloop.open_tcp_listener("127.0.0.1", 0)
    client = await polyloop.open_tcp_stream("127.0.0.1", listener.port)
    server = await listener.accept()
    return listener, client, server


async def _raises(kind: type[BaseException], coro: object) -> BaseException:
    try:
        await coro  # type: ignore[misc]
    except kind as exc:
        return exc
    except BaseException as exc:
        raise AssertionError(f"expected {kind.__name__}, got {exc!r}") from exc
    raise AssertionError(f"expected {kind.__name__}, but the call returned")


async def _close_all(listener: polyloop.Listener, *streams: polyloop.Stream) -> None:
    for s in streams:
        await s.aclose()
    await listener.aclose()


@check("streams")
async def check_receive_eof(session: polyloop.Session) -> None:
    """receive() returns data (never b"") until EOF, then b"" every time after."""
    listener, client, server = await _connected(session)
    await client.send(b"hello world")
    await client.send_eof()
    got = bytearray()
    while True:
        chunk = await server.receive(4)
        assert len(chunk) <= 4, f"receive(4) returned {len(chunk)} bytes"
        if not chunk:
            break
        got += chunk
    assert bytes(got) == b"hello world", bytes(got)
    assert await server.receive() == b"" and await server.receive() == b""
    await _raises(ValueError, server.receive(0))
    await _close_all(listener, client, server)


@check("streams")
async def check_send_eof_half_open(session: polyloop.Session) -> None:
    """After send_eof() the peer reads EOF, and this side can still receive its reply."""
    listener, client, server = await _connected(session)
    await client.send(b"question")
    await client.send_eof()
    assert await server.receive_exactly(8) == b"question"
    assert await server.receive() == b""
    await server.send(b"answer")
    await server.aclose()
    assert await client.receive_exactly(6) == b"answer"
    assert await client.receive() == b""
    await _close_all(listener, client)


@check("streams")
async def check_receive_exactly(session: polyloop.Session) -> None:
    """receive_exactly(n) returns n bytes across writes; IncompleteReadError if EOF first."""
    listener, client, server = await _connected(session)
    for piece in (b"ab", b"cde", b"f", b"ghij"):
        await client.send(piece)
    assert await server.receive_exactly(3) == b"abc"
    assert await server.receive_exactly(0) == b""
    assert await server.receive_exactly(5) == b"defgh"
    await client.send_eof()
    exc = await _raises(polyloop.IncompleteReadError, server.receive_exactly(5))
    assert isinstance(exc, polyloop.IncompleteReadError)
    assert exc.partial == b"ij" and exc.expected == 5, (exc.partial, exc.expected)
    assert isinstance(exc, EOFError)
    await _close_all(listener, client, server)


@check("streams")
async def check_receive_until(session: polyloop.Session) -> None:
    """receive_until(delim) returns up to and including it, across chunk boundaries."""
    listener, client, server = await _connected(session)
    await client.send(b"line one\r")
    await client.send(b"\nline two\r\nrest")
    assert await server.receive_until(b"\r\n") == b"line one\r\n"
    assert await server.receive_until(b"\r\n") == b"line two\r\n"
    await client.send_eof()
    exc = await _raises(polyloop.IncompleteReadError, server.receive_until(b"\r\n"))
    assert isinstance(exc, polyloop.IncompleteReadError) and exc.partial == b"rest", exc
    await _raises(ValueError, server.receive_until(b""))
    await _close_all(listener, client, server)


@check("streams")
async def check_receive_until_limit(session: polyloop.Session) -> None:
    """receive_until: LimitOverrunError past max_bytes, and the data stays buffered."""
    listener, client, server = await _connected(session)
    await client.send(b"x" * 100 + b"\n")
    await _raises(polyloop.LimitOverrunError, server.receive_until(b"\n", max_bytes=50))
    assert await server.receive_exactly(101) == b"x" * 100 + b"\n", "the data was not kept"
    await _close_all(listener, client, server)


@check("streams")
async def check_busy_receive(session: polyloop.Session) -> None:
    """A second concurrent receive raises BusyResourceError; the first still gets the data."""
    listener, client, server = await _connected(session)
    first = session.spawn(server.receive())
    await session.sleep(0.01)  # let the first receive start waiting
    await _raises(polyloop.BusyResourceError, server.receive())
    await _raises(polyloop.BusyResourceError, server.receive_exactly(1))
    await client.send(b"for the first")
    assert await first == b"for the first"
    await _close_all(listener, client, server)


@check("streams")
async def check_send_waits_and_busy(session: polyloop.Session) -> None:
    """send() waits while the peer doesn't read; a second concurrent send is BusyResourceError."""
    listener, client, server = await _connected(session)
    big = b"s" * (16 * 1024 * 1024)
    sending = session.spawn(client.send(big))
    await session.sleep(0.05)  # the peer reads nothing: the send cannot have finished
    assert not sending.done(), "send() of 16 MiB finished although the peer read nothing"
    await _raises(polyloop.BusyResourceError, client.send(b"second"))
    got = 0
    while got < len(big):
        got += len(await server.receive())
    await sending
    await _close_all(listener, client, server)


@check("streams")
async def check_closed_resource(session: polyloop.Session) -> None:
    """After aclose(): receive/send/send_eof raise ClosedResourceError; aclose is idempotent."""
    listener, client, server = await _connected(session)
    await client.aclose()
    await client.aclose()
    await _raises(polyloop.ClosedResourceError, client.receive())
    await _raises(polyloop.ClosedResourceError, client.send(b"x"))
    await _raises(polyloop.ClosedResourceError, client.send_eof())
    await _raises(polyloop.ClosedResourceError, client.receive_until(b"\n"))
    assert await server.receive() == b"", "the peer of a closed stream did not read EOF"
    await _close_all(listener, server)


@check("streams")
async def check_reset_errors(session: polyloop.Session) -> None:
    """After the peer aborts: buffered data first, then receive raises ConnectionResetError."""
    listener, client, server = await _connected(session)
    await client.send(b"buffered")
    await server.receive_exactly(1)
    client.transport.abort()
    assert await server.receive_exactly(7) == b"uffered"
    await _raises(ConnectionResetError, server.receive())
    await _raises(OSError, server.send(b"x" * 100_000))
    await _close_all(listener, server)


@check("streams")
async def check_send_after_peer_closed(session: polyloop.Session) -> None:
    """Sending on after the peer closed: send() fails with BrokenPipeError or a ConnectionError."""
    listener, client, server = await _connected(session)
    await server.aclose()
    assert await client.receive() == b""
    # The first sends reach the closed peer's kernel, which answers with a reset; when
    # that arrives is up to the kernel, so keep sending (bounded) until send() fails.
    for _ in range(400):
        try:
            await client.send(b"late")
        except (BrokenPipeError, ConnectionError):
            break
        await session.sleep(0.005)
    else:
        raise AssertionError("send() to a closed peer never failed (2 s)")
    await _close_all(listener, client)


@check("streams")
async def check_extra_info(session: polyloop.Session) -> None:
    """Stream.get_extra_info passes through to the transport (peername, sockname, backend)."""
    listener, client, server = await _connected(session)
    assert client.get_extra_info("peername")[:2] == ("127.0.0.1", listener.port)
    assert server.get_extra_info("peername")[:2] == client.get_extra_info("sockname")[:2]
    assert client.get_extra_info("backend") == session.name
    assert listener.addresses[0][1] == listener.port
    await _close_all(listener, client, server)


@check("streams")
async def check_serve(session: polyloop.Session) -> None:
    """serve(handler): one task per connection, concurrently; the stream closes on return."""
    listener = await polyloop.open_tcp_listener("127.0.0.1", 0)
    in_handler = [0]
    peak = [0]
    all_in = session.create_future()

    async def handler(stream: polyloop.Stream) -> None:
        in_handler[0] += 1
        peak[0] = max(peak[0], in_handler[0])
        if in_handler[0] == 3 and not all_in.done():
            all_in.set_result(None)
        await all_in  # all three handlers run at once
        name = await stream.receive_until(b"\n")
        await stream.send(b"hello " + name)
        in_handler[0] -= 1

    serving = session.spawn(listener.serve(handler))
    clients = [await polyloop.open_tcp_stream("127.0.0.1", listener.port) for _ in range(3)]
    for i, c in enumerate(clients):
        await c.send(b"client%d\n" % i)
    for i, c in enumerate(clients):
        assert await c.receive_exactly(14) == b"hello client%d\n" % i
        assert await c.receive() == b"", "the stream was not closed when the handler returned"
        await c.aclose()
    assert peak[0] == 3, f"at most {peak[0]} handlers ran at once"
    await listener.aclose()
    await serving


@check("streams")
async def check_serve_handler_error(session: polyloop.Session) -> None:
    """A handler that raises: its stream is aborted (peer sees a reset) and the error logged."""
    listener = await polyloop.open_tcp_listener("127.0.0.1", 0)
    records: list[logging.LogRecord] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    log = logging.getLogger("polyloop")
    capture, propagate = Capture(), log.propagate
    log.addHandler(capture)
    log.propagate = False  # keep the expected traceback out of the user's logs
    try:

        async def handler(stream: polyloop.Stream) -> None:
            await stream.receive()
            raise RuntimeError("deliberate handler failure (expected by this check)")

        serving = session.spawn(listener.serve(handler))
        client = await polyloop.open_tcp_stream("127.0.0.1", listener.port)
        await client.send(b"trigger")
        await _raises(ConnectionResetError, client.receive())
        await client.aclose()
        await listener.aclose()
        await serving
    finally:
        log.removeHandler(capture)
        log.propagate = propagate
    errors = [r for r in records if r.exc_info and isinstance(r.exc_info[1], RuntimeError)]
    assert errors, f"the handler's error was not logged (records: {records})"


@check("streams")
async def check_serve_cancel(session: polyloop.Session) -> None:
    """Cancelling serve() closes the listener and cancels the running handlers."""
    listener = await polyloop.open_tcp_listener("127.0.0.1", 0)
    port = listener.port
    entered = session.create_future()
    outcome: list[str] = []

    async def handler(stream: polyloop.Stream) -> None:
        entered.set_result(None)
        try:
            await stream.receive()
        except polyloop.Cancelled:
            outcome.append("cancelled")
            raise

    serving = session.spawn(listener.serve(handler))
    client = await polyloop.open_tcp_stream("127.0.0.1", port)
    await entered
    serving.cancel()
    try:
        await serving
    except polyloop.Cancelled:
        pass
    assert outcome == ["cancelled"], f"the handler saw {outcome}"
    await _raises(ConnectionRefusedError, polyloop.open_tcp_stream("127.0.0.1", port))
    await client.aclose()


@check("streams")
async def check_listener_aclose(session: polyloop.Session) -> None:
    """Listener.aclose(): serve() returns, accept() raises ClosedResourceError, streams live on."""
    listener, client, server = await _connected(session)
    port = listener.port
    serving = session.spawn(listener.serve(lambda s: s.aclose()))
    await session.sleep(0)
    await listener.aclose()
    await serving
    await _raises(polyloop.ClosedResourceError, listener.accept())
    await _raises(ConnectionRefusedError, polyloop.open_tcp_stream("127.0.0.1", port))
    await client.send(b"still open")
    assert await server.receive_exactly(10) == b"still open"
    await client.aclose()
    await server.aclose()


@check("streams")
async def check_backpressure_to_peer(session: polyloop.Session) -> None:
    """A stream nobody reads stops reading its socket: the sending peer's transport pauses."""
    listener = await polyloop.open_tcp_listener("127.0.0.1", 0, limit=64 * 1024)
    from ._util import Recorder, fill_until_paused, transport_of

    _, cli = await session.connect_tcp(lambda: Recorder(session), "127.0.0.1", listener.port)
    server = await listener.accept()
    total = await fill_until_paused(session, cli)
    got = 0
    while got < total:
        got += len(await server.receive())
    assert got == total
    transport_of(cli).close()
    assert await server.receive() == b""
    await server.aclose()
    await listener.aclose()
