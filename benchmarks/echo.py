"""Echo requests/s: each framework's native echo server against polyloop's on that framework.

    python benchmarks/echo.py [--backend NAME]... [--seconds 5] [--connections 20] [--size 64]

For each backend, two servers are measured in one run, alternately, with the same load
generator: the framework's own idiomatic echo server ("native") and `polyloop serve
echo --backend NAME` (the Protocol API echo app). The load generator is a separate
process (uvloop if installed): N connections, each sending a SIZE-byte message and
waiting for it to come back, for SECONDS. The ratio polyloop/native is what matters; the
absolute numbers depend on the machine. Rounds alternate (native, polyloop, native,
polyloop, ...) and the median of each is reported, which evens out drift on a busy host.
This is a benchmark, not a test: nothing asserts on time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

NATIVE = {
    "asyncio": """
import asyncio
class Echo(asyncio.Protocol):
    def connection_made(self, t): self.t = t
    def data_received(self, d): self.t.write(d)
async def main():
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(Echo, "127.0.0.1", 0)
    print("listening on 127.0.0.1:%d" % srv.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
""",
    "twisted": """
from twisted.internet import epollreactor
reactor = epollreactor.EPollReactor()
from twisted.internet.protocol import Factory, Protocol
class Echo(Protocol):
    def dataReceived(self, d): self.transport.write(d)
port = reactor.listenTCP(0, Factory.forProtocol(Echo), interface="127.0.0.1")
print("listening on 127.0.0.1:%d" % port.getHost().port, flush=True)
reactor.run(installSignalHandlers=False)
""",
    "gevent": """
from gevent.server import StreamServer
def echo(sock, addr):
    while True:
        d = sock.recv(65536)
        if not d: break
        sock.sendall(d)
server = StreamServer(("127.0.0.1", 0), echo)
server.start()
print("listening on 127.0.0.1:%d" % server.server_port, flush=True)
server.serve_forever()
""",
    "tornado": """
import asyncio
from tornado.tcpserver import TCPServer
from tornado.iostream import StreamClosedError
from tornado.netutil import bind_sockets
class Echo(TCPServer):
    async def handle_stream(self, stream, address):
        try:
            while True:
                stream.write(await stream.read_bytes(65536, partial=True))
        except StreamClosedError:
            pass
async def main():
    socks = bind_sockets(0, "127.0.0.1")
    Echo().add_sockets(socks)
    print("listening on 127.0.0.1:%d" % socks[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
""",
}

LOAD = """
import asyncio, sys, time
host = sys.argv[1]
port, seconds = int(sys.argv[2]), float(sys.argv[3])
conns, size = int(sys.argv[4]), int(sys.argv[5])
try:
    import uvloop; new_loop = uvloop.new_event_loop
except ImportError:
    new_loop = asyncio.new_event_loop
async def one(deadline, counts):
    r, w = await asyncio.open_connection(host, port)
    msg = b"x" * size
    n = 0
    while time.monotonic() < deadline:
        w.write(msg)
        await r.readexactly(size)
        n += 1
    counts.append(n)
    w.close()
    await w.wait_closed()
async def main():
    counts = []
    start = time.monotonic()
    await asyncio.gather(*(one(start + seconds, counts) for _ in range(conns)))
    print(sum(counts) / (time.monotonic() - start))
with asyncio.Runner(loop_factory=new_loop) as r:
    r.run(main())
"""


def start(cmd: list[str]) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening on"):
        proc.kill()
        raise RuntimeError(f"server did not start: {cmd}")
    return proc, int(line.rsplit(":", 1)[1])


def load(port: int, args: argparse.Namespace) -> float:
    out = subprocess.run(
        [sys.executable, "-c", LOAD, "127.0.0.1", str(port), str(args.seconds),
         str(args.connections), str(args.size)],
        capture_output=True, text=True, check=True, timeout=args.seconds + 60,
    )  # fmt: skip
    return float(out.stdout.strip())


def native_source(backend: str) -> str:
    source = NATIVE[backend.split(":")[0]]
    if "loop=uvloop" in backend:  # the native baseline for uvloop is uvloop
        source = source.replace("asyncio.run(main())", "import uvloop; uvloop.run(main())")
    return source


def measure(backend: str, args: argparse.Namespace) -> dict[str, float]:
    native_cmd = [sys.executable, "-c", native_source(backend)]
    poly_cmd = [sys.executable, "-m", "polyloop", "serve", "echo", "--backend", backend]
    servers = {"native": start(native_cmd), "polyloop": start(poly_cmd)}
    rates: dict[str, list[float]] = {"native": [], "polyloop": []}
    try:
        for _ in range(args.rounds):
            for kind, (_, port) in servers.items():
                rates[kind].append(load(port, args))
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(10)
    native = statistics.median(rates["native"])
    poly = statistics.median(rates["polyloop"])
    return {"native": native, "polyloop": poly, "ratio": poly / native}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", action="append")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    backends = args.backend or list(NATIVE)
    results = {}
    print(
        f"echo, {args.connections} connections, {args.size}-byte messages,"
        f" {args.rounds} x {args.seconds:g} s per server, cpu count {os.cpu_count()}"
    )
    print(f"{'backend':<24}{'native req/s':>14}{'polyloop req/s':>16}{'ratio':>8}")
    for backend in backends:
        t0 = time.monotonic()
        r = results[backend] = measure(backend, args)
        print(f"{backend:<24}{r['native']:>14,.0f}{r['polyloop']:>16,.0f}{r['ratio']:>8.3f}"
              f"   ({time.monotonic() - t0:.0f} s)", flush=True)  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
