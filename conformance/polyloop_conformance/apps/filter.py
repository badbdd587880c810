"""TCP through a child process: each connection is piped through its own ``cat``.

What it proves: a server's child processes under load, with flow control across four
hops (client -> server socket -> child's stdin -> child's stdout -> server socket ->
client), EOF passed on as the child's stdin EOF, and every child reaped when its
connection ends. The server runs ``open_process(["cat"])`` per connection and pumps
both ways with the Stream API; the client is the echo exercise (4 MiB in random
chunks, read concurrently, digests compared, EOF after the echo), so in the cross
matrix the client may be any backend.
"""

from __future__ import annotations

import subprocess

import polyloop

from ._base import App, AppConfig, Running, register
from .echo import exercise as echo_exercise

__all__ = ["exercise", "filter_handler", "serve"]

#: Bytes the exercise sends through the child.
TOTAL = 4 * 1024 * 1024


async def _pump(source: polyloop.Stream, sink: polyloop.Stream) -> None:
    while data := await source.receive():
        await sink.send(data)
    await sink.send_eof()


async def filter_handler(stream: polyloop.Stream) -> None:
    """Pipe the connection through a ``cat`` of its own, both ways, then reap it."""
    async with await polyloop.open_process(["cat"], stderr=subprocess.DEVNULL) as child:
        assert child.stdin is not None and child.stdout is not None
        async with polyloop.TaskGroup() as tg:
            tg.spawn(_pump(stream, child.stdin))
            tg.spawn(_pump(child.stdout, stream))
    assert child.returncode == 0, f"the filter child exited {child.returncode}"


async def serve(config: AppConfig) -> Running:
    listener = await polyloop.open_tcp_listener(config.host, config.port, ssl=config.server_ssl)
    task = polyloop.spawn(listener.serve(filter_handler))

    async def close() -> None:
        await listener.aclose()
        await task

    return Running((config.host, listener.port), close)


async def exercise(config: AppConfig, address: tuple[str, int]) -> None:
    await echo_exercise(config, address, TOTAL)


APP = register(
    App("filter", "TCP piped through a child cat per connection, 4 MiB", serve, exercise)
)
