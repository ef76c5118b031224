"""Many simulated robots in one process (issue 16 item 7: a thousand live robots).

``robobus edge --fleet N`` runs N edge agents from one profile in one event loop. Each robot
is a full :class:`~robobus.edge_agent.agent.EdgeAgent` on a bus connection of its own, so each
has its own presence exactly as a single edge has: a retained birth on its ``alive`` topic, a
last will that is the matching death (same ``bd_seq``), the birth again after each reconnect.
Killing the process publishes N deaths, one per connection. What is shared is the clock: one
ticker publishes every robot's state at the profile's rate, in slices spread over the period,
instead of N timers waking the loop (10,000 wake-ups a second at 1,000 robots and 10 Hz); it
retains each robot's state once a second on the robot's connection and publishes it plain in
between on one connection of the fleet's (:func:`_ticker`). World events are followed once, on
that same connection, and each change goes to the robots it names (:func:`_follow_world`): with
a subscription per robot, every world event reached the process N times, and the N robots'
``add_robot`` events at start-up made N² deliveries (a million at 1,000 robots, most of the
77 s the hub took to bring them online).

Robots are named ``{stem}_{i:04d}`` and start at the profile's start place, or round-robin over
``places``. They do not ask the memory agent where they were (a fleet of 1,000 would fetch the
world 1,000 times at start); they start where they are told.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream

from robobus.bus import Bus, BusError, BusOptions, Overflow, Subscription
from robobus.edge_agent.agent import EdgeAgent, EdgeConfig, edge_bus_options
from robobus.edge_agent.profile import RobotProfile
from robobus.schemas.messages import SkillSpec
from robobus.schemas.topics import Topics
from robobus.schemas.world import WorldEvent
from robobus.skills.registry import REGISTRY, load_plugins

log = structlog.get_logger("edge.fleet")

#: robots starting at once (connect, subscribe, announce) while the fleet starts: a bounded
#: window that the next robot enters as soon as one is online, so the hub's control thread is
#: never flooded with 1,000 hellos and never idle while a batch waits for its slowest robot
CONNECT_AT_ONCE = 50
#: attempts to start one robot, RETRY_S apart times the attempt (at most RETRY_MAX_S): a hub
#: busy with a fleet's hellos may miss the 5 s answer, and on a loaded machine a fleet's own
#: connects outlast the 3 s CONNACK (Mosquitto, 1,000 robots, load 14 on the 2-core VM)
CONNECT_ATTEMPTS = 8
RETRY_S = 0.5
RETRY_MAX_S = 4.0
#: the fleet's connections heartbeat every 2 s (a single edge: 0.5 s), so a loop busy with
#: 1,000 robots' work is not taken for 1,000 dead robots; a killed fleet is dead in about 5 s
FLEET_KEEPALIVE_S = 2.0
#: slices of the fleet published per telemetry period (spreads the state traffic)
TICK_SLICES = 10
#: how far the ticker may fall behind its schedule and still catch up (in periods): a late
#: slice is published at once and the schedule kept, so a short stall costs no states
CATCH_UP_PERIODS = 1.0


@dataclass(slots=True)
class FleetSimConfig:
    """What ``robobus edge --fleet N`` runs."""

    profile: RobotProfile
    count: int
    stem: str | None = None
    places: list[str] = field(default_factory=list)
    time_scale: float | None = None
    prefix: str = "robobus"
    keepalive_s: float = FLEET_KEEPALIVE_S

    def names(self) -> list[str]:
        stem = self.stem or self.profile.name
        return [f"{stem}_{i:04d}" for i in range(self.count)]

    def start(self, i: int) -> str | None:
        return self.places[i % len(self.places)] if self.places else None


@dataclass(slots=True)
class Shared:
    """What the fleet's robots share: who is who (for world events) and the skill specs of
    their registration (the same profile: computing them cost ~5 ms per robot)."""

    robots: dict[str, FleetEdge] = field(default_factory=dict)
    specs: list[SkillSpec] | None = None


class FleetEdge(EdgeAgent):
    """An edge agent whose state the fleet's ticker publishes and whose world events the
    fleet follows for it."""

    follows_world_events = False

    def __init__(self, bus: Bus, config: EdgeConfig, shared: Shared) -> None:
        super().__init__(bus, config)
        self.shared = shared
        self.state_topic = self.topics.state(self.robot)

    def _skill_specs(self) -> list[SkillSpec]:
        if self.config.profile.mcp:  # each robot lists the tools its own servers offer
            return super()._skill_specs()
        if self.shared.specs is None:
            self.shared.specs = super()._skill_specs()
        return self.shared.specs

    async def _resume(self) -> None:
        self.state.goto(self.config.start or self.config.profile.start)

    async def _telemetry_loop(self) -> None:
        await anyio.sleep_forever()

    async def tick(self, period: float, plain: Bus | None) -> Awaitable[None] | None:
        """One telemetry period: drain the battery if busy, publish the state: plain on
        ``plain``, or retained on the robot's own connection, returning the hub's or broker's
        acknowledgement to await (see :func:`_ticker`)."""
        if self.executor.busy:
            drain = self.config.profile.battery_drain_per_s * period
            self.state.battery = max(0.0, self.state.battery - drain)
        msg = self.state.message(self.executor.busy, self.executor.current(), self.executor.held())
        if plain is not None:
            await plain.publish(self.state_topic, msg, qos=0)
            return None
        return await self.bus.post(self.state_topic, msg, retain=True, qos=0)


async def run_fleet(url: str, config: FleetSimConfig, *,
                    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """Run the fleet until cancelled; ``started`` once every robot has announced itself."""
    shared = Shared()
    names = config.names()
    load_plugins()  # once: each agent would scan the entry points again (2 s per 300 robots)
    stem = config.stem or config.profile.name
    options = BusOptions(prefix=config.prefix, keepalive_s=config.keepalive_s)
    async with Bus.connect(url, name=f"{stem}-states", options=options) as plain, \
            plain.subscribe(Topics(config.prefix).world_events, WorldEvent, maxsize=10_000,
                            overflow=Overflow.DROP_OLDEST, reports=False) as events, \
            anyio.create_task_group() as tg:
        tg.start_soon(_follow_world, events, shared.robots, name="fleet:world")
        window = anyio.CapacityLimiter(CONNECT_AT_ONCE)
        async with anyio.create_task_group() as starting:
            for i, name in enumerate(names):
                edge = partial(_robot, url, name, config, config.start(i), shared)
                starting.start_soon(_start, tg, edge, name, window)
        log.info("fleet_ready", robots=len(shared.robots), profile=config.profile.name)
        # What the robots hold after start-up (agents, connections, tasks: a few million
        # objects at 1,000 robots) lives as long as the fleet: kept out of the collector, whose
        # full passes over it stalled the ticker for a few hundred ms at a time
        gc.freeze()
        tg.start_soon(_ticker, list(shared.robots.values()), 1.0 / config.profile.telemetry_hz,
                      plain, name="fleet:ticker")
        task_status.started()


async def _start(tg: anyio.abc.TaskGroup, robot: Callable[..., Coroutine[Any, Any, None]], name: str,
                 window: anyio.CapacityLimiter) -> None:
    async with window:
        await tg.start(robot, name=f"fleet:{name}")


async def _follow_world(events: Subscription, robots: dict[str, FleetEdge]) -> None:
    """World events, once for the fleet: a change goes to the robot it names and to a
    handover's receiver (its target); :meth:`LocalState.apply` keeps what concerns it."""
    async for msg in events:
        change = msg.data.change
        for name in (change.robot, change.target):
            edge = robots.get(name) if name else None
            if edge is not None:
                edge.state.apply(change)


