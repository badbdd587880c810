"""Throughput of polyloop's Lock, Semaphore and memory object stream, against asyncio's
and anyio's own, and across the four backends.

    python benchmarks/sync.py [--rounds 5] [--ops 20000] [--backend SPEC]...

Each scenario runs ``--ops`` operations per round; rounds of the candidates are
interleaved (polyloop, asyncio, anyio, polyloop, ...) and the median with min-max is
reported. On the asyncio backend the three are compared in one process on the same kind
of loop; on the other backends only polyloop's primitives exist (asyncio's and anyio's
do not run there), so they are compared with themselves on asyncio. This is a benchmark,
not a test: nothing asserts on time.

Scenarios:
- ``lock-uncontended``: one task, acquire/release;
- ``lock-contended``: 10 tasks taking turns on one lock (each acquire waits);
- ``semaphore-contended``: 10 tasks on a Semaphore(3);
- ``queue``: one producer, one consumer, a buffer of 16 items.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import polyloop

Scenario = Callable[[int], Awaitable[None]]


def _lock_uncontended(make_lock: Callable[[], Any]) -> Scenario:
    async def run(ops: int) -> None:
        lock = make_lock()
        for _ in range(ops):
            async with lock:
                pass

    return run


def _contended(
    make: Callable[[], Any], sleep0: Callable[[], Awaitable[None]], spawn: Any
) -> Scenario:
    async def run(ops: int) -> None:
        prim = make()
        per_task = ops // 10

        async def worker() -> None:
            for _ in range(per_task):
                async with prim:
                    await sleep0()

        await spawn([worker() for _ in range(10)])

    return run


def _queue(make: Callable[[], tuple[Any, Any, Any, Any]], spawn: Any) -> Scenario:
    async def run(ops: int) -> None:
        send, _receive, close, get = make()

        async def producer() -> None:
            for i in range(ops):
                await send(i)
            close()

        async def consumer() -> None:
            for _ in range(ops):
                await get()

        await spawn([producer(), consumer()])

    return run


async def _gather_polyloop(coros: list[Any]) -> None:
    async with polyloop.TaskGroup() as tg:
        for coro in coros:
            tg.spawn(coro)


async def _gather_asyncio(coros: list[Any]) -> None:
    await asyncio.gather(*coros)


async def _gather_anyio(coros: list[Any]) -> None:
    import anyio

    async with anyio.create_task_group() as tg:
        for coro in coros:
            tg.start_soon(lambda c=coro: c)


def _polyloop_queue() -> tuple[Any, Any, Any, Any]:
    send, receive = polyloop.create_memory_object_stream(16)
    return send.send, receive, send.close, receive.receive


def _asyncio_queue() -> tuple[Any, Any, Any, Any]:
    queue: asyncio.Queue[int] = asyncio.Queue(16)
    return queue.put, queue, lambda: None, queue.get


def _anyio_queue() -> tuple[Any, Any, Any, Any]:
    import anyio

    send, receive = anyio.create_memory_object_stream[int](16)
    return send.send, receive, send.close, receive.receive


def scenarios(kind: str) -> dict[str, Scenario]:
    """The scenarios for ``kind``: ``polyloop``, ``asyncio`` or ``anyio``."""
    if kind == "polyloop":
        return {
            "lock-uncontended": _lock_uncontended(polyloop.Lock),
            "lock-contended": _contended(
                polyloop.Lock, lambda: polyloop.sleep(0), _gather_polyloop
            ),
            "semaphore-contended": _contended(
                lambda: polyloop.Semaphore(3), lambda: polyloop.sleep(0), _gather_polyloop
            ),
            "queue": _queue(_polyloop_queue, _gather_polyloop),
        }
    if kind == "asyncio":
        return {
            "lock-uncontended": _lock_uncontended(asyncio.Lock),
            "lock-contended": _contended(asyncio.Lock, lambda: asyncio.sleep(0), _gather_asyncio),
            "semaphore-contended": _contended(
                lambda: asyncio.Semaphore(3), lambda: asyncio.sleep(0), _gather_asyncio
            ),
            "queue": _queue(_asyncio_queue, _gather_asyncio),
        }
    import anyio

    return {
        "lock-uncontended": _lock_uncontended(anyio.Lock),
        "lock-contended": _contended(anyio.Lock, lambda: anyio.sleep(0), _gather_anyio),
        "semaphore-contended": _contended(
            lambda: anyio.Semaphore(3), lambda: anyio.sleep(0), _gather_anyio
        ),
        "queue": _queue(_anyio_queue, _gather_anyio),
    }


def measure(kind: str, name: str, ops: int, backend: str) -> float:
    """Operations per second of one round of ``kind``'s scenario ``name``."""
    scenario = scenarios(kind)[name]

    async def timed() -> float:
        start = time.perf_counter()
        await scenario(ops)
        return time.perf_counter() - start

    if kind == "polyloop":
        seconds = polyloop.run(timed, backend=backend)
    else:
        seconds = asyncio.run(timed())
    return ops / seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ops", type=int, default=20000)
    parser.add_argument("--backend", action="append", metavar="SPEC")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    backends = args.backend or ["asyncio", "twisted", "gevent", "tornado"]
    names = list(scenarios("polyloop"))
    results: dict[str, dict[str, list[float]]] = {}
    for name in names:
        for _ in range(args.rounds):  # interleaved: one round of each, again and again
            for label, kind, backend in [
                ("asyncio's", "asyncio", ""),
                ("anyio's", "anyio", ""),
            ] + [(f"polyloop on {b}", "polyloop", b) for b in backends]:
                results.setdefault(name, {}).setdefault(label, []).append(
                    measure(kind, name, args.ops, backend)
                )
    header = f"{'scenario':22} {'candidate':24} {'ops/s (median)':>16} {'min-max':>21}"
    print(header + f" {'vs asyncio':>10}")
    table = []
    for name in names:
        base = statistics.median(results[name]["asyncio's"])
        for label, values in results[name].items():
            med = statistics.median(values)
            low, high = min(values), max(values)
            table.append({"scenario": name, "candidate": label, "median": med,
                          "min": low, "max": high, "ratio": med / base})  # fmt: skip
            print(f"{name:22} {label:24} {med:16,.0f} {low:10,.0f}-{high:<10,.0f}"
                  f" {med / base:10.2f}")  # fmt: skip
    if args.json:
        with open(args.json, "w") as out:
            json.dump(table, out, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
