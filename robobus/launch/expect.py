"""Checking a scenario's expectations against the memory agent (MemoryQuery over the bus)."""

from __future__ import annotations

import msgspec

from robobus.bus.api import Bus
from robobus.bus.errors import BusError
from robobus.launch.observe import Observer
from robobus.launch.report import ExpectResult
from robobus.schemas.codec import decode_as
from robobus.schemas.errors import DecodeError
from robobus.schemas.memory import MemoryQuery, QueryReply, TaskRecord
from robobus.schemas.scenario import Expectation, Scenario
from robobus.schemas.world import World, WorldSnapshot


class MemoryUnavailable(Exception):
    """The memory agent did not answer or answered with an error."""


async def query(bus: Bus, q: MemoryQuery, timeout: float = 2.0) -> QueryReply:
    """One request to the memory agent; raise MemoryUnavailable on timeout or a bad reply."""
    try:
        msg = await bus.request(bus.topic("memory", "query"), q, timeout=timeout)
        return decode_as(msg.payload, QueryReply, msg.topic, msg.content_type)
    except (BusError, DecodeError) as exc:
        raise MemoryUnavailable(f"memory query {q.kind!r} failed: {exc}") from exc


async def fetch_world(bus: Bus) -> World:
    reply = await query(bus, MemoryQuery(kind="world"))
    if not reply.ok:
        raise MemoryUnavailable(f"memory refused the world query: {reply.error}")
    return World(msgspec.convert(reply.result, WorldSnapshot))


async def task_status(bus: Bus, task_id: str, observer: Observer) -> tuple[str, str]:
    """(status, source): the memory agent's task record, else what the runner observed."""
    try:
        reply = await query(bus, MemoryQuery(kind="task", name=task_id))
    except MemoryUnavailable:
        reply = QueryReply(ok=False)
    if reply.ok and reply.result:
        rec = msgspec.convert(reply.result, TaskRecord)
        return rec.status, f"memory record{': ' + rec.reason if rec.reason else ''}"
    view = observer.tasks.get(task_id)
    if view is None:
        return "unknown", "no status seen on the bus and no memory record"
    reason = f": {view.reason}" if view.reason else ""
    return view.status, f"observed on the bus (no memory record){reason}"


def location_chain(world: World, name: str) -> list[str]:
    """Where ``name`` is, outward: ``[basket, realman_1, officeDesk]`` for an apple in a carried basket."""
    out: list[str] = []
    cur, seen = name, {name}
    while cur not in world.places:
        if cur in world.robots:
            place = world.robots[cur].place
            if place:
                out.append(place)
            break
        obj = world.objects.get(cur)
        if obj is None or obj.location in seen:
            break
        cur = obj.location
        seen.add(cur)
        out.append(cur)
    return out


def check_world(world: World, exp: Expectation) -> ExpectResult:
    """Evaluate an object or robot expectation on a world snapshot."""
    desc = exp.describe()
    if exp.object is not None:
        if exp.object not in world.objects:
            return ExpectResult(desc, False, f"memory does not know object {exp.object!r}")
        chain = location_chain(world, exp.object)
        where = " -> ".join(chain) or "nowhere"
        if exp.at is not None:
            ok = exp.at in chain
            return ExpectResult(desc, ok, f"{exp.object} is at {where}" if ok else
                                f"{exp.object} is at {where}, not at {exp.at}")
        ok = bool(chain) and chain[0] == exp.in_
        return ExpectResult(desc, ok, f"{exp.object} is directly in/at {chain[0] if chain else None}"
                            + ("" if ok else f", not {exp.in_}"))
    robot = world.robots.get(exp.robot or "")
    if robot is None:
        return ExpectResult(desc, False, f"memory does not know robot {exp.robot!r}")
    if exp.at is not None:
        ok = robot.place == exp.at
        return ExpectResult(desc, ok, f"{robot.name} is at {robot.place}")
    ok = exp.holding in robot.holding
    return ExpectResult(desc, ok, f"{robot.name} holds {robot.holding or 'nothing'}")


async def evaluate(bus: Bus, sc: Scenario, observer: Observer) -> list[ExpectResult]:
    """Check every expectation; a memory agent that does not answer fails the world ones."""
    world: World | None = None
    world_error = ""
    if any(e.task is None for e in sc.expect):
        try:
            world = await fetch_world(bus)
        except MemoryUnavailable as exc:
            world_error = str(exc)
    results = []
    for exp in sc.expect:
        if exp.task is not None:
            tid = sc.task_ref(exp.task)
            status, source = await task_status(bus, tid, observer)
            ok = status == exp.status
            results.append(ExpectResult(exp.describe(), ok, f"task {tid} is {status} ({source})"))
        elif world is None:
            results.append(ExpectResult(exp.describe(), False, world_error))
        else:
            results.append(check_world(world, exp))
    return results
