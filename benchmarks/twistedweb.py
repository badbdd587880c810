"""twisted.web through polyloop_twisted.compat, against Twisted's own epoll reactor, under wrk.

    python -m benchmarks --only twistedweb --backend asyncio --backend gevent --backend tornado
    python -m benchmarks.twistedweb serve native          # one server, by hand
    python -m benchmarks.twistedweb serve gevent

One ``twisted.web`` application, the same code on both sides (``server.Site`` with three
resources), served by Twisted's own epoll reactor (``native``) and by the compat reactor
of a polyloop session on each backend (``get_reactor().listenTCP``):

- ``/static``: a static resource (``static.Data``, 1 KiB, written at once);
- ``/echo``: a POST echo (``wrk`` sends 1 KiB; the body comes back);
- ``/deferred``: a deferred response (``NOT_DONE_YET``, the body written from a
  ``callLater(0, ...)`` on the reactor, then ``finish()``).

Every server of a resource is measured once per round, rounds interleaved (the order of
``harness.round_order``), and each backend's ratio to native taken per round: median and
min-max are reported, with the server's CPU per request beside them. The goal is 0.9x of
native for every resource on every backend.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from . import harness

RESOURCES = ("static", "echo", "deferred")
GOAL = 0.9
BODY = 1024  # bytes: the static resource and the POSTed body

_POST = f"""
wrk.method = "POST"
wrk.body = string.rep("p", {BODY})
wrk.headers["Content-Type"] = "application/octet-stream"
"""


# --- the application (imported by the server processes only) ---


def site(reactor: Any) -> Any:
    """The ``twisted.web`` site both sides serve, timing out on ``reactor``."""
    from twisted.web import resource, server, static

    class Echo(resource.Resource):
        isLeaf = True

        def render_POST(self, request: Any) -> bytes:
            return request.content.read()  # type: ignore[no-any-return]

    class Later(resource.Resource):
        isLeaf = True

        def render_GET(self, request: Any) -> Any:
            def finish() -> None:
                request.write(b"later\n")
                request.finish()

            reactor.callLater(0, finish)
            return server.NOT_DONE_YET

    root = resource.Resource()
    root.putChild(b"static", static.Data(b"s" * BODY, "text/plain"))
    root.putChild(b"echo", Echo())
    root.putChild(b"deferred", Later())
    return server.Site(root, reactor=reactor)


def serve(spec: str) -> None:
    """Serve on 127.0.0.1, print ``listening on 127.0.0.1:PORT``, run until SIGTERM."""
    if spec == "native":
        from twisted.internet import epollreactor

        epollreactor.install()
        from twisted.internet import reactor

        port = reactor.listenTCP(0, site(reactor), interface="127.0.0.1")  # type: ignore[attr-defined]
        print(f"listening on 127.0.0.1:{port.getHost().port}", flush=True)
        reactor.run()  # type: ignore[attr-defined]
        return

    import polyloop
    from polyloop_twisted import compat

    async def main() -> None:
        r = compat.get_reactor()
        port = r.listenTCP(0, site(r), interface="127.0.0.1")
        print(f"listening on 127.0.0.1:{port.getHost().port}", flush=True)
        await polyloop.create_future()  # until SIGTERM cancels it

    try:
        polyloop.run(main, backend=spec, handle_sigterm=True)
    except SystemExit as exc:
        if exc.code != 143:
            raise


# --- the measurement ---


def servers(specs: list[str]) -> list[harness.Server]:
    py = sys.executable
    native = harness.Server(
        "native", "Twisted (epoll)", (py, "-m", "benchmarks.twistedweb", "serve", "native")
    )
    return [native] + [
        harness.Server(
            spec, f"compat on {spec}", (py, "-m", "benchmarks.twistedweb", "serve", spec)
        )
        for spec in specs
    ]


def load(port: int, resource: str, connections: int, seconds: int) -> dict[str, Any]:
    """``wrk`` on one resource; requests per second, latency, errors (a non-2xx counts)."""
    script = harness.BUILD / f"wrk-twistedweb-{resource}.lua"
    harness.BUILD.mkdir(exist_ok=True)
    script.write_text((_POST if resource == "echo" else "") + harness.WRK_SCRIPT)
    url = f"http://127.0.0.1:{port}/{resource}"
    cmd = [harness.need("wrk"), "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script),
           url]  # fmt: skip
    r = harness.run_json(cmd, timeout=seconds + 60)
    if r["errors"] > 0 or r["requests"] == 0:
        raise RuntimeError(f"wrk against {url}: {r['errors']} errors in {r['requests']} requests")
    r["rps"] = r["requests"] / r["seconds"]
    r["total_requests"] = r["requests"]
    return r


def plan_size(specs: list[str], rounds: int) -> int:
    return len(RESOURCES) * (len(specs) + 1) * rounds


def run(specs: list[str], args: argparse.Namespace, progress: harness.Progress) -> list[Any]:
    """Every resource, every server, ``args.rounds`` interleaved rounds."""
    out = []
    log = harness.BUILD / "servers.log"
    with harness.running(servers(specs), log) as started:
        for s in started:  # unmeasured: a fresh server's first requests cost it more
            for resource in RESOURCES:
                load(s.port, resource, 10, 1)
        for resource in RESOURCES:

            def measure(s: harness.Running, resource: str = resource) -> Any:
                return load(s.port, resource, args.http_connections, args.http_seconds)

            runs = harness.interleave(
                started, args.rounds, measure, progress, f"twisted.web /{resource}",
                lambda r: f"{r['rps']:,.0f} req/s, p99 {r['p99_us']} us",
            )  # fmt: skip
            out.append({
                "resource": resource,
                "labels": {s.server.kind: s.server.label for s in started},
                "runs": runs,
                "ratios": harness.ratios(runs, "rps", "native"),
                "cpu_ratios": harness.ratios(runs, "server_cpu_us_per_request", "native"),
            })  # fmt: skip
    return out


def targets(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One target per backend: every resource at >= GOAL x native (median of rounds)."""
    specs = [k for k in (cells[0]["runs"] if cells else {}) if k != "native"]
    out = []
    for spec in specs:
        cases = [(f"/{c['resource']}", c["ratios"][f"{spec}/native"]) for c in cells]
        worst_at, worst = min(cases, key=lambda c: c[1]["median"])
        out.append({
            "target": f"twisted.web through the compat reactor ≥ {GOAL}× Twisted (epoll)",
            "backend": spec, "goal": GOAL, "op": ">=", "worst_at": worst_at, "worst": worst,
            "met": worst["median"] >= GOAL,
        })  # fmt: skip
    return out


