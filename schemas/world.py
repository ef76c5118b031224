"""The world model shared by the memory agent, the skills and the planner.

One pure-Python class, :class:`World`, holds places, objects (with containment) and robots.
Every change goes through :meth:`World.apply`, which refuses physically inconsistent changes
(two robots holding one apple, placing an object where the robot is not). The memory agent
applies changes for real; the planner and validator apply them to a copy to simulate forward.

Skill preconditions and effects are written in a small predicate language that this module
evaluates (see :data:`PREDICATES`), e.g. ``hand_free(?robot)`` or ``colocated(?robot, ?object)``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta


class WorldConflict(ValueError):
    """A change that would make the world inconsistent."""

    def __init__(self, reason: str, code: str = "conflict") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


#: Domain constraints, checked wherever a world value is decoded: from the bus, from a
#: change's ``data`` and from the store. A NaN fails both bounds, so a coordinate is finite.
MAX_COORD = 1e9
MAX_NAME = 256
#: Sequence numbers and versions stay below 2**63, so ``version + 1`` always fits an int64.
MAX_COUNTER = 2**63 - 1
Coord = Annotated[float, Meta(ge=-MAX_COORD, le=MAX_COORD)]
Position = tuple[Coord, Coord]
Name = Annotated[str, Meta(max_length=MAX_NAME)]
Counter = Annotated[int, Meta(ge=0, le=MAX_COUNTER)]
Hands = Annotated[int, Meta(ge=0, le=64)]
Capacity = Annotated[int, Meta(ge=0, le=1_000_000)]
Speed = Annotated[float, Meta(ge=0, le=1e6)]
#: Other words a thing answers to, in any language ("水果刀" for a knife; issue 15).
MAX_LABELS = 32
Labels = Annotated[list[Name], Meta(max_length=MAX_LABELS)]


class Place(msgspec.Struct, omit_defaults=True):
    name: Name
    position: Position = (0.0, 0.0)
    labels: Labels = []


class WorldObject(msgspec.Struct, omit_defaults=True):
    """An object. ``location`` is a place, a container object, or a robot holding it."""

    name: Name
    kind: Name
    location: Name
    position: Position | None = None
    container: bool = False
    capacity: Capacity = 0
    graspable: bool = True
    labels: Labels = []


class WorldRobot(msgspec.Struct, omit_defaults=True):
    name: Name
    place: Name | None = None
    position: Position = (0.0, 0.0)
    holding: list[Name] = []
    hands: Hands = 1
    mobile: bool = True
    speed: Speed = 1.0
    alive: bool = True
    profile: Name = ""
    labels: Labels = []


class WorldSnapshot(msgspec.Struct, omit_defaults=True):
    places: dict[str, Place] = {}
    objects: dict[str, WorldObject] = {}
    robots: dict[str, WorldRobot] = {}
    version: Counter = 0


ChangeOp = Literal["move", "pick", "place", "handover", "add_object", "remove_object", "add_robot"]


class WorldChange(msgspec.Struct, omit_defaults=True):
    """A requested change: ``robot`` does ``op`` on ``object`` towards ``target``."""

    op: ChangeOp
    robot: Name | None = None
    object: Name | None = None
    target: Name | None = None
    data: dict[str, Any] = {}
    #: the skill command (and its task) the change finishes: the memory agent refuses it once
    #: that task is final or the brain ended that command's step (issue 12)
    command_id: Name | None = None
    task_id: Name | None = None


class WorldEvent(msgspec.Struct, omit_defaults=True):
    """An accepted change, published on the world-events topic in order."""

    seq: Counter
    change: WorldChange
    ts_ns: Counter = 0


class WorldReply(msgspec.Struct, omit_defaults=True):
    ok: bool
    reason: str | None = None
    code: str | None = None
    event: WorldEvent | None = None


class ObjectData(msgspec.Struct, forbid_unknown_fields=False):
    """What ``add_object`` reads from a change's ``data`` (other keys are ignored)."""

    kind: Name | None = None
    position: Position | None = None
    container: bool = False
    capacity: Capacity = 0
    graspable: bool = True
    labels: Labels = []


class RobotData(msgspec.Struct, forbid_unknown_fields=False):
    """What ``add_robot`` reads from a change's ``data`` (a registration profile)."""

    position: Position = (0.0, 0.0)
    hands: Hands = 1
    mobile: bool = True
    speed: Speed = 1.0
    alive: bool = True
    profile: Name = ""
    labels: Labels = []


