"""A RESP key-value store: a subset of Redis that real Redis clients can talk to.

What it proves: a pipelined request/response protocol with a sans-io parser
(``_resp.py``) runs the same on every backend. Commands: PING, ECHO, SET (EX, PX, NX,
XX, KEEPTTL, GET), GET, DEL, EXISTS, INCR (and INCRBY, DECR, DECRBY, which redis-py
uses), MGET, MSET, EXPIRE, TTL, PTTL, DBSIZE, FLUSHDB, plus what client libraries send
on connect (HELLO 2/3, CLIENT SETNAME/SETINFO, SELECT 0, COMMAND, QUIT). Inline
commands work (``redis-cli`` and ``nc`` style), errors carry Redis's wording, and expiry
runs on the backend's clock (``polyloop.time()``). The exercise checks replies
byte-for-byte where the wire format matters.

Limits (the server is one that people run, and some clients are hostile), in
``_resp.py``; past any of the first four the reply is ``-ERR Protocol error: ...``
naming the limit, and the connection is closed, as Redis does:

- an inline command: at most ``MAX_INLINE`` bytes (64 KiB, Redis's own limit);
- a multibulk command: at most ``MAX_ARGS`` arguments (1,048,576), each at most
  ``MAX_BULK`` bytes (8 MiB), and at most ``MAX_COMMAND`` bytes on the wire (32 MiB).
  A length line that claims more is refused at once, before anything is buffered;
- the store: at most ``MAX_MEMORY`` bytes (256 MiB; each key counts its length, its
  value's and 64 bytes); a write past it gets Redis's ``-OOM command not allowed when
  used memory > 'maxmemory'.`` and the connection stays open;
- replies are produced as the client reads them: while the transport is paused
  (``pause_writing``), the server neither reads nor runs the commands it has read, and a
  long array reply (``MGET``) is encoded element by element; so a client that pipelines
  GET commands for a large value and never reads holds one reply and the transport's buffer
  on the server. Commands are parsed incrementally, in time linear in their size.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import polyloop

from ._base import App, AppConfig, Running, register
from ._resp import (
    MAX_BULK,
    NEED_DATA,
    CommandParser,
    ProtocolError,
    ReplyError,
    ReplyParser,
    Simple,
    Store,
    encode,
    encode_pieces,
)
from ._util import aclose_within, linger_close, within

__all__ = ["RespClient", "RespProtocol", "exercise", "serve"]

#: Bytes of replies gathered into one write (and the size of a long reply's pieces).
WRITE_SIZE = 64 * 1024
#: Reply arrays longer than this are encoded as the client reads them.
LAZY_ITEMS = 64
#: After a protocol error: bytes discarded, and seconds waited, for the client's EOF.
DRAIN_LIMIT = 16 * 1024 * 1024
LINGER = 5.0


class RespProtocol(polyloop.Protocol):
    """One server connection: parse commands, run them, write the replies in order.

    Rule: commands run only while the transport takes writes. ``pause_writing`` stops
    reading *and* running the commands already read (their replies would pile up in
    our buffer); ``resume_writing`` runs them, then reads again. A reply array longer
    than ``LAZY_ITEMS`` is encoded element by element as the client reads it.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.session = store.new_session()
        self.parser = CommandParser()
        self.paused = False
        self.running = False
        self.eof = False
        self.lost = False
        #: The rest of a long reply being sent, piece by piece.
        self.reply: Iterator[bytes] | None = None
        self.draining = False
        self.drained = 0
        self.linger: polyloop.Handle | None = None

    def connection_made(self, transport: polyloop.Transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.draining:
            self.drained += len(data)
            if self.drained > DRAIN_LIMIT:
                self.transport.abort()
            return
        self.parser.feed(data)
        self._run()

    def eof_received(self) -> bool:
        if self.draining:
            self.transport.close()
            return True
        # Answer every command read so far, then close (``_run``).
        self.eof = True
        self._run()
        return True

    def pause_writing(self) -> None:
        # A client that pipelines without reading: stop reading its commands, and stop
        # running those already read (_run checks `paused` after every write).
        self.paused = True
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.paused = False
        self._run()
        if not self.paused:
            self.transport.resume_reading()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = True
        self.reply = None
        if self.linger is not None:
            self.linger.cancel()

    def _run(self) -> None:
        """Run commands and write their replies until paused, out of commands, or done."""
        if self.running or self.draining:  # never re-enter; nothing runs after an error
            return
        self.running = True
        try:
            self._run_commands()
        finally:
            self.running = False

    def _run_commands(self) -> None:
        # The replies of this run, joined into one write (no bytearray: the common read
        # holds one command, whose reply goes out as the bytes ``encode`` made).
        out: list[bytes] = []
        size = 0
        idle = False  # every complete command read is answered
        transport, session, parser = self.transport, self.session, self.parser
        # `lost`, not transport.is_closing() per command: we close only by returning
        # here (close, _linger), so the transport closes under us only when lost.
        while not (self.paused or self.lost):
            if self.reply is not None:
                piece = next(self.reply, None)
                if piece is None:
                    self.reply = None
                    continue
            elif session.quit:
                break
            else:
                try:
                    cmd = parser.next_command()
                except ProtocolError as exc:
                    out.append(encode(ReplyError(f"ERR Protocol error: {exc}")))
                    transport.write(b"".join(out))
                    self._linger()
                    return
                if cmd is NEED_DATA:
                    idle = True
                    break
                value = self.store.execute(session, cmd)
                if isinstance(value, list) and len(value) > LAZY_ITEMS:
                    self.reply = encode_pieces(value, session.proto)
                    continue
                piece = encode(value, session.proto)
            out.append(piece)
            size += len(piece)
            # One write per read when the replies are small: a pipeline of N commands
            # costs one syscall, not N; a write per WRITE_SIZE bytes when they are not.
            if size >= WRITE_SIZE:
                transport.write(out[0] if len(out) == 1 else b"".join(out))  # may pause
                out, size = [], 0
        if out:
            transport.write(out[0] if len(out) == 1 else b"".join(out))
        if session.quit or (self.eof and idle):
            transport.close()

    def _linger(self) -> None:
        """Close after a protocol error in a way the client can read the error.

        Why: closing with unread bytes in the kernel (the rest of an oversized argument
        the client is still sending) makes it send a reset, and the client may lose the
        error. So half-close and discard what still comes, until the client's EOF,
        ``DRAIN_LIMIT`` bytes, or ``LINGER`` seconds; then close (or abort).
        """
        self.draining = True
        self.reply = None
        self.linger = linger_close(self.transport, LINGER)


async def serve(config: AppConfig) -> Running:
    """Start the store; expiry uses the running backend's clock."""
    store = Store(polyloop.current_backend().time)
    server = await polyloop.listen_tcp(lambda: RespProtocol(store), config.host, config.port)
    return Running((config.host, server.port), server.aclose)


# --- the client ---


class RespClient:
    """A minimal RESP client over a polyloop Stream; error replies come back as values."""

    def __init__(self, stream: polyloop.Stream) -> None:
        self.stream = stream
        self.parser = ReplyParser()

    @classmethod
    async def connect(cls, host: str, port: int) -> RespClient:
        """Open a connection to ``host:port``."""
        return cls(await polyloop.open_tcp_stream(host, port))

    async def call(self, *args: bytes | str | int) -> Any:
        """Send one command and return its reply."""
        return (await self.pipeline([args]))[0]

    async def pipeline(self, commands: Sequence[Sequence[bytes | str | int]]) -> list[Any]:
        """Send every command in one write, then read as many replies."""
        await self.stream.send(b"".join(self.pack(c) for c in commands))
        return [await self.reply() for _ in commands]

    async def send_raw(self, data: bytes) -> None:
        """Send bytes as they are (inline commands, broken input)."""
        await self.stream.send(data)

    async def reply(self) -> Any:
        """The next reply."""
        while (value := self.parser.next_reply()) is NEED_DATA:
            data = await self.stream.receive(1 << 20)
            assert data, "the server closed the connection before replying"
            self.parser.feed(data)
        return value

    @staticmethod
    def pack(args: Sequence[bytes | str | int]) -> bytes:
        """A command as a RESP array of bulk strings."""
        parts = [a if isinstance(a, bytes) else str(a).encode() for a in args]
        return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)

    async def aclose(self) -> None:
        """Close the connection."""
        await aclose_within(self.stream)