class _Starting(anyio.abc.TaskStatus[None]):
    """Passes ``started`` on and remembers it: a robot retries only before it started."""

    def __init__(self, inner: anyio.abc.TaskStatus[None]) -> None:
        self.inner, self.done = inner, False

    def started(self, value: None = None) -> None:
        self.done = True
        self.inner.started(value)


async def _robot(url: str, name: str, config: FleetSimConfig, start: str | None,
                 shared: Shared, *,
                 task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """One robot, tried again (``CONNECT_ATTEMPTS`` in all) if it fails before it is online: on
    a loaded machine a hello, a subscription's sync or an acknowledged birth can outlast its
    5 s, and one robot's failure then ended the whole fleet (the tree before this change did,
    at 1,000 robots under load 12 on the 2-core VM)."""
    options = edge_bus_options(name, config.prefix)
    options.keepalive_s = config.keepalive_s
    status = _Starting(task_status)
    for attempt in range(1, CONNECT_ATTEMPTS + 1):
        try:
            async with Bus.connect(url, name=name, options=options) as bus:
                edge = FleetEdge(bus, EdgeConfig(config.profile, name=name, start=start,
                                                 time_scale=config.time_scale, registry=REGISTRY),
                                 shared)
                shared.robots[name] = edge
                await edge.serve(task_status=status)
                return
        except (BusError, TimeoutError) as exc:
            if status.done or attempt == CONNECT_ATTEMPTS:
                raise
            log.warning("start_retry", robot=name, attempt=attempt, error=repr(exc))
        await anyio.sleep(min(RETRY_S * attempt, RETRY_MAX_S))


async def _ticker(agents: list[FleetEdge], period: float, plain: Bus) -> None:
    """Every robot's state once a period, a slice at a time on a fixed schedule (no drift).

    Once a second each robot's state is retained, on its own connection; in between it is
    published plain on one connection shared by the fleet (a single edge retains every state
    on its own). Measured with 300-1,000 robots on the 2-core VM: a retained publish through
    the ZeroMQ hub waits for the hub's Python control thread (10,000 a second got each robot
    1.9 Hz), and a send on each robot's own socket cost about 40 us of the simulator's CPU,
    most of it waking ZeroMQ's I/O thread for that socket. A late subscriber still gets a
    state at most a second old. The ticker never waits for a retained state's ack (another
    task does, :func:`_settle`): when it did, a hub slow to acknowledge under load stalled
    every robot's state (1.8 Hz of 10 on the loaded 2-core VM).

    A slice that comes late goes at once and the schedule holds, unless the ticker is a whole
    period behind (``CATCH_UP_PERIODS``). It used to drop its schedule whenever it was one
    slice (10 ms) late: at 1,000 robots on the hub every robot's period stretched to 112 ms
    p50 and the fleet delivered 7.2-8.5 of its 10 Hz (``bench.fleet``'s state intervals).
    """
    step = period / TICK_SLICES
    every = max(1, round(1.0 / period))
    deadline = anyio.current_time()
    ticks = 0
    acks, pending = anyio.create_memory_object_stream[tuple[str, Awaitable[None]]](math.inf)
    async with anyio.create_task_group() as tg, acks:
        tg.start_soon(_settle, pending, name="fleet:acks")
        while True:
            via = None if ticks % every == 0 else plain
            ticks += 1
            for part in range(TICK_SLICES):
                deadline += step
                await anyio.sleep_until(deadline)
                for edge in agents[part::TICK_SLICES]:
                    ack = await _tick(edge, period, via)
                    if ack is not None:
                        acks.send_nowait((edge.robot, ack))
                deadline = max(deadline, anyio.current_time() - CATCH_UP_PERIODS * period)


async def _tick(edge: FleetEdge, period: float, plain: Bus | None) -> Awaitable[None] | None:
    try:
        return await edge.tick(period, plain)
    except BusError as exc:  # its connection is down: its will speaks for it
        log.warning("state_failed", robot=edge.robot, error=str(exc))
        return None


async def _settle(pending: MemoryObjectReceiveStream[tuple[str, Awaitable[None]]]) -> None:
    """Await the retained states' acks, in the order they were sent."""
    async with pending:
        async for robot, ack in pending:
            try:
                await ack
            except BusError as exc:
                log.warning("state_failed", robot=robot, error=str(exc))
