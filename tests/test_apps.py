"""The conformance apps on every installed backend, and their sans-io parts on no loop.

Each app serves and exercises itself on one fresh backend (``run_app``); its status
must be "pass". The RESP parser, encoder and command table are plain classes and are
tested here directly, with a fake clock.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

import polyloop
from polyloop_conformance import APPS
from polyloop_conformance._registry import run_app
from polyloop_conformance.apps._resp import (
    NEED_DATA,
    CommandParser,
    ProtocolError,
    ReplyError,
    ReplyParser,
    Simple,
    Store,
    encode,
    parse_int,
    split_inline,
)


def _backend_params() -> list[Any]:
    params = []
    for info in polyloop.available_backends():
        if info.error is None:
            params.append(pytest.param(info.name, id=info.name))
        else:
            reason = f"backend {info.name} is not available: {info.error}"
            params.append(
                pytest.param(
                    info.name, id=f"{info.name}-unavailable", marks=pytest.mark.skip(reason)
                )
            )
    return params


@pytest.mark.parametrize("backend", _backend_params())
@pytest.mark.parametrize("app", sorted(APPS))
def test_app_passes(app: str, backend: str) -> None:
    result = run_app(APPS[app], lambda: polyloop.load_backend(backend), backend)
    assert result.status == "pass", result.detail


def test_every_app_of_the_issue_is_registered() -> None:
    wanted = {"echo", "echo-stream", "chat", "http", "ws", "resp", "udp", "tls", "proxy"}
    assert wanted <= set(APPS)
    assert APPS["udp"].udp and APPS["tls"].tls


# --- RESP, sans-io ---


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def commands(data: bytes, step: int | None = None) -> list[list[bytes]]:
    parser = CommandParser()
    out: list[list[bytes]] = []
    pieces = [data] if step is None else [data[i : i + step] for i in range(0, len(data), step)]
    for piece in pieces:
        parser.feed(piece)
        while (cmd := parser.next_command()) is not NEED_DATA:
            out.append(cmd)
    return out


def test_parser_multibulk_byte_by_byte() -> None:
    wire = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n"
    want = [[b"GET", b"k"], [b"SET", b"k", b"a\r\nb"]]
    assert commands(wire) == want
    assert commands(wire, step=1) == want


def test_parser_inline_and_empty_commands() -> None:
    wire = b"PING\r\n\r\n*0\r\nSET k \"a b\\x41\\n\"\nECHO 'it\\'s'\r\n"
    assert commands(wire) == [[b"PING"], [b"SET", b"k", b"a bA\n"], [b"ECHO", b"it's"]]


def test_parser_incomplete_returns_need_data() -> None:
    parser = CommandParser()
    parser.feed(b"*2\r\n$3\r\nGET\r\n$5\r\nab")
    assert parser.next_command() is NEED_DATA
    parser.feed(b"cde\r\n")
    assert parser.next_command() == [b"GET", b"abcde"]
    assert parser.next_command() is NEED_DATA


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (b"*x\r\n", "invalid multibulk length"),
        (b"*1\r\n+PING\r\n", "expected '$', got '+'"),
        (b"*1\r\n$-5\r\n", "invalid bulk length"),
        (b"*1\r\n$999999999999\r\n", "invalid bulk length"),
        (b'GET "unterminated\r\n', "unbalanced quotes in request"),
        (b"x" * (64 * 1024 + 1), "too big inline request"),
    ],
)
def test_parser_protocol_errors(wire: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=re.escape(message)):
        commands(wire)


def test_split_inline_quotes() -> None:
    assert split_inline(b"  a  'b c'  \"d\\te\" ") == [b"a", b"b c", b"d\te"]
    with pytest.raises(ProtocolError):
        split_inline(b'"a"b')


def test_parse_int_is_strict() -> None:
    assert parse_int(b"-42") == -42
    assert parse_int(b"9223372036854775807") == 2**63 - 1
    for bad in (b"", b"+1", b"01", b" 1", b"1.0", b"9223372036854775808", b"-0"):
        assert parse_int(bad) is None, bad


def test_encode_resp2_and_resp3() -> None:
    assert encode(Simple("OK")) == b"+OK\r\n"
    assert encode(ReplyError("ERR x\ny")) == b"-ERR x y\r\n"
    assert encode(-3) == b":-3\r\n"
    assert encode(b"a\r\nb") == b"$4\r\na\r\nb\r\n"
    assert encode([b"a", None]) == b"*2\r\n$1\r\na\r\n$-1\r\n"
    assert encode([b"a", None], proto=3) == b"*2\r\n$1\r\na\r\n_\r\n"
    assert encode({b"k": 1}, proto=3) == b"%1\r\n$1\r\nk\r\n:1\r\n"
    assert encode({b"k": 1}) == b"*2\r\n$1\r\nk\r\n:1\r\n"


def test_reply_parser_round_trip() -> None:
    values: list[Any] = [Simple("OK"), ReplyError("ERR no"), 7, b"x\r\n", None, [1, [b"a"], None]]
    wire = b"".join(encode(v) for v in values) + encode({b"proto": 3}, proto=3)
    parser = ReplyParser()
    got = []
    for i in range(len(wire)):
        parser.feed(wire[i : i + 1])
        while (value := parser.next_reply()) is not NEED_DATA:
            got.append(value)
    assert got == [*values, {b"proto": 3}]
    assert type(got[0]) is Simple


def run(store: Store, *args: str | bytes) -> Any:
    session = store.new_session()
    return store.execute(session, [a if isinstance(a, bytes) else a.encode() for a in args])


def test_store_commands_and_errors() -> None:
    store = Store(Clock())
    assert run(store, "set", "k", "v") == Simple("OK")
    assert run(store, "SET", "k", "w", "NX") is None
    assert run(store, "set", "k", "w", "xx", "get") == b"v"
    assert run(store, "get", "k") == b"w"
    assert run(store, "exists", "k", "k", "nope") == 2
    assert run(store, "incr", "n") == 1
    assert run(store, "incrby", "n", "41") == 42
    assert run(store, "decr", "n") == 41
    assert run(store, "incr", "k") == ReplyError("ERR value is not an integer or out of range")
    assert run(store, "mset", "a", "1", "b", "2") == Simple("OK")
    assert run(store, "mget", "a", "nope", "b") == [b"1", None, b"2"]
    assert run(store, "del", "a", "b", "nope") == 2
    assert run(store, "dbsize") == 2
    assert run(store, "get") == ReplyError("ERR wrong number of arguments for 'get' command")
    assert run(store, "mset", "a") == ReplyError(
        "ERR wrong number of arguments for 'mset' command"
    )
    assert run(store, "Frob", "x", "y") == ReplyError(
        "ERR unknown command 'Frob', with args beginning with: 'x' 'y' "
    )
    assert run(store, "set", "k", "v", "EX", "0") == ReplyError(
        "ERR invalid expire time in 'set' command"
    )
    assert run(store, "set", "k", "v", "EX", "1", "PX", "1") == ReplyError("ERR syntax error")
    assert run(store, "flushdb") == Simple("OK")
    assert run(store, "dbsize") == 0


def test_store_incr_overflow() -> None:
    store = Store(Clock())
    run(store, "set", "n", str(2**63 - 1))
    assert run(store, "incr", "n") == ReplyError("ERR increment or decrement would overflow")
    assert run(store, "get", "n") == str(2**63 - 1).encode()


def test_store_expiry_follows_the_clock() -> None:
    clock = Clock()
    store = Store(clock)
    run(store, "set", "px", "v", "PX", "1500")
    run(store, "set", "ex", "v", "EX", "10")
    run(store, "set", "keep", "v")
    assert run(store, "pttl", "px") == 1500
    assert run(store, "ttl", "px") == 2  # Redis rounds to the nearest second
    assert run(store, "ttl", "keep") == -1
    assert run(store, "ttl", "nope") == -2
    run(store, "incr", "n")
    assert run(store, "expire", "n", "5") == 1
    run(store, "incr", "n")  # INCR keeps the TTL
    assert run(store, "ttl", "n") == 5
    clock.now += 1.5
    assert run(store, "get", "px") is None
    assert run(store, "exists", "px") == 0
    assert run(store, "dbsize") == 3
    run(store, "set", "ex", "w")  # SET clears the TTL
    assert run(store, "ttl", "ex") == -1
    assert run(store, "expire", "ex", "0") == 1
    assert run(store, "get", "ex") is None
    assert run(store, "expire", "nope", "5") == 0


def test_store_hello_switches_protocol() -> None:
    store = Store(Clock())
    session = store.new_session()
    reply = store.execute(session, [b"HELLO", b"3"])
    assert reply[b"proto"] == 3 and session.proto == 3
    assert store.execute(session, [b"HELLO", b"4"]) == ReplyError(
        "NOPROTO unsupported protocol version"
    )
    assert session.proto == 3


# --- the HTTP server's sans-io part (apps/_http.py) ---


def _http_server(now: list[float]) -> Any:
    from polyloop_conformance.apps import _http

    return _http, _http.ServerConnection(lambda: now[0])


def _drain(server: Any) -> list[bytes]:
    writes = []
    while out := server.next_output():
        writes.append(out)
    return writes


def test_http_server_answers_each_small_request_in_one_write() -> None:
    """A GET is one write (head, body and end); pipelined requests come one write each,
    also after a sized body whose end adds no bytes; the next head is timed from the
    end of the last response."""
    now = [5.0]
    _http, server = _http_server(now)
    assert server.head_since == 5.0 and server.awaiting_head
    get = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    now[0] = 7.0
    server.receive_data(get + b"GET /bytes/3 HTTP/1.1\r\nHost: x\r\n\r\n" + get)
    writes = _drain(server)
    assert [w.split(b"\r\n", 1)[0] for w in writes[:2]] == [b"HTTP/1.1 200 "] * 2
    assert writes[0].endswith(b"\r\n\r\nhello, world\n") and b"x-request-count: 1" in writes[0]
    assert writes[2] == b"\x00\x01\x02", writes  # the body of /bytes/3, after its head
    assert writes[3].endswith(b"hello, world\n") and b"x-request-count: 3" in writes[3]
    assert len(writes) == 4 and server.end is None
    assert server.head_since == 7.0 and server.awaiting_head


def test_http_server_closes_and_fails_as_documented() -> None:
    """HTTP/1.0 closes after its response; a head not complete when the timer fires
    gets 408 and a lingering close; an idle connection a plain close."""
    _http, server = _http_server([0.0])
    server.receive_data(b"GET / HTTP/1.0\r\n\r\n")
    assert len(_drain(server)) == 1 and server.end == _http.CLOSE
    _http, server = _http_server([0.0])
    server.receive_data(b"GET / HTTP/1.1\r\nHo")
    assert _drain(server) == [] and server.awaiting_head
    reply = server.time_out("too slow")
    assert reply.startswith(b"HTTP/1.1 408 ") and reply.endswith(b"too slow\n")
    assert server.end == _http.LINGER
    _http, server = _http_server([0.0])
    assert server.time_out("too slow") == b"" and server.end == _http.CLOSE
