"""The README example: one echo server and client, run on every installed backend."""

import polyloop


async def main() -> bytes:
    async def echo(stream: polyloop.Stream) -> None:
        while data := await stream.receive():
            await stream.send(data)

    async with await polyloop.open_tcp_listener("127.0.0.1", 0) as listener:
        polyloop.spawn(listener.serve(echo))
        async with await polyloop.open_tcp_stream("127.0.0.1", listener.port) as stream:
            await stream.send(b"hello from " + polyloop.current_backend().name.encode())
            return await stream.receive()


if __name__ == "__main__":
    for backend in ("asyncio", "twisted", "gevent", "tornado"):
        print(backend, polyloop.run(main, backend=backend))