def markdown(cells: list[dict[str, Any]]) -> str:
    """A table: per resource and backend, req/s (median), the ratio to native (median,
    min-max of the per-round ratios) and CPU per request."""
    if not cells:
        return ""
    lines = [
        "",
        "twisted.web under wrk: the compat reactor against Twisted's own epoll reactor",
        "",
        "| resource | server | req/s (median) | ratio to native: median (min-max) "
        "| CPU µs/request (ratio) |",
        "|---|---|---:|---|---:|",
    ]
    for c in cells:
        for kind, runs in c["runs"].items():
            rps = harness.spread([r["rps"] for r in runs])["median"]
            cpu = harness.spread([r["server_cpu_us_per_request"] for r in runs])["median"]
            if kind == "native":
                ratio, cpu_ratio = "1", "1"
            else:
                s = c["ratios"][f"{kind}/native"]
                ratio = f"**{s['median']:.2f}×** ({s['min']:.2f}-{s['max']:.2f})"
                cpu_ratio = f"{c['cpu_ratios'][f'{kind}/native']['median']:.2f}"
            lines.append(
                f"| /{c['resource']} | {c['labels'][kind]} | {rps:,.0f} | {ratio} "
                f"| {cpu:.0f} ({cpu_ratio}) |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "serve":
        serve(argv[1])
        return 0
    print("usage: python -m benchmarks.twistedweb serve native|BACKEND\n"
          "(measure with: python -m benchmarks --only twistedweb)", file=sys.stderr)  # fmt: skip
    return 2


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
