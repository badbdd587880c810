"""The RESP key-value store, sans-io: parsers, encoder and commands, with no loop.

Rule: nothing here does I/O or knows a backend. ``CommandParser`` turns bytes into
commands, ``Store.execute`` turns a command into a reply value, ``encode`` turns the
value into bytes; ``ReplyParser`` is the client's half. The clock is injected, so
that expiry follows the backend's clock in the server and a fake one in unit tests.

Replies copy Redis 7's wording, since clients such as redis-py match on it.
"""

from __future__ import annotations

from collections.abc import Callable
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
]

#: Bytes of one inline command, and of one bulk string, the server accepts.
MAX_INLINE = 64 * 1024
MAX_BULK = 64 * 1024 * 1024
#: Arguments in one command.
MAX_ARGS = 1024 * 1024
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
    ``ProtocolError`` for input Redis would reject.
    """

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        self._buf += data

    def next_command(self) -> list[bytes] | Any:
        """The next complete command, or ``NEED_DATA``."""
        while self._buf:
            if self._buf[:1] == b"*":
                parsed = self._multibulk()
            else:
                parsed = self._inline()
            if parsed is NEED_DATA:
                return NEED_DATA
            if parsed:
                return parsed
        return NEED_DATA

    def _line(self, start: int, limit: int, what: str) -> tuple[bytes, int]:
        end = self._buf.find(b"\r\n", start, start + limit + 2)
        if end < 0:
            if len(self._buf) - start > limit:
                raise ProtocolError(what)
            raise _Incomplete
        return bytes(self._buf[start:end]), end + 2

    def _inline(self) -> list[bytes] | Any:
        end = self._buf.find(b"\n", 0, MAX_INLINE + 1)
        if end < 0:
            if len(self._buf) > MAX_INLINE:
                raise ProtocolError("too big inline request")
            return NEED_DATA
        line = bytes(self._buf[:end]).rstrip(b"\r")
        del self._buf[: end + 1]
        return split_inline(line)

    def _multibulk(self) -> list[bytes] | Any:
        try:
            head, pos = self._line(1, 32, "invalid multibulk length")
            count = parse_int(head)
            if count is None or count > MAX_ARGS:
                raise ProtocolError("invalid multibulk length")
            args: list[bytes] = []
            for _ in range(max(count, 0)):
                if pos >= len(self._buf):
                    raise _Incomplete
                if self._buf[pos : pos + 1] != b"$":
                    got = chr(self._buf[pos])
                    raise ProtocolError(f"expected '$', got '{got}'")
                size_line, pos = self._line(pos + 1, 32, "invalid bulk length")
                size = parse_int(size_line)
                if size is None or size < 0 or size > MAX_BULK:
                    raise ProtocolError("invalid bulk length")
                if len(self._buf) < pos + size + 2:
                    raise _Incomplete
                args.append(bytes(self._buf[pos : pos + size]))
                pos += size + 2
        except _Incomplete:
            return NEED_DATA
        del self._buf[:pos]
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
    """The key space: bytes to bytes, with optional expiry times on ``clock``."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.data: dict[bytes, bytes] = {}
        self.expires: dict[bytes, float] = {}
        self.sessions = 0

    def new_session(self) -> Session:
        """State for a new connection."""
        self.sessions += 1
        return Session(self.sessions)

    def get(self, key: bytes) -> bytes | None:
        """The live value of ``key`` (an expired key is deleted on access)."""
        when = self.expires.get(key)
        if when is not None and when <= self.clock():
            del self.expires[key]
            self.data.pop(key, None)
        return self.data.get(key)

    def delete(self, key: bytes) -> bool:
        """Remove ``key``; whether it existed."""
        existed = self.get(key) is not None
        self.data.pop(key, None)
        self.expires.pop(key, None)
        return existed

    def put(
        self, key: bytes, value: bytes, expire_at: float | None, keep_ttl: bool = False
    ) -> None:
        """Set ``key``; clears its expiry unless ``keep_ttl`` or a new one is given."""
        self.data[key] = value
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
    store.put(key, value, expire_at, keep_ttl)
    return old if get else OK


@command("get", 2)
def _get(store: Store, s: Session, args: list[bytes]) -> Any:
    return store.get(args[1])


@command("del", -2)
def _del(store: Store, s: Session, args: list[bytes]) -> Any:
    return sum(store.delete(k) for k in args[1:])


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
    store.data.clear()
    store.expires.clear()
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
