"""Rules as data: the contract's clauses, the checks and mutants that name them, the docs.

The registry must be complete both ways (every clause enforced by a check, every check
and mutant tied to a clause), every clause tag in a public docstring must name a clause,
and ``docs/rules.md`` must be what ``python -m polyloop_conformance.rules --write-docs``
generates today.
"""

from __future__ import annotations

import inspect
import io
from pathlib import Path

import pytest

import polyloop
import polyloop_conformance as pc
from polyloop_conformance import mutants, rules
from polyloop_conformance.runner import select_cases

ROOT = Path(__file__).resolve().parent.parent
mutants._load()


def test_every_clause_has_a_check() -> None:
    enforced = {c for chk in pc.CHECKS.values() for c in chk.clauses}
    missing = sorted(set(rules.CLAUSES) - enforced)
    assert not missing, f"clauses no check enforces: {missing}"


def test_every_check_and_mutant_names_known_clauses() -> None:
    for chk in pc.CHECKS.values():
        assert chk.clauses, f"{chk.name} names no clause"
        for c in chk.clauses:
            assert c in rules.CLAUSES, f"{chk.name} names an unknown clause {c!r}"
    for m in mutants.MUTANTS.values():
        assert m.clauses, f"mutant {m.name} names no clause"
        assert set(m.clauses) <= set(rules.CLAUSES), (m.name, m.clauses)


def test_a_mutant_breaks_a_clause_its_checks_enforce() -> None:
    """Otherwise its checks could never name the clause it breaks."""
    for m in mutants.MUTANTS.values():
        own = {c for name in select_cases(list(m.checks), []) for c in pc.CHECKS[name].clauses}
        assert set(m.clauses) <= own, f"{m.name}: {m.clauses} not among its checks' {own}"


def test_registering_a_check_without_a_known_clause_fails_at_once() -> None:
    with pytest.raises(LookupError, match=r"no contract clause 'no\.such\.clause'"):
        pc.check("x", clauses=["no.such.clause"])
    with pytest.raises(TypeError, match="a list of ids"):
        pc.check("x", clauses="transport.close.flushes")

    async def check_nothing(session: polyloop.Session) -> None:
        """Nothing."""

    with pytest.raises(ValueError, match="names no contract clause"):
        pc.check("x", clauses=[])(check_nothing)
    assert "x.nothing" not in pc.CHECKS


def test_clause_ids_are_well_formed_and_tiered() -> None:
    for c in rules.CLAUSES.values():
        assert rules.TAG.fullmatch(f"[{c.id}]"), c.id
        assert c.tier in (1, 2) and c.sentence.endswith("."), c
    tier1 = {c.layer for c in rules.clauses_of_tier(1)}
    assert tier1 == {"run", "session", "loop", "threads"}, tier1


def _public_docstrings() -> list[tuple[str, str]]:
    """(name, docstring) of every public name of polyloop and lowlevel, and of their
    classes' members."""
    found = []
    for module in (polyloop, polyloop.lowlevel):
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            found.append((f"{module.__name__}.{name}", inspect.getdoc(obj) or ""))
            if inspect.isclass(obj):
                for member, value in vars(obj).items():
                    doc = inspect.getdoc(value) if not isinstance(value, str) else None
                    if doc:
                        found.append((f"{module.__name__}.{name}.{member}", doc))
    return found


def test_every_clause_tag_in_a_public_docstring_names_a_clause() -> None:
    """The core's docstrings may tag the sentences that state a rule with its id
    (``[transport.close.flushes]``); each tag must name a clause of the registry."""
    docs = _public_docstrings()
    assert len(docs) > 200, "the walk over the public API found too little to mean much"
    for where, doc in docs:
        for tag in rules.tags_in(doc):
            assert tag in rules.CLAUSES, f"{where} tags [{tag}], which is no clause"


def test_the_tag_reader_finds_tags() -> None:
    text = "close() flushes. [transport.close.flushes] See [stream.receive.eof_iff_empty]."
    assert rules.tags_in(text) == ["transport.close.flushes", "stream.receive.eof_iff_empty"]
    assert rules.tags_in("a list [1, 2] and [x] are no tags") == []


def test_the_committed_rule_table_is_the_generated_one() -> None:
    committed = (ROOT / rules.DOCS_PAGE).read_text(encoding="utf-8")
    assert committed == rules.rules_markdown() + "\n", (
        "docs/rules.md is out of date: run python -m polyloop_conformance.rules --write-docs"
    )


def test_tier_selection() -> None:
    tier1 = select_cases(None, None, tier=1)
    assert tier1 and all(pc.CHECKS[n].tier == 1 for n in tier1)
    assert "readiness.callbacks" in tier1 and "scheduling.call_soon_fifo" in tier1
    assert not any(n.startswith("app.") for n in tier1)
    tier2 = select_cases(None, None, tier=2)
    assert set(tier1).isdisjoint(tier2) and "app.echo" in tier2
    assert select_cases(["timers"], None, tier=1) == [
        n for n in select_cases(["timers"], None) if pc.CHECKS[n].tier == 1
    ]
    with pytest.raises(LookupError, match="no check of tier 1 matches 'close'"):
        select_cases(["close"], None, tier=1)
    with pytest.raises(LookupError, match="apps are tier 2"):
        select_cases(None, ["echo"], tier=1)
    with pytest.raises(LookupError, match="1 or 2"):
        select_cases(None, None, tier=3)


def test_list_catalogue_prints_checks_and_clauses() -> None:
    out = io.StringIO()
    rules.list_catalogue(file=out)
    text = out.getvalue()
    assert "readiness.callbacks  tier 1" in text
    assert "[loop.remove_reader.never_after] tier 1: A removed reader" in text
    out = io.StringIO()
    rules.list_catalogue(tier=1, file=out)
    assert "close.flushes" not in out.getvalue() and "timers.call_later_delay" in out.getvalue()
    with pytest.raises(ValueError, match="tier is 1 or 2"):
        rules.list_catalogue(tier=0, file=out)


def test_a_failure_names_its_clause() -> None:
    """The referee prints the clause id and its sentence with every failure."""
    from polyloop_asyncio import AsyncioBackend

    async def broken(session: polyloop.Session) -> None:
        raise AssertionError("the peer got 3 bytes of 5")

    chk = pc.Check(
        "close.flushes", "close", broken, "doc", False, 5.0, clauses=("transport.close.flushes",)
    )
    result = pc.run_check(chk, AsyncioBackend, "asyncio")
    assert result.status == "fail"
    assert "the peer got 3 bytes of 5" in result.detail
    sentence = rules.CLAUSES["transport.close.flushes"].sentence
    assert f"rule [transport.close.flushes]: {sentence}" in result.detail, result.detail
