"""What a running skill sees: its robot, its arguments' command, the world, and the clock.

Simulated time: a skill that takes ``s`` seconds at time scale 1 sleeps ``s * time_scale``
real seconds, reporting progress as it goes. World changes go through a :class:`WorldPort`
(the memory agent over the bus, or a local :class:`World` in the harness), so that two
robots can never hold one apple.
"""

from __future__ import annotations

import functools
import math
from typing import Annotated, Any, Protocol

import anyio
import msgspec
import structlog

from robobus.schemas.messages import FaultSpec, SkillCommand
from robobus.schemas.world import World, WorldChange, WorldConflict, WorldReply
from robobus.skills.errors import SkillFailed

#: At most this many progress reports per motion, and no closer together than MIN_STEP_S.
PROGRESS_STEPS = 10
MIN_STEP_S = 0.02


class SkillParams(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Per-skill parameters from a robot profile (``skills: {pick: {duration_s: 3}}``)."""

    timeout_s: Annotated[float, msgspec.Meta(gt=0)] | None = None
    duration_s: Annotated[float, msgspec.Meta(ge=0)] | None = None
    options: dict[str, Any] = {}


class WorldPort(Protocol):
    """Where skills read the world and request changes."""

    async def snapshot(self) -> World:
        """A fresh copy of the shared world."""
        ...

    async def change(self, change: WorldChange) -> WorldReply:
        """Ask for ``change``; the reply says whether it was applied."""
        ...


class LocalWorldPort:
    """A :class:`WorldPort` over an in-process :class:`World` (harness, planners' dry runs)."""

    def __init__(self, world: World) -> None:
        self.world = world

    async def snapshot(self) -> World:
        return self.world.copy()

    async def change(self, change: WorldChange) -> WorldReply:
        try:
            self.world.apply(change)
        except WorldConflict as exc:
            return WorldReply(ok=False, reason=exc.reason, code=exc.code)
        return WorldReply(ok=True)


class ContextHooks(Protocol):
    """How a context reports back to the edge agent running it."""

    async def progress(self, ctx: SkillContext, percent: float) -> None: ...

    def pose(self, ctx: SkillContext, x: float, y: float, theta: float) -> None: ...

    def changed(self, ctx: SkillContext, change: WorldChange, world: World | None) -> None: ...


class _NoHooks:
    async def progress(self, ctx: SkillContext, percent: float) -> None:
        return None

    def pose(self, ctx: SkillContext, x: float, y: float, theta: float) -> None:
        return None

    def changed(self, ctx: SkillContext, change: WorldChange, world: World | None) -> None:
        return None


class SkillContext:
    """The first argument of every skill."""

    def __init__(
        self,
        robot: str,
        command: SkillCommand,
        *,
        port: WorldPort,
        params: SkillParams | None = None,
        time_scale: float = 1.0,
        fault: FaultSpec | None = None,
        hooks: ContextHooks | None = None,
    ) -> None:
        self.robot = robot
        self.command = command
        self.params = params or SkillParams()
        self.time_scale = time_scale
        self.fault = fault
        self.committed: list[WorldChange] = []
        self._port = port
        self._hooks: ContextHooks = hooks or _NoHooks()
        self._world: World | None = None

    @functools.cached_property
    def log(self) -> Any:
        """A structlog logger bound to robot, skill, command and task (built on first use)."""
        cmd = self.command
        return structlog.get_logger("skill").bind(robot=self.robot, skill=cmd.skill,
                                                  command=cmd.command_id, task=cmd.task_id)

    # -- the world -----------------------------------------------------------------------
    async def world(self, *, fresh: bool = False) -> World:
        """The world as of this run's start (``fresh=True`` asks again)."""
        if self._world is None or fresh:
            self._world = await self._port.snapshot()
        return self._world

    async def change(self, op: str, *, object: str | None = None, target: str | None = None,
                     data: dict[str, Any] | None = None) -> WorldChange:
        """Request a world change for this robot; raise :class:`SkillFailed` if refused.

        An injected fault fails here, after the motion and before the world changes. The
        request is shielded from cancellation so that the local view matches the memory's.
        """
        if self.fault is not None:
            spec, self.fault = self.fault, None
            raise SkillFailed(f"{spec.reason}: injected failure of {self.command.skill}", "injected")
        change = WorldChange(op, robot=self.robot, object=object, target=target,  # type: ignore[arg-type]
                             data=data or {}, command_id=self.command.command_id,
                             task_id=self.command.task_id)
        with anyio.CancelScope(shield=True):
            reply = await self._port.change(change)
            if not reply.ok:
                raise SkillFailed(reply.reason or f"world refused {op}", reply.code or "conflict")
            self.committed.append(change)
            self._hooks.changed(self, change, self._world)
        return change

    async def progress(self, percent: float) -> None:
        """Report progress (0-100) of work the skill does not time itself (an external call)."""
        await self._hooks.progress(self, min(max(percent, 0.0), 100.0))

    # -- simulated time ------------------------------------------------------------------
    def duration(self, default: float) -> float:
        """The profile's ``duration_s`` for this skill, else ``default`` (seconds at scale 1)."""
        return self.params.duration_s if self.params.duration_s is not None else default

    async def work(self, seconds: float) -> None:
        """Spend ``seconds`` of simulated time, reporting progress up to 100 %."""
        await self._advance(seconds, None)

    async def move(self, start: tuple[float, float], goal: tuple[float, float],
                   seconds: float) -> None:
        """Travel from ``start`` to ``goal`` in ``seconds`` of simulated time, updating the pose."""
        await self._advance(seconds, (start, goal))

    async def _advance(self, seconds: float,
                       path: tuple[tuple[float, float], tuple[float, float]] | None) -> None:
        real = max(seconds, 0.0) * self.time_scale
        steps = max(1, min(PROGRESS_STEPS, int(real / MIN_STEP_S)))
        t0 = anyio.current_time()
        for i in range(1, steps + 1):
            await anyio.sleep_until(t0 + real * i / steps)
            if path is not None:
                self._set_pose(path, i / steps)
            await self._hooks.progress(self, 100.0 * i / steps)

    def _set_pose(self, path: tuple[tuple[float, float], tuple[float, float]], f: float) -> None:
        (x0, y0), (x1, y1) = path
        theta = math.atan2(y1 - y0, x1 - x0) if (x1, y1) != (x0, y0) else 0.0
        self._hooks.pose(self, x0 + (x1 - x0) * f, y0 + (y1 - y0) * f, theta)
