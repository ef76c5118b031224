"""Brain, memory and edge agents as separate OS processes (ZeroMQ hub; the demo also on MQTT).

Covers what only real processes can show: ``kill -9`` of a robot mid-skill (its last will
fires, the brain reassigns), and ``kill -9`` of the brain mid-task (a new brain resumes the
task from task memory).
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
import yaml

from bench import scenes
from robobus import testing
from robobus.brain_agent.fleet import query_memory
from robobus.bus import Bus, BusOptions
from robobus.bus.policy import instructions_topic
from robobus.schemas.memory import MemoryQuery
from robobus.schemas.messages import (
    BrainStatus,
    ErrorReport,
    Instruction,
    RobotRegistration,
    SkillCommand,
    TaskStatus,
)
from robobus.schemas.topics import Topics
from robobus.schemas.world import World, WorldSnapshot

pytestmark = pytest.mark.anyio
TIME_SCALE = "0.05"


def _profile(spec: dict[str, Any]) -> dict[str, Any]:
    skills: dict[str, Any] = {"pick": {"duration_s": 1.0}, "place": {"duration_s": 1.0},
                              "handover": {"duration_s": 1.0}}
    if spec["mobile"]:
        skills["navigate"] = {}
    return {"name": spec["name"], "type": "test_bot", "start": spec["start"], "telemetry_hz": 10,
            "embodiment": {"mobile": spec["mobile"], "arms": spec["hands"], "hands": spec["hands"],
                           "speed": spec["speed"] or 1.0}, "skills": skills}


class Fleet:
    """Spawns and kills agent processes; a client bus watches tasks and commands."""

    def __init__(self, tmp: Path, url: str, scene: dict[str, Any], robots: list[dict[str, Any]],
                 stack: contextlib.ExitStack) -> None:
        self.tmp, self.url, self.robots, self.stack = tmp, url, robots, stack
        self.prefix = f"t{secrets.token_hex(4)}"
        self.topics = Topics(self.prefix)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.scene_file = tmp / "scene.yaml"
        self.scene_file.write_text(yaml.safe_dump({"scene": scene}))
        self.statuses: dict[str, list[TaskStatus]] = {}
        self.commands: list[tuple[str, SkillCommand]] = []
        self.changed = anyio.Event()

    def spawn(self, name: str, *args: str) -> None:
        argv = testing.robobus_cmd(*args, "--bus", self.url, "--prefix", self.prefix)
        self.procs[name] = self.stack.enter_context(
            testing.spawn(argv, name=name, log_dir=self.tmp / "logs"))

    def start_memory(self) -> None:
        self.spawn("memory", "memory", "--store", str(self.tmp / "store"), "--scene",
                   str(self.scene_file))

    def start_edge(self, spec: dict[str, Any]) -> None:
        path = self.tmp / f"{spec['name']}.yaml"
        path.write_text(yaml.safe_dump(_profile(spec)))
        self.spawn(spec["name"], "edge", "--profile", str(path), "--time-scale", TIME_SCALE)

    def start_brain(self) -> None:
        self.spawn("brain", "brain")

    def kill9(self, name: str) -> None:
        testing.kill9(self.procs.pop(name))

    # -- watching ----------------------------------------------------------------------------
    async def watch(self, bus: Bus, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        async with bus.subscribe(self.topics.task(), TaskStatus) as tasks, \
                bus.subscribe(self.topics.skill(), SkillCommand) as cmds, anyio.create_task_group() as tg:
            task_status.started()
            tg.start_soon(self._pump, cmds, lambda m: self.commands.append(
                (self.topics.robot_of(m.topic) or "", m.data)))
            await self._pump(tasks, lambda m: self.statuses.setdefault(m.data.task_id, []).append(m.data))

    async def _pump(self, sub: Any, store: Any) -> None:
        async for msg in sub:
            store(msg)
            self.changed.set()
            self.changed = anyio.Event()

    async def until(self, predicate: Any, timeout: float = 20.0) -> Any:
        with anyio.fail_after(timeout):
            while not (result := predicate()):
                await self.changed.wait()
            return result

    async def registered(self, bus: Bus) -> None:
        want = {r["name"] for r in self.robots}
        async with bus.subscribe(self.topics.registration(), RobotRegistration) as sub:
            with anyio.fail_after(30):
                async for msg in sub:
                    want.discard(msg.data.robot)
                    if not want:
                        return

    async def send(self, bus: Bus, text: str, priority: int = 0) -> str:
        """Publish until the brain accepts it (same task id: the brain ignores duplicates)."""
        tid = secrets.token_hex(3)
        with anyio.fail_after(30):
            while tid not in self.statuses:
                await bus.publish(instructions_topic(bus.url, self.prefix),  # secured: its own
                                  Instruction(text, priority, tid), qos=1)
                with anyio.move_on_after(0.5):
                    await self.until(lambda: tid in self.statuses)
        return tid

    def status(self, tid: str, wanted: frozenset[str] = frozenset({"done", "failed", "cancelled"})
               ) -> TaskStatus | None:
        return next((s for s in self.statuses.get(tid, []) if s.status in wanted), None)

    async def world(self, bus: Bus) -> World:
        res = await query_memory(bus, self.topics, MemoryQuery(kind="world"), 5.0)
        return World(msgspec.convert(res, WorldSnapshot))


@contextlib.asynccontextmanager
async def fleet(tmp: Path, url: str, scene: dict[str, Any], robots: list[dict[str, Any]]
                ) -> AsyncIterator[tuple[Fleet, Bus]]:
    with contextlib.ExitStack() as stack:
        fl = Fleet(tmp, url, scene, robots, stack)
        fl.start_memory()
        for spec in robots:
            fl.start_edge(spec)
        fl.start_brain()
        async with Bus.connect(url, name="tester", options=BusOptions(prefix=fl.prefix)) as bus, \
                anyio.create_task_group() as tg:
            await tg.start(fl.watch, bus)
            await fl.registered(bus)
            yield fl, bus
            tg.cancel_scope.cancel()


@pytest.fixture
def zmq_url(hub_url: str) -> Iterator[str]:
    yield hub_url


@pytest.fixture(params=["zmq", pytest.param("mqtt", marks=pytest.mark.broker)])
def process_url(request: pytest.FixtureRequest) -> str:
    """The ZeroMQ hub or the private Mosquitto (both started once per session)."""
    return request.getfixturevalue("hub_url" if request.param == "zmq" else "mosquitto_url")


async def test_demo_over_processes(tmp_path: Path, process_url: str) -> None:
    async with fleet(tmp_path, process_url, scenes.DEMO_SCENE, scenes.DEMO_ROBOTS) as (fl, bus):
        tid = await fl.send(bus, "Bring the fruit nearest the cup and a fruit knife to the office desk")
        st = await fl.until(lambda: fl.status(tid))
        assert st.status == "done", st.reason
        world = await fl.world(bus)
        assert world.place_of("apple") == world.place_of("knife") == "officeDesk"


async def test_brain_announces_ready_once_it_has_the_world(tmp_path: Path, process_url: str) -> None:
    """``P/brain/status``: no ``ready`` while the brain has no world (it already takes
    instructions), then ``ready`` once memory answers; retained, so a later subscriber gets it."""
    with contextlib.ExitStack() as stack:
        fl = Fleet(tmp_path, process_url, scenes.DEMO_SCENE, [], stack)
        fl.start_brain()
        async with Bus.connect(process_url, name="tester", options=BusOptions(prefix=fl.prefix)) \
                as bus, bus.subscribe(fl.topics.brain_status, BrainStatus) as status, \
                anyio.create_task_group() as tg:
            await tg.start(fl.watch, bus)
            started_ns = time.time_ns()
            await fl.send(bus, "bring the apple to the office desk")  # its intake is live
            # a slow brain: its birth says ``starting`` until it has the world (issue 12)
            while (early := status.get_nowait()) is not None:
                assert early.data.state == "starting", "ready before the world was loaded"
            fl.start_memory()
            with anyio.fail_after(30):
                while (first := await status.get()).data.state == "starting":
                    pass
            assert (first.data.brain, first.data.state, first.data.planner) == \
                ("brain", "ready", "symbolic")
            assert first.data.ts_ns > started_ns and first.data.bd_seq > 0
            async with bus.subscribe(fl.topics.brain_status, BrainStatus) as late:
                with anyio.fail_after(5):
                    again = await late.get()
            assert again.retain and again.data == first.data
            tg.cancel_scope.cancel()


@pytest.mark.faults
async def test_kill9_robot_mid_skill_reassigns(tmp_path: Path, zmq_url: str) -> None:
    async with fleet(tmp_path, zmq_url, scenes.REASSIGN_SCENE, scenes.REASSIGN_ROBOTS) as (fl, bus):
        tid = await fl.send(bus, "bring the bolt to home")
        robot, _ = await fl.until(lambda: next((c for c in fl.commands if c[1].skill == "navigate"), None))
        fl.kill9(robot)
        st = await fl.until(lambda: fl.status(tid), timeout=30)
        assert st.status == "done", st.reason
        other = ({"near_bot", "far_bot"} - {robot}).pop()
        assert any(r == other and c.args.get("object") == "bolt" for r, c in fl.commands)
        assert "replanning" in [s.status for s in fl.statuses[tid]]
        assert (await fl.world(bus)).place_of("bolt") == "home"


@pytest.mark.faults
async def test_kill9_brain_mid_task_and_restart(tmp_path: Path, zmq_url: str) -> None:
    async with fleet(tmp_path, zmq_url, scenes.DEMO_SCENE, scenes.DEMO_ROBOTS) as (fl, bus):
        tid = await fl.send(bus, "Bring the fruit nearest the cup and a fruit knife to the office desk")
        await fl.until(lambda: [s.status for s in fl.statuses[tid]].count("step_done") >= 1)
        fl.kill9("brain")
        fl.start_brain()
        st = await fl.until(lambda: fl.status(tid), timeout=40)
        assert st.status == "done", st.reason
        assert any("brain restarted" in (s.reason or "") for s in fl.statuses[tid])
        world = await fl.world(bus)
        assert world.place_of("apple") == world.place_of("knife") == "officeDesk"


@pytest.mark.parametrize("rate", ["2", "0"])
async def test_instruction_rate_option(tmp_path: Path, zmq_url: str, rate: str) -> None:
    """``robobus brain --instruction-rate R``: one sender's flood beyond R/s is refused with a
    reason on the errors topic, the rest is accepted; ``0`` lifts the limit (benchmarks).

    No memory agent runs, so no task gets past waiting for the world: instructions must still
    be accepted at once (the intake once planned inline and waited there, holding up the rest).
    """
    flood = 30
    with contextlib.ExitStack() as stack:
        fl = Fleet(tmp_path, zmq_url, scenes.DEMO_SCENE, [], stack)
        fl.spawn("brain", "brain", "--no-recover", "--instruction-rate", rate)
        async with Bus.connect(zmq_url, name="flooder", options=BusOptions(prefix=fl.prefix)) \
                as bus, bus.subscribe(fl.topics.errors, ErrorReport) as errors, \
                anyio.create_task_group() as tg:
            await tg.start(fl.watch, bus)
            await fl.send(bus, "bring the apple to the office desk")  # the brain is listening
            await anyio.sleep(3.0 / (float(rate) or 1.0))  # the probe's tokens are back
            for i in range(flood):
                await bus.publish(fl.topics.instructions, Instruction("bring the apple", task_id=f"f{i}"))
            if rate == "0":
                await fl.until(lambda: all(f"f{i}" in fl.statuses for i in range(flood)), timeout=5)
                await anyio.sleep(0.2)
                codes = [m.data.code for m in iter(errors.get_nowait, None)]
                assert "rate_limited" not in codes, codes
            else:
                with anyio.fail_after(10):
                    while (report := (await errors.get()).data).code != "rate_limited":
                        pass
                assert "'flooder'" in report.reason
                await anyio.sleep(0.5)
                accepted = sum(f"f{i}" in fl.statuses for i in range(flood))
                assert 1 <= accepted < flood, accepted
            tg.cancel_scope.cancel()
