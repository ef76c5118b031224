"""The edge agent: one robot on the bus.

It registers (retained), proves it is alive (retained ``Alive`` plus a last will), publishes
``RobotState`` telemetry at the profile rate, and executes skill commands from
``P/robots/{r}/skills/+`` with feedback on ``P/robots/{r}/feedback``. See docs/edge.md.
"""

from __future__ import annotations

import importlib
import math
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass

import anyio
import msgspec
import structlog

from robobus.bus import (
    Bus,
    BusError,
    BusOptions,
    DecodeError,
    Message,
    Overflow,
    PayloadTooLarge,
    PublishError,
    RateLimit,
    Subscription,
)
from robobus.bus.presence import Presence
from robobus.edge_agent.commands import command_id_of, parse_command
from robobus.edge_agent.executor import Executor
from robobus.edge_agent.memory_client import BusWorldPort
from robobus.edge_agent.profile import RobotProfile
from robobus.edge_agent.state import LocalState
from robobus.schemas.codec import decode_lenient
from robobus.schemas.messages import (
    Alive,
    FaultSpec,
    Pose,
    RobotRegistration,
    SkillFeedback,
    SkillSpec,
)
from robobus.schemas.topics import Topics
from robobus.schemas.world import World, WorldChange, WorldEvent
from robobus.skills.context import SkillContext, SkillParams
from robobus.skills.errors import SkillError, SkillFailed, SkillRejected
from robobus.skills.faults import FaultInjector
from robobus.skills.registry import REGISTRY, SkillDef, SkillRegistry, load_plugins

log = structlog.get_logger("edge")

#: Failed-feedback reason codes that mean "the command was wrong", also sent to P/errors.
BAD_COMMAND_CODES = frozenset({"precondition", "unknown_robot", "bad_args"})
EDGE_KEEPALIVE_S = 0.5
#: characters of a feedback reason: reasons echo names from the command, which may be huge
MAX_REASON_CHARS = 2000


@dataclass(slots=True)
class EdgeConfig:
    """What ``robobus edge`` runs: a profile plus the command-line overrides."""

    profile: RobotProfile
    name: str | None = None
    start: str | None = None
    time_scale: float | None = None
    resume_timeout_s: float = 0.5
    memory_timeout_s: float = 5.0
    registry: SkillRegistry | None = None
    #: per-sender limit on this robot's skill topics; floods are refused on P/errors (None: off)
    command_rate_limit: RateLimit | None = RateLimit(rate=50, burst=100)
    #: run skill commands and faults that ``robobus replay`` republished (ignored by default)
    accept_replayed: bool = False

    @property
    def robot(self) -> str:
        return self.name or self.profile.name

    @property
    def scale(self) -> float:
        return self.profile.time_scale if self.time_scale is None else self.time_scale


def alive_presence(robot: str, prefix: str = "robobus") -> Presence:
    """The robot's births and deaths on its ``alive`` topic (``Alive`` with a ``bd_seq``)."""
    return Presence(Topics(prefix).alive(robot),
                    lambda online, seq, ts: Alive(robot, online, ts_ns=ts, bd_seq=seq))


def edge_bus_options(robot: str, prefix: str = "robobus") -> BusOptions:
    """Bus options with the edge agent's last will: its presence's death, retained."""
    will = alive_presence(robot, prefix)
    # The hub declares a client dead 2.5 keepalives after its last heartbeat: 0.5 s puts a
    # robot's will well inside the 3 s liveness budget (MQTT brokers see the socket close).
    return BusOptions(prefix=prefix, will=will, keepalive_s=EDGE_KEEPALIVE_S)


