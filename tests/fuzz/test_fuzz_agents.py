"""Bad input thrown at every topic an agent subscribes to, while a shipped scenario runs.

A seeded hypothesis corpus (tests/fuzz/corpus.py) goes out from an external client over the
real bus, as separate agent processes run fruit_and_knife. Asserted: no process died, every
input the agents must refuse was reported on ``P/errors`` (per topic, and per category with its
reason code), floods were refused by the per-sender limits, the scenario still passed, every
accepted instruction ended with a reason, nothing stored before the fuzz was lost, every
accepted input was recorded, and nothing oversized was.
"""

from __future__ import annotations

import functools
import json
import secrets
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from bench.machine import load_file
from robobus.launch import fleet as fleet_mod
from robobus.memory_store.store import open_store

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

HERE = Path(__file__).resolve().parent
SCENARIO = HERE.parents[1] / "scenarios" / "fruit_and_knife.yaml"
SEED = 20261121
PER_CATEGORY = 60
SPEED = 3.0
RATE = 250.0          # inputs/s on topics whose rejecters report every input
PACED_RATE = 8.0      # instructions and world events: the brain's reports are limited to 20/s


def load(name: str) -> ModuleType:
    """tests/fuzz/NAME.py by path, as module ``robobus_fuzz_NAME`` (tests/ is not a package)."""
    return load_file(HERE / f"{name}.py", f"robobus_fuzz_{name}")


corpus_mod, driver = load("corpus"), load("driver")


async def _fuzz(url: str, prefix: str, tmp_path: Path) -> Any:
    fleet = driver.fleet_of(SCENARIO, prefix, corpus_mod)
    corpus = functools.partial(corpus_mod.build_corpus, fleet, PER_CATEGORY, SEED)
    run = await driver.fuzz_scenario(SCENARIO, url, prefix, corpus, report_dir=tmp_path / "run",
                                     speed=SPEED, rate=RATE, paced_rate=PACED_RATE)
    (tmp_path / "fuzz.json").write_text(json.dumps(driver.summary(run, prefix), indent=1))
    _check(run, prefix)
    return run


def _check(run: Any, prefix: str) -> None:
    result = run.result
    failures = "; ".join(f"{r.expect}: {r.reason}" for r in result.failures())
    assert result.passed, f"scenario failed under fuzz: {result.error or failures}"
    assert not run.hooks.crashed, f"agent processes died: {run.hooks.crashed}"
    assert {"memory", "brain"} <= set(run.hooks.alive_at_end), run.hooks.alive_at_end
    assert sum(n.startswith("edge-") for n in run.hooks.alive_at_end) == 3
    assert len(run.sent) >= 200, f"only {len(run.sent)} inputs went out before the task ended"
    _check_reports(run)
    _check_instructions(run)
    _check_store(run, result.report_dir / "store", f"{prefix}/memory/query")


def _check_reports(run: Any) -> None:
    must = Counter(i.topic for i in run.sent if i.verdict == "reject")
    got = run.reports_by_topic()
    short = {t: (n, got[t]) for t, n in must.items() if got[t] < n}
    assert not short, f"rejected inputs without a report (topic: sent, reported): {short}"
    codes = Counter(r.code for r in run.reports)
    for category in {i.category for i in run.sent if i.verdict == "reject"}:
        topics = {i.topic for i in run.sent if i.category == category and i.verdict == "reject"}
        assert any(r.topic in topics and r.reason for r in run.reports), category
    sent_reasons = {i.reason.split(":")[0] for i in run.sent if i.verdict == "reject"}
    for code in {"too_large", "unknown_skill", "duplicate_task", "bad_task_id", "no_reply_to",
                 "unknown_robot", "robot_mismatch"} & sent_reasons:
        assert codes[code] >= 1, f"no {code} report; codes seen: {dict(codes)}"
    assert codes["decode"] >= 1 and codes["rate_limited"] >= 2, dict(codes)
    limited = {r.topic for r in run.reports if r.code == "rate_limited"}
    assert any(t.endswith("/instructions") for t in limited), limited
    assert any("/skills/" in t for t in limited), limited


def _check_instructions(run: Any) -> None:
    """Accepted fuzz instructions with a task id became tasks that ended, with a reason."""
    for item in run.sent:
        if item.task_id is None:
            continue
        ends = [s for s in run.statuses.get(item.task_id, []) if s.status in ("failed", "done")]
        assert ends, f"accepted instruction {item.task_id!r} never ended"
        assert all(s.status == "failed" and s.reason for s in ends), ends


def _check_store(run: Any, path: Path, query_topic: str) -> None:
    """Nothing stored is lost, every input is recorded except memory queries (read-only: the
    agent answers them without logging, see docs/memory.md), and no oversized payload is."""
    with open_store(path, readonly=True) as store:
        events = list(store.scan())
    keys = {(e.ts_ns, e.seq) for e in events}
    lost = run.stored_before - keys
    assert run.stored_before and not lost, f"{len(lost)} events stored before the fuzz are gone"
    stored = {(e.topic, e.payload) for e in events}
    limit = corpus_mod.MAX_PAYLOAD
    missing = [i.category for i in run.sent if len(i.payload) <= limit
               and i.topic != query_topic and (i.topic, i.payload) not in stored]
    assert any(i.topic == query_topic for i in run.sent), "no memory query was fuzzed"
    assert not any(e.topic == query_topic for e in events), "a memory query was recorded"
    assert not missing, f"{len(missing)} inputs not recorded: {Counter(missing)}"
    oversized = [i for i in run.sent if len(i.payload) > limit and (i.topic, i.payload) in stored]
    assert not oversized, "an oversized payload was recorded"


async def test_fuzz_during_scenario_zmq(tmp_path: Path) -> None:
    url = fleet_mod.default_bus_url()  # the runner starts a hub there, under its supervisor
    await _fuzz(url, f"fz{secrets.token_hex(3)}", tmp_path)


@pytest.mark.broker
async def test_fuzz_during_scenario_mqtt(mosquitto_url: str, tmp_path: Path) -> None:
    await _fuzz(mosquitto_url, f"fz{secrets.token_hex(3)}", tmp_path)
