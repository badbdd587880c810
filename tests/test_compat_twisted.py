"""polyloop_twisted.compat: Twisted's own protocols, unmodified, on every backend.

The servers are Twisted's classes (``LineReceiver``, ``Int32StringReceiver``,
``NetstringReceiver``, ``wire.Echo``, a ``TimeoutMixin`` user, ``twisted.web``'s
``Site``), each on every backend against a client on every backend: in one
``polyloop.run`` per backend, and across backends with the server and the client in two
processes (this file is also the script those processes run:
``python tests/test_compat_twisted.py serve BACKEND`` / ``client BACKEND PORTS``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import polyloop

BACKENDS = ["asyncio", "twisted", "gevent", "tornado"]
HERE = Path(__file__).resolve()

pytest.importorskip("twisted", reason="polyloop_twisted.compat needs polyloop[twisted]")

import test_compat_asyncio as docs  # noqa: E402
from twisted.internet import error, interfaces, protocol, task  # noqa: E402
from twisted.protocols import basic, policies, wire  # noqa: E402
from twisted.python.failure import Failure  # noqa: E402
from twisted.web import resource, server  # noqa: E402
from zope.interface import implementer  # noqa: E402
from zope.interface.verify import verifyObject  # noqa: E402

from polyloop_twisted import compat as ctw  # noqa: E402

# --------------------------------------------------------------------------------------
# The scenarios: a Twisted server (Twisted's class) and a client that checks it.
# --------------------------------------------------------------------------------------


class Done:
    """Mixin for the clients: a future fired with the connectionLost reason."""

    def __init__(self) -> None:
        self.lost: polyloop.Future[Failure] = polyloop.create_future()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if not self.lost.done():
            self.lost.set_result(reason)


class UpperLines(basic.LineReceiver):
    MAX_LENGTH = 100_000

    def lineReceived(self, line: bytes) -> None:
        self.sendLine(line.upper())


class LineClient(Done, basic.LineReceiver):
    MAX_LENGTH = 100_000

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[bytes] = []
        self.sent = [b"line %d" % i for i in range(200)] + [b"x" * 50_000, b"last"]

    def connectionMade(self) -> None:
        for line in self.sent:
            self.sendLine(line)

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line)
        if len(self.lines) == len(self.sent):
            self.transport.loseConnection()  # type: ignore[union-attr]


async def exercise_lines(port: int) -> None:
    client = await ctw.connect_tcp(LineClient, "127.0.0.1", port)
    reason = await polyloop.wait_for(client.lost, 20)
    assert client.lines == [line.upper() for line in client.sent]
    assert reason.check(error.ConnectionDone), reason


class Reverser(basic.Int32StringReceiver):
    MAX_LENGTH = 2_000_000

    def stringReceived(self, string: bytes) -> None:
        self.sendString(string[::-1])


class Int32Client(Done, basic.Int32StringReceiver):
    MAX_LENGTH = 2_000_000

    def __init__(self) -> None:
        super().__init__()
        self.got: list[bytes] = []
        self.sent = [b"", b"a", b"hello", os.urandom(1000), os.urandom(700_000), b"end"]

    def connectionMade(self) -> None:
        for string in self.sent:
            self.sendString(string)

    def stringReceived(self, string: bytes) -> None:
        self.got.append(string)
        if len(self.got) == len(self.sent):
            self.transport.loseConnection()  # type: ignore[union-attr]


async def exercise_int32(port: int) -> None:
    client = await ctw.connect_tcp(Int32Client, "127.0.0.1", port)
    reason = await polyloop.wait_for(client.lost, 20)
    assert client.got == [s[::-1] for s in client.sent]
    assert reason.check(error.ConnectionDone), reason


class NetstringEcho(basic.NetstringReceiver):
    def stringReceived(self, string: bytes) -> None:
        self.sendString(string)


class NetstringClient(Done, basic.NetstringReceiver):
    def __init__(self) -> None:
        super().__init__()
        self.got: list[bytes] = []
        self.sent = [b"", b"1", b"a:b,c", os.urandom(90_000)] + [b"%d" % i for i in range(100)]

    def connectionMade(self) -> None:
        for string in self.sent:
            self.sendString(string)

    def stringReceived(self, string: bytes) -> None:
        self.got.append(string)
        if len(self.got) == len(self.sent):
            self.transport.loseConnection()  # type: ignore[union-attr]


async def exercise_netstring(port: int) -> None:
    client = await ctw.connect_tcp(NetstringClient, "127.0.0.1", port)
    reason = await polyloop.wait_for(client.lost, 20)
    assert client.got == client.sent
    assert reason.check(error.ConnectionDone), reason


class EchoClient(Done, protocol.Protocol):
    """Sends 1 MiB through a push producer that pauses when the transport says so."""

    def __init__(self) -> None:
        super().__init__()
        self.payload = os.urandom(1 << 20)
        self.received = bytearray()
        self.offset = 0
        self.paused = False
        self.pauses = 0

    def connectionMade(self) -> None:
        self.transport.registerProducer(self, True)  # type: ignore[union-attr]
        self.resumeProducing()

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and self.offset < len(self.payload):
            self.transport.write(self.payload[self.offset : self.offset + 16384])  # type: ignore[union-attr]
            self.offset += 16384
        if self.offset >= len(self.payload):
            self.transport.unregisterProducer()  # type: ignore[union-attr]

    def pauseProducing(self) -> None:
        self.paused = True
        self.pauses += 1

    def stopProducing(self) -> None:
        self.paused = True

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if len(self.received) == len(self.payload):
            self.transport.loseConnection()  # type: ignore[union-attr]


async def exercise_echo(port: int) -> None:
    client = await ctw.connect_tcp(EchoClient, "127.0.0.1", port)
    reason = await polyloop.wait_for(client.lost, 20)
    assert bytes(client.received) == client.payload
    assert reason.check(error.ConnectionDone), reason


class Idle(basic.LineReceiver, policies.TimeoutMixin):
    """Drops a connection after 2 s without a line (TimeoutMixin's own
    ``timeoutConnection``); its ``callLater`` is Twisted's, pointed at the session."""

    timeOut = 2.0

    def connectionMade(self) -> None:
        self.setTimeout(self.timeOut)

    def lineReceived(self, line: bytes) -> None:
        self.resetTimeout()
        self.sendLine(b"ok " + line)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.setTimeout(None)


class IdleClient(Done, basic.LineReceiver):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[bytes] = []
        self.lost_at = 0.0

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.lost_at = time.monotonic()
        super().connectionLost(reason)


