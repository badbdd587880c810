"""What the native servers share: the RESP store, the h11 HTTP server, the announcement.

Rule: nothing here imports polyloop. The RESP servers reuse the conformance app's sans-io
store (``_resp.py``, which imports no loop and no polyloop), loaded by path, so that a
native RESP server and the polyloop RESP app differ only in how bytes move. The same
for HTTP: ``H11`` runs the HTTP app's sans-io request handling (``_http.py``: h11, the
routes, the response bytes, ``x-request-count``), so each framework's ``http-h11``
server and the app differ only in how bytes move (and in the app's head timer).
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


def _load(name: str) -> Any:
    """A sans-io module of the conformance apps, by path (no polyloop import)."""
    path = ROOT / "conformance" / "polyloop_conformance" / "apps" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_bench{name}", path)
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
            cls._module = _load("_resp")
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
    """One HTTP/1.1 connection running the polyloop HTTP app's own request handling
    (``_http.ServerConnection``: h11, the routes, the response bytes; sans-io, loaded by
    path): ``feed(data)`` returns the responses to write; ``closed`` once the connection
    is to be closed (the client closed, asked to, or sent something the app refuses).

    What the app adds and a native server here does not: the head timer and the
    lingering close after an error (I/O, not per-request work), and pausing.
    """

    _module: Any = None

    def __init__(self) -> None:
        cls = type(self)
        if cls._module is None:
            cls._module = _load("_http")
        self.http = cls._module.ServerConnection(time.monotonic)

    def feed(self, data: bytes) -> bytes:
        """The same calls as the polyloop app's ``HTTPServerProtocol._pump``: one
        ``next_output`` per write, until it returns nothing."""
        http = self.http
        http.receive_data(data)
        out: bytes = http.next_output()
        if out and http.end is None:
            more = http.next_output()
            if more:
                parts = [out, more]
                while http.end is None and (more := http.next_output()):
                    parts.append(more)
                out = b"".join(parts)
        return out

    @property
    def closed(self) -> bool:
        return self.http.end is not None
