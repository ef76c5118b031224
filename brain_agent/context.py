"""What a planner gets to see: the world, the live fleet and the task being planned."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from robobus.schemas.messages import RobotRegistration, SkillSpec
from robobus.schemas.world import World


@dataclass(slots=True)
class PlanContext:
    """Everything a planner backend may use to turn one instruction into a plan.

    * ``world``: the brain's live world cache. Read it, never mutate it (simulate on
      ``world.copy()``); a backend that reads it from a worker thread must copy it on the
      event loop first, because bus events keep updating it;
    * ``fleet``: the live robots' registrations by name (skills with preconditions/effects);
    * ``task_id``: the id the plan is for;
    * ``feedback``: violations of a previous attempt, for backends that retry (LLMs);
    * ``busy_until``: robot -> seconds from now until it finishes work for other tasks;
    * ``exclude``: robots that must not be used (dead, failed or taken by a preemptor);
    * ``priority``: the instruction's priority;
    * ``origin``: where the requester is ("me", "我"): the instruction's origin, else the
      brain's default delivery place (issue 15).
    """

    world: World
    fleet: dict[str, RobotRegistration]
    task_id: str = "task"
    feedback: list[str] = field(default_factory=list)
    busy_until: dict[str, float] = field(default_factory=dict)
    exclude: frozenset[str] = frozenset()
    priority: int = 0
    text: str = ""
    origin: str | None = None

    def usable(self, robot: str) -> bool:
        """A robot is usable if it is registered, alive in the world and not excluded."""
        wr = self.world.robots.get(robot)
        return robot in self.fleet and robot not in self.exclude and wr is not None and wr.alive

    def skill(self, robot: str, name: str) -> SkillSpec | None:
        """The robot's skill called ``name``, or None."""
        reg = self.fleet.get(robot)
        if reg is None:
            return None
        return next((s for s in reg.skills if s.name == name), None)

    def skill_for(self, robot: str, change: str) -> SkillSpec | None:
        """The robot's skill whose declared world change is ``change`` (move/pick/place/handover)."""
        reg = self.fleet.get(robot)
        if reg is None:
            return None
        return next((s for s in reg.skills if s.change == change), None)

    def profile(self, robot: str) -> dict[str, Any]:
        reg = self.fleet.get(robot)
        return dict(reg.profile) if reg is not None else {}
