"""Brain test rig: the real memory agent, real edge agents and the brain on one bus.

``Rig`` runs everything in-process on a ``memory://`` bus (fast, for scheduler behaviour);
the process-level tests in ``test_processes.py`` start the same agents as OS processes.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from bench import scenes
from robobus.brain_agent.agent import run as run_brain
from robobus.brain_agent.config import BrainConfig
from robobus.bus import Bus, BusError, BusOptions, Overflow
from robobus.edge_agent.agent import EdgeConfig, edge_bus_options
from robobus.edge_agent.agent import run as run_edge
from robobus.edge_agent.profile import parse_profile
from robobus.memory_store.agent import MemoryConfig
from robobus.memory_store.agent import run as run_memory
from robobus.schemas.messages import FaultSpec, Instruction, SkillCommand, TaskStatus
from robobus.schemas.topics import Topics

TERMINAL = frozenset({"done", "failed", "cancelled"})


def profile_for(spec: dict[str, Any], durations: dict[str, float] | None = None) -> Any:
    """An edge profile for a robot described like ``bench.scenes`` robots."""
    d = {"pick": 1.0, "place": 1.0, "handover": 1.0, **(durations or {})}
    skills: dict[str, Any] = {"pick": {"duration_s": d["pick"]}, "place": {"duration_s": d["place"]},
                              "handover": {"duration_s": d["handover"]}, "detect": {"duration_s": 0.2}}
    if spec["mobile"]:
        skills["navigate"] = {}
    return parse_profile({
        "name": spec["name"], "type": spec.get("type", "test_bot"),
        "embodiment": {"mobile": spec["mobile"], "arms": spec["hands"], "hands": spec["hands"],
                       "speed": spec.get("speed") or 1.0},
        "start": spec["start"], "telemetry_hz": 20, "skills": skills})


class Rig:
    """Memory + edges + brain on one in-memory bus, and a client that watches task topics."""

    def __init__(self, tmp: Path, scene: dict[str, Any], robots: list[dict[str, Any]],
                 time_scale: float, brain: BrainConfig | None) -> None:
        self.tmp, self.scene, self.robots, self.time_scale = tmp, scene, robots, time_scale
        self.brain_config = brain or BrainConfig(orphan_wait_s=2.0)
        self.url = f"memory://brain-{secrets.token_hex(4)}"
        self.topics = Topics("robobus")
        self.statuses: dict[str, list[TaskStatus]] = {}
        self.commands: list[SkillCommand] = []
        self.command_robot: dict[str, str] = {}
        self._changed = anyio.Event()
        self._scopes: dict[str, anyio.CancelScope] = {}
        self._buses: dict[str, Bus] = {}
        self._crashed: set[str] = set()

    async def start(self, stack: AsyncExitStack) -> None:
        self.bus = await stack.enter_async_context(Bus.connect(self.url, name="tester"))
        self.tg = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(self.tg.cancel_scope.cancel)
        await self.tg.start(self._watch)
        scene_file = self.tmp / "scene.yaml"
        scene_file.write_text(yaml.safe_dump({"scene": self.scene}))
        await self.tg.start(self._agent, "memory", run_memory,
                            MemoryConfig(store=self.tmp / "store", scene=scene_file))
        for spec in self.robots:
            await self.tg.start(self._edge, spec)
        await self.start_brain()

    async def start_brain(self) -> None:
        await self.tg.start(self._agent, "brain", run_brain, self.brain_config)

    async def _agent(self, name: str, fn: Any, config: Any, *, options: BusOptions | None = None,
                     task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        with anyio.CancelScope() as scope:
            self._scopes[name] = scope
            try:
                async with Bus.connect(self.url, name=name, options=options) as bus:
                    self._buses[name] = bus
                    await fn(bus, config, task_status=task_status)
            except BusError:
                if name not in self._crashed:  # a crashed agent's goodbye cannot be sent
                    raise

    async def _edge(self, spec: dict[str, Any], *,
                    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        config = EdgeConfig(profile_for(spec), time_scale=self.time_scale, resume_timeout_s=0.5)
        await self._agent(spec["name"], run_edge, config, options=edge_bus_options(spec["name"]),
                          task_status=task_status)

    async def _watch(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                     ) -> None:
        async with self.bus.subscribe(self.topics.task(), TaskStatus) as sub, \
                self.bus.subscribe(self.topics.skill(), SkillCommand, overflow=Overflow.BLOCK) as cmds:
            task_status.started()
            self.tg.start_soon(self._watch_commands, cmds)
            async for msg in sub:
                self.statuses.setdefault(msg.data.task_id, []).append(msg.data)
                self._poke()

    async def _watch_commands(self, sub: Any) -> None:
        async for msg in sub:
            self.commands.append(msg.data)
            self.command_robot[msg.data.command_id] = self.topics.robot_of(msg.topic) or ""
            self._poke()

    def _poke(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    # -- driving -------------------------------------------------------------------------
    async def send(self, text: str, priority: int = 0, task_id: str | None = None) -> str:
        task_id = task_id or secrets.token_hex(3)
        await self.bus.publish(self.topics.instructions, Instruction(text, priority, task_id), qos=1)
        return task_id

    async def until(self, predicate: Any, timeout: float = 15.0) -> Any:
        with anyio.fail_after(timeout):
            while not (result := predicate()):
                await self._changed.wait()
            return result

    async def status(self, task_id: str, wanted: frozenset[str] | set[str] = TERMINAL,
                     timeout: float = 15.0) -> TaskStatus:
        def find() -> TaskStatus | None:
            return next((s for s in self.statuses.get(task_id, []) if s.status in wanted), None)
        return await self.until(find, timeout)

    def seen(self, task_id: str) -> list[str]:
        return [s.status for s in self.statuses.get(task_id, [])]

    async def fault(self, robot: str, spec: FaultSpec) -> None:
        await self.bus.publish(self.topics.faults(robot), spec, qos=1)

    async def crash(self, name: str) -> None:
        """Drop an agent's connection without goodbye (its last will fires), then stop it."""
        self._crashed.add(name)
        await self._buses[name].abort()
        self._scopes.pop(name).cancel()

    async def world(self) -> Any:
        import msgspec

        from robobus.brain_agent.fleet import query_memory
        from robobus.schemas.memory import MemoryQuery
        from robobus.schemas.world import World, WorldSnapshot
        res = await query_memory(self.bus, self.topics, MemoryQuery(kind="world"), 2.0)
        return World(msgspec.convert(res, WorldSnapshot))


@asynccontextmanager
async def make_rig(tmp: Path, scene: dict[str, Any] | None = None,
                   robots: list[dict[str, Any]] | None = None, *, time_scale: float = 0.02,
                   brain: BrainConfig | None = None) -> AsyncIterator[Rig]:
    rig = Rig(tmp, scene or scenes.DEMO_SCENE, robots or scenes.DEMO_ROBOTS, time_scale, brain)
    async with AsyncExitStack() as stack:
        await rig.start(stack)
        yield rig


@pytest.fixture
def rig_factory(tmp_path: Path) -> Any:
    def factory(**kw: Any) -> Any:
        return make_rig(tmp_path, **kw)
    return factory
