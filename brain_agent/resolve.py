"""Goals -> concrete wants: resolve object references against the world and check names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from robobus.brain_agent.context import PlanContext
from robobus.brain_agent.errors import ParseError, PlanningError
from robobus.brain_agent.goals import CancelTask, Deliver, GoalSet, GoTo, HandTo, ObjectRef, PickUp
from robobus.schemas.world import World, WorldConflict


@dataclass(frozen=True, slots=True)
class Want:
    """One concrete condition to reach.

    * ``at``: object ``subject`` ends located at place/container ``target`` (transitively);
    * ``held``: object ``subject`` ends held by robot ``target`` (any capable robot if None);
    * ``robot_at``: robot ``subject`` ends at place ``target``.
    ``robot`` restricts who may do the work (the instruction named a robot).
    """

    kind: Literal["at", "held", "robot_at"]
    subject: str
    target: str | None
    robot: str | None = None

    def __str__(self) -> str:
        if self.kind == "robot_at":
            return f"{self.subject} at {self.target}"
        if self.kind == "held":
            return f"{self.subject} held by {self.target or 'a robot'}"
        return f"{self.subject} at {self.target}"


def _known_hint(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(sorted(names)[:limit])
    return shown + (", ..." if len(names) > limit else "")


def resolve_ref(ref: ObjectRef, world: World, *, claimed: set[str], near: str | None) -> list[str]:
    """The object names ``ref`` denotes, avoiding ``claimed`` ones; raise with a clear reason."""
    if ref.name is not None:
        if ref.name not in world.objects:
            raise ParseError(f"unknown object {ref.name!r}; known objects: "
                             f"{_known_hint(list(world.objects))}", "unknown_object")
        return [ref.name]
    kind = ref.kind
    for name in ref.exclude:
        if name not in world.objects:
            raise ParseError(f"unknown object {name!r} to leave out; known objects: "
                             f"{_known_hint(list(world.objects))}", "unknown_object")
    cands = [o for o in world.objects.values() if o.kind == kind and o.name not in claimed
             and o.name not in ref.exclude]
    if not cands and not any(o.kind == kind for o in world.objects.values()):
        kinds = sorted({o.kind for o in world.objects.values()})
        raise ParseError(f"no object of kind {kind!r} in the world; known kinds: "
                         f"{_known_hint(kinds)}", "unknown_object")
    if ref.all_at is not None:
        return _all_at(ref, world, cands)
    origin = ref.nearest_to or near
    if ref.nearest_to is not None and world.position_of(ref.nearest_to) is None:
        raise ParseError(f"unknown reference {ref.nearest_to!r} for 'nearest'", "unknown_object")
    pos = world.position_of(origin) if origin else None
    if pos is not None:
        cands.sort(key=lambda o: (_dist2(world.position_of(o.name), pos), o.name))
    else:
        cands.sort(key=lambda o: o.name)
    cands = [o for o in cands if o.name != ref.nearest_to]
    if len(cands) < ref.count:
        but = f" (leaving out {', '.join(ref.exclude)})" if ref.exclude else ""
        raise PlanningError(f"asked for {ref.count} {kind}(s) but only {len(cands)} available{but}",
                            "not_enough_objects")
    return [o.name for o in cands[: ref.count]]


def _all_at(ref: ObjectRef, world: World, cands: list) -> list[str]:
    where = ref.all_at or ""
    if where not in world.places and where not in world.objects and where not in world.robots:
        raise ParseError(f"unknown place {where!r}", "unknown_place")
    names = sorted(o.name for o in cands if o.location == where or world.place_of(o.name) == where)
    if not names:
        raise PlanningError(f"there is no {ref.kind} at {where}", "nothing_there")
    return names


def _dist2(a: tuple[float, float] | None, b: tuple[float, float]) -> float:
    if a is None:
        return float("inf")
    return (a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2


def resolve_goals(goals: GoalSet, ctx: PlanContext) -> list[Want]:
    """Turn every goal into concrete wants; raise ParseError/PlanningError with a reason."""
    world = ctx.world
    wants: list[Want] = []
    claimed: set[str] = set()
    for goal in goals.goals:
        if isinstance(goal, CancelTask):
            raise PlanningError("a cancel request is not a planning goal", "not_a_goal")
        wants.extend(_resolve_one(goal, world, ctx, claimed))
    return wants


def _check_robot(name: str | None, ctx: PlanContext) -> None:
    if name is None:
        return
    if name not in ctx.fleet and name not in ctx.world.robots:
        raise ParseError(f"unknown robot {name!r}; live robots: {_known_hint(list(ctx.fleet))}",
                         "unknown_robot")
    if not ctx.usable(name):
        raise PlanningError(f"robot {name!r} is offline or unavailable", "robot_offline")


def _resolve_one(goal: object, world: World, ctx: PlanContext, claimed: set[str]) -> list[Want]:
    if isinstance(goal, GoTo):
        _check_robot(goal.robot, ctx)
        if goal.place not in world.places:
            what = world.place_of(goal.place)
            if what is None:
                raise ParseError(f"unknown place {goal.place!r}; known places: "
                                 f"{_known_hint(list(world.places))}", "unknown_place")
            return [Want("robot_at", goal.robot, what, goal.robot)]
        return [Want("robot_at", goal.robot, goal.place, goal.robot)]
    if isinstance(goal, PickUp):
        _check_robot(goal.robot, ctx)
        names = _refs([goal.object], world, claimed, None)
        return [Want("held", n, goal.robot, goal.robot) for n in names]
    if isinstance(goal, HandTo):
        _check_robot(goal.robot, ctx)
        names = _refs([goal.object], world, claimed, goal.robot)
        return [Want("held", n, goal.robot) for n in names]
    if isinstance(goal, Deliver):
        return _resolve_deliver(goal, world, ctx, claimed)
    raise PlanningError(f"unsupported goal {type(goal).__name__}", "unsupported_goal")


def container_of_kind(kind: str, world: World) -> str:
    """The one container of ``kind`` ("the tray" -> ``med_tray``); raise when there is none
    or several."""
    of_kind = sorted(o.name for o in world.objects.values() if o.kind == kind)
    containers = [n for n in of_kind if world.objects[n].container]
    if len(containers) == 1:
        return containers[0]
    if len(containers) > 1:
        raise ParseError(f"{kind!r} is ambiguous: {' or '.join(containers)}", "ambiguous")
    raise PlanningError(f"no {kind} is a container ({', '.join(of_kind)} cannot hold things), "
                        "so nothing can be put in or on it", "not_container")


def _resolve_deliver(goal: Deliver, world: World, ctx: PlanContext, claimed: set[str]) -> list[Want]:
    _check_robot(goal.robot, ctx)
    to = goal.to
    if to not in world.places and to not in world.objects and to not in world.robots \
            and any(o.kind == to for o in world.objects.values()):
        to = container_of_kind(to, world)
    if to in world.robots or to in ctx.fleet:
        _check_robot(to, ctx)
        names = _refs(goal.objects, world, claimed, to)
        return [Want("held", n, to, goal.robot) for n in names]
    if to in world.objects and not world.objects[to].container:
        raise PlanningError(f"{to!r} is an object but not a container, so nothing can be put "
                            f"in or on it", "not_container")
    if to not in world.places and to not in world.objects:
        containers = [o.name for o in world.objects.values() if o.container]
        raise ParseError(f"unknown destination {to!r}; known places: "
                         f"{_known_hint(list(world.places))}"
                         + (f"; known containers: {_known_hint(containers)}" if containers else ""),
                         "unknown_place")
    names = _refs(goal.objects, world, claimed, to)
    if to in names:
        raise PlanningError(f"cannot put {to!r} into itself", "impossible")
    return [Want("at", n, to, goal.robot) for n in names]


def _refs(refs: list[ObjectRef], world: World, claimed: set[str], near: str | None) -> list[str]:
    out: list[str] = []
    for ref in refs:
        try:
            names = resolve_ref(ref, world, claimed=claimed, near=near)
        except WorldConflict as exc:
            raise ParseError(exc.reason, "unknown_object") from exc
        claimed.update(names)
        out.extend(names)
    return out


def bind_goals(goals: GoalSet, ctx: PlanContext) -> GoalSet:
    """The same goals with every object reference resolved to names, now.

    A task keeps its bound goals so that a replan after the world changed still means the same
    objects ("the fruit nearest the cup" stays the apple once the apple has moved).
    """
    out: list[Deliver | GoTo | PickUp | HandTo] = []
    for want in resolve_goals(goals, ctx):
        ref = ObjectRef(name=want.subject)
        if want.kind == "robot_at":
            out.append(GoTo(want.subject, want.target or ""))
        elif want.kind == "at":
            out.append(Deliver([ref], want.target or "", want.robot))
        elif want.target is not None and want.robot is None:
            out.append(HandTo(ref, want.target))
        else:
            out.append(PickUp(ref, want.robot or want.target))
    return GoalSet(out, goals.language)  # type: ignore[arg-type]
