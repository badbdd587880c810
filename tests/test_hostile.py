"""Hostile clients against ``polyloop serve APP --backend B``, on every backend.

Each test starts the server as a subprocess (``_serve.Served``) and points a real client
at it (httpx, redis-py, the websockets library, or a plain socket where a client must
misbehave: pipeline and never read, send a header a byte at a time, hold thousands of
idle connections). What
is checked is what ``docs/running.md`` ("Limits") promises: every size a client can ask
for is bounded, with an error reply that names the limit; a client that does not read
holds a bounded amount of the server's memory; a slow client cannot hold a connection
open for ever; and the server keeps serving the others meanwhile.

Memory is the server's resident set (``/proc/PID/status``): ``VmRSS`` before, and the
peak (``VmHWM``, reset first through ``/proc/PID/clear_refs``) or ``VmRSS`` after. The
bounds are generous multiples of what the servers use (0-2 MiB here) and well under
what they used before these limits (300-600 MiB). Every wait is bounded; nothing here
asserts on speed.
"""

from __future__ import annotations

import os
import re
import resource
import select
import socket
import sys
import time
from typing import Any

import httpx
import pytest
import redis
from _serve import Served
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage
from wsproto.events import Request as WSRequest

import polyloop
from polyloop_conformance.apps import _resp, http, ws

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")


def _backend_params() -> list[Any]:
    params = []
    for name in [b.name for b in polyloop.available_backends()] + ["mixed"]:
        try:
            polyloop.load_backend(name)
        except Exception as exc:  # a framework is missing: say which
            params.append(pytest.param(name, marks=pytest.mark.skip(f"{name}: {exc}")))
        else:
            params.append(pytest.param(name, id=name))
    return params


BACKENDS = _backend_params()
TIMEOUT = 10.0  # seconds for any one client operation
MiB = 1024 * 1024


# --- measuring the server process ---


def _status(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


class Memory:
    """The server's memory growth from now: ``grown()`` is the peak RSS since ``Memory``
    was made, minus the RSS then (``VmRSS`` now if the peak cannot be reset)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.base = _status(pid, "VmRSS")
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as clear:
                clear.write("5")  # resets VmHWM to the current RSS
            self.peak = True
        except OSError:
            self.peak = False

    def grown(self) -> int:
        return _status(self.pid, "VmHWM" if self.peak else "VmRSS") - self.base


def settle(pid: int, limit: float = 15.0) -> None:
    """Wait until the server has stopped working: its CPU time unchanged for 0.5 s
    (at most ``limit`` seconds). What it holds then is what a client that never reads
    costs it for good."""
    deadline = time.monotonic() + limit
    last, still = _cpu_ticks(pid), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = _cpu_ticks(pid)
        if now != last:
            last, still = now, time.monotonic()
        elif time.monotonic() - still >= 0.5:
            return


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_until_eof(sock: socket.socket, limit: int = 64 * MiB) -> bytes:
    got = bytearray()
    while chunk := sock.recv(1 << 20):
        got += chunk
        assert len(got) <= limit, f"over {limit} bytes and no EOF"
    return bytes(got)


def _read_response(sock: socket.socket, buf: bytearray) -> tuple[bytes, bytes]:
    """One response with a Content-Length body from ``sock`` (``buf``: bytes already
    read past the previous one): its head and body."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(1 << 20)
        assert chunk, f"EOF inside a response head: {bytes(buf[:80])!r}"
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    match = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    assert match, f"no Content-Length in {head!r}"
    n = int(match[1])
    buf[:] = rest
    while len(buf) < n:
        chunk = sock.recv(1 << 20)
        assert chunk, "EOF inside a response body"
        buf += chunk
    body = bytes(buf[:n])
    del buf[:n]
    return head, body


# --- http: sizes ---


@pytest.mark.parametrize("backend", BACKENDS)
def test_http_sizes_past_the_limits_get_an_error_naming_the_limit(backend: str) -> None:
    with (
        Served("http", backend) as s,
        httpx.Client(base_url=f"http://{s.host}:{s.port}", timeout=TIMEOUT) as client,
    ):
        r = client.get(f"/chunked/{http.MAX_CHUNKS + 1}")
        assert r.status_code == 400 and str(http.MAX_CHUNKS) in r.text, (r, r.text)
        r = client.get(f"/bytes/{http.MAX_BYTES + 1}")
        assert r.status_code == 400 and str(http.MAX_BYTES) in r.text, (r, r.text)
        r = client.get("/chunked/" + "9" * 5000)  # no 5,000-digit int() on the server
        assert r.status_code == 400 and str(http.MAX_CHUNKS) in r.text, (r, r.text)
        assert client.get(f"/bytes/{http.MAX_BYTES}").content == http.pattern(http.MAX_BYTES)
        r = client.post("/echo", content=b"x" * (http.MAX_BODY + 1))
        assert r.status_code == 413 and str(http.MAX_BODY) in r.text, (r, r.text)
    with Served("http", backend) as s, _connect(s.port) as sock:
        # A head still incomplete past MAX_HEAD (h11 parses a complete one of any size
        # that came in one read: the limit is on what is buffered waiting for the rest).
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * http.MAX_HEAD)
        reply = _read_until_eof(sock)
        assert reply.startswith(b"HTTP/1.1 431 ") and str(http.MAX_HEAD).encode() in reply, reply


