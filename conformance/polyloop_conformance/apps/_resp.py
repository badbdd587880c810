"""The RESP key-value store, sans-io: parsers, encoder and commands, with no loop.

Rule: nothing here does I/O or knows a backend. ``CommandParser`` turns bytes into
commands, ``Store.execute`` turns a command into a reply value, ``encode`` turns the
value into bytes; ``ReplyParser`` is the client's half. The clock is injected, so
that expiry follows the backend's clock in the server and a fake one in unit tests.

Replies copy Redis 7's wording, since clients such as redis-py match on it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = [
    "NEED_DATA",
    "CommandParser",
    "ProtocolError",
    "ReplyError",
    "ReplyParser",
    "Session",
    "Simple",
    "Store",
    "encode",
    "encode_pieces",
]

#: Bytes of one inline command (Redis's limit too).
MAX_INLINE = 64 * 1024
#: Bytes of one argument (a bulk string) of a command.
MAX_BULK = 8 * 1024 * 1024
#: Arguments in one command (Redis's old limit).
MAX_ARGS = 1024 * 1024
#: Bytes of one multibulk command on the wire, its length lines included.
MAX_COMMAND = 32 * 1024 * 1024
#: Bytes the store may hold: each key counts its length, its value's and ``ENTRY_COST``.
MAX_MEMORY = 256 * 1024 * 1024
ENTRY_COST = 64
INT64 = (-(2**63), 2**63 - 1)


class ProtocolError(Exception):
    """The client broke RESP; the server answers ``-ERR Protocol error: ...`` and closes."""


class Simple(str):
    """A simple-string reply (``+OK``), as opposed to a bulk string."""


@dataclass(frozen=True)
class ReplyError:
    """An error reply (``-ERR ...``): a value, not an exception, so checks can compare it."""

    message: str


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


#: Returned by the parsers when the buffer holds no complete item yet.
NEED_DATA: Any = _NeedData()


class _Incomplete(Exception):
    pass


def parse_int(data: bytes) -> int | None:
    """Redis's strict integer syntax (``string2ll``): no sign but '-', no leading zeros."""
    if not data or len(data) > 20:
        return None
    digits = data[1:] if data[:1] == b"-" else data
    if not digits.isdigit() or (digits[:1] == b"0" and len(data) > 1):
        return None
    value = int(data)
    return value if INT64[0] <= value <= INT64[1] else None


def split_inline(line: bytes) -> list[bytes]:
    """Split an inline command like Redis's ``sdssplitargs`` (quotes, ``\\xHH`` escapes)."""
    args: list[bytes] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i : i + 1].isspace():
            i += 1
        if i >= n:
            return args
        current = bytearray()
        quote = line[i : i + 1] if line[i : i + 1] in (b'"', b"'") else b""
        if quote:
            i += 1
        while True:
            if i >= n:
                if quote:
                    raise ProtocolError("unbalanced quotes in request")
                break
            c = line[i : i + 1]
            if quote == b'"' and c == b"\\" and i + 1 < n:
                nxt = line[i + 1 : i + 2]
                hexa = line[i + 2 : i + 4]
                if (
                    nxt == b"x"
                    and len(hexa) == 2
                    and all(h in b"0123456789abcdefABCDEF" for h in hexa)
                ):
                    current.append(int(hexa, 16))
                    i += 4
                    continue
                escapes = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"a": b"\a"}
                current += escapes.get(nxt, nxt)
                i += 2
                continue
            if quote == b"'" and c == b"\\" and line[i + 1 : i + 2] == b"'":
                current += b"'"
                i += 2
                continue
            if quote and c == quote:
                i += 1
                if i < n and not line[i : i + 1].isspace():
                    raise ProtocolError("unbalanced quotes in request")
                break
            if not quote and c.isspace():
                break
            current += c
            i += 1
        args.append(bytes(current))