async def exercise_timeout(port: int) -> None:
    client = await ctw.connect_tcp(IdleClient, "127.0.0.1", port)
    for i in range(5):  # 0.4 s of traffic, a line every 0.1 s: each one resets the timeout
        if i:
            await polyloop.sleep(0.1)
        client.sendLine(b"ping %d" % i)
    last = time.monotonic()
    assert not client.lost.done(), "the server timed out although lines kept coming"
    reason = await polyloop.wait_for(client.lost, 10)  # then silence: dropped
    assert client.lines == [b"ok ping %d" % i for i in range(5)]
    assert reason.check(error.ConnectionDone), reason
    # The drop came a whole timeOut after the last line (a load only makes it later):
    # without resetTimeout it would come timeOut after connecting, 0.4 s too soon.
    idle = client.lost_at - last
    assert idle >= Idle.timeOut - 0.15, f"dropped {idle:.2f} s after the last line"


class Hello(resource.Resource):
    isLeaf = True

    def render_GET(self, request: server.Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain")
        if request.path == b"/later":
            later = task.deferLater(ctw.get_reactor(), 0.01, lambda: b"later " * 5000)
            later.addCallback(lambda body: (request.write(body), request.finish()))
            return server.NOT_DONE_YET  # type: ignore[return-value]
        peer = request.getClientAddress()
        return b"hello %s %s" % (request.path, peer.host.encode())  # type: ignore[attr-defined]

    def render_POST(self, request: server.Request) -> bytes:
        assert request.content is not None
        return request.content.read()[::-1]


async def exercise_http(port: int) -> None:
    async with await polyloop.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send(
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /later HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nConnection: close\r\n\r\n"
            b"abcdef"
        )
        data = b""
        while chunk := await polyloop.wait_for(stream.receive(), 10):
            data += chunk
    responses = data.split(b"HTTP/1.1 200 OK\r\n")
    assert len(responses) == 4, data[:500]
    assert responses[1].endswith(b"\r\n\r\nhello /a 127.0.0.1"), responses[1]
    assert b"Server: TwistedWeb/" in responses[1]
    assert b"Transfer-Encoding: chunked" in responses[2]
    _, _, body = responses[2].partition(b"\r\n\r\n")
    assert body == b"%x\r\n%s\r\n0\r\n\r\n" % (30000, b"later " * 5000), body[-50:]
    assert responses[3].endswith(b"\r\n\r\nfedcba"), responses[3]


@dataclass
class Scenario:
    name: str
    serve: Callable[[], Awaitable[tuple[int, Callable[[], Awaitable[None]]]]]
    exercise: Callable[[int], Awaitable[None]]


def twisted_server(factory: Callable[[], Any]) -> Callable[[], Awaitable[Any]]:
    async def serve() -> tuple[int, Callable[[], Awaitable[None]]]:
        port = await ctw.listen_tcp(factory(), "127.0.0.1", 0)
        return port.port, port.aclose

    return serve


def echo_factory() -> protocol.Factory:
    factory = protocol.Factory()
    factory.protocol = wire.Echo  # Twisted's own, not even subclassed
    return factory


SCENARIOS = {
    s.name: s
    for s in [
        Scenario("LineReceiver", twisted_server(lambda: UpperLines), exercise_lines),
        Scenario("Int32StringReceiver", twisted_server(lambda: Reverser), exercise_int32),
        Scenario("NetstringReceiver", twisted_server(lambda: NetstringEcho), exercise_netstring),
        Scenario("wire.Echo", twisted_server(echo_factory), exercise_echo),
        Scenario("TimeoutMixin", twisted_server(lambda: Idle), exercise_timeout),
        Scenario(
            "twisted.web",
            twisted_server(lambda: server.Site(Hello(), reactor=ctw.get_reactor())),
            exercise_http,
        ),
        # The asyncio documentation's examples (test_compat_asyncio), across backends:
        Scenario("asyncio docs TCP echo", docs.serve_tcp_echo, docs.exercise_tcp_echo),
        Scenario("asyncio docs UDP echo", docs.serve_udp_echo, docs.exercise_udp_echo),
    ]
}


# --------------------------------------------------------------------------------------
# Same backend, one polyloop.run
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SCENARIOS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_scenario_on_one_backend(backend: str, name: str) -> None:
    scenario = SCENARIOS[name]

    async def main() -> None:
        port, aclose = await scenario.serve()
        try:
            await scenario.exercise(port)
        finally:
            await aclose()

    polyloop.run(main, backend=backend)


# --------------------------------------------------------------------------------------
# Across backends: a server process per backend, a client process per backend
# --------------------------------------------------------------------------------------


def _serve_forever(backend: str) -> None:
    async def main() -> None:
        ports = {}
        for name, scenario in SCENARIOS.items():
            ports[name], _ = await scenario.serve()
        print(json.dumps(ports), flush=True)
        sys.stdout = open(os.devnull, "w")  # the docs' protocols print; nobody reads it
        await polyloop.run_in_thread(sys.stdin.read)  # until the test closes our stdin

    polyloop.run(main, backend=backend)


def _client(backend: str, servers: dict[str, dict[str, int]]) -> None:
    async def main() -> dict[str, str]:
        results: dict[str, str] = {}
        for server_backend, ports in servers.items():
            for name, port in ports.items():
                try:
                    await polyloop.wait_for(SCENARIOS[name].exercise(port), 30)
                    results[f"{server_backend}/{name}"] = "pass"
                except BaseException as exc:
                    results[f"{server_backend}/{name}"] = f"fail: {exc!r}"
        return results

    print(json.dumps(polyloop.run(main, backend=backend)), flush=True)


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, dict[str, int]]]:
    def start(backend: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, str(HERE), "serve", backend],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    procs = {b: start(b) for b in BACKENDS}
    try:
        ports = {}
        for b, proc in procs.items():
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else ""
            ports[b] = json.loads(line)
        yield ports
    finally:
        for proc in procs.values():
            assert proc.stdin is not None
            proc.stdin.close()
        for proc in procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            for f in (proc.stdout, proc.stderr):
                if f:
                    f.close()


