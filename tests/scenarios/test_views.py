"""Progress views (rich table and log lines) and ``robobus up``'s fleet from profiles."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from robobus.launch.errors import LaunchError
from robobus.launch.observe import Observed, Observer
from robobus.launch.progress import LineView, LiveView
from robobus.launch.up import robots_from_profiles
from robobus.schemas.topics import Topics

pytestmark = pytest.mark.anyio


def _observer(events: list[Observed], robots: list[str]) -> Observer:
    obs = Observer(Topics("robobus"), robots)
    for ev in events:
        obs.add(ev)
    return obs


async def test_observer_folds_tasks_and_robots(demo_events: list[Observed]) -> None:
    obs = _observer(demo_events, ["realman_1", "g1", "agilex", "spare"])
    assert obs.tasks["t0"].status == "done" and obs.tasks["urgent"].status == "done"
    assert obs.tasks["t0"].replans == 1
    assert obs.robots["spare"].online is False
    assert obs.robots["g1"].last == "navigate officeDesk: done"


async def test_live_view_renders_tasks_and_robots(demo_events: list[Observed]) -> None:
    out = io.StringIO()
    view = LiveView(Console(file=out, force_terminal=True, width=120))
    obs = Observer(Topics("robobus"), ["realman_1", "g1", "agilex", "spare"])
    view.attach(obs, "demo on memory://x")
    for ev in demo_events:
        obs.add(ev)
    view.refresh()
    view.close()
    text = out.getvalue()
    for word in ("demo on memory://x", "urgent", "replans", "realman_1", "offline", "fleet ready"):
        assert word in text


async def test_line_view_prints_notable_events(demo_events: list[Observed]) -> None:
    out = io.StringIO()
    obs = Observer(Topics("robobus"), ["g1"])
    LineView(out).attach(obs, "title")
    for ev in demo_events:
        obs.add(ev)
    lines = out.getvalue().splitlines()
    assert any("fleet ready" in line for line in lines)
    assert any("g1: pick apple failed [injected]" in line for line in lines)
    assert any("task t0: replanning" in line for line in lines)
    assert not any("progress" in line for line in lines)


def test_up_robots_from_profiles(repo_root: Path) -> None:
    places = {"kitchenTable", "customTable", "officeDesk"}
    robots = robots_from_profiles(["unitree_g1", "unitree_g1", "agilex_dual_arm"], places, repo_root)
    assert [(r.name, r.at) for r in robots] == [("g1", "kitchenTable"), ("g1_2", "kitchenTable"),
                                               ("agilex", "customTable")]
    with pytest.raises(LaunchError, match="starts at 'kitchenTable', which the scene lacks"):
        robots_from_profiles(["unitree_g1"], {"officeDesk"}, repo_root)
