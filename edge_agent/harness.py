"""A skill test harness users can reuse: edge agents against an in-memory bus and a scene.

```python
async with EdgeHarness({"places": {...}, "objects": {...}}) as h:
    await h.add_robot("unitree_g1", name="g1", at="kitchenTable")
    fb = await h.run("g1", "pick", object="apple")
    assert fb.status == "done" and h.world.holder("apple") == "g1"
```

:class:`WorldService` is a minimal stand-in for the memory agent (world queries, world
changes, world events, robots added on registration). It works on any bus URL, so process
tests can use it too while no memory agent runs.
"""

from __future__ import annotations

import secrets
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import msgspec

from robobus.bus import Bus, BusOptions, Overflow
from robobus.edge_agent.agent import EdgeConfig, edge_bus_options
from robobus.edge_agent.agent import run as run_edge
from robobus.edge_agent.profile import RobotProfile, load_profile
from robobus.schemas.memory import MemoryQuery, QueryReply
from robobus.schemas.messages import FaultSpec, RobotRegistration, SkillCommand, SkillFeedback, now_ns
from robobus.schemas.topics import Topics
from robobus.schemas.world import World, WorldChange, WorldConflict, WorldEvent, WorldReply
from robobus.skills.registry import SkillRegistry

TERMINAL = frozenset({"done", "failed", "cancelled", "rejected"})