class PlaceData(msgspec.Struct, forbid_unknown_fields=False):
    """What ``place`` reads from a change's ``data``; also a scene's place entry."""

    position: Position | None = None
    labels: Labels = []


def checked(value: Any, type_: Any, what: str) -> Any:
    """``value`` converted to ``type_`` (its domain constraints checked), else WorldConflict."""
    try:
        return msgspec.convert(value, type_, strict=False)
    except msgspec.ValidationError as exc:
        reason = f"invalid {what}: {exc}"
        found = re.search(r" - at `\$\.(\w+)", reason)
        if found is not None and isinstance(value, dict) and found.group(1) in value:
            reason += f" (got {repr(value[found.group(1)])[:80]})"  # bounded: it is echoed
        raise WorldConflict(reason, "invalid") from exc


def _dist(a: tuple[float, float], b: tuple[float, float]) -> float:
    return math.hypot(a[0] - b[0], a[1] - b[1])


class World:
    """Mutable world state with consistency checks. Cheap to copy for planning."""

    def __init__(self, snapshot: WorldSnapshot | None = None) -> None:
        snap = snapshot or WorldSnapshot()
        self.places: dict[str, Place] = dict(snap.places)
        self.objects: dict[str, WorldObject] = {
            k: msgspec.structs.replace(v) for k, v in snap.objects.items()
        }
        self.robots: dict[str, WorldRobot] = {
            k: msgspec.structs.replace(v, holding=list(v.holding)) for k, v in snap.robots.items()
        }
        self.version = snap.version

    # -- construction --------------------------------------------------------------------
    @classmethod
    def from_scene(cls, scene: dict[str, Any], robots: Iterable[str] = ()) -> World:
        """Build from the ``scene`` section of a scenario file (places and objects).

        An object whose ``at`` is one of ``robots`` (the scenario's fleet) is held by that robot
        from the start: robots join the world when they register, so the object waits at the
        robot's name and goes into its hand on its first ``add_robot``.
        """
        world = cls()
        holders = set(robots)
        for name, spec in (scene.get("places") or {}).items():
            data: PlaceData = checked(spec, PlaceData, f"place {name!r}")
            world.places[checked(name, Name, "place name")] = Place(
                name, data.position or (0.0, 0.0), data.labels)
        for name, spec in (scene.get("objects") or {}).items():
            change = WorldChange("add_object", object=name, target=spec["at"], data=dict(spec))
            if change.target in holders and change.target not in world.places:
                world._add_object(change)  # held by a robot that has not registered yet
                world.version += 1
            else:
                world.apply(change)
        return world

    def snapshot(self) -> WorldSnapshot:
        return WorldSnapshot(dict(self.places), dict(self.objects), dict(self.robots), self.version)

    def copy(self) -> World:
        return World(self.snapshot())

    # -- queries -------------------------------------------------------------------------
    def place_of(self, name: str) -> str | None:
        """The place ``name`` is at, transitively through containers and hands."""
        seen: set[str] = set()
        while name not in self.places:
            if name in seen:
                return None
            seen.add(name)
            if name in self.robots:
                return self.robots[name].place
            obj = self.objects.get(name)
            if obj is None:
                return None
            name = obj.location
        return name

    def position_of(self, name: str) -> tuple[float, float] | None:
        if name in self.places:
            return self.places[name].position
        if name in self.robots:
            return self.robots[name].position
        obj = self.objects.get(name)
        if obj is None:
            return None
        if obj.position is not None and obj.location in self.places:
            return obj.position
        return self.position_of(obj.location)

    def contents(self, name: str) -> list[str]:
        """Objects directly at/in/held by ``name``."""
        if name in self.robots:
            return list(self.robots[name].holding)
        return sorted(o.name for o in self.objects.values() if o.location == name)

    def nearest(self, kind: str, to: str, k: int = 1) -> list[str]:
        """The ``k`` objects of ``kind`` nearest to ``to`` (ties broken by name)."""
        origin = self.position_of(to)
        if origin is None:
            raise WorldConflict(f"unknown reference {to!r}", "unknown")
        cands = [o for o in self.objects.values() if o.kind == kind and o.name != to]
        ranked = sorted(cands, key=lambda o: (_dist(self.position_of(o.name) or origin, origin), o.name))
        return [o.name for o in ranked[:k]]

    def holder(self, obj: str) -> str | None:
        loc = self.objects[obj].location if obj in self.objects else None
        return loc if loc in self.robots else None

    def travel_time(self, robot: str, place: str) -> float:
        r = self.robots[robot]
        if r.place == place:
            return 0.0
        return _dist(r.position, self.places[place].position) / max(r.speed, 1e-6)

    # -- changes -------------------------------------------------------------------------
    def apply(self, change: WorldChange) -> None:
        """Check and apply ``change``; raise :class:`WorldConflict` and change nothing if invalid."""
        handler = getattr(self, f"_op_{change.op}", None)
        if handler is None:
            raise WorldConflict(f"unknown world change {change.op!r}", "unknown_op")
        if self.version >= MAX_COUNTER:
            raise WorldConflict(f"world version {self.version} is at its maximum",
                                "version_exhausted")
        handler(change)
        self.version += 1

    def _robot(self, name: str | None) -> WorldRobot:
        if name not in self.robots:
            raise WorldConflict(f"unknown robot {name!r}", "unknown_robot")
        return self.robots[name]

    def _object(self, name: str | None) -> WorldObject:
        if name not in self.objects:
            raise WorldConflict(f"unknown object {name!r}", "unknown_object")
        return self.objects[name]

    def _op_add_robot(self, ch: WorldChange) -> None:
        d: RobotData = checked(ch.data, RobotData, f"add_robot data for {ch.robot!r}")
        place = ch.target
        if place is not None and place not in self.places:
            raise WorldConflict(f"unknown place {place!r} for robot {ch.robot!r}", "unknown_place")
        pos = self.places[place].position if place else d.position
        old = self.robots.get(ch.robot or "")
        # first registration: take what the scene put in its hands (see from_scene)
        held = old.holding if old else sorted(n for n, o in self.objects.items()
                                              if o.location == ch.robot)
        self.robots[ch.robot or ""] = WorldRobot(
            name=ch.robot or "", place=place, position=pos, holding=held,
            hands=d.hands, mobile=d.mobile, speed=d.speed, alive=d.alive, profile=d.profile,
            labels=d.labels,
        )

    def _op_add_object(self, ch: WorldChange) -> None:
        loc = ch.target or ""
        if loc not in self.places and loc not in self.objects and loc not in self.robots:
            raise WorldConflict(f"object {ch.object or ''!r} placed at unknown location {loc!r}",
                                "unknown_place")
        self._add_object(ch)

    def _add_object(self, ch: WorldChange) -> None:
        name, loc = ch.object or "", ch.target or ""
        d: ObjectData = checked(ch.data, ObjectData, f"add_object data for {name!r}")
        self.objects[name] = WorldObject(
            name=name, kind=d.kind or name, location=loc, position=d.position,
            container=d.container, capacity=d.capacity, graspable=d.graspable, labels=d.labels,
        )

    def _op_remove_object(self, ch: WorldChange) -> None:
        obj = self._object(ch.object)
        holder = self.holder(obj.name)
        if holder:
            self.robots[holder].holding.remove(obj.name)
        del self.objects[obj.name]

    def _op_move(self, ch: WorldChange) -> None:
        robot = self._robot(ch.robot)
        if ch.target not in self.places:
            raise WorldConflict(f"unknown place {ch.target!r}", "unknown_place")
        if not robot.mobile and robot.place != ch.target:
            raise WorldConflict(f"robot {robot.name!r} is fixed at {robot.place!r}", "not_mobile")
        robot.place = ch.target
        robot.position = self.places[ch.target].position

    def _op_pick(self, ch: WorldChange) -> None:
        robot, obj = self._robot(ch.robot), self._object(ch.object)
        holder = self.holder(obj.name)
        if holder is not None:
            raise WorldConflict(f"{obj.name!r} is already held by {holder!r}", "already_held")
        if not obj.graspable:
            raise WorldConflict(f"{obj.name!r} is not graspable", "not_graspable")
        if self.place_of(obj.name) != robot.place:
            where = self.place_of(obj.name)
            raise WorldConflict(f"{obj.name!r} is at {where!r}, robot {robot.name!r} is at "
                                f"{robot.place!r}", "not_colocated")
        if len(robot.holding) >= robot.hands:
            raise WorldConflict(f"robot {robot.name!r} has no free hand", "no_free_hand")
        robot.holding.append(obj.name)
        obj.location, obj.position = robot.name, None

    def _op_place(self, ch: WorldChange) -> None:
        robot, obj = self._robot(ch.robot), self._object(ch.object)
        target = ch.target or ""
        if obj.name not in robot.holding:
            raise WorldConflict(f"robot {robot.name!r} does not hold {obj.name!r}", "not_holding")
        if target in self.objects:
            box = self.objects[target]
            if not box.container:
                raise WorldConflict(f"{target!r} is not a container", "not_container")
            if box.capacity and len(self.contents(target)) >= box.capacity:
                raise WorldConflict(f"container {target!r} is full", "full")
        elif target not in self.places:
            raise WorldConflict(f"unknown place or container {target!r}", "unknown_place")
        if self.place_of(target) != robot.place:
            raise WorldConflict(f"{target!r} is at {self.place_of(target)!r}, robot {robot.name!r} "
                                f"is at {robot.place!r}", "not_colocated")
        pos = checked(ch.data, PlaceData, f"place data for {obj.name!r}").position
        robot.holding.remove(obj.name)
        obj.location = target
        obj.position = pos if target in self.places else None

    def _op_handover(self, ch: WorldChange) -> None:
        giver, obj = self._robot(ch.robot), self._object(ch.object)
        taker = self._robot(ch.target)
        if obj.name not in giver.holding:
            raise WorldConflict(f"robot {giver.name!r} does not hold {obj.name!r}", "not_holding")
        if giver.place != taker.place:
            raise WorldConflict(f"{giver.name!r} and {taker.name!r} are not at one place",
                                "not_colocated")
        if len(taker.holding) >= taker.hands:
            raise WorldConflict(f"robot {taker.name!r} has no free hand", "no_free_hand")
        giver.holding.remove(obj.name)
        taker.holding.append(obj.name)
        obj.location = taker.name

    # -- the predicate language of skill preconditions and effects ----------------------
    def holds(self, literal: str, bindings: dict[str, str]) -> bool:
        """Evaluate one precondition literal such as ``not held(?object)``."""
        negated, name, args = parse_literal(literal, bindings)
        fn = PREDICATES.get(name)
        if fn is None:
            raise WorldConflict(f"unknown predicate {name!r}", "unknown_predicate")
        try:
            value = bool(fn(self, *args))
        except (KeyError, TypeError):
            value = False
        return value != negated

    def unmet(self, literals: Iterable[str], bindings: dict[str, str]) -> list[str]:
        """The literals of ``literals`` that do not hold, grounded for the error message."""
        return [ground(lit, bindings) for lit in literals if not self.holds(lit, bindings)]


