"""Crash drills on the whole system: kill -9 a component mid-plan, restart it, the task completes.

Each drill is a scenario file in ``tests/faults/scenarios/`` with a ``restart`` fault fired by a
skill event, so it always lands mid-plan. The runner starts every component as its own process
(and, for MQTT, its own persistent Mosquitto on a free port, so the broker can be restarted).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from robobus import testing
from robobus.launch.runner import RunOptions, run_scenario

pytestmark = [pytest.mark.anyio, pytest.mark.faults]

HERE = Path(__file__).parent / "scenarios"
SHIPPED = Path(__file__).resolve().parents[2] / "scenarios"
SPEED = 5.0

DRILLS = [
    ("brain_restart", "zmq"), ("brain_restart", "mqtt"),
    ("memory_restart", "zmq"), ("memory_restart", "mqtt"),
    ("hub_restart", "zmq"), ("broker_restart", "mqtt"),
]


def _url(backend: str) -> str | None:
    """None: the runner starts a fresh hub; mqtt: a loopback port the runner serves itself."""
    return None if backend == "zmq" else f"mqtt://127.0.0.1:{testing.free_port()}"


async def _drill(path: Path, backend: str, tmp_path: Path) -> dict:
    opts = RunOptions(bus_url=_url(backend), speed=SPEED, report_dir=tmp_path / "report",
                      prefix=f"f{tmp_path.name[-6:]}")
    result = await run_scenario(path, opts)
    assert result.passed, result.error or [f"{r.expect}: {r.reason}" for r in result.failures()]
    events = [json.loads(line) for line in
              (result.report_dir / "events.jsonl").read_text().splitlines()]
    faults = [e for e in events if e.get("data", {}).get("kind") == "fault"]
    assert faults, "the fault never fired: the drill proved nothing"
    print("FAULT", json.dumps({"drill": path.stem, "bus": backend,
                               "makespan_s": result.summary.get("makespan_s"),
                               "replans": result.summary.get("replans")}))
    return result.summary


@pytest.mark.parametrize(("name", "backend"), DRILLS)
async def test_component_restart_mid_plan(name: str, backend: str, tmp_path: Path) -> None:
    await _drill(HERE / f"{name}.yaml", backend, tmp_path)


@pytest.mark.parametrize("backend", ["zmq", "mqtt"])
async def test_edge_kill9_mid_skill_is_reassigned(backend: str, tmp_path: Path) -> None:
    summary = await _drill(SHIPPED / "robot_killed_reassign.yaml", backend, tmp_path)
    assert summary["replans"] >= 1
