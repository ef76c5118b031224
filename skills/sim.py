"""Simulated skills: navigate, pick, place, handover, detect.

Physically consistent: navigation lasts distance / speed, manipulation lasts the profile's
``duration_s``; both are multiplied by the agent's time scale. Preconditions are checked by
the edge agent against a fresh world snapshot before the skill starts; the world change is
requested from the memory agent once the motion is done. A cancelled skill changes nothing:
a cancelled ``navigate`` leaves the robot at its start place (motion is committed only on
arrival), though the telemetry pose shows how far it got.
"""

from __future__ import annotations

import msgspec

from robobus.skills.context import SkillContext
from robobus.skills.errors import SkillFailed
from robobus.skills.registry import skill

PICK_S = 2.0
PLACE_S = 1.5
HANDOVER_S = 2.5
DETECT_S = 0.5


class NavigateArgs(msgspec.Struct, forbid_unknown_fields=True):
    """Where to go: a place name."""

    target: str


class NavigateResult(msgspec.Struct):
    place: str
    distance_m: float
    duration_s: float


class ObjectArgs(msgspec.Struct, forbid_unknown_fields=True):
    """The object to pick."""

    object: str


class PlaceArgs(msgspec.Struct, forbid_unknown_fields=True):
    """Put a held ``object`` on a place or into a container ``target``."""

    object: str
    target: str


class HandoverArgs(msgspec.Struct, forbid_unknown_fields=True):
    """Give a held ``object`` to the co-located robot ``to``."""

    object: str
    to: str


class DetectArgs(msgspec.Struct, forbid_unknown_fields=True):
    """Look for objects of ``kind`` at the robot's place."""

    kind: str


class HoldResult(msgspec.Struct, omit_defaults=True):
    object: str
    holder: str | None = None
    location: str | None = None


class DetectResult(msgspec.Struct):
    place: str | None
    objects: list[str]


@skill("navigate", timeout=120.0, resource="base", change="move",
       preconditions=["mobile(?robot)", "is_place(?target)"],
       effects=["robot_at(?robot, ?target)"], param_kinds={"target": "place"})
async def navigate(ctx: SkillContext, args: NavigateArgs) -> NavigateResult:
    """Drive the mobile base to a place; the move is committed on arrival."""
    world = await ctx.world()
    me = world.robots[ctx.robot]
    goal = world.places[args.target].position
    seconds = world.travel_time(ctx.robot, args.target)
    await ctx.move(me.position, goal, seconds)
    await ctx.change("move", target=args.target)
    distance = seconds * me.speed
    return NavigateResult(place=args.target, distance_m=round(distance, 3),
                          duration_s=round(seconds, 3))


@skill("pick", timeout=30.0, resource="arm", change="pick",
       preconditions=["colocated(?robot, ?object)", "hand_free(?robot)", "not held(?object)",
                      "graspable(?object)"],
       effects=["holding(?robot, ?object)"], param_kinds={"object": "object"})
async def pick(ctx: SkillContext, args: ObjectArgs) -> HoldResult:
    """Grasp an object at the robot's place with a free hand."""
    await ctx.work(ctx.duration(PICK_S))
    await ctx.change("pick", object=args.object)
    return HoldResult(object=args.object, holder=ctx.robot)


@skill("place", timeout=30.0, resource="arm", change="place",
       preconditions=["holding(?robot, ?object)", "colocated(?robot, ?target)"],
       effects=["located(?object, ?target)", "not holding(?robot, ?object)"],
       param_kinds={"object": "object", "target": "place|container"})
async def place(ctx: SkillContext, args: PlaceArgs) -> HoldResult:
    """Put a held object on a place or into a container at the robot's place."""
    await ctx.work(ctx.duration(PLACE_S))
    await ctx.change("place", object=args.object, target=args.target)
    return HoldResult(object=args.object, location=args.target)


@skill("handover", timeout=30.0, resource="arm", change="handover",
       preconditions=["holding(?robot, ?object)", "colocated(?robot, ?to)", "hand_free(?to)"],
       effects=["holding(?to, ?object)", "not holding(?robot, ?object)"],
       param_kinds={"object": "object", "to": "robot"})
async def handover(ctx: SkillContext, args: HandoverArgs) -> HoldResult:
    """Give a held object to another robot at the same place."""
    if args.to == ctx.robot:
        raise SkillFailed(f"{ctx.robot!r} cannot hand {args.object!r} to itself", "bad_args")
    await ctx.work(ctx.duration(HANDOVER_S))
    await ctx.change("handover", object=args.object, target=args.to)
    return HoldResult(object=args.object, holder=args.to)


@skill("detect", timeout=10.0, resource="sensor", param_kinds={"kind": "kind"})
async def detect(ctx: SkillContext, args: DetectArgs) -> DetectResult:
    """List the objects of a kind at the robot's place (including in open containers)."""
    await ctx.work(ctx.duration(DETECT_S))
    world = await ctx.world(fresh=True)
    here = world.robots[ctx.robot].place if ctx.robot in world.robots else None
    found = sorted(o.name for o in world.objects.values()
                   if o.kind == args.kind and here is not None and world.place_of(o.name) == here
                   and world.holder(o.name) is None)
    return DetectResult(place=here, objects=found)
