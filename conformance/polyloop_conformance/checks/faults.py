"""One behaviour under bad input and failing callbacks, on every backend.

The checks here are filed under the layer each judges (``protocol.*_raises``,
``flow.callbacks_raise``, ``errors.texts``, ``tls.handshake_timeout``,
``tls.clean_close_is_clean``, ``streams.handler_reset_not_an_error``,
``session.graceful_shutdown``); this file keeps them together because they share the
callback-error policy below.

The callback-error policy (docs/errors.md): an exception raised by a protocol's
``data_received`` or ``eof_received`` is logged once with its traceback, the connection
is aborted, and ``connection_lost`` is called once, with that exception. One raised by
``pause_writing`` or ``resume_writing`` is logged and the connection goes on; it never
escapes ``write()``. (A protocol that fails at the start -- its factory or its
``connection_made`` raising, on either side -- is checked in ``errors``; the argument
rules of ``sleep`` and ``call_later`` in ``timers``.)

Also: the same error types, errnos and texts on every backend, the TLS handshake
timeout on the server side, a clean TLS close reported as clean, a peer's reset in a
stream handler not logged as an error, and a graceful ``Session.shutdown``.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import polyloop

from .._registry import check
from ..referee import expect_logged
from ..tls import material
from ._util import Accepted, Recorder, bounded, transport_of


class _Boom(Exception):
    """Raised by a protocol callback on purpose."""


class _RaisesIn(Recorder):
    """A Recorder whose ``where`` callback raises ``_Boom`` (once)."""

    def __init__(self, session: polyloop.Session, where: str) -> None:
        super().__init__(session)
        self.where = where

    def _maybe(self, name: str) -> None:
        if self.where == name:
            self.where = ""
            raise _Boom(f"{name} failed on purpose")

    def connection_made(self, transport: polyloop.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._maybe("connection_made")

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._maybe("data_received")

    def eof_received(self) -> bool:
        super().eof_received()
        self._maybe("eof_received")
        return False

    def pause_writing(self) -> None:
        super().pause_writing()
        self._maybe("pause_writing")

    def resume_writing(self) -> None:
        super().resume_writing()
        self._maybe("resume_writing")


async def _callback_raises(session: polyloop.Session, where: str) -> _RaisesIn:
    accepted = Accepted(session, lambda: _RaisesIn(session, where))
    server = await session.listen_tcp(accepted, "127.0.0.1", 0)
    t, client = await session.connect_tcp(lambda: Recorder(session), "127.0.0.1", server.port)
    srv = await accepted.get(0)
    with expect_logged() as logged:
        t.write(b"x")
        if where == "eof_received":
            t.write_eof()
        rule = f"rule: a protocol whose {where} raises has its connection aborted"
        await bounded(
            session, srv.lost, 10,
            f"{rule}; connection_lost never came on the server protocol whose {where} raised",
        )  # fmt: skip
        await bounded(
            session, client.lost, 10,
            f"{rule}; the client never saw the connection end after the server's {where}"
            " raised",
        )  # fmt: skip
    assert logged, f"the exception from {where} was not logged"
    assert srv.events.count("lost") == 1, srv.events
    assert isinstance(srv.lost_exc, _Boom), (
        f"connection_lost got {srv.lost_exc!r}, not the exception {where} raised"
    )
    await server.aclose()
    return srv


@check("protocol", clauses=["protocol.callback_error.aborts"])
async def check_data_received_raises(session: polyloop.Session) -> None:
    """data_received raising: logged, the connection aborted, connection_lost(exc) with
    that exception, once."""
    await _callback_raises(session, "data_received")


@check("protocol", clauses=["protocol.callback_error.aborts"])
async def check_eof_received_raises(session: polyloop.Session) -> None:
    """eof_received raising: logged, the connection aborted, connection_lost(exc) with
    that exception, once."""
    await _callback_raises(session, "eof_received")


@check("flow", name="callbacks_raise", clauses=["protocol.flow_callback_error"])
async def check_flow_callbacks_raise(session: polyloop.Session) -> None:
    """pause_writing/resume_writing raising: logged; write() does not raise it; the
    connection goes on and every byte arrives."""
    accepted = Accepted(session)
    server = await session.listen_tcp(accepted, "127.0.0.1", 0)
    writer = _RaisesIn(session, "pause_writing")
    t, _ = await session.connect_tcp(lambda: writer, "127.0.0.1", server.port)
    srv = await accepted.get(0)
    transport_of(srv).pause_reading()
    t.set_write_buffer_limits(high=4096)
    total = 0
    with expect_logged() as logged:
        while "pause" not in writer.events:
            t.write(b"y" * 4096)  # must not raise _Boom
            total += 4096
            await session.sleep(0)
            assert total < 64 * 1024 * 1024, "pause_writing never came"
        writer.where = "resume_writing"
        transport_of(srv).resume_reading()
        await srv.wait_bytes(total)
    assert logged, "the exception from pause_writing was not logged"
    assert "lost" not in writer.events, f"the connection ended: {writer.events}"
    assert len(srv.data) == total, f"{len(srv.data)} of {total} bytes arrived"
    t.close()
    await server.aclose()


@check("tls", name="handshake_timeout", clauses=["tls.handshake_timeout"])
async def check_tls_handshake_timeout(session: polyloop.Session) -> None:
    """A TLS server drops a client that connects and never sends its ClientHello, after
    ssl_handshake_timeout; the protocol is never made."""
    made: list[Recorder] = []
    server = await session.listen_tcp(
        lambda: made.append(Recorder(session)) or made[-1], "127.0.0.1", 0,  # type: ignore[func-returns-value]
        ssl=material().server_context(), ssl_handshake_timeout=0.2,
    )  # fmt: skip
    # A plain client that never starts TLS: the server must drop it (EOF or reset), and
    # not before the timeout (by the wall clock: a server that drops at once is wrong too).
    start = time.monotonic()
    silent, watcher = await session.connect_tcp(
        lambda: Recorder(session), "127.0.0.1", server.port
    )
    await bounded(
        session, watcher.lost, 10,
        "the TLS server kept a client that never sent its ClientHello (rule: a TLS server"
        " drops a connection whose handshake is not done within ssl_handshake_timeout, here"
        " 0.2 s)",
    )  # fmt: skip
    took = time.monotonic() - start
    assert took >= 0.15, (
        f"the TLS server dropped the client after {took:.3f} s (rule: not before"
        " ssl_handshake_timeout, here 0.2 s)"
    )
    assert not made, "the protocol was made although no handshake happened"
    silent.abort()
    await server.aclose()


@check("tls", name="clean_close_is_clean", clauses=["tls.clean_close"])
async def check_tls_clean_close_is_clean(session: polyloop.Session) -> None:
    """A TLS client that closes cleanly (close_notify, then FIN): the server's
    connection_lost gets None, not BrokenPipeError."""
    tls = material()
    accepted = Accepted(session)
    server = await session.listen_tcp(accepted, "127.0.0.1", 0, ssl=tls.server_context())
    for i in range(5):
        t, _ = await session.connect_tcp(
            lambda: Recorder(session), "127.0.0.1", server.port,
            ssl=tls.client_context(), server_hostname="localhost",
        )  # fmt: skip
        srv = await accepted.get(i)
        t.write(b"bye")
        await srv.wait_bytes(3)
        t.close()
        exc = await bounded(
            session, srv.lost, 10,
            "the server's connection_lost never came after the TLS client closed cleanly"
            " (rule: the peer's close ends the connection: connection_lost once)",
        )  # fmt: skip
        assert exc is None, f"a clean TLS close reached the server as {exc!r}"
    await server.aclose()


@check("streams", clauses=["listener.serve"])
async def check_handler_reset_not_an_error(session: polyloop.Session) -> None:
    """A stream handler whose peer resets ends quietly: no ERROR record is logged."""
    listener = await polyloop.open_tcp_listener("127.0.0.1", 0)
    done = session.create_future()

    async def handler(stream: polyloop.Stream) -> None:
        try:
            while await stream.receive():
                pass
        finally:
            if not done.done():
                done.set_result(None)

    serving = session.spawn(listener.serve(handler))
    client = await polyloop.open_tcp_stream("127.0.0.1", listener.port)
    await client.send(b"hello")
    await session.sleep(0.01)
    client.abort()
    await bounded(
        session, done, 10,
        "the stream handler never ended after its peer reset the connection (rule: receive()"
        " raises the connection's error, or returns b'' at its end)",
    )  # fmt: skip
    await session.sleep(0.01)
    await listener.aclose()
    await serving


@check("session", clauses=["session.graceful_shutdown"])
async def check_graceful_shutdown(session: polyloop.Session) -> None:
    """Session.shutdown(grace): servers stop accepting; open connections are closed
    cleanly once the grace runs out (the peer reads EOF, not a reset)."""
    accepted = Accepted(session)
    server = await session.listen_tcp(accepted, "127.0.0.1", 0)
    # The client is a plain socket of its own: shutdown() closes the session's own.
    client = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    client.setblocking(False)
    try:
        await accepted.get(0)
        await session.shutdown(grace=0.05)
        assert not server.is_serving(), "the server still accepts after shutdown()"
        got: bytes | None = None
        for _ in range(1000):
            try:
                got = client.recv(100)
                break
            except BlockingIOError:
                await session.sleep(0.005)
            except ConnectionResetError:
                raise AssertionError("the client was reset, not closed cleanly") from None
        assert got == b"", f"the client read {got!r}, not EOF"
    finally:
        client.close()
    probe = socket.socket()
    try:
        probe.settimeout(1)
        refused = probe.connect_ex(("127.0.0.1", server.port))
    finally:
        probe.close()
    assert refused, "a connection was accepted after shutdown()"


@check("errors", name="texts", clauses=["errors.same_everywhere"])
async def check_error_texts(session: polyloop.Session) -> None:
    """The same type, errno and text on every backend: refused, aborted, address in use,
    write after write_eof, bad arguments (the table of docs/errors.md)."""
    import errno

    from ._util import refusing_port

    sock, port = refusing_port()
    try:
        await session.connect_tcp(lambda: Recorder(session), "127.0.0.1", port)
    except ConnectionRefusedError as exc:
        refused: BaseException = exc
    else:
        raise AssertionError("connect to a refusing port succeeded")
    finally:
        sock.close()
    _same(refused, ConnectionRefusedError, errno.ECONNREFUSED, "[Errno 111] Connection refused")

    accepted = Accepted(session)
    server = await session.listen_tcp(accepted, "127.0.0.1", 0)
    try:
        await session.listen_tcp(Recorder, "127.0.0.1", server.port)
    except OSError as exc:
        _same(exc, OSError, errno.EADDRINUSE, "[Errno 98] Address already in use")
    else:
        raise AssertionError("a second listen on a taken port succeeded")
    t, client = await session.connect_tcp(lambda: Recorder(session), "127.0.0.1", server.port)
    t.write_eof()
    try:
        t.write(b"late")
    except RuntimeError as exc:
        _same(exc, RuntimeError, None, "write() after write_eof()")
    else:
        raise AssertionError("write() after write_eof() did not raise")
    t.abort()
    lost = await bounded(
        session, client.lost, 10,
        "connection_lost never came after abort() (rule: abort() ends the connection:"
        " connection_lost(ConnectionAbortedError), soon)",
    )  # fmt: skip
    assert lost is not None
    _same(lost, ConnectionAbortedError, errno.ECONNABORTED, "[Errno 103] connection aborted")
    bad_args: list[tuple[Any, type[BaseException], str]] = [
        (lambda: session.connect_tcp(Recorder, "127.0.0.1", 70000), ValueError,
         "port must be in 1..65535, got 70000"),
        (lambda: session.connect_tcp(Recorder, 123, 80), TypeError,  # type: ignore[arg-type]
         "host must be a str, not int"),
        (lambda: session.listen_tcp(42, "127.0.0.1", 0), TypeError,  # type: ignore[arg-type]
         "protocol_factory must be callable, not int"),
    ]  # fmt: skip
    for call, kind, text in bad_args:
        coro = call()
        try:
            await coro
        except kind as exc:
            _same(exc, kind, None, text)
        else:
            raise AssertionError(f"{text!r} was not raised")
    await server.aclose()


def _same(exc: BaseException, kind: type[BaseException], code: int | None, text: str) -> None:
    assert type(exc) is kind, f"{type(exc).__name__} ({exc}), expected {kind.__name__}"
    if code is not None:
        assert getattr(exc, "errno", None) == code, (
            f"errno {getattr(exc, 'errno', None)} of {exc!r}"
        )
    assert str(exc) == text, f"the text is {str(exc)!r}, expected {text!r} (rule: one text)"