class WorldService:
    """Answers ``P/memory/query`` (world, robot) and ``P/memory/change`` from a :class:`World`."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.seq = 0
        self._robot_added = anyio.Event()

    async def run(self, bus: Bus, *,
                  task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        t = Topics(bus.options.prefix)
        async with (bus.subscribe(t.memory_query, MemoryQuery) as queries,
                    bus.subscribe(t.world_change, WorldChange) as changes,
                    bus.subscribe(t.registration("+"), RobotRegistration) as regs,
                    anyio.create_task_group() as tg):
            tg.start_soon(self._serve, bus, queries, self._answer)
            tg.start_soon(self._serve, bus, changes, self._change)
            tg.start_soon(self._registrations, bus, regs)
            task_status.started()

    async def wait_robot(self, name: str, timeout: float = 5.0) -> None:
        """Wait until ``name`` is in the world (its registration was applied)."""
        with anyio.fail_after(timeout):
            while name not in self.world.robots:
                await self._robot_added.wait()

    async def _serve(self, bus: Bus, sub: Any, handler: Any) -> None:
        async for msg in sub:
            reply = await handler(bus, msg.data)
            if msg.response_topic is not None:
                await bus.reply(msg, reply)
            else:
                await bus.report_error(msg.topic, "request without a response topic",
                                       "no_reply_to", msg.payload)

    async def _answer(self, bus: Bus, q: MemoryQuery) -> QueryReply:
        if q.kind == "world":
            return QueryReply(ok=True, result=msgspec.to_builtins(self.world.snapshot()))
        if q.kind == "robot" and q.name in self.world.robots:
            r = self.world.robots[q.name]
            return QueryReply(ok=True, result={"place": r.place, "holding": r.holding})
        return QueryReply(ok=False, error=f"unsupported query {q.kind!r} {q.name!r}",
                          code="unsupported")

    async def _change(self, bus: Bus, change: WorldChange) -> WorldReply:
        try:
            self.world.apply(change)
        except WorldConflict as exc:
            return WorldReply(ok=False, reason=exc.reason, code=exc.code)
        self.seq += 1
        event = WorldEvent(seq=self.seq, change=change, ts_ns=now_ns())
        await bus.publish(Topics(bus.options.prefix).world_events, event, qos=1)
        return WorldReply(ok=True, event=event)

    async def _registrations(self, bus: Bus, regs: Any) -> None:
        async for msg in regs:
            reg: RobotRegistration = msg.data
            if reg.robot not in self.world.robots:
                change = WorldChange("add_robot", robot=reg.robot, target=reg.profile.get("start"),
                                     data=dict(reg.profile))
                await self._change(bus, change)
                self._robot_added.set()
                self._robot_added = anyio.Event()


class EdgeHarness:
    """Edge agents, a :class:`WorldService` and a command client on one in-memory bus."""

    def __init__(self, scene: dict[str, Any] | World, *, url: str | None = None,
                 prefix: str = "robobus", time_scale: float = 0.0) -> None:
        self.world = scene if isinstance(scene, World) else World.from_scene(scene)
        self.url = url or f"memory://harness-{secrets.token_hex(4)}"
        self.prefix = prefix
        self.topics = Topics(prefix)
        self.time_scale = time_scale
        self.service = WorldService(self.world)
        self.feedback: dict[str, list[SkillFeedback]] = {}
        self._changed = anyio.Event()
        self._stack = AsyncExitStack()
        self._robots: dict[str, anyio.CancelScope] = {}

    async def __aenter__(self) -> EdgeHarness:
        stack = self._stack
        await stack.__aenter__()
        opts = BusOptions(prefix=self.prefix)
        self.bus = await stack.enter_async_context(Bus.connect(self.url, name="harness",
                                                               options=opts))
        self._tg = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(self._tg.cancel_scope.cancel)
        await self._tg.start(self.service.run, self.bus)
        await self._tg.start(self._collect)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._stack.__aexit__(exc_type, exc, tb)

    async def add_robot(self, profile: str | Path | RobotProfile, *, name: str | None = None,
                        at: str | None = None, registry: SkillRegistry | None = None) -> str:
        """Start an edge agent (its own bus connection) and wait until the world has it.

        ``registry`` runs the robot with your own skills instead of the installed ones.
        """
        prof = profile if isinstance(profile, RobotProfile) else load_profile(profile, registry)
        config = EdgeConfig(prof, name=name, start=at, time_scale=self.time_scale,
                            resume_timeout_s=0.2, registry=registry)
        await self._tg.start(self._robot, config)
        await self.service.wait_robot(config.robot)
        return config.robot

    async def _robot(self, config: EdgeConfig, *,
                     task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        opts = edge_bus_options(config.robot, self.prefix)
        with anyio.CancelScope() as scope:
            self._robots[config.robot] = scope
            async with Bus.connect(self.url, name=config.robot, options=opts) as bus:
                await run_edge(bus, config, task_status=task_status)

    async def wait_robot(self, name: str, timeout: float = 10.0) -> None:
        """Wait until robot ``name`` (an agent started elsewhere, e.g. a process) registered."""
        await self.service.wait_robot(name, timeout)

    async def stop_robot(self, name: str) -> None:
        """Stop one edge agent gracefully (as SIGTERM would)."""
        self._robots.pop(name).cancel()

    async def _collect(self, *,
                       task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with self.bus.subscribe(self.topics.feedback("+"), SkillFeedback,
                                      overflow=Overflow.BLOCK) as sub:
            task_status.started()
            async for msg in sub:
                fb: SkillFeedback = msg.data
                self.feedback.setdefault(fb.command_id, []).append(fb)
                self._changed.set()
                self._changed = anyio.Event()

    # -- driving ---------------------------------------------------------------------------
    async def send(self, robot: str, skill: str, args: dict[str, Any] | None = None, *,
                   command_id: str | None = None, **fields: Any) -> str:
        """Publish a run command; return its command id."""
        cid = command_id or f"h-{secrets.token_hex(4)}"
        cmd = SkillCommand(command_id=cid, skill=skill, args=args or {}, **fields)
        await self.bus.publish(self.topics.skill(robot, skill), cmd, qos=1)
        return cid

    async def cancel(self, robot: str, command_id: str, skill: str = "any") -> None:
        cmd = SkillCommand(command_id=command_id, skill=skill, action="cancel")
        await self.bus.publish(self.topics.skill(robot, skill), cmd, qos=1)

    async def fault(self, robot: str, spec: FaultSpec) -> None:
        await self.bus.publish(self.topics.faults(robot), spec, qos=1)

    async def wait(self, command_id: str, status: frozenset[str] | set[str] = TERMINAL,
                   timeout: float = 10.0) -> SkillFeedback:
        """The first feedback of ``command_id`` with a status in ``status``."""
        with anyio.fail_after(timeout):
            while True:
                for fb in self.feedback.get(command_id, []):
                    if fb.status in status:
                        return fb
                await self._changed.wait()

    async def run(self, robot: str, skill: str, *, timeout: float = 10.0,
                  **args: Any) -> SkillFeedback:
        """Send a command and wait for its final feedback."""
        return await self.wait(await self.send(robot, skill, args), timeout=timeout)

    def statuses(self, command_id: str) -> list[str]:
        return [fb.status for fb in self.feedback.get(command_id, [])]


async def run_skill(scene: dict[str, Any], profile: str | Path | RobotProfile, skill: str,
                    args: dict[str, Any], *, at: str | None = None,
                    time_scale: float = 0.0) -> tuple[SkillFeedback, World]:
    """Run one skill on one robot in ``scene``; return its final feedback and the world."""
    async with EdgeHarness(scene, time_scale=time_scale) as h:
        robot = await h.add_robot(profile, at=at)
        return await h.run(robot, skill, **args), h.world

