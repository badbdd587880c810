"""Streams: the generic ``Stream``/``Listener`` API on top of each backend's transports.

Covers ``receive`` (up to ``max_bytes``, ``b""`` if and only if EOF, and again after),
``receive_exactly``/``receive_until`` with ``IncompleteReadError`` and
``LimitOverrunError`` (data kept), ``send`` waiting on flow control, ``send_eof``,
``BusyResourceError`` for two receivers or two senders, ``ClosedResourceError`` after
``aclose`` (idempotent), errors after a reset, and ``Listener.accept``/``serve``
(a task per connection, close on return, abort and log on error, cancellation), and
``aclose`` flushing what is buffered, or aborting if it is cancelled.
"""

from __future__ import annotations

import logging

import polyloop

from .._registry import check
from ..referee import waiting_for


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
    raise AssertionError(f"expected {kind.__name__}, but the call returned normally")


async def _close_all(listener: polyloop.Listener, *streams: polyloop.Stream) -> None:
    for s in streams:
        await s.aclose()
    await listener.aclose()


@check("streams", clauses=["stream.receive.eof_iff_empty"])
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
    assert bytes(got) == b"hello world", f"receive(4) in a loop read {bytes(got)!r}"
    again = [await server.receive(), await server.receive()]
    assert again == [b"", b""], f"receive() after EOF returned {again}, not b'' each time"
    await _raises(ValueError, server.receive(0))
    await _close_all(listener, client, server)


@check("streams", clauses=["stream.send_eof"])
async def check_send_eof_half_open(session: polyloop.Session) -> None:
    """After send_eof() the peer reads EOF, and this side can still receive its reply."""
    listener, client, server = await _connected(session)
    await client.send(b"question")
    await client.send_eof()
    got = await server.receive_exactly(8)
    assert got == b"question", f"the server read {got!r}, not b'question'"
    eof = await server.receive()
    assert eof == b"", f"receive() after the peer's send_eof() gave {eof!r}, not b''"
    await server.send(b"answer")
    await server.aclose()
    got = await client.receive_exactly(6)
    assert got == b"answer", f"after send_eof() the client read {got!r}, not the reply"
    eof = await client.receive()
    assert eof == b"", f"receive() after the peer's aclose() gave {eof!r}, not b''"
    await _close_all(listener, client)


@check("streams", clauses=["stream.receive_exactly"])
async def check_receive_exactly(session: polyloop.Session) -> None:
    """receive_exactly(n) returns n bytes across writes; IncompleteReadError if EOF first."""
    listener, client, server = await _connected(session)
    for piece in (b"ab", b"cde", b"f", b"ghij"):
        await client.send(piece)
    got = [await server.receive_exactly(n) for n in (3, 0, 5)]
    assert got == [b"abc", b"", b"defgh"], f"receive_exactly(3, 0, 5) gave {got}"
    await client.send_eof()
    exc = await _raises(polyloop.IncompleteReadError, server.receive_exactly(5))
    assert isinstance(exc, polyloop.IncompleteReadError)
    assert exc.partial == b"ij" and exc.expected == 5, (
        f"IncompleteReadError(partial={exc.partial!r}, expected={exc.expected!r}); expected"
        " partial=b'ij', expected=5"
    )
    assert isinstance(exc, EOFError), "IncompleteReadError is not an EOFError"
    await _close_all(listener, client, server)


@check("streams", clauses=["stream.receive_until"])
async def check_receive_until(session: polyloop.Session) -> None:
    """receive_until(delim) returns up to and including it, across chunk boundaries."""
    listener, client, server = await _connected(session)
    await client.send(b"line one\r")
    await client.send(b"\nline two\r\nrest")
    got = [await server.receive_until(b"\r\n"), await server.receive_until(b"\r\n")]
    assert got == [b"line one\r\n", b"line two\r\n"], f"receive_until(CRLF) twice gave {got}"
    await client.send_eof()
    exc = await _raises(polyloop.IncompleteReadError, server.receive_until(b"\r\n"))
    assert isinstance(exc, polyloop.IncompleteReadError) and exc.partial == b"rest", (
        f"receive_until at EOF raised {exc!r}, expected IncompleteReadError(partial=b'rest')"
    )
    await _raises(ValueError, server.receive_until(b""))
    await _close_all(listener, client, server)


