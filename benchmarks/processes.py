"""Piping bytes through ``cat``: ``polyloop.open_process`` (Streams) against each
framework's own process API, on each backend.

    python -m benchmarks --only processes            # as a section of the whole run
    python -m benchmarks.processes --mb 100 --rounds 5 --backend twisted

Each measurement is one child Python process (``--one``) that starts ``cat``, writes
``--mb`` MiB to its stdin in 1 MiB pieces (with the API's flow control), reads its stdout
to EOF in reads of up to 64 KiB, and waits for it to be reaped; the time from the spawn
to the reaping is the result (MB/s; the loop's own start and end are left out on both
sides). The native side per backend:

- asyncio: ``asyncio.create_subprocess_exec`` with ``StreamWriter.drain`` and
  ``StreamReader.read``;
- Twisted: ``reactor.spawnProcess`` with a ``ProcessProtocol`` (stdin fed from a
  streaming producer registered on the process);
- Tornado: ``tornado.process.Subprocess`` with ``PipeIOStream`` (``write`` futures,
  ``read_bytes(partial=True)``);
- gevent: ``gevent.subprocess.Popen`` with a writer greenlet.

Rounds are interleaved (native, polyloop, then the other way round) and the median with
min-max is reported, with the per-round ratio polyloop/native. Nothing asserts on time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from . import harness

__all__ = ["main", "markdown", "run"]

CHUNK = 1024 * 1024
READ = 65536


def _block() -> bytes:
    return os.urandom(CHUNK)


#: (wall, CPU) clock readings: from the spawn to the reaping, on each side. The loop's
#: own start and end (asyncio.run, a reactor, polyloop.run: ~5 ms of entry-point lookup
#: and session set-up) are not the process API's, and are left out on both sides.
_span: list[tuple[float, float]] = []


def _mark() -> None:
    _span.append((time.perf_counter(), time.process_time()))


async def _polyloop(mb: int) -> int:
    import polyloop

    block = _block()
    got = 0
    _mark()
    async with await polyloop.open_process(["cat"], stderr=subprocess.DEVNULL) as p:
        assert p.stdin is not None and p.stdout is not None

        async def feed() -> None:
            assert p.stdin is not None
            for _ in range(mb):
                await p.stdin.send(block)
            await p.stdin.send_eof()

        async with polyloop.TaskGroup() as tg:
            tg.spawn(feed())
            while chunk := await p.stdout.receive(READ):
                got += len(chunk)
    _mark()
    return got


def _native_asyncio(mb: int) -> int:
    import asyncio

    async def main() -> int:
        block = _block()
        _mark()
        p = await asyncio.create_subprocess_exec(
            "cat", stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        assert p.stdin is not None and p.stdout is not None

        async def feed() -> None:
            assert p.stdin is not None
            for _ in range(mb):
                p.stdin.write(block)
                await p.stdin.drain()
            p.stdin.close()

        task = asyncio.ensure_future(feed())
        got = 0
        while chunk := await p.stdout.read(READ):
            got += len(chunk)
        await task
        await p.wait()
        _mark()
        return got

    return asyncio.run(main())


def _native_twisted(mb: int) -> int:
    from twisted.internet import epollreactor

    reactor = epollreactor.EPollReactor()
    from twisted.internet.interfaces import IPushProducer
    from twisted.internet.protocol import ProcessProtocol
    from zope.interface import implementer

    block = _block()
    got = [0]

    @implementer(IPushProducer)
    class Feed:
        def __init__(self, transport: Any) -> None:
            self.transport, self.left, self.paused = transport, mb, False

        def resumeProducing(self) -> None:
            self.paused = False
            while self.left and not self.paused:
                self.left -= 1
                self.transport.write(block)
            if not self.left and not self.paused:
                self.transport.unregisterProducer()
                self.transport.closeStdin()
                self.left = -1

        def pauseProducing(self) -> None:
            self.paused = True

        def stopProducing(self) -> None:
            pass

    class Cat(ProcessProtocol):
        def connectionMade(self) -> None:
            feed = Feed(self.transport)
            self.transport.registerProducer(feed, True)
            feed.resumeProducing()

        def outReceived(self, data: bytes) -> None:
            got[0] += len(data)

        def processEnded(self, reason: Any) -> None:
            _mark()
            reactor.stop()

    def spawn() -> None:
        _mark()
        reactor.spawnProcess(
            Cat(), "/bin/cat", ["cat"], env=os.environ, childFDs={0: "w", 1: "r", 2: "r"}
        )

    reactor.callWhenRunning(spawn)
    reactor.run()  # its SIGCHLD handler reaps (the main thread of this child)
    return got[0]


def _native_tornado(mb: int) -> int:
    import asyncio

    from tornado.iostream import StreamClosedError
    from tornado.process import Subprocess

    async def main() -> int:
        block = _block()
        Subprocess.initialize()  # set_exit_callback's SIGCHLD handler (main thread)
        _mark()
        p = Subprocess(["cat"], stdin=Subprocess.STREAM, stdout=Subprocess.STREAM)

        async def feed() -> None:
            for _ in range(mb):
                await p.stdin.write(block)
            p.stdin.close()

        task = asyncio.ensure_future(feed())
        got = 0
        try:
            while True:
                got += len(await p.stdout.read_bytes(READ, partial=True))
        except StreamClosedError:
            pass
        await task
        await p.wait_for_exit(raise_error=False)
        _mark()
        Subprocess.uninitialize()
        return got

    return asyncio.run(main())


def _native_gevent(mb: int) -> int:
    import gevent
    import gevent.subprocess

    block = _block()
    _mark()
    p = gevent.subprocess.Popen(
        ["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert p.stdin is not None and p.stdout is not None

    def feed() -> None:
        assert p.stdin is not None
        for _ in range(mb):
            p.stdin.write(block)
        p.stdin.close()

    writer = gevent.spawn(feed)
    got = 0
    while chunk := p.stdout.read(READ):
        got += len(chunk)
    writer.join()
    p.wait()
    _mark()
    return got


NATIVE = {
    "asyncio": _native_asyncio,
    "twisted": _native_twisted,
    "tornado": _native_tornado,
    "gevent": _native_gevent,
}


def one(kind: str, spec: str, mb: int) -> dict[str, Any]:
    """One measurement in this process: ``kind`` is ``native`` or ``polyloop``."""
    name = spec.split(":")[0]
    if kind == "native":
        go = lambda n: NATIVE[name](n)  # noqa: E731
    else:
        import polyloop

        options = (
            dict(o.split("=", 1) for o in spec.split(":", 1)[1].split(",")) if ":" in spec else {}
        )
        go = lambda n: polyloop.run(_polyloop, n, backend=name, **options)  # noqa: E731
    go(1)  # unmeasured: imports and first-run costs
    _span.clear()
    got = go(mb)
    (start, cpu0), (end, cpu1) = _span
    seconds, cpu = end - start, cpu1 - cpu0
    if got != mb * CHUNK:
        raise RuntimeError(f"{kind} on {spec}: cat gave back {got} of {mb * CHUNK} bytes")
    # CPU: this process's (its threads included), not cat's -- the scheduler's noise on a
    # shared machine moves it far less than the wall clock.
    return {"seconds": seconds, "mb_per_s": mb * CHUNK / 1e6 / seconds, "cpu_seconds": cpu}


def _measure(kind: str, spec: str, mb: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.processes", "--one", kind, "--backend", spec,
         "--mb", str(mb)],
        capture_output=True, text=True, timeout=600, env={**os.environ, **harness.SERVER_ENV},
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"{kind} on {spec} failed:\n{out.stderr}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def run(specs: list[str], mb: int, rounds: int, progress: Any = None) -> list[dict[str, Any]]:
    """Interleaved rounds on each backend; one record per backend."""
    results = []
    for spec in specs:
        if spec.split(":")[0] not in NATIVE:
            continue  # a third-party backend: no native process API known here
        runs: dict[str, list[dict[str, Any]]] = {"native": [], "polyloop": []}
        for n in range(rounds):
            order = ["native", "polyloop"] if n % 2 == 0 else ["polyloop", "native"]
            for kind in order:
                r = _measure(kind, spec, mb)
                runs[kind].append(r)
                if progress is not None:
                    progress.step(
                        f"processes {spec} {mb} MiB round {n + 1}/{rounds} {kind}",
                        f"{r['mb_per_s']:,.0f} MB/s",
                    )
        pairs = list(zip(runs["polyloop"], runs["native"], strict=True))
        per_round = [p["mb_per_s"] / q["mb_per_s"] for p, q in pairs]
        cpu_per_round = [p["cpu_seconds"] / q["cpu_seconds"] for p, q in pairs if q["cpu_seconds"]]
        results.append({
            "backend": spec, "mib": mb, "runs": runs,
            "mb_per_s": {k: _spread([r["mb_per_s"] for r in v]) for k, v in runs.items()},
            "ratio": _spread(per_round),
            "cpu_ratio": _spread(cpu_per_round) if cpu_per_round else None,
        })  # fmt: skip
    return results


def markdown(results: list[dict[str, Any]]) -> str:
    """A Markdown table of ``run``'s records."""
    if not results:
        return ""
    lines = [
        f"### Processes: {results[0]['mib']} MiB through cat, open_process vs native",
        "",
        "| backend | native MB/s | polyloop MB/s | polyloop/native (target >= 0.9)"
        " | CPU polyloop/native |",
        "| --- | --- | --- | --- | --- |",
    ]

    def fmt(s: dict[str, float], digits: int = 0) -> str:
        return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"

    for r in results:
        m = r["mb_per_s"]
        cpu = fmt(r["cpu_ratio"], 2) if r.get("cpu_ratio") else "-"
        lines.append(
            f"| {r['backend']} | {fmt(m['native'])} | {fmt(m['polyloop'])} |"
            f" {fmt(r['ratio'], 2)} | {cpu} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.processes", description=__doc__)
    p.add_argument("--backend", action="append", metavar="SPEC")
    p.add_argument("--mb", type=int, default=100, help="MiB through cat (default 100)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--one", choices=("native", "polyloop"), help=argparse.SUPPRESS)
    p.add_argument("--json", help="write the records here")
    args = p.parse_args(argv)
    specs = args.backend or list(NATIVE)
    if args.one:
        print(json.dumps(one(args.one, specs[0], args.mb)))
        return 0
    results = run(specs, args.mb, args.rounds)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