class CommandParser:
    """Split a byte stream into commands: RESP arrays of bulk strings, or inline lines.

    ``feed(data)``, then call ``next_command()`` until it returns ``NEED_DATA``. An empty
    list is never returned (empty commands are skipped, as Redis does). Raises
    ``ProtocolError`` for input Redis would reject, and for input past the limits
    (``MAX_INLINE``, ``MAX_ARGS``, ``MAX_BULK``, ``MAX_COMMAND``), as soon as a length
    line claims too much: nothing is buffered for a claim that will be refused.

    Rule: every byte is examined once. A multibulk command is parsed argument by
    argument as its bytes arrive, each complete argument leaves the buffer at once, and
    the parser keeps its place (``_args``, ``_left``, ``_bulk``) between reads; so what
    it holds unparsed (``buffered``) is at most one unfinished line or argument, and a
    command of 400,000 arguments arriving in 1,000 reads costs what it costs in one.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._args: list[bytes] | None = None  # the multibulk command being read
        self._left = 0  # its arguments still to come
        self._bulk = -1  # the length of the argument being read, once its $-line came
        self._size = 0  # its bytes on the wire so far (MAX_COMMAND)
        self._scanned = 0  # leading bytes of an inline command known to hold no newline

    @property
    def buffered(self) -> int:
        """Bytes received and not parsed yet (at most one unfinished line or argument,
        plus what the last ``feed`` brought)."""
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        self._buf += data

    def next_command(self) -> list[bytes] | Any:
        """The next complete command, or ``NEED_DATA``."""
        while True:
            if self._args is None:
                if not self._buf:
                    return NEED_DATA
                if self._buf[0] != 0x2A:  # not "*": an inline command
                    cmd = self._inline()
                    if cmd is NEED_DATA or cmd:
                        return cmd
                    continue
                if not self._start_multibulk():
                    return NEED_DATA
                continue
            return self._arguments()

    def _line(self, start: int, limit: int, what: str) -> bytes | None:
        """The line at ``start`` (up to CRLF, at most ``limit`` bytes), or None if it is
        not complete yet; ``ProtocolError(what)`` if it is already too long."""
        end = self._buf.find(b"\r\n", start, start + limit + 2)
        if end < 0:
            if len(self._buf) - start > limit:
                raise ProtocolError(what)
            return None
        return bytes(self._buf[start:end])

    def _inline(self) -> list[bytes] | Any:
        end = self._buf.find(b"\n", self._scanned, MAX_INLINE + 1)
        if end < 0:
            if len(self._buf) > MAX_INLINE:
                raise ProtocolError(f"too big inline request (the limit is {MAX_INLINE} bytes)")
            self._scanned = len(self._buf)
            return NEED_DATA
        line = bytes(self._buf[:end]).rstrip(b"\r")
        del self._buf[: end + 1]
        self._scanned = 0
        return split_inline(line)

    def _start_multibulk(self) -> bool:
        head = self._line(1, 32, "invalid multibulk length")
        if head is None:
            return False
        count = parse_int(head)
        if count is None:
            raise ProtocolError("invalid multibulk length")
        if count > MAX_ARGS:
            raise ProtocolError(
                f"invalid multibulk length {count} (the limit is {MAX_ARGS} arguments)"
            )
        del self._buf[: len(head) + 3]
        if count > 0:  # "*0" and "*-1" are empty commands: skipped
            self._args, self._left, self._bulk, self._size = [], count, -1, len(head) + 3
        return True

    def _arguments(self) -> list[bytes] | Any:
        """Take every complete argument from the buffer; the command once it is whole."""
        assert self._args is not None
        buf, pos = self._buf, 0
        try:
            while self._left:
                if self._bulk < 0:
                    if pos >= len(buf):
                        return NEED_DATA
                    if buf[pos] != 0x24:  # "$"
                        raise ProtocolError(f"expected '$', got '{chr(buf[pos])}'")
                    line = self._line(pos + 1, 32, "invalid bulk length")
                    if line is None:
                        return NEED_DATA
                    size = parse_int(line)
                    if size is None or size < 0:
                        raise ProtocolError("invalid bulk length")
                    if size > MAX_BULK:
                        raise ProtocolError(
                            f"invalid bulk length {size} (the limit is {MAX_BULK} bytes)"
                        )
                    pos += len(line) + 3
                    self._size += len(line) + 3 + size + 2
                    if self._size > MAX_COMMAND:
                        raise ProtocolError(f"command too big (the limit is {MAX_COMMAND} bytes)")
                    self._bulk = size
                if len(buf) - pos < self._bulk + 2:
                    return NEED_DATA
                self._args.append(bytes(buf[pos : pos + self._bulk]))
                pos += self._bulk + 2
                self._bulk = -1
                self._left -= 1
        finally:
            # Deleting from the front of a bytearray only moves its start: O(1).
            del buf[:pos]
        args, self._args = self._args, None
        return args


def encode(value: Any, proto: int = 2) -> bytes:
    """Encode a reply value: ``Simple``, ``ReplyError``, int, bytes, None, list, dict."""
    if isinstance(value, Simple):
        return b"+%s\r\n" % value.encode()
    if isinstance(value, ReplyError):
        return b"-%s\r\n" % value.message.replace("\r", " ").replace("\n", " ").encode()
    if isinstance(value, bool):
        raise TypeError("no booleans in this subset")
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    if value is None:
        return b"_\r\n" if proto == 3 else b"$-1\r\n"
    if isinstance(value, list):
        return b"*%d\r\n" % len(value) + b"".join(encode(v, proto) for v in value)
    if isinstance(value, dict):
        if proto == 3:
            items = b"".join(encode(k, proto) + encode(v, proto) for k, v in value.items())
            return b"%%%d\r\n%s" % (len(value), items)
        return encode([x for kv in value.items() for x in kv], proto)
    raise TypeError(f"cannot encode {type(value).__name__}")


def encode_pieces(value: Any, proto: int = 2) -> Iterator[bytes]:
    """``encode(value)`` in pieces: an array element by element, so that a server can
    produce a large reply (``MGET`` of a million keys) as the client reads it."""
    if isinstance(value, list):
        yield b"*%d\r\n" % len(value)
        for item in value:
            yield encode(item, proto)
    else:
        yield encode(value, proto)


class ReplyParser:
    """The client's half: bytes in, reply values out (RESP2 and the RESP3 we send)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        self._buf += data

    def next_reply(self) -> Any:
        """The next complete reply value, or ``NEED_DATA``."""
        try:
            value, pos = self._parse(0)
        except _Incomplete:
            return NEED_DATA
        del self._buf[:pos]
        return value

    def _parse(self, pos: int) -> tuple[Any, int]:
        end = self._buf.find(b"\r\n", pos)
        if end < 0:
            raise _Incomplete
        kind = bytes(self._buf[pos : pos + 1])
        line, after = bytes(self._buf[pos + 1 : end]), end + 2
        if kind == b"+":
            return Simple(line.decode()), after
        if kind == b"-":
            return ReplyError(line.decode()), after
        if kind == b":":
            return int(line), after
        if kind == b"_":
            return None, after
        if kind == b"$":
            n = int(line)
            if n < 0:
                return None, after
            if len(self._buf) < after + n + 2:
                raise _Incomplete
            return bytes(self._buf[after : after + n]), after + n + 2
        if kind in (b"*", b"%"):
            n = int(line)
            if n < 0:
                return None, after
            items = []
            for _ in range(n * (2 if kind == b"%" else 1)):
                item, after = self._parse(after)
                items.append(item)
            if kind == b"%":
                return dict(zip(items[::2], items[1::2], strict=True)), after
            return items, after
        raise ValueError(f"unexpected RESP type byte {kind!r}")


