"""A robot declared dead that wakes up cannot finish its old step (issue 12), with memory,
brain and two edges as processes on a real Mosquitto.

The near robot is SIGSTOPped mid-``navigate`` past its keepalive; the broker publishes its will,
the brain fails the step and hands the work to the second robot. After SIGCONT the near robot
reconnects and completes its motion: its world change is refused by the memory agent
(``late_change``), its feedback by the brain (``late_result``), and the world keeps it where
it was.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
import yaml

from robobus import testing
from robobus.brain_agent.fleet import query_memory
from robobus.bus import Bus, BusOptions, Subscription
from robobus.schemas.memory import MemoryQuery
from robobus.schemas.messages import (
    Alive,
    ErrorReport,
    Instruction,
    SkillCommand,
    SkillFeedback,
    TaskStatus,
)
from robobus.schemas.topics import Topics
from robobus.schemas.world import WorldEvent, WorldSnapshot

pytestmark = [pytest.mark.anyio, pytest.mark.faults, pytest.mark.broker]

#: the near robot's drive to the shelf takes 24 s real time: longer than stall plus reconnect
SCENE = {"places": {"home": {"position": [0.0, 0.0]}, "shelf": {"position": [24.0, 0.0]},
                    "far": {"position": [30.0, 0.0]}},
         "objects": {"bolt": {"kind": "bolt", "at": "shelf"}}}
FINAL = ("done", "failed", "cancelled")


def profile(name: str, start: str, speed: float) -> dict[str, Any]:
    return {"name": name, "type": "test_bot", "start": start, "telemetry_hz": 10,
            "embodiment": {"mobile": True, "arms": 1, "hands": 1, "speed": speed},
            "skills": {"navigate": {}, "pick": {"duration_s": 0.5}, "place": {"duration_s": 0.5}}}


async def until(sub: Subscription, match: Any, timeout: float) -> Any:
    """The first message's data on ``sub`` that ``match`` accepts."""
    with anyio.fail_after(timeout):
        while not match(data := (await sub.get()).data):
            pass
    return data


async def test_late_robot_cannot_finish_a_dead_step(tmp_path: Path, mosquitto_url: str) -> None:
    prefix = f"t{secrets.token_hex(4)}"
    topics, tid = Topics(prefix), secrets.token_hex(3)
    (tmp_path / "scene.yaml").write_text(yaml.safe_dump({"scene": SCENE}))
    # far_bot is slower (30 s of simulated drive to the shelf against near's 24 s): near_bot gets
    # the step first; far_bot runs at a tenth of real time, so the reassigned task ends in seconds
    for name, start, speed in (("near_bot", "home", 1.0), ("far_bot", "far", 0.2)):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(profile(name, start, speed)))
    with contextlib.ExitStack() as stack:
        def spawn(name: str, *args: str) -> Any:
            argv = testing.robobus_cmd(*args, "--bus", mosquitto_url, "--prefix", prefix)
            return stack.enter_context(testing.spawn(argv, name=name, log_dir=tmp_path / "logs"))

        async with Bus.connect(mosquitto_url, name="tester", options=BusOptions(prefix=prefix)
                               ) as bus, \
                bus.subscribe(topics.alive(), Alive) as alive, \
                bus.subscribe(topics.errors, ErrorReport) as errors, \
                bus.subscribe(topics.skill(), SkillCommand) as commands, \
                bus.subscribe(topics.feedback("near_bot"), SkillFeedback) as feedback, \
                bus.subscribe(topics.world_events, WorldEvent) as events, \
                bus.subscribe(topics.task(tid), TaskStatus) as statuses:
            spawn("memory", "memory", "--store", str(tmp_path / "store"), "--scene",
                  str(tmp_path / "scene.yaml"))
            near = spawn("near_bot", "edge", "--profile", str(tmp_path / "near_bot.yaml"),
                         "--time-scale", "1.0")
            spawn("far_bot", "edge", "--profile", str(tmp_path / "far_bot.yaml"),
                  "--time-scale", "0.1")
            spawn("brain", "brain")
            online: set[str] = set()
            await until(alive, lambda a: a.online and online.add(a.robot) is None
                        and online >= {"near_bot", "far_bot"}, 60)
            with anyio.fail_after(60):  # again until a brain takes it (it may still boot)
                while True:
                    await bus.publish(topics.instructions, Instruction("bring the bolt to home",
                                                                       task_id=tid), qos=1)
                    with anyio.move_on_after(1.0):
                        await statuses.get()
                        break
            cmd = await until(commands, lambda c: c.task_id == tid and c.skill == "navigate", 60)
            assert cmd.args == {"target": "shelf"}
            assert cmd.command_id.startswith(f"{tid}."), cmd
            # mid-motion: stopped before its first progress, the skill's world query timed out
            # at SIGCONT and it failed without asking for a change
            await until(feedback, lambda f: f.command_id == cmd.command_id
                        and f.status == "progress", 30)
            os.killpg(near.pid, signal.SIGSTOP)
            try:
                await until(alive, lambda a: a.robot == "near_bot" and not a.online, 30)
                failed = await until(statuses, lambda s: s.status == "step_failed"
                                     or s.status in FINAL, 30)
                assert failed.command_id == cmd.command_id, failed
            finally:
                os.killpg(near.pid, signal.SIGCONT)
            late = await until(errors, lambda e: e.code == "late_change", 90)
            assert cmd.command_id in late.reason, late
            refused = await until(errors, lambda e: e.code == "late_result", 30)
            assert cmd.command_id in refused.reason, refused
            with anyio.fail_after(90):
                while (st := (await statuses.get()).data).status not in FINAL:
                    pass
            assert st.status == "done", st.reason  # reassigned to far_bot, which delivered
            print(f"LATE RESULT: task {st.status} ({st.reason}); refused: {late.reason}")
            world = msgspec.convert(await query_memory(bus, topics, MemoryQuery(kind="world"), 5.0),
                                    WorldSnapshot)
            assert world.robots["near_bot"].place == "home", world.robots["near_bot"]
            while (ev := events.get_nowait()) is not None:
                assert ev.data.change.command_id != cmd.command_id, ev.data
