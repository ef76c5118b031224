"""The commands as a user runs them: exit codes, messages, Ctrl-C, ``robobus up``, no orphans."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import yaml

from robobus import testing
from robobus.bus import Bus, BusOptions
from robobus.schemas.messages import Instruction, TaskStatus

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
REPO = SCENARIOS.parent


def robobus(*args: str, prefix: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ROBOBUS_PREFIX": prefix, "ROBOBUS_LOG": "warning"}
    return subprocess.run(testing.robobus_cmd(*args), capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=REPO)


def leftovers(prefix: str) -> list[int]:
    """Pids of processes started for this prefix that are still alive (not zombies)."""
    needle = f"ROBOBUS_PREFIX={prefix}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0") and \
                    (entry / "stat").read_text().split()[2] != "Z":
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.fixture
def prefix() -> Iterator[str]:
    value = f"cli{secrets.token_hex(3)}"
    yield value
    assert leftovers(value) == [], "processes left behind"


def test_validate_ok_and_bad(tmp_path: Path, prefix: str) -> None:
    ok = robobus("scenario", "validate", *map(str, sorted(SCENARIOS.glob("*.yaml"))), prefix=prefix)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.count("ok: ") == len(list(SCENARIOS.glob("*.yaml")))
    bad = tmp_path / "bad.yaml"
    data = yaml.safe_load((SCENARIOS / "grasp_failure_replan.yaml").read_text())
    data["robots"][0]["profile"] = "no_such_robot"
    bad.write_text(yaml.safe_dump(data))
    out = robobus("scenario", "validate", str(bad), prefix=prefix)
    assert out.returncode == 1
    assert "robots[0].profile" in out.stderr and "no_such_robot" in out.stderr


def test_failing_expectation_exits_1_and_says_why(tmp_path: Path, hub_url: str, prefix: str) -> None:
    data = yaml.safe_load((SCENARIOS / "grasp_failure_replan.yaml").read_text())
    data.update(instructions=[], faults=[], expect=[{"object": "apple", "at": "officeDesk"}])
    path = tmp_path / "never.yaml"
    path.write_text(yaml.safe_dump(data))
    out = robobus("scenario", "run", str(path), "--bus", hub_url, "--speed", "20", "--quiet",
                  "--report", str(tmp_path / "report"), prefix=prefix)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "FAIL object apple at officeDesk: apple is at kitchenTable, not at officeDesk" in out.stdout
    assert (tmp_path / "report" / "timeline.png").exists()


def test_invalid_file_exits_2(tmp_path: Path, prefix: str) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("name: x\nscene: {places: {}}\nrobots: []\n")
    out = robobus("scenario", "run", str(path), prefix=prefix)
    assert out.returncode == 2
    assert "scene.places: at least one place is required" in out.stderr


def test_crashing_brain_fails_the_run_with_its_log(tmp_path: Path, hub_url: str, prefix: str) -> None:
    out = robobus("scenario", "run", str(SCENARIOS / "grasp_failure_replan.yaml"), "--bus",
                  hub_url, "--planner", "no-such-planner", "--quiet",
                  "--report", str(tmp_path / "r"), prefix=prefix)
    assert out.returncode == 1
    assert "process 'brain' exited unexpectedly" in out.stdout


@pytest.mark.slow
def test_demo_with_its_own_hub(tmp_path: Path, prefix: str) -> None:
    out = robobus("demo", "--speed", "20", "--report", str(tmp_path / "demo"), "--quiet",
                  prefix=prefix)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "PASS fruit-and-knife" in out.stdout
    assert f"timeline: {tmp_path / 'demo' / 'timeline.png'}" in out.stdout
    assert "--bus mqtt://127.0.0.1:1883" in out.stdout and "mosquitto_pub" in out.stdout
    assert "robobus replay" in out.stdout


def _start(args: list[str], prefix: str) -> subprocess.Popen[str]:
    env = {**os.environ, "ROBOBUS_PREFIX": prefix, "ROBOBUS_LOG": "warning"}
    return subprocess.Popen(testing.robobus_cmd(*args), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)


def _wait_line(proc: subprocess.Popen[str], needle: str, seen: list[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:  # the process's own output is the readiness signal
        seen.append(line)
        if needle in line:
            return
    raise AssertionError(f"{needle!r} never printed:\n{''.join(seen)}")


def test_ctrl_c_stops_every_process(tmp_path: Path, hub_url: str, prefix: str) -> None:
    proc = _start(["scenario", "run", str(SCENARIOS / "urgent_preemption.yaml"), "--bus", hub_url,
                   "--speed", "1", "--report", str(tmp_path / "r")], prefix)
    seen: list[str] = []
    try:
        _wait_line(proc, "fleet ready", seen)
        _wait_line(proc, "started", seen)  # a skill is running
        assert len(leftovers(prefix)) >= 3  # memory, brain, edge
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        testing.stop(proc)  # type: ignore[arg-type]
    assert proc.returncode == 130, "".join(seen) + out
    assert "interrupted" in out


@pytest.mark.anyio
async def test_up_serves_instructions_until_sigterm(tmp_path: Path, hub_url: str,
                                                    prefix: str) -> None:
    proc = _start(["up", "--bus", hub_url, "--speed", "20", "--report", str(tmp_path / "up")],
                  prefix)
    seen: list[str] = []
    try:
        await anyio.to_thread.run_sync(_wait_line, proc, "fleet up on", seen)
        async with Bus.connect(hub_url, name="tester", options=BusOptions(prefix=prefix)) as bus:
            async with bus.subscribe(f"{prefix}/tasks/+", TaskStatus) as sub:
                await bus.publish(f"{prefix}/instructions",
                                  Instruction("bring the apple to the office desk", task_id="mine"),
                                  qos=1)
                with anyio.fail_after(30):
                    async for msg in sub:
                        if msg.data.status in ("done", "failed"):
                            break
        assert msg.data.status == "done", msg.data.reason
        proc.send_signal(signal.SIGTERM)
        out, _ = await anyio.to_thread.run_sync(lambda: proc.communicate(timeout=30))
    finally:
        testing.stop(proc)  # type: ignore[arg-type]
    assert proc.returncode == 0, "".join(seen) + out
    assert "fleet stopped" in out


def test_help_lists_the_commands(prefix: str) -> None:
    out = robobus("--help", prefix=prefix)
    for cmd in ("scenario", "demo", "up"):
        assert cmd in out.stdout


def test_edge_that_cannot_start_fails_fast(tmp_path: Path, hub_url: str, prefix: str) -> None:
    profile = yaml.safe_load((REPO / "profiles" / "unitree_g1.yaml").read_text())
    profile["embodiment"]["hands"] = "two"
    (tmp_path / "broken_robot.yaml").write_text(yaml.safe_dump(profile))
    data = yaml.safe_load((SCENARIOS / "grasp_failure_replan.yaml").read_text())
    data["robots"][0]["profile"] = "broken_robot.yaml"  # relative to the scenario file
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    out = robobus("scenario", "run", str(path), "--bus", hub_url, "--quiet",
                  "--report", str(tmp_path / "r"), prefix=prefix, timeout=60)
    assert out.returncode == 1
    assert "process 'edge-g1' exited unexpectedly with code 2" in out.stdout
    assert "hands" in out.stdout  # the edge's own message, from its log
