"""The scenario file format: the shipped files load, and bad files fail naming field and reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from robobus.schemas.scenario import ScenarioError, load_scenario, parse_scenario

SCENARIOS = sorted((Path(__file__).resolve().parents[2] / "scenarios").glob("*.yaml"))


def base() -> dict[str, Any]:
    return {
        "name": "t",
        "scene": {"places": {"a": {"position": [0, 0]}, "b": {}},
                  "objects": {"box": {"kind": "box", "at": "a", "container": True},
                              "pen": {"at": "box"}}},
        "robots": [{"name": "r1", "profile": "unitree_g1", "at": "a"}],
        "instructions": [{"text": "bring the pen to b", "id": "go"}, {"text": "again", "at": 1}],
        "faults": [{"at": 0.5, "fail_skill": {"robot": "r1", "skill": "pick"}},
                   {"when": {"robot": "r1", "skill": "pick"}, "kill": "r1"}],
        "expect": [{"object": "pen", "at": "b"}, {"task": "go", "status": "done"},
                   {"task": 1, "status": "failed"}, {"robot": "r1", "at": "b"},
                   {"object": "pen", "in": "box"}, {"robot": "r1", "holding": "pen"}],
    }


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_shipped_scenarios_load(path: Path) -> None:
    sc = load_scenario(path)
    assert sc.robots and sc.instructions and sc.expect


def test_valid_base_and_task_ids() -> None:
    sc = parse_scenario(base())
    assert [sc.task_id(i) for i in range(2)] == ["go", "t1"]
    assert sc.task_ref(1) == "t1" and sc.task_ref("go") == "go"
    assert sc.faults[1].robot == "r1"
    assert sc.scene_dict()["objects"]["pen"] == {"at": "box"}


def _mutate(path: str, value: Any) -> dict[str, Any]:
    data = base()
    node: Any = data
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node[key]
    last = keys[-1]
    if value is _DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return data


_DELETE = object()

BAD = [
    ("scene", _DELETE, "", "missing required field `scene`"),
    ("speed", 0, "speed", "must be > 0"),
    ("timeout_s", "soon", "timeout_s", "Expected `float`"),
    ("scene.places.a.positon", [1, 2], "scene.places.a", "unknown field `positon`"),
    ("scene.objects.pen.at", "nowhere", "scene.objects.pen.at", "unknown place, container or robot"),
    ("scene.objects.box.container", False, "scene.objects.pen.at", "not a container"),
    ("robots.0.at", "kitchen", "robots[0].at", "unknown place 'kitchen'"),
    ("robots.0.name", "r/1", "robots[0].name", "may only contain"),
    ("robots", [], "robots", "at least one robot"),
    ("instructions.1.id", "go", "instructions[1].id", "duplicate task id 'go'"),
    ("instructions.0.text", " ", "instructions[0].text", "must not be empty"),
    ("faults.0.fail_skill.robot", "ghost", "faults[0].fail_skill.robot", "unknown robot 'ghost'"),
    ("faults.1.at", 2.0, "faults[1]", "exactly one of 'at'"),
    ("faults.0.kill", "r1", "faults[0]", "exactly one of 'fail_skill', 'kill' or 'restart'"),
    ("expect.0.object", "cup", "expect[0].object", "unknown object 'cup'"),
    ("expect.1.task", "nope", "expect[1].task", "unknown task id 'nope'"),
    ("expect.2.task", 7, "expect[2].task", "out of range"),
    ("expect.2.status", "finished", "expect[2].status",
     "Invalid enum value 'finished'; expected one of: done, failed, cancelled"),
    ("expect.3", {"robot": "r1", "status": "done"}, "expect[3]", "needs exactly one of 'at' or"),
    ("expect.4", {"object": "pen", "robot": "r1", "at": "a"}, "expect[4]", "exactly one subject"),
]


@pytest.mark.parametrize(("path", "value", "field", "reason"), BAD, ids=[b[0] for b in BAD])
def test_invalid_names_field_and_reason(path: str, value: Any, field: str, reason: str) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(_mutate(path, value), "bad.yaml")
    assert info.value.field == field
    assert reason in info.value.reason
    assert str(info.value).startswith(f"bad.yaml: {field}" if field else "bad.yaml")


def test_yaml_boolean_key_is_explained(tmp_path: Path) -> None:
    data = base()
    data["faults"] = [{"on": {"robot": "r1"}, "kill": "r1"}]
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data).replace("'on'", "on"))
    with pytest.raises(ScenarioError, match="quote the key"):
        load_scenario(path)


def test_unreadable_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read file"):
        load_scenario(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ScenarioError, match="expected a mapping"):
        load_scenario(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ScenarioError, match="not valid YAML"):
        load_scenario(tmp_path / "broken.yaml")