@pytest.mark.parametrize("backend", BACKENDS)
def test_http_a_chunked_response_is_produced_as_the_client_reads(backend: str) -> None:
    """The largest ``/chunked/<n>`` (about 19 MB on the wire, a million chunks) to a client
    that does not read: the server holds a few pieces of it, not all of it (300 MiB before);
    then the client reads it all, intact."""
    n = http.MAX_CHUNKS
    with Served("http", backend) as s, _connect(s.port) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        memory = Memory(s.pid)
        sock.sendall(b"GET /chunked/%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % n)
        settle(s.pid)
        grown = memory.grown()
        got = _read_until_eof(sock)
    assert grown < 16 * MiB, (
        f"{backend}: GET /chunked/{n} grew the server by {grown / MiB:.0f} MiB"
    )
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    want = b"".join(b"%x\r\nchunk %d\n\r\n" % (len(b"chunk %d\n" % i), i) for i in range(n))
    assert body == want + b"0\r\n\r\n", f"{backend}: the body of {len(body)} bytes differs"


# --- http and resp: pipelining to a client that never reads ---


@pytest.mark.parametrize("backend", BACKENDS)
def test_http_pipelined_requests_are_answered_as_the_client_reads(backend: str) -> None:
    """12 KB of pipelined ``GET /bytes/1048576`` (about 300 MiB of answers) from a client
    that does not read: the server stops answering while its transport is paused."""
    request = b"GET /bytes/%d HTTP/1.1\r\nHost: x\r\n\r\n" % http.MAX_BYTES
    count = 12 * 1024 // len(request)
    with Served("http", backend) as s, _connect(s.port) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        memory = Memory(s.pid)
        sock.sendall(request * count)
        settle(s.pid)
        grown = memory.grown()
        # Reading, the client gets every answer, in order (the first few are checked).
        buf = bytearray()
        for i in range(3):
            head, body = _read_response(sock, buf)
            assert head.startswith(b"HTTP/1.1 200 "), head
            assert b"x-request-count: %d\r\n" % (i + 1) in head, head
            assert body == http.pattern(http.MAX_BYTES), f"response {i + 1} differs"
    # Tornado reads in smaller pieces than the others, so before the fix it grew by "only"
    # 23 MiB here (the others by 300-600 MiB): the bound is 16 MiB, not 64.
    assert grown < 16 * MiB, (
        f"{backend}: {count} pipelined requests grew the server by {grown / MiB:.0f} MiB"
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_resp_pipelined_commands_run_as_the_client_reads(backend: str) -> None:
    """4 KB of pipelined ``GET`` of a 1 MiB value (about 180 MiB of replies) from a client
    that does not read: the server stops running commands while its transport is paused."""
    value = bytes(range(256)) * 4096
    get = b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n"
    count = 4096 // len(get)
    with Served("resp", backend) as s:
        r = redis.Redis(host=s.host, port=s.port, socket_timeout=TIMEOUT)
        try:
            assert r.set("big", value)
            with _connect(s.port) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
                memory = Memory(s.pid)
                sock.sendall(get * count)
                settle(s.pid)
                grown = memory.grown()
                assert r.ping(), "the server stopped serving the others"
                want = b"$%d\r\n%s\r\n" % (len(value), value)
                got = bytearray()
                while len(got) < 3 * len(want):
                    chunk = sock.recv(1 << 20)
                    assert chunk, "EOF before the third reply"
                    got += chunk
                assert got[: 3 * len(want)] == want * 3, "the first three replies differ"
        finally:
            r.close()
    assert grown < 16 * MiB, (
        f"{backend}: {count} pipelined GETs grew the server by {grown / MiB:.0f} MiB"
    )


# --- resp: sizes, and a long command in many reads ---


@pytest.mark.parametrize("backend", BACKENDS)
def test_resp_sizes_past_the_limits_get_an_error_naming_the_limit(backend: str) -> None:
    with Served("resp", backend) as s:
        r = redis.Redis(host=s.host, port=s.port, socket_timeout=TIMEOUT)
        try:
            with pytest.raises(redis.ResponseError) as err:
                r.set("k", b"x" * (_resp.MAX_BULK + 1))
            assert f"the limit is {_resp.MAX_BULK} bytes" in str(err.value)
        finally:
            r.close()
        for claim, limit in [
            (b"*%d\r\n" % (_resp.MAX_ARGS + 1), f"the limit is {_resp.MAX_ARGS} arguments"),
            (b"*2\r\n$3\r\nGET\r\n$%d\r\n" % (_resp.MAX_BULK + 1), str(_resp.MAX_BULK)),
            (b"x" * (_resp.MAX_INLINE + 1), f"the limit is {_resp.MAX_INLINE} bytes"),
        ]:
            # A claim alone is refused at once: nothing waits for the bytes it announces.
            with _connect(s.port) as sock:
                sock.sendall(claim)
                reply = _read_until_eof(sock)
            assert reply.startswith(b"-ERR Protocol error: "), reply
            assert limit.encode() in reply, reply
        with _connect(s.port) as sock:
            # Four arguments of MAX_BULK bytes (32 MiB and their framing) pass
            # MAX_COMMAND (32 MiB) at the fourth one's length line.
            arg = b"$%d\r\n%s\r\n" % (_resp.MAX_BULK, b"v" * _resp.MAX_BULK)
            sock.sendall(b"*5\r\n$4\r\nMSET\r\n" + arg * 3 + b"$%d\r\n" % _resp.MAX_BULK)
            reply = _read_until_eof(sock)
        assert reply == b"-ERR Protocol error: command too big (the limit is %d bytes)\r\n" % (
            _resp.MAX_COMMAND
        )


def test_resp_store_refuses_writes_past_max_memory() -> None:
    """Sans-io: the store counts what it holds and answers Redis's OOM past MAX_MEMORY."""
    store = _resp.Store(lambda: 0.0)
    session = store.new_session()
    value = b"v" * _resp.MAX_BULK  # one object, referenced by every key: no real memory
    fit = _resp.MAX_MEMORY // (_resp.MAX_BULK + 8 + _resp.ENTRY_COST)
    keys = [b"key%05d" % i for i in range(fit + 1)]
    for key in keys[:fit]:
        assert store.execute(session, [b"SET", key, value]) == _resp.OK
    assert store.execute(session, [b"SET", keys[fit], value]) == _resp.OOM
    assert store.execute(session, [b"MSET", keys[fit], value]) == _resp.OOM
    assert store.execute(session, [b"SET", keys[0], value]) == _resp.OK, "an overwrite fits"
    assert store.execute(session, [b"DEL", keys[0]]) == 1
    assert store.execute(session, [b"SET", keys[fit], value]) == _resp.OK
    assert store.execute(session, [b"FLUSHDB"]) == _resp.OK and store.used == 0


def test_resp_parser_consumes_each_argument_once() -> None:
    """Sans-io: a command of 400,000 arguments fed in 1 KiB pieces is never held whole:
    after each piece the parser holds at most that piece (it used to keep, and re-parse
    from its first argument, everything since the command began)."""
    n = 400_000
    wire = b"*%d\r\n$6\r\nEXISTS\r\n" % (n + 1) + b"".join(b"$%d\r\nk%d\r\n" % (
        len(b"k%d" % i), i) for i in range(n))  # fmt: skip
    parser = _resp.CommandParser()
    for i in range(0, len(wire) - 1024, 1024):
        parser.feed(wire[i : i + 1024])
        assert parser.next_command() is _resp.NEED_DATA
        assert parser.buffered <= 1024, (
            f"the parser holds {parser.buffered} bytes of a command arriving in 1 KiB pieces"
        )
    parser.feed(wire[i + 1024 :])
    cmd = parser.next_command()
    assert len(cmd) == n + 1 and cmd[-1] == b"k%d" % (n - 1) and parser.buffered == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_resp_a_long_command_in_many_reads_does_not_stall_the_server(backend: str) -> None:
    """``EXISTS`` with 400,000 arguments, sent in 2 KiB pieces, each followed by a ``PING``
    round trip on another connection (so that the server reads the command in about a
    thousand reads). Parsed once, it takes about a second; re-parsed from its first
    argument at each read, as before, it took minutes: the bound is 25 s."""
    n = 400_000
    wire = b"*%d\r\n$6\r\nEXISTS\r\n" % (n + 1) + b"$1\r\nk\r\n" * n
    with Served("resp", backend) as s:
        r = redis.Redis(host=s.host, port=s.port, socket_timeout=TIMEOUT)
        deadline = time.monotonic() + 25
        try:
            assert r.set("k", "1")
            with _connect(s.port) as sock:
                for i in range(0, len(wire), 2048):
                    sock.sendall(wire[i : i + 2048])
                    assert r.ping()
                    assert time.monotonic() < deadline, (
                        f"{backend}: {i} bytes of the command in 25 s: each read costs more"
                        " than the last (the parser re-parses the command)"
                    )
                sock.settimeout(max(1.0, deadline - time.monotonic()))
                assert sock.recv(100) == b":%d\r\n" % n
        finally:
            r.close()


# --- ws: a message too big, and a client that sends without reading ---


@pytest.mark.parametrize("backend", BACKENDS)
def test_ws_a_message_past_the_limit_gets_1009(backend: str) -> None:
    with (
        Served("ws", backend) as s,
        ws_connect(f"ws://{s.host}:{s.port}/", open_timeout=TIMEOUT, max_size=None) as conn,
    ):
        conn.send(b"x" * ws.MAX_MESSAGE)
        assert conn.recv(timeout=TIMEOUT) == b"x" * ws.MAX_MESSAGE
        conn.send(b"x" * (ws.MAX_MESSAGE + 1))
        with pytest.raises(ConnectionClosed) as closed:
            conn.recv(timeout=TIMEOUT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009, closed.value


@pytest.mark.parametrize("backend", BACKENDS)
def test_ws_a_client_that_sends_without_reading_holds_bounded_memory(backend: str) -> None:
    """Messages of 512 KiB sent until the kernel takes no more, the echoes never read:
    the server stops reading while its transport is paused, so it holds a read's worth
    (a guard: the ws app did this before the limits too)."""
    client = WSConnection(ConnectionType.CLIENT)
    with Served("ws", backend) as s, _connect(s.port) as sock:
        sock.sendall(client.send(WSRequest(host="localhost", target="/")))
        client.receive_data(sock.recv(65536))
        assert any(isinstance(e, AcceptConnection) for e in client.events()), "no handshake"
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        memory = Memory(s.pid)
        frame = memoryview(client.send(BytesMessage(data=b"m" * 512 * 1024)))
        sock.setblocking(False)
        sent, full = 0, False
        deadline = time.monotonic() + TIMEOUT
        while not full and time.monotonic() < deadline:
            try:
                sent += sock.send(frame[sent % len(frame) :])
            except BlockingIOError:
                settle(s.pid, limit=2)  # the server reads what it will; then once more
                try:
                    sent += sock.send(frame[sent % len(frame) :])
                except BlockingIOError:
                    full = True
        grown = memory.grown()
    assert full, f"{backend}: the server read {sent / MiB:.0f} MiB without its echoes read"
    assert grown < 16 * MiB, (
        f"{backend}: {sent / MiB:.1f} MiB sent without reading grew the server by"
        f" {grown / MiB:.0f} MiB"
    )


# --- http: slow clients, and many idle ones ---


@pytest.mark.parametrize("backend", BACKENDS)
def test_http_slowloris_clients_get_408_and_the_others_are_served(backend: str) -> None:
    """100 connections send a request head one byte every 0.25 s: after HEADER_TIMEOUT each
    gets ``408`` and EOF, and meanwhile another client's requests are answered."""
    slow_head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slowloris: " + b"a" * 1000
    with (
        Served("http", backend) as s,
        httpx.Client(base_url=f"http://{s.host}:{s.port}", timeout=TIMEOUT) as client,
    ):
        slow = [_connect(s.port) for _ in range(100)]
        replies = {sock: bytearray() for sock in slow}
        done: set[socket.socket] = set()
        try:
            deadline = time.monotonic() + http.HEADER_TIMEOUT + 8
            sent = 0
            while len(done) < len(slow) and time.monotonic() < deadline:
                for sock in slow:
                    if sock not in done:
                        try:
                            sock.send(slow_head[sent : sent + 1])
                        except OSError:  # reset: the server gave up draining it
                            done.add(sock)
                sent += 1
                assert client.get("/").status_code == 200, "a normal client was not served"
                readable, _, _ = select.select([x for x in slow if x not in done], [], [], 0.25)
                for sock in readable:
                    try:
                        chunk = sock.recv(4096)
                    except OSError:
                        chunk = b""
                    replies[sock] += chunk
                    if not chunk:
                        done.add(sock)
        finally:
            for sock in slow:
                sock.close()
    assert len(done) == len(slow), (
        f"{backend}: {len(slow) - len(done)} of {len(slow)} slow clients still connected"
        f" {http.HEADER_TIMEOUT + 8:g} s after they started their request"
    )
    for reply in replies.values():
        assert reply.startswith(b"HTTP/1.1 408 "), bytes(reply[:80])
        assert f"within {http.HEADER_TIMEOUT:g} s".encode() in reply, bytes(reply)


def _raise_fd_limit(want: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards ``want`` (within the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


#: 10,000 idle connections where the hard fd limit allows them, else 2,000.
_HARD = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
IDLE = 10_000 if _HARD == resource.RLIM_INFINITY or _HARD >= 10_000 + 500 else 2_000
_BOOT = (
    "import resource, sys\n"
    "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
    "want = {want} if hard == resource.RLIM_INFINITY else min({want}, hard)\n"
    "if soft < want: resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))\n"
    "from polyloop._cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _idle_wave(s: Served, client: httpx.Client, n: int) -> tuple[int, int]:
    """Open ``n`` connections that send nothing, check that another client is served,
    close them, and wait until the server has closed its ends: (descriptors held while
    they were open, RSS growth then)."""
    fds_before, rss_before = _fds(s.pid), _status(s.pid, "VmRSS")
    idle: list[socket.socket] = []
    try:
        # In batches, each accepted before the next: connecting faster than the server
        # accepts overflows its listen backlog, and then each dropped SYN waits 1 s.
        for _ in range(n // 100):
            for _ in range(100):
                idle.append(socket.create_connection((s.host, s.port), timeout=TIMEOUT))
            deadline = time.monotonic() + TIMEOUT
            while _fds(s.pid) < fds_before + len(idle) and time.monotonic() < deadline:
                time.sleep(0.002)
        r = client.get("/bytes/1000")
        assert r.content == http.pattern(1000), "not served while holding idle connections"
        held, held_rss = _fds(s.pid) - fds_before, _status(s.pid, "VmRSS") - rss_before
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 20
    while _fds(s.pid) > fds_before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _fds(s.pid) <= fds_before, f"{_fds(s.pid) - fds_before} descriptors left open"
    return held, held_rss


@pytest.mark.parametrize("backend", BACKENDS)
def test_http_many_idle_connections_are_held_and_then_freed(backend: str) -> None:
    """Three waves of ``IDLE`` connections that send nothing: the server holds them all
    and keeps serving; once the clients close them its descriptors return to their count
    before; and its RSS after the third wave is within 32 MiB of where the first left it.

    Why not back to the start: the first wave's memory stays with the allocators, to be
    reused (measured after five waves of 10,000: +23 to +61 MiB from the start, growing
    by 11, 3, 0.4, 0.3 MiB after the first on gevent, the worst). A leak of 1.7 KB a
    connection would take the two later waves past the bound.
    """
    assert _raise_fd_limit(IDLE + 200) >= IDLE + 200, "cannot open enough descriptors here"
    boot = _BOOT.format(want=IDLE + 200)
    with (
        Served("http", backend, command=[sys.executable, "-c", boot]) as s,
        httpx.Client(base_url=f"http://{s.host}:{s.port}", timeout=TIMEOUT) as client,
    ):
        assert client.get("/").status_code == 200
        start = _status(s.pid, "VmRSS")
        held, held_rss = _idle_wave(s, client, IDLE)
        after_first = _status(s.pid, "VmRSS")
        for _ in range(2):
            _idle_wave(s, client, IDLE)
        after = _status(s.pid, "VmRSS")
        assert client.get("/").status_code == 200
    assert held >= IDLE, f"{backend}: the server held {held} of {IDLE} connections"
    print(
        f"{backend}: {IDLE} idle connections held with {held_rss / IDLE:.0f} B each; RSS"
        f" +{(after_first - start) / MiB:.1f} MiB after the first wave,"
        f" +{(after - start) / MiB:.1f} MiB after the third"
    )
    assert after - after_first < 32 * MiB, (
        f"{backend}: two more waves of {IDLE} idle connections left"
        f" {(after - after_first) / MiB:.1f} MiB more than the first"
        f" ({held_rss / MiB:.1f} MiB while the first was open)"
    )
