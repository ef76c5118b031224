"""Robot timelines for the search: where each robot will be, when, holding what."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from robobus.brain_agent.context import PlanContext
from robobus.schemas.messages import RobotRegistration, SkillSpec

#: Nominal skill durations (s) when a robot's profile gives none (``profile["durations"]``).
DEFAULT_DURATION_S: dict[str, float] = {"pick": 2.0, "place": 2.0, "handover": 2.0}
_TARGET_KINDS = ("place", "container", "place|container", "robot")


@dataclass(slots=True)
class Bot:
    """A robot's planned timeline: when it is free, where it will be, what it will hold."""

    name: str
    t: float
    place: str | None
    pos: tuple[float, float]
    holding: list[str]
    hands: int
    mobile: bool
    speed: float
    skills: dict[str, SkillSpec]  # by declared world change (move/pick/place/handover)
    durations: dict[str, float]  # by world change: profile["durations"][skill] or a default
    last: str | None = None

    def can(self, change: str) -> bool:
        return change in self.skills

    def reaches(self, place: str | None) -> bool:
        return place is not None and (place == self.place or (self.mobile and self.can("move")))

    def dur(self, change: str) -> float:
        return self.durations.get(change, 1.0)

    def hand_free(self) -> bool:
        return len(self.holding) < self.hands


@dataclass(slots=True)
class Option:
    """A costed way for the search to reach one want; ``run`` commits it."""

    end: float
    run: Callable[[], object] = field(repr=False)


def skills_of(reg: RobotRegistration) -> tuple[dict[str, SkillSpec], dict[str, float]]:
    """A robot's skills by world change (the first per change) and their nominal durations:
    the profile's ``durations`` by skill name, else :data:`DEFAULT_DURATION_S`."""
    skills: dict[str, SkillSpec] = {}
    for spec in reg.skills:
        if spec.change is not None:
            skills.setdefault(spec.change, spec)
    given = reg.profile.get("durations") or {}
    durations = {change: float(given.get(spec.name, DEFAULT_DURATION_S.get(change, 1.0)))
                 for change, spec in skills.items()}
    return skills, durations


def make_bot(name: str, ctx: PlanContext) -> Bot:
    """The timeline of a live robot at the start of planning."""
    wr = ctx.world.robots[name]
    skills, durations = skills_of(ctx.fleet[name])
    return Bot(name, float(ctx.busy_until.get(name, 0.0)), wr.place, wr.position, list(wr.holding),
               wr.hands, wr.mobile, max(wr.speed, 1e-6), skills, durations)


def skill_args(spec: SkillSpec, obj: str | None, target: str | None) -> dict[str, str]:
    """Fill a skill's arguments by what each names (object / place / container / robot)."""
    args: dict[str, str] = {}
    for arg, kind in spec.param_kinds.items():
        if kind == "object" and obj is not None:
            args[arg] = obj
        elif kind in _TARGET_KINDS and target is not None:
            args[arg] = target
    return args
