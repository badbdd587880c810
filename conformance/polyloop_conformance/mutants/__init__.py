"""Deliberately broken backends: the conformance suite's own test (mutation testing).

Rule: each mutant is **one** plausible bug applied to a working backend -- the worked
example (``example_backend.SelectorsBackend``, tier 1 only, so the core's transports and
tasks run on it) or the asyncio backend (through its ``session_class`` and
``transport_class`` hooks) -- and says which rule it breaks, by its clause id
(``rules.CLAUSES``). A suite that cannot tell a mutant from a good backend has a gap; a
verdict that does not name the broken rule is one a backend author cannot act on. So
each mutant also lists the checks that must catch it and words their messages must
contain, and one of its failures must name its clause.

Each mutant is a backend class, named ``module:Class`` like any third-party backend::

    polyloop conformance --backend polyloop_conformance.mutants.loop:CallSoonLifo

``python -m polyloop_conformance.mutants`` runs every mutant's own checks (or, with
``--full``, the whole catalogue) in conformance workers and prints what killed each one;
``tests/test_mutants.py`` requires every mutant killed with the expected words.

The mutants subclass what the backends are built of (sessions, the core's socket
transports, tasks, futures): a mutant module may reach into a private attribute of the
class it breaks, which a real backend never needs to.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import polyloop

from .._registry import CheckResult

__all__ = ["MUTANTS", "Mutant", "mutant", "run_mutants", "verdict"]


@dataclass(frozen=True)
class Mutant:
    """One deliberately broken backend."""

    #: The class name (``spec`` ends with it).
    name: str
    #: scheduling, timers, threads, context, futures, tasks, cancellation, shutdown,
    #: readiness, transports, flow, tls, udp, unix, errors, lifecycle.
    layer: str
    #: The rule it breaks, in the contract's words.
    rule: str
    #: ``module:Class``, loadable by ``polyloop.load_backend``.
    spec: str
    #: The checks (names or globs) that must catch it; the CI test runs only these.
    checks: tuple[str, ...]
    #: Words (case-insensitive) each of which some failure's detail must contain.
    expect: tuple[str, ...]
    #: The ids of the contract clauses it breaks (``rules.CLAUSES``); some failure must
    #: name one of them (``[clause.id]``).
    clauses: tuple[str, ...] = ()


MUTANTS: dict[str, Mutant] = {}

#: A detail that is only an exception's name (``KeyError``, ``TimeoutError:``).
_BARE = re.compile(r"[\w.]+(:\s*\S{0,20})?")


def mutant(
    layer: str,
    rule: str,
    *,
    clauses: Iterable[str],
    checks: Iterable[str],
    expect: Iterable[str],
) -> Callable[[type[Any]], type[polyloop.Backend]]:
    """Register the decorated class as a mutant; returns the backend class.

    ``clauses``: the contract clauses it breaks, by id (at least one); ``checks``: the
    checks that must catch it; ``expect``: words their failures must contain.

    The class may be a backend, a session (selectors or asyncio), a transport (the core's
    ``SocketTransport``/``SocketDatagramTransport``, or the asyncio adapter's), a
    ``CoroutineTask`` or a ``Future``: it is wrapped in the smallest backend that uses it.
    """

    from ..rules import check_ids

    ids = check_ids(clauses)

    def register(cls: type[Any]) -> type[polyloop.Backend]:
        if not ids:
            raise ValueError(f"mutant {cls.__name__!r} names no contract clause (clauses=[...])")
        backend = _backend_for(cls)
        backend.__name__ = backend.__qualname__ = cls.__name__
        backend.__module__ = cls.__module__
        backend.__doc__ = f"Mutant ({layer}): breaks {rule!r}."
        name = cls.__name__
        if name in MUTANTS:
            raise ValueError(f"mutant {name!r} registered twice")
        MUTANTS[name] = Mutant(
            name, layer, rule, f"{cls.__module__}:{name}", tuple(checks), tuple(expect), ids
        )
        return backend

    return register


def _backend_for(cls: type[Any]) -> type[polyloop.Backend]:
    from polyloop.lowlevel import CoroutineTask, SocketTransport
    from polyloop.lowlevel import SocketDatagramTransport as Datagram
    from polyloop_asyncio import AsyncioBackend, AsyncioSession
    from polyloop_asyncio._transport import AsyncioTransport

    from ..example_backend import SelectorsBackend, SelectorsSession

    def selectors(session: type[SelectorsSession]) -> type[polyloop.Backend]:
        return type(cls.__name__, (SelectorsBackend,), {"session_class": session})

    if issubclass(cls, polyloop.Backend):
        return cls
    if issubclass(cls, SelectorsSession):
        return selectors(cls)
    if issubclass(cls, AsyncioSession):
        return type(cls.__name__, (AsyncioBackend,), {"session_class": cls})
    if issubclass(cls, AsyncioTransport):
        session = type(f"{cls.__name__}Session", (AsyncioSession,), {"transport_class": cls})
        return type(cls.__name__, (AsyncioBackend,), {"session_class": session})
    if issubclass(cls, SocketTransport):

        def adopt(self: Any, sock: Any, factory: Any) -> Any:
            return cls(self, sock, factory)

        return selectors(
            type(f"{cls.__name__}Session", (SelectorsSession,), {"adopt_stream": adopt})
        )
    if issubclass(cls, Datagram):

        async def open_datagram(self: Any, sock: Any, protocol: Any, remote: Any) -> Any:
            return cls(self, sock, protocol, remote)

        return selectors(
            type(f"{cls.__name__}Session", (SelectorsSession,), {"adopt_datagram": open_datagram})
        )
    if issubclass(cls, CoroutineTask):

        def new_task(self: Any, coro: Any, name: Any) -> Any:
            return cls(self, coro, name)

        return selectors(
            type(f"{cls.__name__}Session", (SelectorsSession,), {"new_task": new_task})
        )
    if issubclass(cls, polyloop.Future):

        def create_future(self: Any) -> Any:
            return cls(self)

        return selectors(
            type(
                f"{cls.__name__}Session",
                (SelectorsSession,),
                {"create_future": create_future},
                core_override=True,
            )
        )
    raise TypeError(f"cannot make a mutant backend of {cls!r}")


def verdict(mutant: Mutant, results: list[CheckResult]) -> tuple[bool, list[str]]:
    """Whether ``results`` kill ``mutant`` as required, and what is missing if not.

    Killed: at least one case failed, each expected word is in some failure's detail,
    some failure names one of the mutant's clauses (``[clause.id]``), and no failure's
    detail is bare (empty, ``None``, or a bare exception name).
    """
    failed = [r for r in results if r.status == "fail"]
    problems = []
    if not failed:
        problems.append("no check failed")
    text = "\n".join(r.detail.lower() for r in failed)
    for word in mutant.expect:
        if word.lower() not in text:
            problems.append(f"no failure says {word!r}")
    if failed and mutant.clauses and not any(f"[{c}]" in text for c in mutant.clauses):
        named = ", ".join(mutant.clauses)
        problems.append(f"no failure names the broken clause ({named})")
    own = select_own(mutant, failed)
    for r in own:
        if is_bare(r.detail):
            problems.append(f"{r.check}: a bare message: {r.detail!r}")
    return not problems, problems


def select_own(mutant: Mutant, results: list[CheckResult]) -> list[CheckResult]:
    """The records of the checks the mutant names (not the collateral ones)."""
    import fnmatch

    return [
        r
        for r in results
        if any(
            fnmatch.fnmatchcase(r.check, p) or r.check.startswith(p + ".") for p in mutant.checks
        )
    ]


def is_bare(detail: str) -> bool:
    """A failure detail that names no rule: empty, ``None``, an exception's name alone."""
    head = detail.strip().split(" [")[0].strip()
    return head in ("", "None") or head.startswith("AssertionError") or bool(_BARE.fullmatch(head))


def _load() -> None:
    from . import loop as loop
    from . import other as other
    from . import streams as streams
    from . import tasks as tasks


def run_mutants(
    names: Iterable[str] | None = None,
    *,
    full: bool = False,
    timeout: float = 4.0,
    jobs: int = 2,
    progress: Callable[[str, list[CheckResult]], None] = lambda name, results: None,
) -> dict[str, list[CheckResult]]:
    """Run each mutant's checks (``full``: every check and app) in conformance workers,
    each case limited to ``timeout`` seconds; returns the records per mutant."""
    from ..runner import run_backend, select_cases

    _load()
    chosen = [MUTANTS[n] for n in (names or MUTANTS)]

    def one(m: Mutant) -> tuple[str, list[CheckResult]]:
        cases = select_cases(None, None) if full else select_cases(list(m.checks), [])
        results = run_backend(m.spec, cases, lambda r: None, timeout)
        progress(m.name, results)
        return m.name, results

    with ThreadPoolExecutor(jobs) as pool:
        return dict(pool.map(one, chosen))


def main(argv: list[str] | None = None) -> int:
    """``python -m polyloop_conformance.mutants [--full] [--json PATH] [NAME...]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m polyloop_conformance.mutants")
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("--full", action="store_true", help="run the whole catalogue on each")
    parser.add_argument("--timeout", type=float, default=4.0, help="each case's time limit")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--json", help="write {mutant: [records]} here")
    args = parser.parse_args(argv)
    _load()
    for name in args.names:
        if name not in MUTANTS:
            parser.error(f"unknown mutant {name!r}; known: {', '.join(MUTANTS)}")

    def show(name: str, results: list[CheckResult]) -> None:
        m = MUTANTS[name]
        ok, problems = verdict(m, results)
        failed = [r for r in results if r.status == "fail"]
        mark = "killed" if ok else "SURVIVED"
        print(
            f"{mark:8} {name} ({m.layer}): {len(failed)}/{len(results)} cases failed", flush=True
        )
        for problem in problems:
            print(f"         ! {problem}", flush=True)
        if failed:
            first = next((r for r in failed if r.check in m.checks), failed[0])
            lines = first.detail.splitlines()
            print(f"         {first.check}: {lines[0][:300]}", flush=True)
            for line in lines[1:]:
                if line.strip().startswith("rule ["):
                    print(f"           {line.strip()[:300]}", flush=True)

    results = run_mutants(
        args.names or None, full=args.full, timeout=args.timeout, jobs=args.jobs, progress=show
    )
    killed = sum(verdict(MUTANTS[n], rs)[0] for n, rs in results.items())
    print(f"{killed}/{len(results)} mutants killed with the expected messages")
    if args.full:
        cases = sum(len(rs) for rs in results.values())
        fails = [r for rs in results.values() for r in rs if r.status == "fail"]
        bare = [r for r in fails if is_bare(r.detail)]
        print(f"full catalogue: {len(fails)}/{cases} cases failed across the mutants;")
        print(f"  {len(bare)} of those failures (collateral ones included) are bare messages")
        for r in bare[:20]:
            print(
                f"    {r.backend.rsplit(':', 1)[-1]} {r.check}: {r.detail.splitlines()[0][:160]}"
            )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({n: [r.to_json() for r in rs] for n, rs in results.items()}, f, indent=1)
    return 0 if killed == len(results) else 1
