"""``robobus foxglove`` (issue 17, item 2) as a process beside a fleet of agent processes, watched
by a real Foxglove WebSocket client (npm ``@foxglove/ws-protocol``, tests/foxglove/client.mjs):
it subscribes to a robot's state channel, the 3D scene and the transforms, decodes them (JSON
with the export's JSON Schema; protobuf with the advertised descriptors) and they match the bus;
a malformed text frame, a binary frame with an unknown opcode and a subscription to an unknown
channel get error statuses, and the bridge goes on serving."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from mcap.reader import make_reader

from bench import scenes
from robobus import testing
from robobus.foxglove_bridge import transform
from robobus.schemas.messages import Alive, RobotState
from tests.brain.test_processes import fleet
from tests.open.conftest import brain_ready, npm_folder

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def foxglove_client() -> Path:
    return npm_folder(HERE)


async def _collect(sub: Any, into: dict[int, RobotState]) -> None:
    async for msg in sub:
        into[msg.data.ts_ns] = msg.data


async def test_a_foxglove_client_sees_the_fleet(foxglove_client: Path, tmp_path: Path,
                                               hub_url: str) -> None:
    async with fleet(tmp_path, hub_url, scenes.DEMO_SCENE, scenes.DEMO_ROBOTS) as (fl, bus):
        await brain_ready(bus, fl.topics)
        port = testing.free_port()
        argv = testing.robobus_cmd("foxglove", "--bus", hub_url, "--prefix", fl.prefix,
                                   "--port", str(port))
        state, scene, tf = fl.topics.state("g1"), f"{fl.prefix}/foxglove/scene", f"{fl.prefix}/foxglove/tf"
        registration = fl.topics.registration("agilex")  # published once, long before
        seen: dict[int, RobotState] = {}
        with testing.spawn(argv, name="foxglove", log_dir=tmp_path / "logs") as bridge:
            await anyio.to_thread.run_sync(testing.wait_port, port, 30.0)
            async with bus.subscribe(fl.topics.alive("agilex"), Alive) as alive:
                fl.kill9("agilex")  # its last will turns it offline: grey in the scene
                with anyio.fail_after(30):
                    while (await alive.get()).data.online:
                        pass
            async with bus.subscribe(state, RobotState) as sub, anyio.create_task_group() as tg:
                tg.start_soon(_collect, sub, seen)
                cmd = ["node", "client.mjs", "--url", f"ws://127.0.0.1:{port}", "--topic", state,
                       "--topic", scene, "--topic", tf, "--latched", registration,
                       "--latched", fl.topics.brain_status, "--count", "3", "--timeout", "40"]
                done = await anyio.to_thread.run_sync(lambda: subprocess.run(
                    cmd, cwd=foxglove_client, capture_output=True, text=True, timeout=60))
                tg.cancel_scope.cancel()
            assert bridge.poll() is None, "the bridge died"
    (tmp_path / "client.jsonl").write_text(done.stdout)  # kept with the test's output
    assert done.stdout.strip(), done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    summary = lines[-1]["summary"]
    assert done.returncode == 0, (summary, done.stderr)
    assert summary["schemas"][state] == {"name": "robobus.RobotState", "encoding": "json",
                                         "schemaEncoding": "jsonschema"}
    assert summary["schemas"][scene]["name"] == "foxglove.SceneUpdate"
    assert summary["schemas"][tf]["name"] == "foxglove.FrameTransform"
    assert fl.topics.registration("agilex") in summary["advertised"]  # retained topics too
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for line in lines[:-1]:
        by_topic.setdefault(line["topic"], []).append(line["message"])
    for got in by_topic[state]:  # the very messages the bus carried (JavaScript numbers lose
        # ts_ns's last digits; its {sec, nsec} twin, the time Foxglove reads, keeps them all)
        sent = seen[got["ts"]["sec"] * 10**9 + got["ts"]["nsec"]]
        pose = {"x": 0.0, "y": 0.0, **got.get("pose", {})}  # the wire omits default (0.0) fields
        assert (got["robot"], pose["x"], pose["y"]) == ("g1", sent.pose.x, sent.pose.y)
    # retained topics are sent again to a new subscriber, as the bus does
    assert by_topic[registration][0]["robot"] == "agilex"
    assert by_topic[fl.topics.brain_status][0]["state"] == "ready"
    ids = {e["id"] for e in by_topic[scene][-1]["entities"]}
    assert {f"robot/{r['name']}" for r in fl.robots} | {f"place/{p}" for p in scenes.DEMO_SCENE["places"]} \
        | {f"object/{o}" for o in scenes.DEMO_SCENE["objects"]} <= ids
    robots = {e["id"]: e for e in by_topic[scene][-1]["entities"] if e["id"].startswith("robot/")}
    assert robots["robot/agilex"]["cubes"][0]["color"] != robots["robot/g1"]["cubes"][0]["color"]
    assert robots["robot/agilex"]["cubes"][0]["color"]["a"] == pytest.approx(0.5)  # offline
    g1 = robots["robot/g1"]
    xs = {s.pose.x for s in seen.values()}
    assert g1["cubes"][0]["pose"]["position"]["x"] in xs
    assert {t["childFrameId"] for t in by_topic[tf]} <= {r["name"] for r in fl.robots}
    assert all(t["parentFrameId"] == "world" for t in by_topic[tf])
    # bad input: an error status each, and messages kept coming on every channel afterwards
    errors = [s["message"] for s in summary["statuses"] if s["level"] == 2]
    assert any(e.startswith("Invalid message") for e in errors), errors
    assert any("Unknown binary opcode" in e for e in errors), errors
    assert "Unknown channel ID: 987654" in errors
    assert all(n >= 1 for n in summary["after"].values())
    await _export_has_the_scene(tmp_path, fl.prefix)


async def _export_has_the_scene(tmp_path: Path, prefix: str) -> None:
    """``robobus export --mcap --scene`` of the memory agent's store writes the same scene and
    transforms: each transform is the one the bridge makes of the state recorded beside it."""
    out = tmp_path / "run.mcap"
    await anyio.to_thread.run_sync(lambda: subprocess.run(testing.robobus_cmd(
        "export", str(tmp_path / "store"), "--mcap", str(out), "--scene"), check=True, timeout=60))
    with out.open("rb") as fh:
        messages = list(make_reader(fh).iter_messages())
    states = {(m.log_time, ch.topic.split("/")[-2]): msgspec.json.decode(m.data, type=RobotState)
              for _, ch, m in messages if ch.topic.startswith(f"{prefix}/robots/")
              and ch.topic.endswith("/state")}
    tfs = [(s, m) for s, ch, m in messages if ch.topic == f"{prefix}/foxglove/tf"]
    scenes = [(s, m) for s, ch, m in messages if ch.topic == f"{prefix}/foxglove/scene"]
    assert len(tfs) == len(states) > 0 and scenes
    assert {s.name for s, _ in tfs} == {"foxglove.FrameTransform"}
    assert {s.name for s, _ in scenes} == {"foxglove.SceneUpdate"}
    by_time: dict[int, list[bytes]] = {}
    for (ts, _robot), st in states.items():
        by_time.setdefault(ts, []).append(transform(st).encode())
    assert all(m.data in by_time[m.log_time] for _, m in tfs)
