"""What the native servers share: the RESP store, the h11 HTTP server, the announcement.

Rule: nothing here imports polyloop. The RESP servers reuse the conformance app's sans-io
store (``_resp.py``, which imports no loop and no polyloop), loaded by path, so that a
native RESP server and the polyloop RESP app differ only in how bytes move. The same
for HTTP: ``H11`` makes the calls the polyloop HTTP app makes on ``h11`` for ``GET /``,
so each framework's ``http-h11`` server and the app differ only in how bytes move.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
#: The body every HTTP server answers ``GET /`` with (the polyloop app's greeting).
HELLO = b"hello, world\n"
READ_SIZE = 65536


def announce(port: int) -> None:
    print(f"listening on 127.0.0.1:{port}", flush=True)


def _load_resp() -> Any:
    path = ROOT / "conformance" / "polyloop_conformance" / "apps" / "_resp.py"
    spec = importlib.util.spec_from_file_location("_bench_resp", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


class Resp:
    """One connection's RESP state: ``feed(data)`` returns the replies to write."""

    _module: Any = None
    _store: Any = None

    def __init__(self) -> None:
        cls = type(self)
        if cls._module is None:
            cls._module = _load_resp()
            cls._store = cls._module.Store(time.monotonic)
        self._m = cls._module
        self.store = cls._store
        self.session = self.store.new_session()
        self.parser = self._m.CommandParser()

    def feed(self, data: bytes) -> bytes:
        """The same loop as the polyloop app's ``RespProtocol.data_received``."""
        m = self._m
        self.parser.feed(data)
        out = bytearray()
        try:
            while (cmd := self.parser.next_command()) is not m.NEED_DATA:
                out += m.encode(self.store.execute(self.session, cmd), self.session.proto)
                if self.session.quit:
                    break
        except m.ProtocolError as exc:
            out += m.encode(m.ReplyError(f"ERR Protocol error: {exc}"))
            self.session.quit = True
        return bytes(out)

    @property
    def quit(self) -> bool:
        return bool(self.session.quit)


class H11:
    """One HTTP/1.1 connection on ``h11``, answering every request with ``HELLO``:
    ``feed(data)`` returns the responses to write; ``closed`` once the client closed."""

    def __init__(self) -> None:
        import h11

        self._h11 = h11
        self.conn = h11.Connection(h11.SERVER)
        self.closed = False

    def feed(self, data: bytes) -> bytes:
        h11, conn = self._h11, self.conn
        conn.receive_data(data)
        out = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                break
            if event is h11.PAUSED:
                conn.start_next_cycle()
            elif isinstance(event, h11.EndOfMessage):
                headers = [
                    (b"content-type", b"text/plain"),
                    (b"content-length", b"%d" % len(HELLO)),
                ]
                out += conn.send(h11.Response(status_code=200, headers=headers))
                out += conn.send(h11.Data(data=HELLO)) + conn.send(h11.EndOfMessage())
            elif isinstance(event, h11.ConnectionClosed):
                self.closed = True
                break
        return bytes(out)
