"""anyio's stream echo on asyncio: ``python anyio_server.py [--uvloop]``.

The idiomatic anyio server: ``create_tcp_listener`` and ``serve``, a handler that
``receive``s and ``send``s until EOF. The Stream API's second anchor.
"""

from __future__ import annotations

import sys

import anyio
from anyio.abc import SocketStream


async def echo(stream: SocketStream) -> None:
    async with stream:
        try:
            while True:
                await stream.send(await stream.receive(65536))
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            pass


async def main() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    print(f"listening on 127.0.0.1:{port}", flush=True)
    await listener.serve(echo)


if __name__ == "__main__":
    anyio.run(main, backend="asyncio", backend_options={"use_uvloop": "--uvloop" in sys.argv})