@check("streams", clauses=["stream.receive_until"])
async def check_receive_until_limit(session: polyloop.Session) -> None:
    """receive_until: LimitOverrunError past max_bytes, and the data stays buffered."""
    listener, client, server = await _connected(session)
    await client.send(b"x" * 100 + b"\n")
    await _raises(polyloop.LimitOverrunError, server.receive_until(b"\n", max_bytes=50))
    got = await server.receive_exactly(101)
    assert got == b"x" * 100 + b"\n", (
        f"after LimitOverrunError, receive_exactly(101) gave {len(got)} bytes: the data was not"
        " kept buffered"
    )
    await _close_all(listener, client, server)


@check("streams", clauses=["stream.busy"])
async def check_busy_receive(session: polyloop.Session) -> None:
    """A second concurrent receive raises BusyResourceError; the first still gets the data."""
    listener, client, server = await _connected(session)
    first = session.spawn(server.receive())
    await session.sleep(0.01)  # let the first receive start waiting
    await _raises(polyloop.BusyResourceError, server.receive())
    await _raises(polyloop.BusyResourceError, server.receive_exactly(1))
    await client.send(b"for the first")
    got = await first
    assert got == b"for the first", f"the first receive() got {got!r}"
    await _close_all(listener, client, server)


@check("streams", clauses=["stream.busy", "stream.send.flow_control"])
async def check_send_waits_and_busy(session: polyloop.Session) -> None:
    """send() waits while the peer doesn't read; a second concurrent send is BusyResourceError."""
    listener, client, server = await _connected(session)
    big = b"s" * (16 * 1024 * 1024)
    sending = session.spawn(client.send(big))
    await session.sleep(0.05)  # the peer reads nothing: the send cannot have finished
    assert not sending.done(), "send() of 16 MiB finished although the peer read nothing"
    await _raises(polyloop.BusyResourceError, client.send(b"second"))
    got = 0
    with waiting_for(lambda: f"16 MiB through a stream ({got} bytes read)"):
        while got < len(big):
            got += len(await server.receive())
        await sending
    await _close_all(listener, client, server)


@check("streams", clauses=["stream.closed"])
async def check_closed_resource(session: polyloop.Session) -> None:
    """After aclose(): receive/send/send_eof raise ClosedResourceError; aclose is idempotent."""
    listener, client, server = await _connected(session)
    await client.aclose()
    await client.aclose()
    await _raises(polyloop.ClosedResourceError, client.receive())
    await _raises(polyloop.ClosedResourceError, client.send(b"x"))
    await _raises(polyloop.ClosedResourceError, client.send_eof())
    await _raises(polyloop.ClosedResourceError, client.receive_until(b"\n"))
    eof = await server.receive()
    assert eof == b"", f"the peer of a closed stream read {eof!r}, not EOF"
    await _close_all(listener, server)


@check("streams", clauses=["stream.receive.error_after_data"])
async def check_reset_errors(session: polyloop.Session) -> None:
    """After the peer aborts: buffered data first, then receive raises ConnectionResetError."""
    listener, client, server = await _connected(session)
    await client.send(b"buffered")
    await server.receive_exactly(1)
    client.transport.abort()
    got = await server.receive_exactly(7)
    assert got == b"uffered", f"the data buffered before the reset read as {got!r}"
    await _raises(ConnectionResetError, server.receive())
    await _raises(OSError, server.send(b"x" * 100_000))
    await _close_all(listener, server)


@check("streams", clauses=["stream.send.after_peer_closed"])
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


@check("streams", clauses=["transport.extra_info"])
async def check_extra_info(session: polyloop.Session) -> None:
    """Stream.get_extra_info passes through to the transport (peername, sockname, backend)."""
    listener, client, server = await _connected(session)
    peer = client.get_extra_info("peername")
    assert peer[:2] == ("127.0.0.1", listener.port), f"the stream's peername is {peer!r}"
    sp, cs = server.get_extra_info("peername"), client.get_extra_info("sockname")
    assert sp[:2] == cs[:2], f"the server stream's peername {sp!r} is not the client's {cs!r}"
    name = client.get_extra_info("backend")
    assert name == session.name, f"the stream's 'backend' is {name!r}, not {session.name!r}"
    assert listener.addresses[0][1] == listener.port, (
        f"Listener.port {listener.port} is not in {listener.addresses!r}"
    )
    await _close_all(listener, client, server)


