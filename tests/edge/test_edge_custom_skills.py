"""Third-party skills through the harness: own registry, params, crashes, sequential resources."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import msgspec
import pytest

from robobus.edge_agent.harness import EdgeHarness
from robobus.edge_agent.profile import parse_profile
from robobus.skills.context import SkillContext
from robobus.skills.errors import SkillFailed
from robobus.skills.registry import SkillRegistry
from robobus.testing import robobus_cmd

pytestmark = pytest.mark.anyio
MINE = SkillRegistry()


class WaveArgs(msgspec.Struct):
    times: int = 1


class WaveResult(msgspec.Struct):
    waves: int
    style: str


@MINE.skill("wave", timeout=5, resource="none", preconditions=["alive(?robot)"])
async def wave(ctx: SkillContext, args: WaveArgs) -> WaveResult:
    """Wave a hand (no resource: never queues)."""
    await ctx.work(ctx.duration(0.5) * args.times)
    return WaveResult(waves=args.times, style=ctx.params.options.get("style", "plain"))


@MINE.skill("explode", timeout=5, resource="arm")
async def explode(ctx: SkillContext, args: WaveArgs) -> None:
    """A buggy skill: the command fails, the agent lives."""
    raise RuntimeError("boom")


@MINE.skill("refuse", timeout=5, resource="arm")
async def refuse(ctx: SkillContext, args: WaveArgs) -> None:
    raise SkillFailed("not today", "tired")


def profile() -> Any:
    return parse_profile({"name": "waver", "type": "waver", "start": "kitchenTable",
                          "embodiment": {"mobile": False, "arms": 1},
                          "skills": {"wave": {"options": {"style": "royal"}}, "explode": {},
                                     "refuse": {}}}, "test", MINE)


async def test_custom_registry_params_and_failures(scene: dict[str, Any]) -> None:
    async with EdgeHarness(scene, time_scale=0.01) as h:
        await h.add_robot(profile(), registry=MINE)
        fb = await h.run("waver", "wave", times=3)
        assert (fb.status, fb.result) == ("done", {"waves": 3, "style": "royal"})
        boom = await h.run("waver", "explode")
        assert (boom.status, boom.reason_code) == ("failed", "error")
        assert "RuntimeError('boom')" in (boom.reason or "")
        tired = await h.run("waver", "refuse")
        assert (tired.reason_code, tired.reason) == ("tired", "not today")
        assert (await h.run("waver", "pick", object="apple")).reason_code == "unknown_skill"
        assert (await h.run("waver", "wave")).status == "done"  # still serving


def test_profiles_cli_validates(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntype: y\nembodiment: {mobile: false}\nskills: {navigate: {}}\n")
    proc = subprocess.run(robobus_cmd("profiles", "unitree_g1", str(bad)), capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 2
    assert "ok       unitree_g1" in proc.stdout
    assert "skills.navigate: needs a 'base'" in proc.stderr
