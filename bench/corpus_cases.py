"""The instruction corpus (``bench/corpus/*.yaml``): load it, and judge a planner's reading.

Each corpus file is a list of ``{scene, text, goals | error}``: ``scene`` is a YAML file
(relative to the corpus file) with ``places``, ``objects`` and inline ``robots``; ``goals`` a
:class:`GoalSet` as JSON; ``error`` the reason code a planner must fail with. A reading is
*right* when it means the same as the expectation: both resolve, on the scene, to the same
concrete wants (so ``{"kind": "tray"}`` and ``med_tray`` agree where med_tray is the one
tray), or both fail with the same code.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import msgspec
import yaml

from bench import scenes
from robobus.brain_agent.context import PlanContext
from robobus.brain_agent.errors import BrainError
from robobus.brain_agent.goals import CancelTask, GoalSet
from robobus.brain_agent.resolve import resolve_goals
from robobus.brain_agent.search import plan_goals

CORPUS = Path(__file__).resolve().parent / "corpus"
Meaning = frozenset[tuple[Any, ...]]


@dataclass(frozen=True)
class Entry:
    """One corpus instruction and what it must mean."""

    file: str
    index: int
    scene: Path
    text: str
    goals: GoalSet | None
    error: str | None
    #: where the requester is ("me", "我"), as an Instruction's origin
    origin: str | None = None

    @property
    def name(self) -> str:
        return f"{self.file}#{self.index}:{self.scene.stem}"

    def ctx(self) -> PlanContext:
        scene, robots = load_scene(self.scene)
        ctx = scenes.build(scene, robots, task_id=f"corpus-{self.index}")
        if self.origin is not None:
            ctx.origin = self.origin
        return ctx


@cache
def load_scene(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(scene, robots) of a corpus scene file."""
    data = yaml.safe_load(path.read_text())
    scene = {"places": data.get("places") or {}, "objects": data.get("objects") or {}}
    return scene, list(data.get("robots") or [])


def load(path: str | Path) -> list[Entry]:
    """Every entry of one corpus file."""
    path = Path(path)
    entries = []
    for i, raw in enumerate(yaml.safe_load(path.read_text()) or []):
        goals = msgspec.convert(raw["goals"], GoalSet) if "goals" in raw else None
        entries.append(Entry(path.stem, i, (path.parent / raw["scene"]).resolve(), raw["text"],
                             goals, raw.get("error"), raw.get("origin")))
    return entries


def meaning(goals: GoalSet, ctx: PlanContext) -> Meaning:
    """What goals mean on a scene: cancelled task ids, else the resolved wants."""
    cancels = {("cancel", g.task_id) for g in goals.goals if isinstance(g, CancelTask)}
    if cancels:
        return frozenset(cancels)
    return frozenset((w.kind, w.subject, w.target, w.robot) for w in resolve_goals(goals, ctx))


def expected(entry: Entry) -> Meaning | str:
    """The entry's meaning, or its error code."""
    if entry.goals is None:
        return entry.error or "?"
    return meaning(entry.goals, entry.ctx())


def symbolic_outcome(entry: Entry, planner: Any) -> Meaning | str:
    """What the symbolic planner makes of an entry: its meaning (once it also plans), or the
    code it fails with."""
    ctx = entry.ctx()
    try:
        goals = planner.parse_sync(entry.text, ctx)
        got = meaning(goals, ctx)
        if not any(isinstance(g, CancelTask) for g in goals.goals):
            plan_goals(goals, ctx, planner="symbolic", goal_text=entry.text)
        return got
    except BrainError as exc:
        return exc.code
