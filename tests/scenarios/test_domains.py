"""The six domain scenarios of issue 15 (garden, hospital, warehouse, office, kitchen, workshop).

Each domain runs end to end on one transport here (``bench.domains.SUITE``: three on a
``robobus hub`` process, three on Mosquitto), hub or broker, memory, brain (the default
symbolic planner) and edges as processes; the three of a transport run at once, each under its
own topic prefix. ``python -m bench.domains`` runs all twelve combinations.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from bench import scenes
from bench.domains import DOMAINS, SPEED, SUITE, path_of
from robobus.brain_agent.errors import BrainError
from robobus.brain_agent.planners.symbolic import SymbolicPlanner
from robobus.launch.runner import RunOptions, RunResult, run_scenario
from robobus.schemas.scenario import load_scenario

pytestmark = pytest.mark.anyio

HAN = re.compile(r"[\u4e00-\u9fff]")


def _events(result: RunResult) -> list[dict[str, Any]]:
    lines = (result.report_dir / "events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _commands(result: RunResult, robot: str, task: str) -> list[str]:
    return [e["data"]["skill"] for e in _events(result) if e["type"] == "SkillCommand"
            and e["topic"].split("/")[-3] == robot and e["data"].get("task_id") == task]


def _garden(r: RunResult) -> None:  # the slipped grasp of the watering can is replanned
    assert r.summary["skills"].get("failed", 0) >= 1 and r.summary["tasks"]["water"]["replans"] >= 1


def _hospital(r: RunResult) -> None:  # the cart dies mid-pick; the nurse robot takes the sample
    assert r.summary["skills"].get("lost", 0) >= 1
    assert "pick" in _commands(r, "nurse_bot", "sample")


def _warehouse(r: RunResult) -> None:  # a second brain instance became ready mid-run
    ready = {e["data"]["instance"] for e in _events(r)
             if e["type"] == "BrainStatus" and e["data"]["state"] == "ready"}
    assert len(ready) >= 2, ready
    assert "place" in _commands(r, "forklift", "pallet")  # the robot the instruction named


def _office(r: RunResult) -> None:  # the urgent coffee run preempted the laptop delivery
    assert r.summary["preemptions"] >= 1 and r.summary["tasks"]["laptop"]["preempted"] >= 1


def _kitchen(r: RunResult) -> None:  # no grapes: refused with the word it did not know
    assert r.summary["tasks"]["grapes"]["reason"].startswith("unknown object '葡萄'")
    assert _commands(r, "chef_arm", "tidy") == ["pick", "place"]


def _workshop(r: RunResult) -> None:  # the failed navigation is replanned
    assert r.summary["skills"].get("failed", 0) >= 1 and r.summary["replans"] >= 1


CHECKS: dict[str, Callable[[RunResult], None]] = {
    "garden_harvest": _garden, "hospital_rounds": _hospital, "warehouse_orders": _warehouse,
    "office_mail": _office, "kitchen_service": _kitchen, "workshop_tools": _workshop,
}


def test_each_domain_has_english_and_chinese_that_the_default_planner_reads() -> None:
    """No fleet: the files load, and the symbolic planner reads each instruction in its language
    (or refuses it with a reason code, which an expectation then requires to fail)."""
    assert set(CHECKS) == set(DOMAINS) == set(SUITE)
    assert sorted(SUITE.values()).count("zmq") == 3
    planner = SymbolicPlanner()
    for name in DOMAINS:
        sc = load_scenario(path_of(name))
        scene, robots, instructions = scenes.from_scenario(path_of(name))
        languages, failing = set(), {e.task for e in sc.expect if e.status == "failed"}
        for i, inst in enumerate(instructions):
            ctx = scenes.build(scene, robots)
            ctx.origin = inst.get("origin")
            try:
                goals = planner.parse_sync(inst["text"], ctx)
            except BrainError:
                assert sc.task_id(i) in failing, (name, inst["text"])
                continue
            assert goals.language == ("zh" if HAN.search(inst["text"]) else "en"), inst["text"]
            languages.add(goals.language)
        assert languages == {"en", "zh"}, name
        done = {sc.task_ref(e.task) for e in sc.expect if e.status == "done"}
        assert done | failing == {sc.task_id(i) for i in range(len(sc.instructions))}, name
        assert any(e.object for e in sc.expect), name


async def _run(name: str, url: str, tmp_path: Path, results: dict[str, RunResult]) -> None:
    opts = RunOptions(bus_url=url, speed=SPEED, report_dir=tmp_path / name,
                      prefix=f"rbd{secrets.token_hex(3)}")
    results[name] = await run_scenario(path_of(name), opts)


@pytest.mark.parametrize("backend", ["zmq", pytest.param("mqtt", marks=pytest.mark.broker)])
async def test_domain_scenarios(backend: str, request: pytest.FixtureRequest,
                                tmp_path: Path) -> None:
    url = request.getfixturevalue("hub_url" if backend == "zmq" else "mosquitto_url")
    names = [name for name, transport in SUITE.items() if transport == backend]
    results: dict[str, RunResult] = {}
    async with anyio.create_task_group() as tg:
        for name in names:
            tg.start_soon(_run, name, url, tmp_path, results)
    for name in names:
        result = results[name]
        failures = "; ".join(f"{r.expect}: {r.reason}" for r in result.failures())
        assert result.passed, f"{name} over {backend}: {result.error or failures}"
        assert all(t["status"] in ("done", "failed") for t in result.summary["tasks"].values())
        CHECKS[name](result)