def _eq(got: Any, want: Any, what: str) -> None:
    assert got == want and type(got) is type(want), f"{what}: got {got!r}, expected {want!r}"


OK = Simple("OK")
NOT_INT = ReplyError("ERR value is not an integer or out of range")


async def exercise(config: AppConfig, address: tuple[str, int]) -> None:
    """Every command, errors, expiry, pipelining, inline commands, RESP3, protocol errors."""
    await within(15, _exercise(address), "resp exercise")


async def _exercise(address: tuple[str, int]) -> None:
    c = await RespClient.connect(*address)
    try:
        await _commands(c)
        await _expiry(c)
        await _pipelining_and_inline(c)
    finally:
        await c.aclose()
    await _resp3_and_errors(address)


async def _commands(c: RespClient) -> None:
    _eq(await c.call("FLUSHDB"), OK, "FLUSHDB")
    _eq(await c.call("PING"), Simple("PONG"), "PING")
    _eq(await c.call("PING", "hi"), b"hi", "PING hi")
    _eq(await c.call("ECHO", b"a\r\nb\x00"), b"a\r\nb\x00", "ECHO (binary-safe)")
    _eq(await c.call("SET", "k", "v"), OK, "SET")
    _eq(await c.call("GET", "k"), b"v", "GET")
    _eq(await c.call("GET", "missing"), None, "GET missing")
    _eq(await c.call("SET", "k", "w", "NX"), None, "SET NX on an existing key")
    _eq(await c.call("SET", "k", "w", "XX", "GET"), b"v", "SET XX GET")
    big = bytes(range(256)) * 4096  # 1 MiB
    _eq(await c.call("SET", "big", big), OK, "SET 1 MiB")
    _eq(await c.call("GET", "big"), big, "GET 1 MiB")
    _eq(await c.call("EXISTS", "k", "k", "missing"), 2, "EXISTS k k missing")
    _eq(await c.call("DEL", "k", "missing", "big"), 2, "DEL")
    _eq(await c.call("EXISTS", "k"), 0, "EXISTS after DEL")
    for n in (1, 2, 3):
        _eq(await c.call("INCR", "counter"), n, f"INCR #{n}")
    _eq(await c.call("SET", "text", "abc"), OK, "SET text")
    _eq(
        await c.call("INCR", "text"),
        NOT_INT,
        "INCR on text",
    )
    _eq(await c.call("SET", "max", str(2**63 - 1)), OK, "SET max")
    _eq(
        await c.call("INCR", "max"),
        ReplyError("ERR increment or decrement would overflow"),
        "INCR overflow",
    )
    _eq(await c.call("MSET", "a", "1", "b", "2"), OK, "MSET")
    _eq(await c.call("MGET", "a", "missing", "b"), [b"1", None, b"2"], "MGET")
    _eq(await c.call("DBSIZE"), 5, "DBSIZE")  # counter, text, max, a, b
    _eq(await c.call("FLUSHDB"), OK, "FLUSHDB")
    _eq(await c.call("DBSIZE"), 0, "DBSIZE after FLUSHDB")
    _eq(
        await c.call("NOSUCH", "x", "y"),
        ReplyError("ERR unknown command 'NOSUCH', with args beginning with: 'x' 'y' "),
        "unknown command",
    )
    _eq(
        await c.call("GET"),
        ReplyError("ERR wrong number of arguments for 'get' command"),
        "GET arity",
    )
    _eq(
        await c.call("MSET", "a"),
        ReplyError("ERR wrong number of arguments for 'mset' command"),
        "MSET a",
    )
    _eq(
        await c.call("MSET", "a", "1", "b"),
        ReplyError("ERR wrong number of arguments for 'mset' command"),
        "MSET arity",
    )
    _eq(
        await c.call("SET", "k", "v", "EX", "x"),
        NOT_INT,
        "SET EX x",
    )
    _eq(
        await c.call("SET", "k", "v", "EX", "0"),
        ReplyError("ERR invalid expire time in 'set' command"),
        "SET EX 0",
    )
    _eq(await c.call("SET", "k", "v", "BOGUS"), ReplyError("ERR syntax error"), "SET BOGUS")


