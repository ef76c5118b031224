"""Robot profiles: the shipped ones load; invalid ones name the field and the reason."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from robobus.edge_agent.errors import ProfileError
from robobus.edge_agent.profile import load_profile, parse_profile, robot_types
from robobus.testing import robobus_cmd

SHIPPED = ["realman_single_arm", "agilex_dual_arm", "unitree_g1"]


def base(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"name": "x", "type": "y", "embodiment": {"mobile": True, "speed": 1.0},
                            "skills": {"pick": {}}}
    data.update(over)
    return data


@pytest.mark.parametrize("rtype", SHIPPED)
def test_shipped_profiles_load_by_type(rtype: str) -> None:
    profile = load_profile(rtype)
    assert profile.type == rtype
    reg = profile.registration()
    assert {"type", "mobile", "hands", "speed", "capacity", "start", "telemetry_hz"} <= set(reg)


def test_registry_of_robot_types_and_embodiments() -> None:
    types = robot_types()
    assert set(SHIPPED) <= set(types)
    agilex, g1 = load_profile("agilex_dual_arm"), load_profile("unitree_g1")
    assert not agilex.embodiment.mobile and "navigate" not in agilex.skills
    assert agilex.resources() == {"base": 0, "arm": 2, "sensor": 1}
    assert g1.embodiment.mobile and g1.embodiment.hand_count == 2


def test_template_is_valid(repo_root: Path) -> None:
    profile = load_profile(repo_root / "profiles" / "template.yaml")
    assert profile.type == "my_robot"


@pytest.mark.parametrize(("data", "field", "reason"), [
    (base(embodiment={"mobile": True, "speed": "fast"}), "embodiment.speed", "Expected `float`"),
    (base(embodiment={"mobile": True, "speed": 0}), "embodiment.speed", "speed > 0"),
    (base(embodiment={"mobile": True, "speed": 1, "arms": 9}), "embodiment.arms", "<= 8"),
    (base(skills={"fly": {}}), "skills.fly", "unknown skill"),
    (base(embodiment={"mobile": False}, skills={"navigate": {}}), "skills.navigate", "'base'"),
    (base(skills={"pick": {"timeout_s": -1}}), "skills.pick.timeout_s", "> 0"),
    (base(skills={"pick": {"speed": 3}}), "skills.pick", "unknown field `speed`"),
    (base(skills={}), "skills", "at least one skill"),
    (base(name="has space"), "name", "regex"),
    (base(telemetry_hz=0), "telemetry_hz", "> 0"),
    (base(colour="red"), "<root>", "unknown field `colour`"),
    (base(faults=[{"skill": "navigate"}]), "faults.0.skill", "not in skills"),
    (base(faults=[{"skill": "pick", "probability": 2}]), "faults.0.probability", "[0, 1]"),
    ({k: v for k, v in base().items() if k != "type"}, "<root>", "missing required field `type`"),
])
def test_invalid_profile_names_field_and_reason(data: dict[str, Any], field: str,
                                                reason: str) -> None:
    with pytest.raises(ProfileError) as info:
        parse_profile(data, "bad.yaml")
    assert info.value.field == field
    assert reason in info.value.reason
    assert str(info.value).startswith(f"bad.yaml: {field}: ")


def test_yaml_syntax_error_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ProfileError, match="<yaml>"):
        load_profile(bad)
    with pytest.raises(ProfileError, match="no such file or robot type"):
        load_profile(tmp_path / "missing.yaml")


def test_cli_refuses_invalid_profile(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntype: y\nembodiment: {mobile: true}\nskills: {pick: {}}\n")
    proc = subprocess.run(robobus_cmd("edge", "--profile", str(bad), "--bus", "memory://x"),
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "embodiment.speed" in proc.stderr and "speed > 0" in proc.stderr
