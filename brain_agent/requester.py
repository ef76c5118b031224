"""The requester's place (issue 15): "me", "here", "我", "这里" in an instruction.

The grammars write :data:`REQUESTER` where an instruction means the person who sent it; the
planner replaces it with the instruction's ``origin``, else the deployment's default delivery
place (``robobus brain --deliver-to``), else fails the task with ``no_destination``.
"""

from __future__ import annotations

from robobus.brain_agent.errors import ParseError
from robobus.brain_agent.goals import Deliver, Goal, GoalSet, GoTo
from robobus.schemas.world import World

#: Stands for the requester's place in a parsed goal; no scene name can contain "@".
REQUESTER = "@requester"
_ME = {"me", "here", "us"}


def requester_objects(rest: list[str]) -> list[str] | None:
    """English: the object words of ``me X`` / ``X here`` / ``X to me`` / ``X over here``
    when a delivery's words ``rest`` name the requester as its destination, else None."""
    if len(rest) > 1 and rest[0] in _ME - {"here"}:
        return rest[1:]
    for tail in (["to", "me"], ["to", "us"], ["over", "here"], ["here"]):
        if len(rest) > len(tail) and rest[-len(tail):] == tail:
            return rest[: -len(tail)]
    return None


def with_requester(goals: GoalSet, origin: str | None, world: World) -> GoalSet:
    """``goals`` with :data:`REQUESTER` replaced by ``origin``; ParseError when it is needed
    and unknown (``no_destination``) or names nothing in the world (``unknown_origin``)."""
    if not any(_mentions(g) for g in goals.goals):
        return goals
    if not origin:
        raise ParseError("where to? the instruction delivers to its requester ('me', 'here', "
                         "'我', or no place named) but it carries no origin and the brain has "
                         "no default place: send it with an origin or start the brain with "
                         "--deliver-to PLACE", "no_destination")
    if origin not in world.places and origin not in world.objects and origin not in world.robots:
        known = ", ".join(sorted(world.places)[:12])
        raise ParseError(f"the requester's place {origin!r} is not in the world; known places: "
                         f"{known}", "unknown_origin")
    out: list[Goal] = [_replace(g, origin) for g in goals.goals]
    return GoalSet(out, goals.language)


def _mentions(goal: Goal) -> bool:
    return (isinstance(goal, Deliver) and goal.to == REQUESTER) or \
        (isinstance(goal, GoTo) and goal.place == REQUESTER)


def _replace(goal: Goal, origin: str) -> Goal:
    if isinstance(goal, Deliver) and goal.to == REQUESTER:
        return Deliver(goal.objects, origin, goal.robot)
    if isinstance(goal, GoTo) and goal.place == REQUESTER:
        return GoTo(goal.robot, origin)
    return goal