@dataclass
class Session:
    """Per-connection state: the protocol version chosen by HELLO, the client's id."""

    id: int
    proto: int = 2
    name: bytes | None = None
    quit: bool = False


OK = Simple("OK")
NOT_INT = ReplyError("ERR value is not an integer or out of range")
SYNTAX = ReplyError("ERR syntax error")
OOM = ReplyError("OOM command not allowed when used memory > 'maxmemory'.")

Handler = Callable[["Store", Session, list[bytes]], Any]
#: name -> (handler, arity). Arity as Redis states it: counts the command name; a
#: negative number means "at least that many".
COMMANDS: dict[bytes, tuple[Handler, int]] = {}


def command(name: str, arity: int) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        COMMANDS[name.encode()] = (fn, arity)
        return fn

    return register


class Store:
    """The key space: bytes to bytes, with optional expiry times on ``clock``.

    ``used`` counts what the keys hold (each key: its length, its value's and
    ``ENTRY_COST``); a write that would take it past ``MAX_MEMORY`` is refused with
    Redis's ``OOM`` error (``fits``), as Redis does under ``maxmemory`` with no eviction.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.data: dict[bytes, bytes] = {}
        self.expires: dict[bytes, float] = {}
        self.sessions = 0
        self.used = 0

    def new_session(self) -> Session:
        """State for a new connection."""
        self.sessions += 1
        return Session(self.sessions)

    def get(self, key: bytes) -> bytes | None:
        """The live value of ``key`` (an expired key is deleted on access)."""
        when = self.expires.get(key)
        if when is not None and when <= self.clock():
            self.delete(key)
        return self.data.get(key)

    def delete(self, key: bytes) -> bool:
        """Remove ``key``; whether it existed (expired or not)."""
        self.expires.pop(key, None)
        old = self.data.pop(key, None)
        if old is None:
            return False
        self.used -= len(key) + len(old) + ENTRY_COST
        return True

    def clear(self) -> None:
        """Remove every key."""
        self.data.clear()
        self.expires.clear()
        self.used = 0

    def fits(self, items: dict[bytes, bytes]) -> bool:
        """Whether setting every ``key: value`` of ``items`` keeps ``used`` within
        ``MAX_MEMORY``."""
        after = self.used
        for key, value in items.items():
            old = self.data.get(key)
            if old is not None:
                after -= len(key) + len(old) + ENTRY_COST
            after += len(key) + len(value) + ENTRY_COST
        return after <= MAX_MEMORY

    def put(
        self, key: bytes, value: bytes, expire_at: float | None, keep_ttl: bool = False
    ) -> None:
        """Set ``key``; clears its expiry unless ``keep_ttl`` or a new one is given."""
        old = self.data.get(key)
        if old is not None:
            self.used -= len(key) + len(old) + ENTRY_COST
        self.data[key] = value
        self.used += len(key) + len(value) + ENTRY_COST
        if expire_at is not None:
            self.expires[key] = expire_at
        elif not keep_ttl:
            self.expires.pop(key, None)

    def execute(self, session: Session, args: list[bytes]) -> Any:
        """Run one command and return its reply value."""
        name = args[0].lower()
        entry = COMMANDS.get(name)
        if entry is None:
            return ReplyError(unknown_command(args))
        fn, arity = entry
        if (arity > 0 and len(args) != arity) or (arity < 0 and len(args) < -arity):
            return ReplyError(f"ERR wrong number of arguments for '{name.decode()}' command")
        return fn(self, session, args)


def unknown_command(args: list[bytes]) -> str:
    """Redis 7's message, quirks included (each argument quoted, trailing space)."""
    listed = ""
    for arg in args[1:]:
        if len(listed) >= 128:
            break
        text = arg.decode("utf-8", "replace")[: 128 - len(listed)]
        listed += f"'{text}' "
    name = args[0].decode("utf-8", "replace")[:128]
    return f"ERR unknown command '{name}', with args beginning with: {listed}"


