"""Edge agents with the real memory agent, over the ZeroMQ hub: world changes and restarts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from robobus.bus import Bus, BusOptions
from robobus.schemas.messages import Alive, RobotState, SkillCommand, SkillFeedback
from robobus.schemas.topics import Topics
from robobus.schemas.world import WorldEvent
from robobus.testing import kill9, robobus_cmd, spawn

pytestmark = pytest.mark.anyio
TERMINAL = {"done", "failed", "cancelled", "rejected"}


class Driver:
    """A bus client sending commands and collecting terminal feedback."""

    def __init__(self, bus: Bus, topics: Topics) -> None:
        self.bus, self.t = bus, topics

    async def run(self, sub: Any, robot: str, skill: str, **args: Any) -> SkillFeedback:
        cid = f"{robot}-{skill}-{args}"
        await self.bus.publish(self.t.skill(robot, skill),
                               SkillCommand(command_id=cid, skill=skill, args=args), qos=1)
        with anyio.fail_after(10):
            async for msg in sub:
                if msg.data.command_id == cid and msg.data.status in TERMINAL:
                    return msg.data
        raise AssertionError("feedback stream ended")


async def wait_state(sub: Any, after_ns: int) -> RobotState:
    """The first state published after ``after_ns`` (wall clock, as carried in the message)."""
    with anyio.fail_after(10):
        async for msg in sub:
            if msg.data.ts_ns > after_ns:
                return msg.data
    raise AssertionError("state stream ended")


async def test_restart_resumes_from_memory_and_will_fires_via_hub(
        hub_url: str, prefix: str, tmp_path: Path, scene: dict[str, Any]) -> None:
    scene_file = tmp_path / "scene.yaml"
    scene_file.write_text(yaml.safe_dump({"scene": scene}))
    t = Topics(prefix)
    common = ("--bus", hub_url, "--prefix", prefix)
    edge_argv = robobus_cmd("edge", "--profile", "unitree_g1", "--time-scale", "0.01", *common)
    memory = robobus_cmd("memory", "--store", str(tmp_path / "store"), "--scene", str(scene_file),
                         *common)
    async with Bus.connect(hub_url, name="driver", options=BusOptions(prefix=prefix)) as bus, \
            bus.subscribe(t.feedback("g1"), SkillFeedback) as feedback, \
            bus.subscribe(t.alive("g1"), Alive) as alive, \
            bus.subscribe(t.state("g1"), RobotState) as states, \
            bus.subscribe(t.world_events, WorldEvent) as events:
        d = Driver(bus, t)
        with spawn(memory, name="memory"), spawn(edge_argv, name="g1") as proc:
            with anyio.fail_after(15):  # the memory agent adds the robot on registration
                async for msg in events:
                    if (msg.data.change.op, msg.data.change.robot) == ("add_robot", "g1"):
                        break
            assert (await d.run(feedback, "g1", "pick", object="apple")).status == "done"
            assert (await d.run(feedback, "g1", "navigate", target="customTable")).status == "done"
            busy = await d.run(feedback, "g1", "pick", object="knife")
            assert busy.status == "done"  # two hands
            kill9(proc)
            t0, killed_ns = anyio.current_time(), time.time_ns()
            with anyio.fail_after(3):
                async for msg in alive:
                    if not msg.data.online:
                        break
            assert anyio.current_time() - t0 < 3.0
            with spawn(edge_argv, name="g1-again"):
                state = await wait_state(states, killed_ns)  # the profile says kitchenTable
                assert (state.place, sorted(state.holding)) == ("customTable", ["apple", "knife"])
                done = await d.run(feedback, "g1", "place", object="knife", target="basket")
                assert done.status == "done"
                refused = await d.run(feedback, "g1", "pick", object="banana")
                assert refused.reason_code == "precondition"  # banana is at kitchenTable