_LITERAL = re.compile(r"^\s*(not\s+)?([a-z_]+)\s*\(([^)]*)\)\s*$")


def parse_literal(literal: str, bindings: dict[str, str]) -> tuple[bool, str, list[str]]:
    m = _LITERAL.match(literal)
    if m is None:
        raise WorldConflict(f"malformed literal {literal!r}", "bad_literal")
    args = [a.strip() for a in m.group(3).split(",") if a.strip()]
    return bool(m.group(1)), m.group(2), [bindings.get(a[1:], a) if a.startswith("?") else a for a in args]


def ground(literal: str, bindings: dict[str, str]) -> str:
    negated, name, args = parse_literal(literal, bindings)
    return f"{'not ' if negated else ''}{name}({', '.join(args)})"


PREDICATES: dict[str, Any] = {
    "robot_at": lambda w, r, p: w.robots[r].place == p,
    "colocated": lambda w, a, b: w.place_of(a) is not None and w.place_of(a) == w.place_of(b),
    "hand_free": lambda w, r: len(w.robots[r].holding) < w.robots[r].hands,
    "holding": lambda w, r, o: o in w.robots[r].holding,
    "held": lambda w, o: w.holder(o) is not None,
    "mobile": lambda w, r: w.robots[r].mobile,
    "alive": lambda w, r: w.robots[r].alive,
    "container": lambda w, c: c in w.objects and w.objects[c].container,
    "graspable": lambda w, o: w.objects[o].graspable,
    "is_place": lambda w, p: p in w.places,
    "is_robot": lambda w, r: r in w.robots,
    "located": lambda w, o, t: w.objects[o].location == t,
    "known": lambda w, x: x in w.objects or x in w.places or x in w.robots,
}
"""Predicate name -> evaluator. The vocabulary skills may use in preconditions and effects."""