async def run(bus: Bus, config: EdgeConfig, *,
              task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """Run one edge agent on ``bus`` until cancelled."""
    await EdgeAgent(bus, config).serve(task_status=task_status)


def clip(text: str, limit: int = MAX_REASON_CHARS) -> str:
    """``text`` cut to at most ``limit`` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    note = f"... ({len(text) - limit} characters cut)"
    return text[: max(limit - len(note), 0)] + note


class EdgeAgent:
    """One robot's agent. Also the :class:`skills.context.ContextHooks` of its skills."""

    #: subscribe to world events on this robot's connection (a fleet simulator follows them
    #: once for all its robots: edge_agent/fleet_sim.py)
    follows_world_events = True

    def __init__(self, bus: Bus, config: EdgeConfig) -> None:
        self.bus = bus
        self.config = config
        self.robot = config.robot
        self.topics = Topics(bus.options.prefix)
        self.state = LocalState(self.robot)
        self.port = BusWorldPort(bus, self.topics, config.memory_timeout_s)
        self.log = log.bind(agent="edge", robot=self.robot)
        if config.registry is None:
            load_plugins()
        registry = REGISTRY if config.registry is None else config.registry
        self.registry = registry
        skills = {n: (registry.get(n), p) for n, p in config.profile.skills.items()}
        self.executor = Executor(
            self.robot, skills, config.profile.resources(), port=self.port, hooks=self,
            emit=self._emit, faults=FaultInjector(config.profile.faults),
            time_scale=config.scale,
        )
        self._tx, self._rx = anyio.create_memory_object_stream[SkillFeedback](math.inf)
        will = bus.options.will
        self.presence = will if isinstance(will, Presence) else alive_presence(
            self.robot, bus.options.prefix)

    # -- lifecycle -------------------------------------------------------------------------
    async def serve(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
                    ) -> None:
        """Resume, subscribe, announce, then run until cancelled; say goodbye on the way out."""
        try:
            await self._resume()
            async with AsyncExitStack() as stack:
                if self.config.profile.mcp:  # before the registration lists skills
                    self.executor.skills.update(await stack.enter_async_context(
                        await self._mcp_skills()))
                sub = self.bus.subscribe
                t = self.topics
                cmds = await stack.enter_async_context(
                    sub(t.skill(self.robot, "+"), maxsize=1000, overflow=Overflow.BLOCK,
                        rate_limit=self.config.command_rate_limit))
                faults = await stack.enter_async_context(sub(t.faults(self.robot), maxsize=100))
                # reports=False: a bad world event is the memory agent's to report (schemas.owners)
                events = await stack.enter_async_context(
                    sub(t.world_events, WorldEvent, maxsize=10_000, overflow=Overflow.DROP_OLDEST,
                        reports=False)) if self.follows_world_events else None
                tg = await stack.enter_async_context(anyio.create_task_group())
                await tg.start(self.executor.run)
                tg.start_soon(self._feedback_loop, name=f"edge:{self.robot}:feedback")
                tg.start_soon(self._command_loop, cmds, name=f"edge:{self.robot}:commands")
                tg.start_soon(self._fault_loop, faults, name=f"edge:{self.robot}:faults")
                if events is not None:
                    tg.start_soon(self._event_loop, events, name=f"edge:{self.robot}:events")
                # before the first birth, so that a reconnect during it is not missed
                await tg.start(self.presence.reassert, self.bus, name=f"edge:{self.robot}:presence")
                await self._announce()
                tg.start_soon(self._telemetry_loop, name=f"edge:{self.robot}:telemetry")
                self.log.info("edge_ready", skills=sorted(self.executor.skills),
                              place=self.state.place, holding=self.state.holding)
                task_status.started()
        finally:
            with anyio.move_on_after(2.0, shield=True):
                try:
                    await self._goodbye()
                except BusError as exc:  # the connection is gone: the last will speaks for us
                    self.log.warning("goodbye_failed", error=str(exc))

    async def _mcp_skills(self) -> AbstractAsyncContextManager[dict[str, tuple[SkillDef, SkillParams]]]:
        """The profile's MCP tools as skills (edge_agent/mcp_skills.py, the 'mcp' extra)."""
        # Importing the SDK takes seconds on a loaded machine: a thread keeps the bus's
        # heartbeats going meanwhile (the hub would otherwise declare this robot dead).
        mod = await anyio.to_thread.run_sync(importlib.import_module, "robobus.edge_agent.mcp_skills")
        cm: AbstractAsyncContextManager[dict[str, tuple[SkillDef, SkillParams]]] = mod.mcp_skills(
            self.config.profile.mcp, self.robot, self.registry)
        return cm

    async def _resume(self) -> None:
        """Take place and holdings from the memory agent if it remembers this robot."""
        start = self.config.start or self.config.profile.start
        try:
            world = await self.port.snapshot(timeout=self.config.resume_timeout_s)
        except SkillFailed as exc:
            self.log.info("memory_not_available", reason=exc.reason, start=start)
            self.state.goto(start)
            return
        if self.state.adopt(world, start):
            self.log.info("resumed", place=self.state.place, holding=self.state.holding)

    async def _announce(self) -> None:
        profile = self.config.profile
        start = self.config.start or profile.start
        specs = self._skill_specs()
        reg = RobotRegistration(robot=self.robot, type=profile.type,
                                profile=profile.registration(start), skills=specs)
        await self.bus.publish(self.topics.registration(self.robot), reg, retain=True, qos=1)
        await self.presence.publish_birth(self.bus)
        await self._publish_state()

    def _skill_specs(self) -> list[SkillSpec]:
        return [sdef.spec(params.timeout_s) for sdef, params in self.executor.skills.values()]

    async def _goodbye(self) -> None:
        """Report what was cut short, then ``Alive(online=False)``: a graceful stop."""
        self.executor.cancel_all("edge agent stopping")
        while True:
            try:
                fb = self._rx.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
            await self.bus.publish(self.topics.feedback(self.robot), fb, qos=1)
        await self._publish_state()
        await self.presence.publish_death(self.bus)
        self.log.info("edge_stopped")

    # -- inputs ----------------------------------------------------------------------------
    async def _command_loop(self, cmds: Subscription) -> None:
        async for msg in cmds:
            await self.on_command(msg)

    async def on_command(self, msg: Message) -> None:
        """Handle one message from a skill topic: run, cancel, or reject it precisely."""
        if msg.replayed and not self.config.accept_replayed:
            self.log.debug("replayed_command_ignored", topic=msg.topic)
            return
        skill = msg.topic.rsplit("/", 1)[-1]
        cid = ""
        try:
            cmd = parse_command(msg.payload, msg.topic, self.robot, skill)
            cid = cmd.command_id
            if cmd.action == "cancel":
                if not self.executor.cancel(cmd.command_id):
                    await self.bus.report_error(msg.topic, f"no queued or running command "
                                                f"{cmd.command_id!r} to cancel", "unknown_command")
                return
            self.executor.submit(cmd)
        except DecodeError as exc:
            await self._reject(msg, command_id_of(msg.payload), skill, "decode", exc.reason)
        except SkillError as exc:
            cid = cid or command_id_of(msg.payload)
            await self._reject(msg, cid, skill, exc.code, exc.reason)

    async def _reject(self, msg: Message, cid: str, skill: str, code: str, reason: str) -> None:
        self._emit(SkillFeedback(command_id=cid, robot=self.robot, skill=skill, status="rejected",
                                 reason_code=code, reason=reason))
        await self.bus.report_error(msg.topic, reason, code, msg.payload)

    async def _fault_loop(self, faults: Subscription) -> None:
        async for msg in faults:
            if msg.replayed and not self.config.accept_replayed:
                self.log.debug("replayed_fault_ignored", topic=msg.topic)
                continue
            try:
                spec = decode_lenient(msg.payload, FaultSpec, msg.topic)
                if spec.skill not in self.executor.skills:
                    raise SkillRejected(f"robot {self.robot!r} has no skill {spec.skill!r}",
                                        "unknown_skill")
            except DecodeError as exc:
                await self.bus.report_error(msg.topic, exc.reason, "decode", msg.payload)
                continue
            except SkillRejected as exc:
                await self.bus.report_error(msg.topic, exc.reason, exc.code, msg.payload)
                continue
            self.executor.faults.add(spec)
            self.log.info("fault_armed", skill=spec.skill, object=spec.object, times=spec.times,
                          probability=spec.probability)

    async def _event_loop(self, events: Subscription) -> None:
        async for msg in events:
            self.state.apply(msg.data.change)

    # -- outputs ---------------------------------------------------------------------------
    def _emit(self, fb: SkillFeedback) -> None:
        if fb.reason is not None and len(fb.reason) > MAX_REASON_CHARS:
            fb = msgspec.structs.replace(fb, reason=clip(fb.reason))
        self._tx.send_nowait(fb)

    async def _feedback_loop(self) -> None:
        async for fb in self._rx:
            await self._send(self.topics.feedback(self.robot), fb)
            if fb.status == "failed" and fb.reason_code in BAD_COMMAND_CODES:
                await self.bus.report_error(self.topics.skill(self.robot, fb.skill),
                                            fb.reason or "", fb.reason_code or "failed")
            if fb.status not in ("progress", "accepted"):
                await self._publish_state()

    async def _publish_state(self) -> None:
        msg = self.state.message(self.executor.busy, self.executor.current(),
                                 self.executor.held())
        await self._send(self.topics.state(self.robot), msg, retain=True, qos=0)

    async def _send(self, topic: str, msg: msgspec.Struct, *, retain: bool = False, qos: int = 1) -> None:
        """Publish an output; if the hub cannot be reached (a partition outlasting the acked
        publish's 10 s), log it and go on: the robot keeps running, the next state supersedes
        this one, and the brain resends a command whose result it did not hear."""
        try:
            await self.bus.publish(topic, msg, retain=retain, qos=qos)
        except PublishError as exc:
            self.log.warning("publish_failed", topic=topic, error=str(exc))
        except PayloadTooLarge as exc:  # e.g. a skill's huge result: say so in its place
            self.log.warning("output_too_large", topic=topic, error=str(exc))
            if isinstance(msg, SkillFeedback):
                note = f"feedback of {exc.size} bytes was over the {exc.limit}-byte limit"
                small = msgspec.structs.replace(msg, result={},
                                                reason=clip(f"{note}: {msg.reason or ''}", 200))
                try:
                    await self.bus.publish(topic, small, retain=retain, qos=qos)
                except BusError as again:  # still too large (a huge command id): give up
                    self.log.warning("publish_failed", topic=topic, error=str(again))

    async def _telemetry_loop(self) -> None:
        """State at the profile rate on a fixed schedule: no drift, no catch-up bursts."""
        period = 1.0 / self.config.profile.telemetry_hz
        drain = self.config.profile.battery_drain_per_s * period
        deadline = anyio.current_time()
        while True:
            deadline += period
            await anyio.sleep_until(deadline)
            if self.executor.busy:
                self.state.battery = max(0.0, self.state.battery - drain)
            await self._publish_state()
            deadline = max(deadline, anyio.current_time() - period)

    # -- ContextHooks ----------------------------------------------------------------------
    async def progress(self, ctx: SkillContext, percent: float) -> None:
        self._emit(SkillFeedback(command_id=ctx.command.command_id, robot=self.robot,
                                 skill=ctx.command.skill, status="progress",
                                 task_id=ctx.command.task_id, step_id=ctx.command.step_id,
                                 progress=round(percent, 1)))

    def pose(self, ctx: SkillContext, x: float, y: float, theta: float) -> None:
        self.state.pose = Pose(x=x, y=y, theta=theta)

    def changed(self, ctx: SkillContext, change: WorldChange, world: World | None) -> None:
        self.state.apply(change, world)