async def _expiry(c: RespClient) -> None:
    _eq(await c.call("TTL", "missing"), -2, "TTL of a missing key")
    _eq(await c.call("SET", "keep", "v"), OK, "SET keep")
    _eq(await c.call("TTL", "keep"), -1, "TTL without expiry")
    _eq(await c.call("SET", "ex", "v", "EX", "100"), OK, "SET EX 100")
    ttl = await c.call("TTL", "ex")
    assert isinstance(ttl, int) and 98 <= ttl <= 100, f"TTL after EX 100: {ttl!r}"
    _eq(await c.call("SET", "px", "v", "PX", "5000"), OK, "SET PX 5000")
    pttl = await c.call("PTTL", "px")
    assert isinstance(pttl, int) and 0 < pttl <= 5000, f"PTTL after PX 5000: {pttl!r}"
    _eq(await c.call("EXPIRE", "keep", "50"), 1, "EXPIRE")
    ttl = await c.call("TTL", "keep")
    assert isinstance(ttl, int) and 48 <= ttl <= 50, f"TTL after EXPIRE 50: {ttl!r}"
    _eq(await c.call("EXPIRE", "missing", "50"), 0, "EXPIRE of a missing key")
    _eq(await c.call("EXPIRE", "keep", "x"), NOT_INT, "EXPIRE x")
    _eq(await c.call("SET", "keep", "w"), OK, "SET clears the TTL")
    _eq(await c.call("TTL", "keep"), -1, "TTL after SET")
    _eq(await c.call("EXPIRE", "keep", "0"), 1, "EXPIRE 0")
    _eq(await c.call("GET", "keep"), None, "GET after EXPIRE 0")
    # A short PX: the key must vanish on its own (polled, not slept on, to stay quick).
    _eq(await c.call("SET", "short", "v", "PX", "30"), OK, "SET PX 30")
    for _ in range(300):
        if await c.call("GET", "short") is None:
            break
        await polyloop.sleep(0.01)
    else:
        raise AssertionError("a key SET with PX 30 still exists after 3 s")
    _eq(await c.call("EXISTS", "short"), 0, "EXISTS after expiry")
    _eq(await c.call("TTL", "short"), -2, "TTL after expiry")
    _eq(await c.call("DBSIZE"), 2, "DBSIZE counts live keys only")  # ex, px


