"""Fixtures for the edge tests: a small scene and profile builders."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from robobus.edge_agent.profile import RobotProfile, parse_profile

SCENE: dict[str, Any] = {
    "places": {
        "kitchenTable": {"position": [2.0, 1.0]},
        "customTable": {"position": [0.0, 3.0]},
        "officeDesk": {"position": [6.0, 5.0]},
    },
    "objects": {
        "cup": {"kind": "cup", "at": "kitchenTable"},
        "apple": {"kind": "fruit", "at": "kitchenTable"},
        "banana": {"kind": "fruit", "at": "kitchenTable"},
        "pear": {"kind": "fruit", "at": "kitchenTable"},
        "knife": {"kind": "knife", "at": "customTable"},
        "basket": {"kind": "basket", "at": "customTable", "container": True, "capacity": 2},
        "table_lamp": {"kind": "lamp", "at": "officeDesk", "graspable": False},
    },
}


def make_profile(**over: Any) -> RobotProfile:
    """A valid profile (mobile, one arm, every sim skill) with ``over`` merged in."""
    data: dict[str, Any] = {
        "name": "bot", "type": "test_bot",
        "embodiment": {"mobile": True, "arms": 1, "speed": 1.0},
        "start": "kitchenTable", "telemetry_hz": 20,
        "skills": {"navigate": {}, "pick": {"duration_s": 1.0}, "place": {"duration_s": 1.0},
                   "handover": {"duration_s": 1.0}, "detect": {"duration_s": 0.2}},
    }
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return parse_profile(data, "test")


@pytest.fixture
def scene() -> dict[str, Any]:
    return copy.deepcopy(SCENE)


@pytest.fixture
def make() -> Any:
    """The :func:`make_profile` builder."""
    return make_profile
