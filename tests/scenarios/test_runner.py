"""Every shipped scenario, run end to end (hub or Mosquitto, memory, brain, edges as processes).

Each run gets a fresh hub on a free port (zmq) or a unique topic prefix on the session's
Mosquitto (mqtt), and a report folder under tmp_path. ``--speed`` keeps each run to seconds.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest

from robobus.launch.runner import RunOptions, RunResult, run_scenario

pytestmark = pytest.mark.anyio

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
SPEED = 20.0
SMALL = ["fruit_and_knife", "grasp_failure_replan", "robot_killed_reassign", "urgent_preemption",
         "concurrent_instructions", "clear_the_table"]


def _url(backend: str, request: pytest.FixtureRequest) -> str:
    """The session's hub or Mosquitto; each run has its own topic prefix. (The runner starting
    its own hub is covered by the CLI tests.)"""
    return request.getfixturevalue("hub_url" if backend == "zmq" else "mosquitto_url")


async def _run(name: str, backend: str, request: pytest.FixtureRequest, tmp_path: Path,
               speed: float = SPEED) -> RunResult:
    opts = RunOptions(bus_url=_url(backend, request), speed=speed, report_dir=tmp_path / name,
                      prefix=f"rb{secrets.token_hex(3)}")
    result = await run_scenario(SCENARIOS / f"{name}.yaml", opts)
    failures = "; ".join(f"{r.expect}: {r.reason}" for r in result.failures())
    assert result.passed, f"{name} over {backend}: {result.error or failures}"
    _check_report(result)
    return result


def _check_report(result: RunResult) -> None:
    folder = result.report_dir
    assert (folder / "timeline.png").stat().st_size > 5_000
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["passed"] is True and summary["makespan_s"] > 0
    assert summary["latency"]["instruction_to_first_command_ms"]["n"] >= 1
    assert (folder / "events.jsonl").stat().st_size > 0
    assert (folder / "store").is_dir() and (folder / "logs" / "memory.log").exists()
    events = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]
    t0 = next(e["t_ns"] for e in events if e["topic"] == "$runner/ready")
    assert any(e["topic"].endswith("/brain/status") and e["data"]["state"] == "ready"
               and e["t_ns"] <= t0 for e in events), "scenario time 0 before the brain was ready"


def _task_span(events: list[dict[str, Any]], task: str) -> tuple[int, int]:
    times = [e["t_ns"] for e in events if e["type"] == "SkillCommand" and e["data"].get("task_id") == task]
    return min(times), max(times)


BACKENDS = ["zmq", pytest.param("mqtt", marks=pytest.mark.broker)]
#: The suite runs the demo on both transports and each other small scenario on one, alternately
#: (suite time, 2 cores): `python -m bench.domains` and `robobus run` cover every pairing.
SMALL_RUNS = [
    ("fruit_and_knife", "zmq"), pytest.param("fruit_and_knife", "mqtt", marks=pytest.mark.broker),
    ("grasp_failure_replan", "zmq"),
    pytest.param("robot_killed_reassign", "mqtt", marks=pytest.mark.broker),
    ("urgent_preemption", "zmq"),
    pytest.param("concurrent_instructions", "mqtt", marks=pytest.mark.broker),
    ("clear_the_table", "zmq"),
]
assert {r.values[0] if hasattr(r, "values") else r[0] for r in SMALL_RUNS} == set(SMALL)


@pytest.mark.parametrize(("name", "backend"), SMALL_RUNS)
async def test_shipped_scenario(name: str, backend: str, request: pytest.FixtureRequest,
                                tmp_path: Path) -> None:
    result = await _run(name, backend, request, tmp_path)
    s = result.summary
    if name == "grasp_failure_replan":
        assert s["replans"] >= 1 and s["skills"].get("failed", 0) >= 1
    elif name == "robot_killed_reassign":
        assert s["replans"] >= 1 and s["skills"].get("lost", 0) >= 1
        assert "g2" in s["skills_per_robot"]
    elif name == "urgent_preemption":
        assert s["preemptions"] >= 1 and s["skills"].get("cancelled", 0) >= 1
    elif name == "concurrent_instructions":
        lines = (result.report_dir / "events.jsonl").read_text().splitlines()
        events = [json.loads(line) for line in lines]
        a, b = _task_span(events, "apple"), _task_span(events, "book")
        assert a[0] < b[1] and b[0] < a[1], "the two tasks did not overlap"


@pytest.mark.slow
async def test_warehouse_50_robots(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """50 edge processes on the hub (on Mosquitto: `robobus run scenarios/warehouse_50.yaml
    --bus mqtt://...`, and `python -m bench.fleet` runs 1,000 robots on both)."""
    result = await _run("warehouse_50", "zmq", request, tmp_path)
    assert result.summary["robots"] == 50
    assert len(result.summary["tasks"]) == 3


async def test_zmq_ipc_url_starts_its_own_hub(tmp_path: Path) -> None:
    (tmp_path / "bus.ctl").write_bytes(b"")  # a stale socket file from a dead hub
    opts = RunOptions(bus_url=f"zmq+ipc://{tmp_path}/bus", speed=SPEED, report_dir=tmp_path / "r")
    result = await run_scenario(SCENARIOS / "concurrent_instructions.yaml", opts)
    assert result.passed, result.error or result.failures()
    assert (tmp_path / "r" / "logs" / "hub.log").exists()
