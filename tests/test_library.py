"""Host mode, as a library author needs it: applications written natively on each
framework call ``examples/minikv.py`` (a Redis-protocol client on polyloop's public API)
on the loop they already run, 50 callers at once.

Each application runs in its own process (a Twisted global reactor runs once per
process; ``patch_all()`` changes the whole process) against ``polyloop serve resp``. The
server numbers its connections (``CLIENT ID``), so a probe before and after tells how
many connections the 50 calls opened: the pool's 5, not 50. The counter must end exact.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import polyloop

ROOT = Path(__file__).resolve().parent.parent
INSTALLED = {b.name for b in polyloop.available_backends() if b.error is None}

# Every application prints one JSON line: the 50 INCR results, the connections the server
# saw during them, and how many distinct sessions the callers found.
PRELUDE = """
import json, sys
sys.path.insert(0, {examples!r})
import polyloop, minikv
HOST, PORT, KEY = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sessions = set()

async def one():
    sessions.add(id(polyloop.current_backend()))
    return await minikv.incr(HOST, PORT, KEY)

async def probe():
    return await minikv.client_id(HOST, PORT)

def report(values, before, after):
    print(json.dumps({{"values": sorted(values), "conns": after - before - 1,
                      "sessions": len(sessions)}}))
"""

APPS = {
    "asyncio": """
import asyncio

async def main():
    before = await probe()
    values = await asyncio.gather(*(one() for _ in range(50)))
    report(values, before, await probe())

asyncio.run(main())
""",
    "tornado": """
import asyncio
from tornado.httpclient import AsyncHTTPClient
from tornado.web import Application, RequestHandler

class Incr(RequestHandler):
    async def get(self):
        self.write(str(await one()))

async def main():
    app = Application([("/incr", Incr)])
    server = app.listen(0, "127.0.0.1")
    port = next(iter(server._sockets.values())).getsockname()[1]
    client = AsyncHTTPClient(max_clients=50)
    before = await probe()
    replies = await asyncio.gather(
        *(client.fetch(f"http://127.0.0.1:{port}/incr") for _ in range(50))
    )
    report([int(r.body) for r in replies], before, await probe())
    server.stop()

asyncio.run(main())
""",
    "twisted": """
from twisted.internet import defer, task

async def main():
    before = await probe()
    values = await defer.gatherResults([defer.Deferred.fromCoroutine(one()) for _ in range(50)])
    report(values, before, await probe())

task.react(lambda reactor: defer.Deferred.fromCoroutine(main()))
""",
    "gevent": """
import gevent
import polyloop_gevent

def main():
    before = polyloop_gevent.wait(probe())
    greenlets = [gevent.spawn(polyloop_gevent.wait, one()) for _ in range(50)]
    gevent.joinall(greenlets, raise_error=True)
    report([g.value for g in greenlets], before, polyloop_gevent.wait(probe()))

gevent.spawn(main).get()
""",
}


@pytest.mark.parametrize(
    ("framework", "patched"),
    [("asyncio", False), ("tornado", False), ("twisted", False), ("gevent", False),
     ("gevent", True)],
    ids=["asyncio", "tornado", "twisted", "gevent", "gevent-patched"],
)  # fmt: skip
def test_native_app_shares_one_pool(
    framework: str, patched: bool, resp_server: tuple[str, int]
) -> None:
    if framework not in INSTALLED:
        pytest.skip(f"{framework} is not installed (polyloop[{framework}])")
    script = PRELUDE.format(examples=str(ROOT / "examples")) + APPS[framework]
    if patched:
        script = "from gevent import monkey; monkey.patch_all()\n" + script
    key = f"counter-{framework}-{patched}"
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *map(str, resp_server), key],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        env=dict(os.environ, PYTHONWARNINGS="error::RuntimeWarning"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    outcome = json.loads(proc.stdout.strip().splitlines()[-1])
    assert outcome["values"] == list(range(1, 51)), outcome["values"]
    assert outcome["conns"] == 5, f"the 50 calls opened {outcome['conns']} connections, not 5"
    assert outcome["sessions"] == 1, f"the callers found {outcome['sessions']} sessions"
