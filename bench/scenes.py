"""Scenes and fleets for tests and benchmarks: generated worlds, robots with the shipped skills.

Nothing here is used by the planner itself; it builds inputs that look like what the memory
agent and the edge agents publish (``docs/contracts.md``). The skill specs are the skill
registry's own (:mod:`robobus.skills.sim`), as an edge agent registers them.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import yaml

from robobus.brain_agent.context import PlanContext
from robobus.edge_agent.profile import load_profile
from robobus.schemas.messages import RobotRegistration, SkillSpec
from robobus.schemas.world import World, WorldChange
from robobus.skills import sim  # noqa: F401  (registers the shipped skills)
from robobus.skills.registry import REGISTRY

#: The shipped skills' specs, from the registry (default timeouts: no profile overrides them).
SKILLS: dict[str, SkillSpec] = {
    name: REGISTRY.get(name).spec() for name in ("navigate", "pick", "place", "handover", "detect")
}

DEMO_SCENE: dict[str, Any] = {
    "places": {"kitchenTable": {"position": [2.0, 1.0]}, "customTable": {"position": [0.0, 3.0]},
               "officeDesk": {"position": [6.0, 5.0]}},
    "objects": {
        "cup": {"kind": "cup", "at": "kitchenTable", "position": [2.0, 1.1]},
        "apple": {"kind": "fruit", "at": "kitchenTable", "position": [2.1, 1.2]},
        "banana": {"kind": "fruit", "at": "kitchenTable", "position": [2.7, 0.8]},
        "knife": {"kind": "knife", "at": "customTable"},
        "basket": {"kind": "basket", "at": "customTable", "container": True},
    },
}
DEMO_ROBOTS: list[dict[str, Any]] = [
    {"name": "realman_1", "type": "realman_single_arm", "mobile": True, "hands": 1, "speed": 0.8,
     "start": "customTable"},
    {"name": "g1", "type": "unitree_g1", "mobile": True, "hands": 2, "speed": 0.6,
     "start": "kitchenTable"},
    {"name": "agilex", "type": "agilex_dual_arm", "mobile": False, "hands": 2, "speed": 0.0,
     "start": "customTable"},
]


#: Two identical mobile robots, one near the shelf and one far: when the near one dies
#: mid-skill, the planner must reassign its step to the far one (reassignment tests).
REASSIGN_SCENE: dict[str, Any] = {
    "places": {"home": {"position": [0.0, 0.0]}, "far": {"position": [30.0, 0.0]},
               "shelf": {"position": [10.0, 0.0]}},
    "objects": {"bolt": {"kind": "bolt", "at": "shelf"}},
}
REASSIGN_ROBOTS: list[dict[str, Any]] = [
    {"name": "near_bot", "mobile": True, "hands": 1, "speed": 1.0, "start": "home"},
    {"name": "far_bot", "mobile": True, "hands": 1, "speed": 1.0, "start": "far"},
]


def registration(spec: dict[str, Any]) -> RobotRegistration:
    """A registration like an edge agent's for a robot described by ``spec``."""
    names = ["pick", "place", "handover", "detect"] + (["navigate"] if spec["mobile"] else [])
    profile = {k: v for k, v in spec.items() if k != "name"}
    return RobotRegistration(spec["name"], spec.get("type", "generic"), profile,
                             [SKILLS[n] for n in names])


def build(scene: dict[str, Any], robots: list[dict[str, Any]], task_id: str = "t1") -> PlanContext:
    """A :class:`PlanContext` with the scene's world and the robots registered and placed."""
    world = World.from_scene(scene)
    fleet = {}
    for spec in robots:
        world.apply(WorldChange("add_robot", spec["name"], target=spec["start"], data=spec))
        fleet[spec["name"]] = registration(spec)
    return PlanContext(world=world, fleet=fleet, task_id=task_id)


def demo() -> PlanContext:
    return build(DEMO_SCENE, DEMO_ROBOTS)


def generate(n_robots: int, n_objects: int, *, seed: int = 0, n_places: int | None = None,
             fixed_share: float = 0.3) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A random warehouse-like scene: places on a grid, objects of a few kinds, mixed robots."""
    rng = random.Random(seed)
    n_places = n_places or max(3, min(60, n_objects // 10 + n_robots // 5))
    places = {f"station{i}": {"position": [rng.uniform(0, 40), rng.uniform(0, 40)]}
              for i in range(n_places)}
    kinds = ["box", "bolt", "fruit", "tool", "cup", "bottle"]
    objects: dict[str, Any] = {}
    for i in range(n_objects):
        at = f"station{rng.randrange(n_places)}"
        px, py = places[at]["position"]
        kind = kinds[i % len(kinds)]
        objects[f"{kind}{i}"] = {"kind": kind, "at": at,
                                 "position": [px + rng.uniform(-0.5, 0.5), py + rng.uniform(-0.5, 0.5)]}
    objects["crate"] = {"kind": "crate", "at": "station0", "container": True}
    robots = []
    for i in range(n_robots):
        mobile = i == 0 or rng.random() >= fixed_share  # at least one robot can move
        robots.append({"name": f"bot{i}", "type": "mobile" if mobile else "arm", "mobile": mobile,
                       "hands": rng.choice([1, 2]), "speed": rng.uniform(0.5, 1.5) if mobile else 0.0,
                       "start": f"station{rng.randrange(n_places)}"})
    return {"places": places, "objects": objects}, robots


def from_scenario(path: str | Any) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """(scene, robots, instructions) of a scenario file; robots get their profile's embodiment."""
    data = yaml.safe_load(Path(path).read_text())
    robots = []
    for r in data.get("robots") or []:
        prof = load_profile(r["profile"])
        reg = prof.registration(r.get("at"))
        robots.append({"name": r["name"], "type": prof.type, "mobile": reg["mobile"],
                       "hands": reg["hands"], "speed": reg["speed"], "start": reg["start"]})
    return data["scene"], robots, list(data.get("instructions") or [])
