"""Scenes where a robot holds an object at the start (issue 12, item 6).

The documented form ``objects: {apple: {at: g1}}`` passes ``robobus scenario validate``, seeds
the memory agent (the object waits at the robot's name and is in its hand once it registers),
and a scenario that needs the held object runs to the end with the agents as processes.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import pytest
import yaml

from robobus import testing
from robobus.memory_store.agent import scene_robots
from robobus.memory_store.views import Views
from robobus.schemas.topics import Topics
from robobus.schemas.world import World, WorldChange, WorldConflict

REPO = Path(__file__).resolve().parents[2]
SCENE = {
    "places": {"kitchenTable": {"position": [2.0, 1.0]}, "officeDesk": {"position": [6.0, 5.0]}},
    "objects": {
        "tray": {"kind": "tray", "at": "g1", "container": True},
        "apple": {"kind": "fruit", "at": "tray"},   # inside the held tray
        "cup": {"kind": "cup", "at": "kitchenTable"},
    },
}
SCENARIO = {
    "name": "held-at-start",
    "scene": SCENE,
    "robots": [{"name": "g1", "profile": "unitree_g1", "at": "kitchenTable"}],
    "instructions": [{"at": 0.0, "text": "bring the tray to the office desk"}],
    "expect": [{"object": "tray", "at": "officeDesk"}, {"object": "apple", "at": "officeDesk"},
               {"robot": "g1", "at": "officeDesk"}, {"task": 0, "status": "done"}],
    "timeout_s": 60,
    "speed": 5.0,
}


def _register(world: World, robot: str = "g1") -> None:
    world.apply(WorldChange("add_robot", robot=robot, target="kitchenTable",
                            data={"hands": 2, "profile": "unitree_g1"}))


def test_held_object_waits_for_its_robot_and_is_in_its_hand() -> None:
    world = World.from_scene(SCENE, ["g1"])
    assert world.objects["tray"].location == "g1" and world.objects["apple"].location == "tray"
    _register(world)
    assert world.robots["g1"].holding == ["tray"]
    assert world.place_of("apple") == "kitchenTable"
    world.apply(WorldChange("move", robot="g1", target="officeDesk"))
    world.apply(WorldChange("place", robot="g1", object="tray", target="officeDesk"))
    assert world.place_of("apple") == "officeDesk" and world.robots["g1"].holding == []
    _register(world)  # a re-registration keeps what the robot holds now
    assert world.robots["g1"].holding == []


def test_a_holder_outside_the_fleet_is_still_an_unknown_location() -> None:
    with pytest.raises(WorldConflict, match="unknown location 'g1'"):
        World.from_scene(SCENE)


def test_memory_views_seed_from_the_scenario_file(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(SCENARIO))
    assert scene_robots(path) == ["g1"]
    views = Views(Topics("robobus"), live=True)
    views.seed(SCENE, scene_robots(path))
    assert views.world.objects["tray"].location == "g1"


def test_validate_and_run_a_scenario_with_a_held_object(tmp_path: Path, hub_url: str) -> None:
    path = tmp_path / "held.yaml"
    path.write_text(yaml.safe_dump(SCENARIO, sort_keys=False))
    prefix = f"held{secrets.token_hex(3)}"
    env = {**os.environ, "ROBOBUS_PREFIX": prefix, "ROBOBUS_LOG": "warning"}
    ok = subprocess.run(testing.robobus_cmd("scenario", "validate", str(path)), capture_output=True,
                        text=True, env=env, timeout=60, cwd=REPO)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    out = subprocess.run(testing.robobus_cmd("scenario", "run", str(path), "--bus", hub_url,
                                             "--quiet", "--report", str(tmp_path / "r")),
                         capture_output=True, text=True, env=env, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "PASS held-at-start" in out.stdout
    memory_log = (tmp_path / "r" / "logs" / "memory.log").read_text()
    assert "WorldConflict" not in memory_log and "unknown location" not in memory_log
