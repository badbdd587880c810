"""Clients no one here wrote, against ``polyloop serve APP --backend X`` on every backend.

Each test starts ``python -m polyloop serve`` as a subprocess (the ``serve`` fixture of
conftest.py, which reads its ``listening on HOST:PORT``), points a real independent
client at it, and always terminates it:
httpx and curl (http), the websockets library (ws), redis-py and redis-cli (resp),
stdlib ``ssl`` over a plain socket (tls), and a plain socket (echo). Every wait is
bounded. curl and redis-cli come from Debian (``.ci/apt-packages``).
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from websockets.sync.client import connect as ws_connect

import polyloop
from polyloop_conformance.tls import TLSMaterial

TIMEOUT = 10.0  # seconds for any one client operation


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


BACKENDS = _backend_params()


# --- http: httpx and curl ---


def pattern(n: int) -> bytes:
    return (bytes(range(256)) * (n // 256 + 1))[:n]


@pytest.mark.parametrize("backend", BACKENDS)
def test_httpx(serve: Any, backend: str) -> None:
    s = serve("http", backend)
    with httpx.Client(base_url=f"http://{s.host}:{s.port}", timeout=TIMEOUT) as client:
        r = client.get("/")
        assert (r.status_code, r.content) == (200, b"hello, world\n")
        body = pattern(300_000)
        r = client.post("/echo", content=body)
        assert r.status_code == 200 and r.content == body
        pieces = [b"a", b"bb" * 5000, pattern(70_000)]
        r = client.post("/echo", content=iter(pieces))  # a generator: sent chunked
        assert r.status_code == 200 and r.content == b"".join(pieces)
        assert r.headers["transfer-encoding"] == "chunked"
        r = client.get("/chunked/40")
        assert r.content == b"".join(b"chunk %d\n" % i for i in range(40))
        assert r.headers["x-request-count"] == "4", "httpx's connection was not kept alive"
        assert client.get("/nope").status_code == 404
        r = client.post("/echo", content=b"x" * (2 * 1024 * 1024))
        assert r.status_code == 413
    s.assert_clean_exit()


def curl(*args: str) -> str:
    out = subprocess.run(
        ["curl", "--silent", "--show-error", "--max-time", str(TIMEOUT), *args],
        capture_output=True,
        timeout=TIMEOUT + 5,
        check=True,
    )
    return out.stdout.decode()


@pytest.mark.skipif(
    shutil.which("curl") is None, reason="curl is not installed (.ci/apt-packages)"
)
@pytest.mark.parametrize("backend", BACKENDS)
def test_curl(serve: Any, backend: str, tmp_path: Path) -> None:
    s = serve("http", backend)
    url = f"http://{s.host}:{s.port}"
    assert curl(f"{url}/") == "hello, world\n"
    # Three URLs in one curl run share one kept-alive connection.
    urls = [f"{url}/", f"{url}/bytes/5000", f"{url}/chunked/3"]
    per_url = [arg for u in urls for arg in ("-o", "/dev/null", u)]
    out = curl("-w", "%{http_code} %{num_connects}\\n", *per_url)
    assert out.split("\n")[:3] == ["200 1", "200 0", "200 0"], out
    body = tmp_path / "body"
    body.write_bytes(pattern(1_000_000))
    echoed = tmp_path / "echoed"
    curl("--data-binary", f"@{body}", "-o", str(echoed), f"{url}/echo")
    assert (
        hashlib.sha256(echoed.read_bytes()).digest() == hashlib.sha256(body.read_bytes()).digest()
    )
    chunked = curl(
        "-H", "Transfer-Encoding: chunked", "--data-binary", "hello chunks", f"{url}/echo"
    )  # fmt: skip
    assert chunked == "hello chunks"
    big = tmp_path / "big"
    big.write_bytes(b"x" * (2 * 1024 * 1024))
    code = curl("-o", "/dev/null", "-w", "%{http_code}", "--data-binary", f"@{big}", f"{url}/echo")
    assert code == "413"
    s.assert_clean_exit()


# --- ws: the websockets library ---


@pytest.mark.parametrize("backend", BACKENDS)
def test_websockets(serve: Any, backend: str) -> None:
    s = serve("ws", backend)
    with ws_connect(f"ws://{s.host}:{s.port}/chat", open_timeout=TIMEOUT) as ws:
        ws.send("hello ✓")
        assert ws.recv(timeout=TIMEOUT) == "hello ✓"
        ws.send(pattern(200_000))
        assert ws.recv(timeout=TIMEOUT) == pattern(200_000)
        ws.send(["frag", "mented ", "text"])  # one message in three frames
        assert ws.recv(timeout=TIMEOUT) == "fragmented text"
        ws.send([b"\x00", b"\x01" * 70_000])
        assert ws.recv(timeout=TIMEOUT) == b"\x00" + b"\x01" * 70_000
        assert ws.ping(b"are you there").wait(TIMEOUT), "no pong"
        ws.close(1000, "done")
        assert ws.protocol.close_rcvd is not None, "no close frame from the server"
        assert ws.protocol.close_rcvd.code == 1000
    s.assert_clean_exit()


# --- resp: redis-py and redis-cli ---


@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("backend", BACKENDS)
def test_redis_py(serve: Any, backend: str, protocol: int) -> None:
    s = serve("resp", backend)
    r = redis.Redis(host=s.host, port=s.port, protocol=protocol, socket_timeout=TIMEOUT)
    try:
        assert r.ping() is True
        assert r.set("k", "v") is True
        assert r.get("k") == b"v"
        assert r.get("missing") is None
        assert r.set("k", "w", nx=True) is None
        assert r.incr("n") == 1 and r.incr("n", 41) == 42
        assert r.mset({"a": "1", "b": "2"}) is True
        assert r.mget("a", "missing", "b") == [b"1", None, b"2"]
        assert r.exists("a", "b", "missing") == 2
        assert r.delete("a", "missing") == 1
        assert r.set("t", "v", px=60_000) is True
        assert 0 < r.pttl("t") <= 60_000
        assert r.expire("k", 100) is True and 98 <= r.ttl("k") <= 100
        assert r.ttl("missing") == -2
        assert r.dbsize() == 4  # k, n, b, t
        pipe = r.pipeline(transaction=False)
        for i in range(100):
            pipe.set(f"p{i}", i).incr(f"p{i}")
        assert pipe.execute() == [x for i in range(100) for x in (True, i + 1)]
        with pytest.raises(redis.ResponseError, match="wrong number of arguments for 'get'"):
            r.execute_command("GET")
        with pytest.raises(redis.ResponseError, match="unknown command 'NOSUCH'"):
            r.execute_command("NOSUCH", "x")
        assert r.flushdb() is True and r.dbsize() == 0
    finally:
        r.close()
    s.assert_clean_exit()


def redis_cli(port: int, *args: str, stdin: bytes | None = None) -> str:
    out = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
        input=stdin,
        capture_output=True,
        timeout=TIMEOUT,
        check=True,
    )
    return out.stdout.decode()


@pytest.mark.skipif(
    shutil.which("redis-cli") is None, reason="redis-cli is not installed (redis-tools)"
)
@pytest.mark.parametrize("backend", BACKENDS)
def test_redis_cli(serve: Any, backend: str) -> None:
    s = serve("resp", backend)
    assert redis_cli(s.port, "PING") == "PONG\n"
    assert redis_cli(s.port, "SET", "greeting", "hello world") == "OK\n"
    assert redis_cli(s.port, "GET", "greeting") == "hello world\n"
    assert redis_cli(s.port, "INCR", "n") == "1\n"
    assert redis_cli(s.port, "MGET", "greeting", "nope") == "hello world\n\n"
    assert redis_cli(s.port, "NOSUCH").startswith("ERR unknown command 'NOSUCH'")
    # Commands from stdin, one per line (several on one connection).
    piped = redis_cli(s.port, stdin=b"SET a 1\nINCR a\nGET a\nDBSIZE\n")
    assert piped.split() == ["OK", "2", "2", "3"]
    s.assert_clean_exit()


# --- tls: stdlib ssl over a plain socket ---


@pytest.fixture(scope="module")
def tls_dir() -> Iterator[str]:
    folder = tempfile.mkdtemp(prefix="polyloop-interop-tls-")
    try:
        TLSMaterial(folder)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_stdlib_ssl(serve: Any, backend: str, tls_dir: str) -> None:
    s = serve("tls", backend, "--tls-dir", tls_dir)
    ctx = TLSMaterial(tls_dir).client_context()
    with socket.create_connection((s.host, s.port), timeout=TIMEOUT) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
            assert ("DNS", "localhost") in tls.getpeercert()["subjectAltName"]
            greeting = tls.recv(100)
            assert greeting == f"TLS {tls.version()}\n".encode()
            # Lock-step, since one SSLSocket must not be used from two threads.
            for i in range(8):
                piece = pattern(65536 + i)
                tls.sendall(piece)
                got = bytearray()
                while len(got) < len(piece):
                    data = tls.recv(len(piece) - len(got))
                    assert data, f"EOF after {len(got)} echoed bytes"
                    got += data
                assert got == piece
    stranger = ssl.create_default_context()  # does not trust the test CA
    with socket.create_connection((s.host, s.port), timeout=TIMEOUT) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            stranger.wrap_socket(raw, server_hostname="localhost")
    s.assert_clean_exit()


# --- echo: a plain socket ---


@pytest.mark.parametrize("app", ["echo", "echo-stream"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_plain_socket_echo(serve: Any, backend: str, app: str) -> None:
    s = serve(app, backend)
    payload = pattern(1_000_000)
    with socket.create_connection((s.host, s.port), timeout=TIMEOUT) as sock:

        def send() -> None:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)

        # Send from a thread while reading here: the echo pushes back on a sender
        # that does not read, so sending everything first could deadlock.
        sender = threading.Thread(target=send)
        sender.start()
        got = bytearray()
        try:
            while data := sock.recv(1 << 20):
                got += data
        finally:
            sender.join(TIMEOUT)
    assert got == payload, f"echoed {len(got)} bytes, sent {len(payload)}"
    s.assert_clean_exit()