@check("streams", clauses=["listener.serve"])
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
        got = await c.receive_exactly(14)
        assert got == b"hello client%d\n" % i, f"client {i} got {got!r} from its handler"
        eof = await c.receive()
        assert eof == b"", (
            f"client {i} read {eof!r}, not EOF: the stream was not closed when the handler"
            " returned"
        )
        await c.aclose()
    assert peak[0] == 3, f"at most {peak[0]} handlers ran at once"
    await listener.aclose()
    await serving


@check("streams", clauses=["listener.serve"])
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


@check("streams", clauses=["listener.close"])
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
    # serve() cancels its handlers; it need not wait for them to unwind (asyncio's
    # order does, a Twisted coroutine awaiting serve may resume first).
    for _ in range(100):
        if outcome:
            break
        await session.sleep(0)
    assert outcome == ["cancelled"], (
        f"100 loop iterations after serve() was cancelled, its handler saw {outcome}, not"
        " [cancelled] (rule: cancelling serve() cancels the running handlers)"
    )
    await _raises(ConnectionRefusedError, polyloop.open_tcp_stream("127.0.0.1", port))
    await client.aclose()


@check("streams", clauses=["listener.close"])
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
    got = await server.receive_exactly(10)
    assert got == b"still open", (
        f"after Listener.aclose() an accepted stream got {got!r} (rule: streams live on)"
    )
    await client.aclose()
    await server.aclose()


@check("streams", clauses=["transport.pause_reading.pushes_back"])
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
    assert got == total, f"the stream read {got} of {total} bytes"
    transport_of(cli).close()
    eof = await server.receive()
    assert eof == b"", f"after the peer closed, receive() gave {eof!r}, not b''"
    await server.aclose()
    await listener.aclose()


@check("streams", clauses=["stream.aclose.flushes"])
async def check_aclose_flushes(session: polyloop.Session) -> None:
    """aclose() right after a send() the peer has not read yet flushes it: the peer
    reads every byte, then EOF."""
    listener, client, server = await _connected(session)
    payload = bytes(range(256)) * 4096  # 1 MiB: more than the kernel takes at once
    await client.send(payload)
    closing = session.spawn(client.aclose())
    got = bytearray()
    with waiting_for(lambda: f"1 MiB then EOF after aclose() ({len(got)} bytes read)"):
        while chunk := await server.receive():
            got += chunk
        await closing
    assert bytes(got) == payload, (
        f"after send(1 MiB) and aclose(), the peer read {len(got)} bytes (rule: aclose()"
        " flushes, then closes)"
    )
    await _close_all(listener, server)


@check("streams", clauses=["stream.aclose.cancelled_aborts"])
async def check_aclose_cancelled_aborts(session: polyloop.Session) -> None:
    """aclose() cancelled while it waits for the flush aborts the connection: the peer
    sees a reset, not a clean EOF."""
    listener = await polyloop.open_tcp_listener("127.0.0.1", 0)
    from ._util import PausedReader

    _, peer = await session.connect_tcp(lambda: PausedReader(session), "127.0.0.1", listener.port)
    stream = await listener.accept()
    # Fill until the stream's writes would wait: the peer reads nothing.
    sending = session.spawn(stream.send(b"z" * (32 * 1024 * 1024)))
    await session.sleep(0.05)
    closing = session.spawn(stream.aclose())
    await session.sleep(0.01)
    closing.cancel()
    try:
        with waiting_for("a cancelled aclose() to end"):
            await closing
    except polyloop.Cancelled:
        pass
    assert peer.transport is not None
    peer.transport.resume_reading()
    exc = await peer.wait_lost()
    assert isinstance(exc, ConnectionResetError), (
        f"the peer of a stream whose aclose() was cancelled got connection_lost({exc!r}), not"
        " a reset (rule: a cancelled aclose aborts)"
    )
    sending.cancel()
    try:
        await sending
    except (polyloop.Cancelled, OSError):
        pass
    await listener.aclose()
