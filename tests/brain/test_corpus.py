"""The English instruction corpus (bench/corpus/en.yaml, issue 15): the symbolic planner reads
at least 98% of it as meant, and refuses the bad inputs with the expected reason code."""

from __future__ import annotations

import pytest

from bench import corpus_cases
from robobus.brain_agent.planners.symbolic import SymbolicPlanner

EN = corpus_cases.CORPUS / "en.yaml"


@pytest.fixture(scope="module")
def entries() -> list[corpus_cases.Entry]:
    return corpus_cases.load(EN)


def test_corpus_is_large_varied_and_self_consistent(entries: list[corpus_cases.Entry]) -> None:
    assert len(entries) >= 100
    domains = {e.scene.stem for e in entries}
    assert {"garden", "hospital", "warehouse", "office", "kitchen", "workshop"} <= domains
    assert sum(e.error is not None for e in entries) >= 20  # bad inputs, each with a code
    for e in entries:
        assert (e.goals is None) != (e.error is None), e.name
        if e.goals is not None:  # every expectation names real things on its scene
            assert corpus_cases.expected(e), e.name


def test_symbolic_planner_reads_98_percent_as_meant(entries: list[corpus_cases.Entry]) -> None:
    planner = SymbolicPlanner()
    misses = []
    for e in entries:
        got = corpus_cases.symbolic_outcome(e, planner)
        if got != corpus_cases.expected(e):
            misses.append(f"{e.name} {e.text!r}: expected {corpus_cases.expected(e)}, got {got}")
    right = len(entries) - len(misses)
    assert right >= 0.98 * len(entries), "\n".join(misses)
