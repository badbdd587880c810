"""The Tornado backend: what the conformance suite cannot see from the outside.

That Tornado does the work (IOLoop, TCPServer, TCPClient, IOStream), that read EOF no
longer closes an IOStream (half-close, and the unflushed tail of a reply survives), that
the fd stops being polled after EOF (the one private IOStream hook we rely on), whole 60 KB
datagrams, builtin errors, cancellation, and nothing left behind after ``run``.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import ssl
import threading
from typing import Any

import pytest

tornado = pytest.importorskip("tornado")

from tornado.ioloop import IOLoop  # noqa: E402
from tornado.iostream import IOStream  # noqa: E402
from tornado.platform.asyncio import BaseAsyncIOLoop  # noqa: E402
from tornado.tcpserver import TCPServer  # noqa: E402

import polyloop  # noqa: E402
from polyloop_conformance.checks._util import Recorder  # noqa: E402

BACKEND = "tornado"


def run(main: Any, *args: Any) -> Any:
    return polyloop.run(main, *args, backend=BACKEND)


def _bounded(seconds: float) -> Any:
    """Decorator: the coroutine fails (TimeoutError) instead of hanging the test."""

    def wrap(fn: Any) -> Any:
        async def bounded(*args: Any) -> Any:
            return await polyloop.wait_for(fn(*args), seconds)

        return bounded

    return wrap


def test_loaded_through_the_entry_point() -> None:
    backend = polyloop.load_backend(BACKEND)
    assert type(backend).__module__ == "polyloop_tornado"
    assert backend.native_tls is True
    assert backend.framework_version().startswith("Tornado 6.")
    with pytest.raises(TypeError, match="unknown option"):
        polyloop.load_backend(BACKEND, loop="uvloop")


def test_every_conformance_check_passes() -> None:
    import polyloop_conformance as pc

    make = lambda: polyloop.load_backend(BACKEND)  # noqa: E731
    results = [pc.run_check(c, make, BACKEND) for c in pc.CHECKS.values()]
    assert len(results) > 50, "the catalogue looks empty"
    bad = [f"{r.check}: {r.status} {r.detail}" for r in results if r.status != "pass"]
    assert not bad, "\n".join(bad)


def test_tornado_does_the_work() -> None:
    @_bounded(10)
    async def main() -> None:
        backend = polyloop.current_backend()
        ioloop = backend.ioloop  # type: ignore[attr-defined]
        assert IOLoop.current() is ioloop
        server = await polyloop.listen_tcp(lambda: Recorder(backend))
        transport, client = await polyloop.connect_tcp(
            lambda: Recorder(backend), "127.0.0.1", server.port
        )
        assert isinstance(transport._stream, IOStream)  # type: ignore[attr-defined]
        assert isinstance(server._acceptor, TCPServer)  # type: ignore[attr-defined]
        transport.close()
        await client.lost
        await server.aclose()

    run(main)


def test_peer_eof_keeps_the_stream_open_and_unpolled() -> None:
    """eof_received() -> True: the server writes after EOF; the fd is not read meanwhile.

    Tornado's IOStream closes itself on read EOF, and an idle IOStream polls for READ.
    Our subclasses keep it open and drop READ interest after EOF: were the second part
    lost, the EOF socket (always readable) would spin the loop, so we look at the fd
    in the IOLoop's reader set.
    """

    @_bounded(10)
    async def main() -> None:
        backend = polyloop.current_backend()
        ioloop = backend.ioloop  # type: ignore[attr-defined]
        assert isinstance(ioloop, BaseAsyncIOLoop)
        accepted: list[Recorder] = []

        def make() -> Recorder:
            accepted.append(Recorder(backend, keep_open_on_eof=True))
            return accepted[-1]

        server = await polyloop.listen_tcp(make)
        transport, client = await polyloop.connect_tcp(
            lambda: Recorder(backend), "127.0.0.1", server.port
        )
        transport.write(b"question")
        transport.write_eof()
        while not accepted:
            await polyloop.sleep(0.001)
        srv = accepted[0]
        await srv.eof
        for _ in range(3):
            await polyloop.sleep(0)
        srv_transport = srv.transport
        assert srv_transport is not None and not srv_transport.is_closing()
        fd = srv_transport.get_extra_info("socket").fileno()
        assert fd not in ioloop.readers, "the EOF socket is still polled for reading"
        await polyloop.sleep(0.02)  # a late answer, from a half-open connection
        srv_transport.write(b"answer" * 10000)
        srv_transport.close()
        assert await client.wait_bytes(60000) == b"answer" * 10000
        assert await client.lost is None
        assert await srv.lost is None
        assert bytes(srv.data) == b"question"
        await server.aclose()

    run(main)


class _Firehose(polyloop.Protocol):
    """Writes ``size`` bytes on connect; closes on EOF (close() must flush them)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def connection_made(self, transport: polyloop.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        transport.write(os.urandom(self.size))

    def eof_received(self) -> None:
        self.transport.close()


def test_unflushed_writes_survive_the_peers_eof() -> None:
    """Unpatched IOStream would drop its write buffer the moment it read the peer's EOF."""
    size = 8 * 1024 * 1024

    @_bounded(20)
    async def main() -> None:
        backend = polyloop.current_backend()
        server = await polyloop.listen_tcp(lambda: _Firehose(size))
        transport, client = await polyloop.connect_tcp(
            lambda: Recorder(backend), "127.0.0.1", server.port
        )
        transport.write_eof()  # at once: the server reads EOF with most of 8 MiB unsent
        assert len(await client.wait_bytes(size)) == size
        assert await client.lost is None
        assert client.events.count("eof") == 1
        await server.aclose()

    run(main)


def test_errors_are_builtin(tmp_path: Any) -> None:
    from polyloop_conformance.tls import material

    @_bounded(10)
    async def main() -> None:
        backend = polyloop.current_backend()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # bound, not listening: refused
            with pytest.raises(ConnectionRefusedError):
                await polyloop.connect_tcp(polyloop.Protocol, "127.0.0.1", port)
        with pytest.raises(FileNotFoundError):
            await polyloop.connect_unix(polyloop.Protocol, str(tmp_path / "nothing"))
        server = await polyloop.listen_tcp(polyloop.Protocol)
        with pytest.raises(OSError) as info:
            await polyloop.listen_tcp(polyloop.Protocol, "127.0.0.1", server.port)
        assert info.value.errno == errno.EADDRINUSE
        await server.aclose()
        tls = material()
        server = await polyloop.listen_tcp(lambda: Recorder(backend), ssl=tls.server_context())
        with pytest.raises(ssl.SSLCertVerificationError):
            await polyloop.connect_tcp(
                polyloop.Protocol, "127.0.0.1", server.port,
                ssl=ssl.create_default_context(), server_hostname="localhost",
            )  # fmt: skip
        await server.aclose()

    run(main)


def test_udp_60k_datagram_arrives_whole() -> None:
    class Receiver(polyloop.DatagramProtocol):
        def __init__(self) -> None:
            self.got = polyloop.create_future()

        def datagram_received(self, data: bytes, addr: Any) -> None:
            if not self.got.done():
                self.got.set_result((data, addr))

    @_bounded(10)
    async def main() -> None:
        receiver_t, receiver = await polyloop.open_udp(Receiver, local_addr=("127.0.0.1", 0))
        address = receiver_t.get_extra_info("sockname")
        sender_t, _ = await polyloop.open_udp(polyloop.DatagramProtocol, remote_addr=address)
        payload = os.urandom(60_000)
        sender_t.sendto(payload)
        data, addr = await receiver.got
        assert data == payload
        assert addr == sender_t.get_extra_info("sockname")
        sender_t.close()
        receiver_t.close()

    run(main)


def test_cancel_reaches_a_coroutine_parked_on_a_tornado_future() -> None:
    from tornado import gen

    @_bounded(10)
    async def main() -> str:
        parked = polyloop.create_future()

        async def sleeper() -> str:
            parked.set_result(None)
            try:
                await gen.sleep(60)  # a Tornado future, not a polyloop one
            except polyloop.Cancelled:
                return "cancelled"
            return "woke"

        task = polyloop.spawn(sleeper())
        await parked
        task.cancel()
        assert await task == "cancelled"

        # Not caught: awaiting the task raises it.
        async def park() -> None:
            await gen.sleep(60)

        task = polyloop.spawn(park())
        await polyloop.sleep(0)
        task.cancel()
        with pytest.raises(polyloop.Cancelled):
            await task
        return "ok"

    assert run(main) == "ok"


def test_call_soon_threadsafe_runs_as_the_backend() -> None:
    @_bounded(10)
    async def main() -> None:
        backend = polyloop.current_backend()
        done = polyloop.create_future()

        def in_loop() -> None:
            done.set_result(polyloop.current_backend())

        threading.Thread(target=backend.call_soon_threadsafe, args=(in_loop,)).start()
        assert await done is backend

    run(main)


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to count fds")
def test_run_leaves_no_fd_loop_or_thread_behind() -> None:
    @_bounded(10)
    async def main() -> Any:
        backend = polyloop.current_backend()
        server = await polyloop.listen_tcp(lambda: Recorder(backend))  # left open
        await polyloop.connect_tcp(lambda: Recorder(backend), "127.0.0.1", server.port)
        await polyloop.open_udp(polyloop.DatagramProtocol, local_addr=("127.0.0.1", 0))
        await polyloop.run_in_thread(sum, [1, 2])
        polyloop.spawn(polyloop.sleep(60))  # a task left pending
        return asyncio.get_running_loop()

    run(main)  # warm up imports and lazily made objects
    fds, threads = _open_fds(), threading.active_count()
    maps = dict(IOLoop._ioloop_for_asyncio)
    loop = run(main)
    assert loop.is_closed()
    assert _open_fds() == fds
    assert threading.active_count() == threads
    assert dict(IOLoop._ioloop_for_asyncio) == maps, "Tornado still maps the closed loop"
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()


def test_two_runs_in_two_threads_at_once() -> None:
    results: list[Any] = []

    async def main(n: int) -> int:
        backend = polyloop.current_backend()
        server = await polyloop.listen_tcp(lambda: Recorder(backend))
        transport, client = await polyloop.connect_tcp(
            lambda: Recorder(backend), "127.0.0.1", server.port
        )
        transport.close()
        await client.lost
        await server.aclose()
        return n

    threads = [threading.Thread(target=lambda n=n: results.append(run(main, n))) for n in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == [1, 2]
