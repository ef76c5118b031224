"""The launcher resolves robot profiles as the edge agent does, ``$ROBOBUS_PROFILES`` included."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from robobus import testing
from robobus.edge_agent.profile import PROFILE_DIRS_ENV, find_profile
from robobus.launch.errors import ProfileNotFound
from robobus.launch.fleet import FleetConfig, agent_commands, resolve_profile
from robobus.schemas.scenario import RobotSpec

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def own_profiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A profile folder named by $ROBOBUS_PROFILES: a new ``lab_g1`` and its own ``unitree_g1``."""
    own = tmp_path / "own"
    own.mkdir()
    g1 = yaml.safe_load((REPO / "profiles" / "unitree_g1.yaml").read_text())
    (own / "lab_g1.yaml").write_text(yaml.safe_dump({**g1, "name": "lab", "type": "lab_g1"}))
    (own / "unitree_g1.yaml").write_text(yaml.safe_dump(g1))
    monkeypatch.setenv(PROFILE_DIRS_ENV, str(own))
    monkeypatch.chdir(tmp_path)
    return own


def test_launcher_honours_robobus_profiles(own_profiles: Path, tmp_path: Path) -> None:
    base = tmp_path / "scenario"
    assert resolve_profile("lab_g1", base) == str(own_profiles / "lab_g1.yaml")
    # the variable comes first for the launcher as for the edge agent: both pick the same file
    assert resolve_profile("unitree_g1", base) == str(find_profile("unitree_g1"))
    assert find_profile("unitree_g1") == own_profiles / "unitree_g1.yaml"
    cfg = FleetConfig([RobotSpec("lab", "lab_g1", "kitchenTable")], tmp_path / "scene.yaml",
                      tmp_path / "store", base_dir=base)
    edge = agent_commands("zmq://127.0.0.1:1", cfg)["edge-lab"]
    assert edge[edge.index("--profile") + 1] == str(own_profiles / "lab_g1.yaml")


def test_a_missing_profile_names_the_folders_searched(own_profiles: Path) -> None:
    with pytest.raises(ProfileNotFound) as info:
        resolve_profile("no_such_robot")
    assert str(own_profiles) in info.value.searched


def test_scenario_validate_finds_a_profile_only_robobus_profiles_has(own_profiles: Path,
                                                                     tmp_path: Path) -> None:
    scenario = yaml.safe_load((REPO / "scenarios" / "grasp_failure_replan.yaml").read_text())
    scenario["robots"][0]["profile"] = "lab_g1"
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(scenario))

    def validate(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(testing.robobus_cmd("scenario", "validate", str(path)), env=env,
                              capture_output=True, text=True, timeout=60, cwd=tmp_path)

    assert validate(dict(os.environ)).returncode == 0
    without = {k: v for k, v in os.environ.items() if k != PROFILE_DIRS_ENV}
    out = validate(without)
    assert out.returncode == 1 and "lab_g1" in out.stderr