async def _pipelining_and_inline(c: RespClient) -> None:
    cmds: list[list[Any]] = []
    for i in range(300):
        cmds += [["SET", f"p{i}", i], ["INCR", f"p{i}"], ["GET", f"p{i}"]]
    replies = await c.pipeline(cmds)
    want = [x for i in range(300) for x in (OK, i + 1, b"%d" % (i + 1))]
    _eq(replies, want, "300 pipelined SET/INCR/GET triples")
    keys = [f"p{i}" for i in range(300)]
    want = [b"%d" % (i + 1) for i in range(300)]
    _eq(await c.call("MGET", *keys, "nope"), [*want, None], "MGET of 301 keys (sent lazily)")

    await c.send_raw(b"PING\r\n")
    _eq(await c.reply(), Simple("PONG"), "inline PING")
    await c.send_raw(b"SET inline \"hello world\\n\" \r\nGET inline\nECHO 'it\\'s'\r\n")
    _eq(await c.reply(), OK, "inline SET with a quoted argument")
    _eq(await c.reply(), b"hello world\n", "inline GET")
    _eq(await c.reply(), b"it's", "inline ECHO with an escaped quote")


async def _resp3_and_errors(address: tuple[str, int]) -> None:
    c = await RespClient.connect(*address)
    try:
        hello = await c.call("HELLO", "3")
        assert isinstance(hello, dict) and hello.get(b"proto") == 3, f"HELLO 3 gave {hello!r}"
        await c.send_raw(c.pack(["GET", "missing"]))
        raw = await within(5, c.stream.receive(), "RESP3 null")
        _eq(raw, b"_\r\n", "a RESP3 null")
    finally:
        await c.aclose()

    c = await RespClient.connect(*address)
    try:
        await c.send_raw(b"*1\r\n$4\r\nPING\r\n*x\r\n")
        _eq(await c.reply(), Simple("PONG"), "the command before a protocol error")
        _eq(await c.reply(), ReplyError("ERR Protocol error: invalid multibulk length"), "*x")
        rest = await within(5, c.stream.receive(), "close after a protocol error")
        assert rest == b"", f"expected EOF after a protocol error, got {rest[:40]!r}"
    finally:
        await c.aclose()

    c = await RespClient.connect(*address)
    try:
        # A length over the limit is refused at once, before its bytes are sent.
        await c.send_raw(b"*2\r\n$3\r\nGET\r\n$%d\r\n" % (MAX_BULK + 1))
        error = await c.reply()
        want = f"ERR Protocol error: invalid bulk length {MAX_BULK + 1} (the limit is {MAX_BULK}"
        assert isinstance(error, ReplyError) and error.message.startswith(want), error
        rest = await within(5, c.stream.receive(), "close after an oversized bulk length")
        assert rest == b"", f"expected EOF after a protocol error, got {rest[:40]!r}"
    finally:
        await c.aclose()


APP = register(
    App(
        "resp",
        "RESP store (Redis subset): commands, expiry, pipelining, inline, RESP3, errors",
        serve,
        exercise,
    )
)