@pytest.mark.parametrize("client_backend", BACKENDS)
def test_across_backends(client_backend: str, servers: dict[str, dict[str, int]]) -> None:
    """Every scenario's server on every backend, against a client on ``client_backend``
    in another process (the asyncio documentation's TCP and UDP echo too)."""
    proc = subprocess.run(
        [sys.executable, str(HERE), "client", client_backend, json.dumps(servers)],
        capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(results) == len(BACKENDS) * len(SCENARIOS)
    failed = {k: v for k, v in results.items() if v != "pass"}
    assert not failed, failed


# --------------------------------------------------------------------------------------
# The transport: interfaces, reasons, writes, producers, half-close
# --------------------------------------------------------------------------------------


class Recorder(protocol.Protocol):
    def __init__(self) -> None:
        self.data = bytearray()
        self.reasons: list[Failure] = []
        self.lost: polyloop.Future[Failure] = polyloop.create_future()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.reasons.append(reason)
        self.lost.set_result(reason)


async def pair(
    server_protocol: type[protocol.Protocol] = Recorder,
    client_protocol: type[protocol.Protocol] = Recorder,
) -> tuple[Any, Any, Any]:
    """A Twisted protocol on each end of one connection: (server, client, port)."""
    made: polyloop.Future[Any] = polyloop.create_future()

    class Factory(protocol.Factory):
        def buildProtocol(self, addr: Any) -> Any:
            p = server_protocol()
            p.factory = self
            made.set_result(p)
            return p

    port = await ctw.listen_tcp(Factory(), "127.0.0.1", 0)
    client = await ctw.connect_tcp(client_protocol, "127.0.0.1", port.port)
    return await made, client, port


@pytest.mark.parametrize("backend", BACKENDS)
def test_transport_provides_twisteds_interfaces(backend: str) -> None:
    async def main() -> None:
        srv, client, port = await pair()
        t = client.transport
        for iface in (
            interfaces.ITransport,
            interfaces.ITCPTransport,
            interfaces.IConsumer,
            interfaces.IPushProducer,
            interfaces.ISystemHandle,
        ):
            assert verifyObject(iface, t), iface
        assert verifyObject(interfaces.IListeningPort, port)
        peer, host = t.getPeer(), t.getHost()
        assert (peer.type, peer.host, peer.port) == ("TCP", "127.0.0.1", port.port)
        assert srv.transport.getPeer() == host and srv.transport.getHost() == peer
        assert port.getHost().port == port.port
        assert t.getTcpNoDelay()
        t.setTcpNoDelay(False)
        assert not t.getTcpNoDelay()
        t.setTcpKeepAlive(True)
        assert t.getTcpKeepAlive()
        assert t.getHandle() is not None
        assert t.connected and not t.disconnecting
        assert t.reactor is ctw.get_reactor()
        with pytest.raises(TypeError):
            t.write("text")
        with pytest.raises(TypeError):
            t.writeSequence([b"a", "b"])
        t.writeSequence([b"a", b"b", b"c"])
        t.write(b"d")
        t.loseConnection()
        reason = await srv.lost
        assert bytes(srv.data) == b"abcd"
        assert reason.check(error.ConnectionDone)
        assert (await client.lost).check(error.ConnectionDone)
        assert t.disconnected and not t.connected
        t.write(b"after")  # dropped, as Twisted does
        assert client.reasons == [client.lost.result()]  # connectionLost exactly once
        await port.aclose()

    polyloop.run(main, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_connection_lost_reasons(backend: str) -> None:
    async def main() -> None:
        srv, client, port = await pair()
        client.transport.abortConnection()
        assert (await client.lost).check(error.ConnectionAborted)
        assert (await srv.lost).check(error.ConnectionLost)  # a reset, for the peer
        assert not (await srv.lost).check(error.ConnectionDone)

        class Raises(Recorder):
            def dataReceived(self, data: bytes) -> None:
                raise ZeroDivisionError("in dataReceived")

        srv, client, _ = await pair(Raises)
        client.transport.write(b"boom")
        reason = await srv.lost  # Twisted logs the error and drops the connection
        assert reason.check(ZeroDivisionError), reason
        assert (await client.lost).check(error.ConnectionLost)
        await port.aclose()

    polyloop.run(main, backend=backend)


@implementer(interfaces.IHalfCloseableProtocol)
class HalfCloser(Recorder):
    """IHalfCloseableProtocol: answers after the peer's EOF, then closes."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []

    def readConnectionLost(self) -> None:
        self.events.append("read")
        self.transport.write(b"after eof: " + bytes(self.data))  # type: ignore[union-attr]
        self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        self.events.append("write")


@pytest.mark.parametrize("backend", BACKENDS)
def test_half_close(backend: str) -> None:
    class HalfClient(HalfCloser):
        def readConnectionLost(self) -> None:
            self.events.append("read")
            self.transport.loseConnection()  # type: ignore[union-attr]

    async def main() -> None:
        _, client, port = await pair(HalfCloser, HalfClient)
        client.transport.write(b"question")
        client.transport.loseWriteConnection()
        client.transport.write(b"dropped")  # after the write side closed
        assert (await client.lost).check(error.ConnectionDone)
        assert bytes(client.data) == b"after eof: question"
        assert client.events == ["write", "read"]
        await port.aclose()

    polyloop.run(main, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_pull_producer_filesender(backend: str) -> None:
    """Twisted's FileSender (a pull producer) streams 2 MiB through the transport."""
    import io

    async def main() -> None:
        srv, client, port = await pair()
        payload = os.urandom(2 << 20)
        d = basic.FileSender().beginFileTransfer(io.BytesIO(payload), client.transport)
        await polyloop.wait_for(ctw.from_deferred(d), 20)
        client.transport.loseConnection()
        await polyloop.wait_for(srv.lost, 20)
        assert bytes(srv.data) == payload
        await port.aclose()

    polyloop.run(main, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_lose_connection_waits_for_a_pull_producer(backend: str) -> None:
    async def main() -> None:
        srv, client, port = await pair()
        chunks = [b"a" * 1000] * 5

        class Pull:
            def resumeProducing(self) -> None:
                if chunks:
                    client.transport.write(chunks.pop())
                else:
                    client.transport.unregisterProducer()

            def stopProducing(self) -> None:
                pass

        push = Pull()
        client.transport.registerProducer(push, True)
        with pytest.raises(RuntimeError):  # one producer at a time
            client.transport.registerProducer(push, True)
        client.transport.unregisterProducer()
        client.transport.registerProducer(Pull(), False)
        client.transport.loseConnection()  # waits for the producer to unregister
        await srv.lost
        assert bytes(srv.data) == b"a" * 5000
        await port.aclose()

    polyloop.run(main, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_push_producer_follows_flow_control(backend: str) -> None:
    """A peer that reads nothing: the producer is paused above the high-water mark, and
    the transport's buffer stays within it plus one chunk; resumed once the peer reads."""

    async def main() -> None:
        srv, client, port = await pair()
        srv.transport.pauseProducing()
        sizes: list[int] = []
        producer = EchoClient()
        producer.payload = b"p" * (16 << 20)
        producer.transport = client.transport
        original = client.transport.write

        def write(data: bytes) -> None:
            original(data)
            sizes.append(client.transport.polyloop_transport.get_write_buffer_size())

        client.transport.write = write
        client.transport.registerProducer(producer, True)
        producer.resumeProducing()
        for _ in range(1000):  # bounded: 10 s, for a loaded machine
            if producer.paused:
                break
            await polyloop.sleep(0.01)
        assert producer.paused and producer.pauses >= 1
        assert max(sizes) <= 64 * 1024 + 16384  # never past the high mark plus one chunk
        srv.transport.resumeProducing()
        for _ in range(6000):  # bounded: 60 s
            if len(srv.data) == len(producer.payload):
                break
            await polyloop.sleep(0.01)
        assert len(srv.data) == len(producer.payload)
        assert producer.pauses >= 1 and not producer.paused
        client.transport.loseConnection()
        await srv.lost
        await port.aclose()

    polyloop.run(main, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_transport_as_push_producer_pauses_reading(backend: str) -> None:
    async def main() -> None:
        srv, client, port = await pair()
        srv.transport.pauseProducing()
        client.transport.write(b"x" * 10)
        await polyloop.sleep(0.2)
        assert bytes(srv.data) == b""  # nothing delivered while paused
        srv.transport.resumeProducing()
        for _ in range(100):
            if len(srv.data) == 10:
                break
            await polyloop.sleep(0.01)
        assert bytes(srv.data) == b"x" * 10
        client.transport.loseConnection()
        await srv.lost
        await port.aclose()

    polyloop.run(main, backend=backend)


# --------------------------------------------------------------------------------------
# The reactor-like object
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_reactor_time(backend: str) -> None:
    async def main() -> None:
        r = ctw.get_reactor()
        assert r is ctw.get_reactor()
        for iface in (
            interfaces.IReactorTime,
            interfaces.IReactorTCP,
            interfaces.IReactorUNIX,
            interfaces.IReactorFromThreads,
            interfaces.IReactorPluggableNameResolver,
        ):
            assert verifyObject(iface, r), iface
        assert abs(r.seconds() - polyloop.time()) < 0.5
        fired: list[str] = []
        a = r.callLater(0.05, fired.append, "a")
        b = r.callLater(0.01, fired.append, "b")
        c = r.callLater(0.02, lambda **kw: fired.append(kw["x"]), x="c")
        gone = r.callLater(0.01, fired.append, "cancelled")
        later = r.callLater(0.01, fired.append, "reset")
        sooner = r.callLater(10, fired.append, "sooner")
        assert verifyObject(interfaces.IDelayedCall, a)
        assert set(r.getDelayedCalls()) == {a, b, c, gone, later, sooner}
        gone.cancel()
        later.reset(0.1)
        sooner.reset(0.03)
        with pytest.raises(error.AlreadyCancelled):
            gone.cancel()
        await polyloop.sleep(0.3)
        assert fired == ["b", "c", "sooner", "a", "reset"]
        assert not a.active() and a.called
        with pytest.raises(error.AlreadyCalled):
            a.cancel()
        assert r.getDelayedCalls() == []
        # Twisted's helpers that take a clock:
        assert await ctw.from_deferred(task.deferLater(r, 0.01, lambda: 42)) == 42
        ticks: list[float] = []
        loop = task.LoopingCall(lambda: ticks.append(r.seconds()))
        loop.clock = r
        done = loop.start(0.01, now=True)
        await polyloop.sleep(0.1)
        loop.stop()
        await ctw.from_deferred(done)
        assert len(ticks) >= 3
        # callFromThread from a worker thread
        got: polyloop.Future[str] = polyloop.create_future()
        await polyloop.run_in_thread(r.callFromThread, got.set_result, "from a thread")
        assert await got == "from a thread"

    polyloop.run(main, backend=backend)


class Client(protocol.ClientFactory):
    def __init__(self) -> None:
        self.events: list[str] = []
        self.done: polyloop.Future[None] = polyloop.create_future()
        self.protocol = basic.LineReceiver

    def startedConnecting(self, connector: Any) -> None:
        self.events.append("started")

    def buildProtocol(self, addr: Any) -> Any:
        self.events.append(f"build {addr.port}")
        p = super().buildProtocol(addr)
        p.connectionMade = lambda: p.transport.loseConnection()  # type: ignore[union-attr]
        return p

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.events.append(f"failed {reason.type.__name__}")
        self.done.set_result(None)

    def clientConnectionLost(self, connector: Any, reason: Failure) -> None:
        self.events.append(f"lost {reason.type.__name__}")
        self.done.set_result(None)


@pytest.mark.parametrize("backend", BACKENDS)
def test_reactor_listen_and_connect_tcp(backend: str) -> None:
    async def main() -> None:
        r = ctw.get_reactor()
        port = r.listenTCP(0, protocol.Factory.forProtocol(wire.Echo), interface="127.0.0.1")
        number = port.getHost().port  # known at once, as with Twisted's listenTCP
        with pytest.raises(error.CannotListenError):
            r.listenTCP(number, protocol.Factory.forProtocol(wire.Echo), interface="127.0.0.1")
        factory = Client()
        connector = r.connectTCP("localhost", number, factory)
        assert verifyObject(interfaces.IConnector, connector)
        await polyloop.wait_for(factory.done, 10)
        assert factory.events == ["started", f"build {number}", "lost ConnectionDone"]
        await ctw.from_deferred(port.stopListening())
        refused = Client()
        r.connectTCP("127.0.0.1", number, refused)
        await polyloop.wait_for(refused.done, 10)
        assert refused.events == ["started", "failed ConnectionRefusedError"]

    polyloop.run(main, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_unix_sockets(backend: str, tmp_path: Path) -> None:
    path = str(tmp_path / "s.sock")

    async def main() -> None:
        port = await ctw.listen_unix(UpperLines, path)
        client = await ctw.connect_unix(LineClient, path)
        await polyloop.wait_for(client.lost, 10)
        assert client.lines == [line.upper() for line in client.sent]
        assert client.transport.getPeer().name == path.encode()  # Twisted's are bytes
        await port.aclose()
        assert not os.path.exists(path)

    polyloop.run(main, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_deferreds_and_awaitables(backend: str) -> None:
    from twisted.internet import defer

    async def main() -> None:
        async def double(x: int) -> int:
            await polyloop.sleep(0.01)
            return 2 * x

        assert await ctw.from_deferred(ctw.to_deferred(double(21))) == 42
        d: defer.Deferred[int] = defer.Deferred()
        polyloop.call_later(0.01, d.callback, 7)
        assert await ctw.from_deferred(d) == 7
        failing: defer.Deferred[int] = defer.Deferred()
        polyloop.call_soon(failing.errback, Failure(KeyError("k")))
        with pytest.raises(KeyError):
            await ctw.from_deferred(failing)
        never = ctw.to_deferred(polyloop.sleep(3600))
        never.cancel()
        with pytest.raises(polyloop.Cancelled):  # polyloop's type in polyloop code
            await ctw.from_deferred(never)
        seen: list[Any] = []
        never_again = ctw.to_deferred(polyloop.sleep(3600))
        never_again.addErrback(seen.append)  # Twisted's type for the Deferred
        never_again.cancel()
        assert seen and seen[0].check(defer.CancelledError), seen

    polyloop.run(main, backend=backend)


# --------------------------------------------------------------------------------------
# Subprocesses: what must hold for a whole process
# --------------------------------------------------------------------------------------


def run_script(code: str, timeout: float = 60) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        env=dict(os.environ, PYTHONPATH=str(HERE.parent)),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_loaded_only_when_used_and_an_import_error_without_twisted() -> None:
    """``import polyloop_twisted`` loads neither Twisted nor the compat package; importing
    the package loads none of its modules; the first name used loads them. Without
    Twisted, the import fails with an ``ImportError`` that names the extra."""
    out = run_script(
        """
        import sys
        def twisted():
            return sorted(m for m in sys.modules if m.split('.')[0] in ('twisted', 'zope'))
        def compat():
            return sorted(m for m in sys.modules if m.startswith('polyloop_twisted.compat'))
        import polyloop_twisted
        print(twisted(), compat())
        import polyloop_twisted.compat
        print(compat())
        polyloop_twisted.compat.get_reactor
        print(compat())
        for name in list(sys.modules):
            if name.split('.')[0] in ('twisted', 'polyloop_twisted'):
                del sys.modules[name]
        sys.modules['twisted'] = None
        try:
            import polyloop_twisted.compat
        except ImportError as exc:
            print('ImportError', exc.name, "polyloop[twisted]" in str(exc))
        """
    )
    package = "polyloop_twisted.compat"
    # not _api; the reactor's TCP, UDP and processes come with it
    modules = [
        f"{package}._twisted_{m}" for m in ("process", "reactor", "tcp", "transport", "udp")
    ]
    assert out.splitlines() == [
        "[] []",
        str([package]),
        str([package, *modules]),
        "ImportError twisted.internet True",
    ]


def test_the_global_reactor_is_never_installed() -> None:
    out = run_script(
        """
        import sys
        import polyloop
        import test_compat_twisted as t
        for backend in t.BACKENDS:
            for name, scenario in t.SCENARIOS.items():
                async def main():
                    port, aclose = await scenario.serve()
                    await scenario.exercise(port)
                    await aclose()
                polyloop.run(main, backend=backend)
        # A reactor that owns its loop, not installed: it stays the application's own.
        from polyloop_twisted.compat import Reactor
        from twisted.internet import protocol
        for backend in ("asyncio", "gevent", "tornado"):
            r = Reactor.for_backend(backend)
            port = r.listenTCP(0, protocol.Factory(), interface="127.0.0.1")
            r.callInThread(lambda: None)
            r.callLater(0.05, r.stop)
            r.run(installSignalHandlers=False)
        print('twisted.internet.reactor' in sys.modules)
        """,
        timeout=120,
    )
    assert out.splitlines()[-1] == "False"


HOSTS = {
    "asyncio": """
        import asyncio
        asyncio.run(main())
    """,
    "tornado": """
        from tornado.ioloop import IOLoop
        IOLoop.current().run_sync(main)
    """,
    "twisted": """
        from twisted.internet import defer, task
        import polyloop_twisted
        task.react(lambda reactor: polyloop_twisted.as_deferred(main(), reactor))
    """,
    "gevent": """
        import gevent, polyloop_gevent
        gevent.spawn(polyloop_gevent.wait, main()).get()
    """,
}


@pytest.mark.parametrize("host", list(HOSTS))
def test_host_mode(host: str) -> None:
    """The scenarios started from a loop the application runs, with no polyloop.run."""
    out = run_script(
        textwrap.dedent(
            """
            import polyloop
            import test_compat_twisted as t

            async def main():
                for name, scenario in t.SCENARIOS.items():
                    port, aclose = await scenario.serve()
                    await scenario.exercise(port)
                    await aclose()
                session = polyloop.current_backend()
                print("session", session.name, session.owned)
            """
        )
        + textwrap.dedent(HOSTS[host]),
        timeout=120,
    )
    assert out.splitlines()[-1] == f"session {host} False"


def test_reverse_shim_on_a_reactor_the_application_runs() -> None:
    """Polyloop and asyncio protocols under Twisted's own listenTCP, next to a Twisted
    protocol, on the global reactor run by task.react."""
    out = run_script(
        """
        import asyncio
        import polyloop
        from twisted.internet import defer, protocol, task
        from twisted.protocols import wire
        from polyloop_twisted.compat import PolyloopFactory, from_deferred

        class Upper(polyloop.Protocol):
            def connection_made(self, transport):
                self.transport = transport
                self.session = polyloop.current_backend()
            def data_received(self, data):
                self.transport.write(data.upper())
            def eof_received(self):
                self.transport.write(b" from " + self.session.name.encode())
                return None  # close after the flush

        class Doubler(asyncio.Protocol):  # a plain asyncio protocol
            def connection_made(self, transport):
                self.transport = transport
            def data_received(self, data):
                self.transport.write(data * 2)

        async def ask(port, data, expect, eof=False):
            async with await polyloop.open_tcp_stream("127.0.0.1", port) as s:
                await s.send(data)
                if eof:
                    await s.send_eof()
                out = b""
                while len(out) < expect and (chunk := await s.receive()):
                    out += chunk
                return out

        async def main(reactor):
            def listen(factory):
                return reactor.listenTCP(0, factory, interface="127.0.0.1")

            def call(port, *args):
                return polyloop_twisted.as_deferred(ask(port.getHost().port, *args), reactor)

            upper = listen(PolyloopFactory(Upper, reactor))
            double = listen(PolyloopFactory(Doubler, reactor))
            echo = listen(protocol.Factory.forProtocol(wire.Echo))
            print(await call(upper, b"abc", 16, True))
            print(await call(double, b"xy", 4))
            print(await call(echo, b"echo", 4))
            for p in (upper, double, echo):
                await p.stopListening()

        import polyloop_twisted
        task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
        """
    )
    assert out.splitlines() == ["b'ABC from twisted'", "b'xyxy'", "b'echo'"]


def test_where_twisted_web_stops_on_other_backends() -> None:
    """Written down in docs/migrating/twisted.md: static.File (a pull producer, driven by
    Twisted's global Cooperator) installs the global reactor and never answers off
    Twisted; Agent works, but HostnameEndpoint's LoopingCall installs the global reactor."""
    out = run_script(
        """
        import os, sys, tempfile, warnings
        import polyloop
        from polyloop_twisted import compat as ctw
        from twisted.web import client, resource, server, static

        warnings.simplefilter("ignore", DeprecationWarning)  # readBody's, on any reactor

        async def main():
            tmp = tempfile.mkdtemp()
            with open(os.path.join(tmp, "f.txt"), "wb") as f:
                f.write(b"file body")
            root = resource.Resource()
            root.putChild(b"files", static.File(tmp))
            site = server.Site(root, reactor=ctw.get_reactor())
            port = await ctw.listen_tcp(site, "127.0.0.1", 0)
            agent = client.Agent(ctw.get_reactor())
            url = f"http://localhost:{port.port}/files/f.txt".encode()
            try:
                response = await polyloop.wait_for(
                    ctw.from_deferred(agent.request(b"GET", url)), 2)
                print("static.File answered", response.code)
            except TimeoutError:
                print("static.File: no answer")
            print("global reactor", "twisted.internet.reactor" in sys.modules)
            await port.aclose()

        polyloop.run(main, backend="asyncio")
        """
    )
    assert out.splitlines() == ["static.File: no answer", "global reactor True"]


@pytest.mark.parametrize("backend", ["asyncio", "gevent"])
def test_twisted_web_client_agent(backend: str) -> None:
    out = run_script(
        f"""
        import warnings
        import polyloop
        from polyloop_twisted import compat as ctw
        from twisted.web import client, server
        import test_compat_twisted as t

        warnings.simplefilter("ignore", DeprecationWarning)  # readBody's, on any reactor

        async def main():
            r = ctw.get_reactor()
            port = await ctw.listen_tcp(server.Site(t.Hello(), reactor=r), "127.0.0.1", 0)
            agent = client.Agent(r)
            url = f"http://localhost:{{port.port}}/agent".encode()
            response = await ctw.from_deferred(agent.request(b"GET", url))
            print(await ctw.from_deferred(client.readBody(response)))
            await port.aclose()

        polyloop.run(main, backend={backend!r})
        """
    )
    assert out.splitlines()[-1] == "b'hello /agent 127.0.0.1'"


# --------------------------------------------------------------------------------------
# The full reactor: one that owns its loop (Reactor.for_backend, install)
# --------------------------------------------------------------------------------------

OWNED = ["asyncio", "gevent", "tornado"]


def run_owned(backend: str, start: Callable[[Any], object], timeout: float = 10) -> Any:
    """Run ``start(reactor)`` on a fresh owned reactor until it stops (or ``timeout``)."""
    r = ctw.Reactor.for_backend(backend)
    assert r.running is False
    timed_out = r.callLater(timeout, r.stop)
    r.callWhenRunning(start, r)
    r.run(installSignalHandlers=False)
    assert timed_out.active(), f"still running after {timeout} s: stopped by the timeout"
    timed_out.cancel()
    return r


class Noted(protocol.Protocol):
    def __init__(self, events: list[Any], r: Any, stop_on_lost: bool = False) -> None:
        self.events = events
        self.r = r
        self.stop_on_lost = stop_on_lost

    def connectionMade(self) -> None:
        self.events.append(("made", self.transport.sessionno))  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.events.append(("lost", reason.type.__name__))
        if self.stop_on_lost:
            self.r.stop()


@pytest.mark.parametrize("backend", OWNED)
def test_owned_reactor_core_and_system_events(backend: str) -> None:
    events: list[str] = []

    def start(r: Any) -> None:
        events.append(f"running {r.running}")
        r.callInThread(lambda: r.callFromThread(from_thread))

    def from_thread() -> None:
        events.append("from a thread")
        r.stop()

    r = ctw.Reactor.for_backend(backend)
    for iface in (
        interfaces.IReactorCore,
        interfaces.IReactorTime,
        interfaces.IReactorFDSet,
        interfaces.IReactorTCP,
        interfaces.IReactorUNIX,
        interfaces.IReactorSSL,
        interfaces.IReactorSocket,
        interfaces.IReactorThreads,
        interfaces.IReactorPluggableNameResolver,
    ):
        assert verifyObject(iface, r), iface
    for phase in ("before", "during", "after"):
        r.addSystemEventTrigger(phase, "startup", events.append, f"{phase} startup")
        r.addSystemEventTrigger(phase, "shutdown", events.append, f"{phase} shutdown")
    r.callWhenRunning(start, r)
    r.callLater(10, r.stop)
    r.run(installSignalHandlers=False)
    assert events[:5] == [
        "before startup",
        "during startup",
        "after startup",
        "running True",
        "from a thread",
    ]
    assert events[-3:] == ["before shutdown", "during shutdown", "after shutdown"]
    with pytest.raises(error.ReactorNotRestartable):
        r.run()
    assert r.getThreadPool is not None and r.threadpool is None  # stopped at shutdown


@pytest.mark.parametrize("backend", OWNED)
def test_owned_reactor_fd_set(backend: str) -> None:
    import socket

    got: list[bytes] = []
    a, b = socket.socketpair()

    class Reader:
        def fileno(self) -> int:
            return a.fileno()

        def doRead(self) -> None:
            got.append(a.recv(100))
            r.removeReader(self)
            r.stop()

        def connectionLost(self, reason: Any) -> None:
            pass

        def logPrefix(self) -> str:
            return "reader"

    r = ctw.Reactor.for_backend(backend)
    reader = Reader()
    r.addReader(reader)  # before run: watched from when the loop runs
    assert r.getReaders() == [reader]
    r.callLater(0.01, b.send, b"ready")
    r.callLater(10, r.stop)
    r.run(installSignalHandlers=False)
    a.close()
    b.close()
    assert got == [b"ready"]
    assert r.getReaders() == []


def _link_local_ipv6() -> str | None:
    try:
        with open("/proc/net/if_inet6") as f:
            for line in f:
                hexaddr, _, _, scope, _, name = line.split()
                if scope == "20":  # link
                    groups = [hexaddr[i : i + 4] for i in range(0, 32, 4)]
                    import ipaddress

                    return f"{ipaddress.IPv6Address(':'.join(groups))}%{name}"
    except OSError:
        return None
    return None


@pytest.mark.parametrize("backend", OWNED)
def test_listen_tcp_on_an_ipv6_scope_id(backend: str) -> None:
    interface = _link_local_ipv6()
    if interface is None:
        pytest.skip("no link-local IPv6 address on this machine")
    events: list[Any] = []

    def start(r: Any) -> None:
        port = r.listenTCP(0, protocol.Factory.forProtocol(protocol.Protocol), interface=interface)
        host = port.getHost()
        events.append(host.host)
        client = protocol.ClientFactory.forProtocol(protocol.Protocol)
        client.buildProtocol = lambda addr: (events.append("connected"), r.stop())[1]  # type: ignore[method-assign]
        r.connectTCP(host.host, host.port, client)

    run_owned(backend, start)
    assert events == [interface, "connected"]


@pytest.mark.parametrize("backend", OWNED)
def test_lose_connection_with_a_pull_producer_still_sees_the_peer_close(backend: str) -> None:
    """loseConnection() waits for the registered pull producer; a peer that closes in the
    meantime still ends the connection (before, reading stopped at once and
    connectionLost never came)."""
    events: list[Any] = []

    @implementer(interfaces.IPullProducer)
    class Idle:
        def resumeProducing(self) -> None:
            pass

        def stopProducing(self) -> None:
            events.append("producer stopped")

    class Server(Noted):
        def connectionMade(self) -> None:
            self.transport.registerProducer(Idle(), False)  # type: ignore[union-attr]
            self.transport.loseConnection()  # type: ignore[union-attr]

    class Closer(protocol.Protocol):
        def connectionMade(self) -> None:
            self.transport.loseConnection()  # type: ignore[union-attr]

    def start(r: Any) -> None:
        factory = protocol.Factory()
        factory.buildProtocol = lambda addr: Server(events, r, stop_on_lost=True)  # type: ignore[method-assign]
        port = r.listenTCP(0, factory, interface="127.0.0.1")
        r.connectTCP("127.0.0.1", port.getHost().port, protocol.ClientFactory.forProtocol(Closer))

    run_owned(backend, start)
    assert events == ["producer stopped", ("lost", "ConnectionDone")]


class Failed(protocol.ClientFactory):
    def __init__(self, r: Any, reasons: list[Any]) -> None:
        self.r = r
        self.reasons = reasons

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.reasons.append((reason.type, reason.value.args))
        self.r.stop()


@pytest.mark.parametrize("backend", OWNED)
def test_connect_tcp_port_errors_are_twisteds(backend: str) -> None:
    r = ctw.Reactor.for_backend(backend)
    with pytest.raises(error.ServiceNameUnknownError):
        r.connectTCP("127.0.0.1", "no-such-service", protocol.ClientFactory())
    connector = r.connectTCP("127.0.0.1", "http", protocol.ClientFactory())
    assert connector.getDestination().port == 80
    connector.stopConnecting()  # closes the socket it made
    for port, expected in [
        (65536, (OverflowError, ("connect_ex(): port must be 0-65535.",))),
        (-1, (OverflowError, ("connect_ex(): port must be 0-65535.",))),
        (0, (error.ConnectionRefusedError, ("Connection refused",))),
    ]:
        reasons: list[Any] = []

        def start(r: Any, port: int = port, reasons: list[Any] = reasons) -> None:
            r.connectTCP("127.0.0.1", port, Failed(r, reasons))

        run_owned(backend, start)
        assert reasons == [expected], port


@pytest.mark.parametrize("backend", OWNED)
def test_connect_tcp_from_a_bind_address(backend: str) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        local = probe.getsockname()
    peers: list[Any] = []

    class Server(protocol.Protocol):
        def connectionMade(self) -> None:
            peers.append(self.transport.getPeer().port)  # type: ignore[union-attr]
            self.transport.loseConnection()  # type: ignore[union-attr]

    def start(r: Any) -> None:
        port = r.listenTCP(0, protocol.Factory.forProtocol(Server), interface="127.0.0.1")
        client = protocol.ClientFactory.forProtocol(protocol.Protocol)
        client.clientConnectionLost = lambda c, reason: r.stop()  # type: ignore[method-assign]
        r.connectTCP("127.0.0.1", port.getHost().port, client, bindAddress=local)

    run_owned(backend, start)
    assert peers == [local[1]]


@pytest.mark.parametrize("backend", OWNED)
def test_listen_unix_mode_sessionno_port_socket_and_log_lines(
    backend: str, tmp_path: Path
) -> None:
    import socket
    import stat

    from twisted.python import log as twisted_log

    logged: list[str] = []
    observer = lambda event: logged.append(" ".join(map(str, event.get("message", ()))))  # noqa: E731
    twisted_log.addObserver(observer)
    events: list[Any] = []
    path = str(tmp_path / "s.sock")
    modes: list[int] = []

    def start(r: Any) -> None:
        unix = r.listenUNIX(path, protocol.Factory.forProtocol(protocol.Protocol), mode=0o600)
        modes.append(stat.S_IMODE(os.stat(path).st_mode))
        factory = protocol.Factory()
        factory.buildProtocol = lambda addr: Noted(events, r)  # type: ignore[method-assign]
        port = r.listenTCP(0, factory, interface="127.0.0.1")
        assert isinstance(port.socket, socket.socket)
        assert port.socket.getsockname()[1] == port.getHost().port
        events.append(port.getHost().port)
        for _ in range(2):
            r.connectTCP("127.0.0.1", port.getHost().port, protocol.ClientFactory())
        r.callLater(0.2, lambda: (port.stopListening(), unix.stopListening()))
        r.callLater(0.4, r.stop)

    try:
        run_owned(backend, start)
    finally:
        twisted_log.removeObserver(observer)
    number = events.pop(0)
    assert modes == [0o600]
    assert sorted(e for e in events if e[0] == "made") == [("made", 1), ("made", 2)]
    assert f"Factory starting on {number}" in logged
    assert f"(TCP Port {number} Closed)" in logged
    assert f"Factory starting on {path!r}" in logged


@pytest.mark.parametrize("backend", OWNED)
def test_pause_and_resume_reading_in_connection_made(backend: str) -> None:
    """Twisted's test_stopStartReading: pauseProducing()/resumeProducing() in
    connectionMade leave the connection reading (on Tornado a resume_reading inside
    connection_made used to arm a second IOStream read: "Already reading")."""
    got: list[bytes] = []

    class Toggler(protocol.Protocol):
        def connectionMade(self) -> None:
            self.transport.pauseProducing()  # type: ignore[union-attr]
            self.transport.resumeProducing()  # type: ignore[union-attr]

        def dataReceived(self, data: bytes) -> None:
            got.append(data)
            if sum(map(len, got)) == 16384:
                self.transport.loseConnection()  # type: ignore[union-attr]

    class Sender(protocol.Protocol):
        def connectionMade(self) -> None:
            self.transport.write(b"x" * 16384)  # type: ignore[union-attr]

        def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
            r.stop()

    r = ctw.Reactor.for_backend(backend)
    port = r.listenTCP(0, protocol.Factory.forProtocol(Toggler), interface="127.0.0.1")
    r.connectTCP("127.0.0.1", port.getHost().port, protocol.ClientFactory.forProtocol(Sender))
    r.callLater(10, r.stop)
    r.run(installSignalHandlers=False)
    assert b"".join(got) == b"x" * 16384


INSTALLED = """
import os, sys, tempfile, urllib.request
from polyloop_twisted.compat import install
assert "twisted.internet.reactor" not in sys.modules
reactor = install(backend=sys.argv[1])
from twisted.internet import reactor as global_reactor, defer, task, threads
from twisted.web import server, static
assert global_reactor is reactor, global_reactor

tmp = tempfile.mkdtemp()
body = os.urandom(300_000)
with open(os.path.join(tmp, "f.bin"), "wb") as f:
    f.write(body)
port = reactor.listenTCP(0, server.Site(static.File(tmp)), interface="127.0.0.1")
steps = []

def work():
    for i in range(5):
        steps.append(i)
        yield

def fetch():
    url = f"http://127.0.0.1:{port.getHost().port}/f.bin"
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()

def done(results):
    print("cooperate", steps, "static.File", results[1] == body)

d = defer.gatherResults([task.cooperate(work()).whenDone(), threads.deferToThread(fetch)])
d.addCallback(done).addErrback(lambda f: print("failed", f.getTraceback()))
d.addBoth(lambda _: reactor.stop())
reactor.callLater(20, reactor.stop)
reactor.run()
print("stopped", reactor.running)
"""


@pytest.mark.parametrize("backend", OWNED)
def test_install_runs_global_reactor_code(backend: str) -> None:
    """install(backend=...) makes the reactor twisted.internet.reactor: task.cooperate,
    static.File and deferToThread, all on the global reactor, run on the backend."""
    out = subprocess.run(
        [sys.executable, "-c", INSTALLED, backend],
        capture_output=True, text=True, timeout=60, cwd=HERE.parent,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "cooperate [0, 1, 2, 3, 4] static.File True",
        "stopped False",
    ], out.stderr


SIGINT_SCRIPT = """
import os, signal, sys
from polyloop_twisted.compat import install
reactor = install(backend=sys.argv[1])
reactor.addSystemEventTrigger("before", "shutdown", print, "shutdown trigger")
reactor.callLater(0.2, os.kill, os.getpid(), signal.SIGINT)
reactor.callLater(20, print, "not interrupted")
reactor.run()
restored = signal.getsignal(signal.SIGINT) is signal.default_int_handler
print("run returned", reactor.running, restored)
"""


@pytest.mark.parametrize("backend", OWNED)
def test_ctrl_c_stops_an_installed_reactor_as_twisteds(backend: str) -> None:
    """SIGINT fires the shutdown triggers and run() returns, as on Twisted's reactors
    (polyloop's own handler, which cancels the run, is put back afterwards)."""
    out = subprocess.run(
        [sys.executable, "-c", SIGINT_SCRIPT, backend],
        capture_output=True, text=True, timeout=60, cwd=HERE.parent,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["shutdown trigger", "run returned False True"]


@pytest.mark.parametrize("backend", OWNED)
def test_listen_ssl_connect_ssl_and_start_tls_with_stdlib_contexts(
    backend: str, tmp_path: Path
) -> None:
    """listenSSL/connectSSL with stdlib contexts, and startTLS on a plain connection
    (STARTTLS: a line in clear, then TLS both ways), with Twisted's protocols."""
    from polyloop_conformance.tls import material

    tls = material(str(tmp_path))
    lines: list[bytes] = []

    class Upper(basic.LineReceiver):
        def lineReceived(self, line: bytes) -> None:
            if line == b"STARTTLS":
                self.sendLine(b"GO")
                self.transport.startTLS(tls.server_context())  # type: ignore[union-attr]
            else:
                self.sendLine(line.upper())

    class Ask(basic.LineReceiver):
        def __init__(self, first: bytes) -> None:
            self.first = first

        def connectionMade(self) -> None:
            self.sendLine(self.first)

        def lineReceived(self, line: bytes) -> None:
            lines.append(line)
            if line == b"GO":
                self.transport.startTLS(tls.client_context())  # type: ignore[union-attr]
                self.sendLine(b"secret")
            else:
                cipher = self.transport.get_extra_info("ssl_object")  # type: ignore[union-attr]
                lines.append(b"tls" if cipher is not None else b"clear")
                self.transport.loseConnection()  # type: ignore[union-attr]

    def start(r: Any) -> None:
        plain = r.listenTCP(0, protocol.Factory.forProtocol(Upper), interface="127.0.0.1")
        secure = r.listenSSL(
            0, protocol.Factory.forProtocol(Upper), tls.server_context(), interface="127.0.0.1"
        )
        done: list[str] = []

        def client(first: bytes, what: str) -> protocol.ClientFactory:
            factory = protocol.ClientFactory()
            factory.buildProtocol = lambda addr: Ask(first)  # type: ignore[method-assign]

            def lost(connector: Any, reason: Failure) -> None:
                done.append(what)
                if len(done) == 2:
                    r.stop()

            factory.clientConnectionLost = lost  # type: ignore[method-assign]
            factory.clientConnectionFailed = lost  # type: ignore[method-assign]
            return factory

        r.connectSSL(
            "localhost", secure.getHost().port, client(b"hello", "ssl"), tls.client_context()
        )
        r.connectTCP("localhost", plain.getHost().port, client(b"STARTTLS", "starttls"))

    run_owned(backend, start)
    assert sorted(lines) == sorted([b"HELLO", b"tls", b"GO", b"SECRET", b"tls"])


def test_pyopenssl_context_factories_are_refused() -> None:
    class OpenSSLStyle:
        def getContext(self) -> object:
            return object()  # what a pyOpenSSL factory gives: not a stdlib context

    r = ctw.Reactor.for_backend("asyncio")
    with pytest.raises(TypeError, match="pyOpenSSL"):
        r.listenSSL(0, protocol.Factory(), OpenSSLStyle(), interface="127.0.0.1")
    with pytest.raises(TypeError, match="pyOpenSSL"):
        r.connectSSL("127.0.0.1", 1, protocol.ClientFactory(), OpenSSLStyle())


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        _serve_forever(sys.argv[2])
    else:
        _client(sys.argv[2], json.loads(sys.argv[3]))