def _ms_left(store: Store, key: bytes) -> int:
    if store.get(key) is None:
        return -2
    when = store.expires.get(key)
    if when is None:
        return -1
    return max(0, round((when - store.clock()) * 1000))


@command("ping", -1)
def _ping(store: Store, s: Session, args: list[bytes]) -> Any:
    if len(args) > 2:
        return ReplyError("ERR wrong number of arguments for 'ping' command")
    return args[1] if len(args) == 2 else Simple("PONG")


@command("echo", 2)
def _echo(store: Store, s: Session, args: list[bytes]) -> Any:
    return args[1]


@command("set", -3)
def _set(store: Store, s: Session, args: list[bytes]) -> Any:
    key, value = args[1], args[2]
    cond: bytes | None = None
    expire_at: float | None = None
    keep_ttl = get = False
    i = 3
    while i < len(args):
        opt = args[i].upper()
        if opt in (b"NX", b"XX") and cond is None:
            cond = opt
        elif opt == b"GET" and not get:
            get = True
        elif opt == b"KEEPTTL" and expire_at is None and not keep_ttl:
            keep_ttl = True
        elif opt in (b"EX", b"PX") and expire_at is None and not keep_ttl and i + 1 < len(args):
            amount = parse_int(args[i + 1])
            if amount is None:
                return NOT_INT
            if amount <= 0:
                return ReplyError("ERR invalid expire time in 'set' command")
            expire_at = store.clock() + (amount if opt == b"EX" else amount / 1000)
            i += 1
        else:
            return SYNTAX
        i += 1
    old = store.get(key)
    if (cond == b"NX" and old is not None) or (cond == b"XX" and old is None):
        return old if get else None
    if not store.fits({key: value}):
        return OOM
    store.put(key, value, expire_at, keep_ttl)
    return old if get else OK


@command("get", 2)
def _get(store: Store, s: Session, args: list[bytes]) -> Any:
    return store.get(args[1])


@command("del", -2)
def _del(store: Store, s: Session, args: list[bytes]) -> Any:
    return sum(store.get(k) is not None and store.delete(k) for k in args[1:])


@command("exists", -2)
def _exists(store: Store, s: Session, args: list[bytes]) -> Any:
    return sum(store.get(k) is not None for k in args[1:])


def _add(store: Store, key: bytes, delta: bytes | int) -> Any:
    amount = delta if isinstance(delta, int) else parse_int(delta)
    old = store.get(key)
    value = 0 if old is None else parse_int(old)
    if value is None or amount is None:
        return NOT_INT
    if not INT64[0] <= value + amount <= INT64[1]:
        return ReplyError("ERR increment or decrement would overflow")
    if not store.fits({key: b"%d" % (value + amount)}):
        return OOM
    store.put(key, b"%d" % (value + amount), None, keep_ttl=True)
    return value + amount


