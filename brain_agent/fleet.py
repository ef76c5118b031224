"""The brain's cached view of the fleet and the world, kept fresh from bus events.

Planning never queries anything: registrations and ``alive`` arrive as retained messages, the
world is loaded once from the memory agent and then follows ``P/world/events``. A gap in the
event sequence or a change that does not apply triggers a background refresh from memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable
from typing import Any

import anyio
import msgspec
import structlog

from robobus.bus import Bus, Message
from robobus.bus.errors import BusError
from robobus.schemas.codec import decode_as
from robobus.schemas.errors import DecodeError
from robobus.schemas.memory import MemoryQuery, QueryReply
from robobus.schemas.messages import Alive, RobotRegistration, RobotState, presence_supersedes
from robobus.schemas.topics import Topics
from robobus.schemas.world import World, WorldChange, WorldConflict, WorldEvent, WorldSnapshot

log = structlog.get_logger("brain.fleet")
#: runs a handler under a guard, as the brain's Guard.call: (what, topic, handler, *args)
Guarded = Callable[..., Awaitable[Any]]


class MemoryUnavailable(BusError):
    """The memory agent did not answer (or answered with an error)."""


async def query_memory(bus: Bus, topics: Topics, query: MemoryQuery, timeout: float,
                       qos: int = 0) -> object:
    """Ask the memory agent; return ``result`` or raise :class:`MemoryUnavailable`.

    ``qos=1`` publishes the query acknowledged by the hub or broker instead of best-effort.
    Either way it crosses the hub or broker, so every subscriber to the query topic sees it.
    """
    try:
        msg = await bus.request(topics.memory_query, query, timeout=timeout, qos=qos)
    except BusError as exc:
        raise MemoryUnavailable(f"memory agent did not answer a {query.kind!r} query: {exc}") from exc
    try:
        reply = decode_as(msg.payload, QueryReply, msg.topic, msg.content_type)
    except DecodeError as exc:  # msgpack or JSON, whichever the memory agent speaks
        raise MemoryUnavailable(f"memory agent sent a malformed reply to a {query.kind!r} "
                                f"query: {exc}") from exc
    if not reply.ok:
        raise MemoryUnavailable(f"memory agent refused a {query.kind!r} query: {reply.error}")
    return reply.result


class FleetView:
    """Live robots (registration + alive + latest state) and the cached world."""

    def __init__(self, bus: Bus, topics: Topics, *, query_timeout: float = 2.0) -> None:
        self.bus = bus
        self.topics = topics
        self.query_timeout = query_timeout
        self.registrations: dict[str, RobotRegistration] = {}
        self.online: dict[str, bool] = {}
        self.presence: dict[str, Alive] = {}  # the birth or death each robot's online follows
        self.states: dict[str, RobotState] = {}
        self.world = World()
        self.world_ready = anyio.Event()
        self._seq: int | None = None
        self._refreshing = False
        self.on_offline: list = []  # async callables (robot) -> None, set by the scheduler
        self._fleet: dict[str, RobotRegistration] | None = None  # fleet(), until a change

    # -- fleet ---------------------------------------------------------------------------
    def fleet(self) -> dict[str, RobotRegistration]:
        """Registered robots not known to be offline (the same dict until a registration or a
        presence changes it: every plan context asks, three times an instruction, and at
        1,000 robots building it was ~50 µs each; callers must not change it)."""
        fleet = self._fleet
        if fleet is None:
            online = self.online
            fleet = self._fleet = {r: reg for r, reg in self.registrations.items()
                                   if online.get(r, True)}
        return fleet

    def on_registration(self, reg: RobotRegistration) -> None:
        self.registrations[reg.robot] = reg
        self._fleet = None
        self._ensure_robot(reg.robot)

    async def on_cleared(self, robot: str) -> None:
        """A robot's retained registration was cleared (an empty value): it left the fleet.

        It is no longer planned with, and what it was doing is handed on as if it went
        offline. A new registration brings it back.
        """
        if self.registrations.pop(robot, None) is None:
            return
        self._fleet = None
        self.states.pop(robot, None)
        log.warning("robot_unregistered", robot=robot)
        for callback in self.on_offline:
            await callback(robot)

    async def follow_clears(self, sub: AsyncIterable[Message], guard: Guarded) -> None:
        """Serve an untyped subscription to the registrations: an empty value is a clear (the
        typed subscription cannot decode one, so it never reached :meth:`on_registration`).
        ``guard`` runs each clear (the brain's Guard.call: a failure is reported, not fatal)."""
        async for msg in sub:
            robot = self.topics.robot_of(msg.topic)
            if not msg.payload and robot is not None:
                await guard("registration clear", msg.topic, self.on_cleared, robot)

    async def on_alive(self, alive: Alive) -> None:
        if not presence_supersedes(self.presence.get(alive.robot), alive):
            log.info("stale_presence_ignored", robot=alive.robot, online=alive.online,
                     bd_seq=alive.bd_seq, current=self.presence[alive.robot].bd_seq)
            return
        self.presence[alive.robot] = alive
        was = self.online.get(alive.robot, True)
        self.online[alive.robot] = alive.online
        if was != alive.online:
            self._fleet = None
        if alive.robot in self.world.robots:
            self.world.robots[alive.robot].alive = alive.online
        if was and not alive.online:
            log.warning("robot_offline", robot=alive.robot)
            for callback in self.on_offline:
                await callback(alive.robot)

    def on_state(self, state: RobotState) -> None:
        self.states[state.robot] = state

    def _ensure_robot(self, robot: str) -> None:
        """Place a robot the cached world does not know yet at its profile's start place."""
        reg = self.registrations.get(robot)
        if reg is None or robot in self.world.robots or not self.world_ready.is_set():
            return
        prof = reg.profile
        start = prof.get("start") if prof.get("start") in self.world.places else None
        data = {**prof, "alive": self.online.get(robot, True), "profile": reg.type}
        try:
            self.world.apply(WorldChange("add_robot", robot, target=start, data=data))
        except WorldConflict as exc:
            log.warning("robot_not_placed", robot=robot, reason=exc.reason)

    # -- world ---------------------------------------------------------------------------
    async def load_world(self) -> None:
        """Fetch the world snapshot from the memory agent (raises MemoryUnavailable)."""
        result = await query_memory(self.bus, self.topics, MemoryQuery(kind="world"),
                                    self.query_timeout)
        try:
            snap = msgspec.convert(result, WorldSnapshot)
            world = World(snap)
        except (msgspec.ValidationError, ValueError, TypeError, KeyError) as exc:
            # a poisoned world must not end the brain: keep the cache, keep asking
            raise MemoryUnavailable(f"memory agent sent a malformed world: {exc}") from exc
        for robot, online in self.online.items():
            if robot in world.robots:
                world.robots[robot].alive = online
        self.world, self._seq = world, snap.version
        self.world_ready.set()
        for robot in self.registrations:
            self._ensure_robot(robot)
        log.debug("world_loaded", objects=len(world.objects), robots=len(world.robots))

    async def load_world_until_ready(self, retry_s: float = 0.5) -> None:
        """Keep asking until the memory agent answers (it may start after the brain)."""
        while True:
            try:
                await self.load_world()
                return
            except MemoryUnavailable as exc:
                log.info("waiting_for_memory", reason=str(exc))
                await anyio.sleep(retry_s)

    async def refresh(self) -> None:
        """Reload the world from memory now (before a replan); keep the cache on failure."""
        try:
            await self.load_world()
        except MemoryUnavailable as exc:
            log.warning("world_refresh_failed", reason=str(exc))

    def on_event(self, event: WorldEvent) -> bool:
        """Apply one world event; return False when the cache must be refreshed."""
        if not self.world_ready.is_set():
            return True
        if self._seq is not None and event.seq <= self._seq:
            return True
        if self._seq is not None and event.seq != self._seq + 1:
            return False
        self._seq = event.seq
        try:
            self.world.apply(event.change)
        except WorldConflict:
            return self._already_applied(event.change)
        return True

    def _already_applied(self, change: WorldChange) -> bool:
        """After a fresh snapshot the first events may already be in it: accept those."""
        w = self.world
        if change.op == "pick":
            return w.holder(change.object or "") == change.robot
        if change.op == "place":
            return change.object in w.objects and w.objects[change.object].location == change.target
        if change.op == "handover":
            return w.holder(change.object or "") == change.target
        if change.op == "move":
            return change.robot in w.robots and w.robots[change.robot].place == change.target
        return False