@command("incr", 2)
def _incr(store: Store, s: Session, args: list[bytes]) -> Any:
    return _add(store, args[1], 1)


@command("decr", 2)
def _decr(store: Store, s: Session, args: list[bytes]) -> Any:
    return _add(store, args[1], -1)


@command("incrby", 3)
def _incrby(store: Store, s: Session, args: list[bytes]) -> Any:
    # redis-py's incr() sends INCRBY, so it belongs to the subset in practice.
    return _add(store, args[1], args[2])


@command("decrby", 3)
def _decrby(store: Store, s: Session, args: list[bytes]) -> Any:
    amount = parse_int(args[2])
    return NOT_INT if amount is None or amount == INT64[0] else _add(store, args[1], -amount)


@command("mget", -2)
def _mget(store: Store, s: Session, args: list[bytes]) -> Any:
    return [store.get(k) for k in args[1:]]


@command("mset", -3)
def _mset(store: Store, s: Session, args: list[bytes]) -> Any:
    if len(args) % 2 == 0:
        return ReplyError("ERR wrong number of arguments for 'mset' command")
    if not store.fits(dict(zip(args[1::2], args[2::2], strict=True))):
        return OOM
    for i in range(1, len(args), 2):
        store.put(args[i], args[i + 1], None)
    return OK


@command("expire", -3)
def _expire(store: Store, s: Session, args: list[bytes]) -> Any:
    seconds = parse_int(args[2])
    if seconds is None:
        return NOT_INT
    if len(args) > 3:
        return ReplyError(f"ERR Unsupported option {args[3].decode('utf-8', 'replace')}")
    if store.get(args[1]) is None:
        return 0
    if seconds <= 0:
        store.delete(args[1])
    else:
        store.expires[args[1]] = store.clock() + seconds
    return 1


@command("ttl", 2)
def _ttl(store: Store, s: Session, args: list[bytes]) -> Any:
    ms = _ms_left(store, args[1])
    return ms if ms < 0 else (ms + 500) // 1000


@command("pttl", 2)
def _pttl(store: Store, s: Session, args: list[bytes]) -> Any:
    return _ms_left(store, args[1])


@command("dbsize", 1)
def _dbsize(store: Store, s: Session, args: list[bytes]) -> Any:
    for key in list(store.expires):
        store.get(key)  # drops it if expired
    return len(store.data)


@command("flushdb", -1)
def _flushdb(store: Store, s: Session, args: list[bytes]) -> Any:
    if len(args) > 2 or (len(args) == 2 and args[1].upper() not in (b"ASYNC", b"SYNC")):
        return SYNTAX
    store.clear()
    return OK


@command("select", 2)
def _select(store: Store, s: Session, args: list[bytes]) -> Any:
    index = parse_int(args[1])
    if index is None:
        return NOT_INT
    return OK if index == 0 else ReplyError("ERR DB index is out of range")


@command("hello", -1)
def _hello(store: Store, s: Session, args: list[bytes]) -> Any:
    if len(args) > 1:
        version = parse_int(args[1])
        if version is None:
            return ReplyError("ERR Protocol version is not an integer or out of range")
        if version not in (2, 3):
            return ReplyError("NOPROTO unsupported protocol version")
        if len(args) > 2:
            opt = args[2].upper()
            if opt == b"SETNAME" and len(args) == 4:
                s.name = args[3]
            else:
                return ReplyError(f"ERR Syntax error in HELLO option '{args[2].decode()}'")
        s.proto = version
    return {
        b"server": b"polyloop-resp",
        b"version": b"7.0.0",
        b"proto": s.proto,
        b"id": s.id,
        b"mode": b"standalone",
        b"role": b"master",
        b"modules": [],
    }


@command("client", -2)
def _client(store: Store, s: Session, args: list[bytes]) -> Any:
    sub = args[1].upper()
    if sub == b"SETNAME" and len(args) == 3:
        s.name = args[2]
        return OK
    if sub == b"SETINFO" and len(args) == 4:
        return OK
    if sub == b"GETNAME" and len(args) == 2:
        return s.name
    if sub == b"ID" and len(args) == 2:
        return s.id
    name = args[1].decode("utf-8", "replace")
    return ReplyError(f"ERR unknown subcommand or wrong number of arguments for '{name}'")


@command("command", -1)
def _command(store: Store, s: Session, args: list[bytes]) -> Any:
    # redis-cli asks for COMMAND DOCS to show hints; an empty answer means "none".
    return {} if len(args) > 1 and args[1].upper() == b"DOCS" else []


@command("quit", -1)
def _quit(store: Store, s: Session, args: list[bytes]) -> Any:
    s.quit = True
    return OK
