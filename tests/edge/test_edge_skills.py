"""Each simulated skill's preconditions and effects, through the reusable harness (in-process)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from robobus.edge_agent.harness import EdgeHarness, run_skill

pytestmark = pytest.mark.anyio
SCALE = 0.01


async def test_run_skill_one_shot(scene: dict[str, Any]) -> None:
    fb, world = await run_skill(scene, "unitree_g1", "pick", {"object": "apple"},
                                at="kitchenTable")
    assert fb.status == "done" and fb.result == {"object": "apple", "holder": "g1"}
    assert world.holder("apple") == "g1"


async def test_navigate_moves_with_distance_over_speed(scene: dict[str, Any], make: Any) -> None:
    async with EdgeHarness(scene, time_scale=SCALE) as h:
        await h.add_robot(make(embodiment={"speed": 2.0}))
        t0 = anyio.current_time()
        fb = await h.run("bot", "navigate", target="officeDesk")
        elapsed = anyio.current_time() - t0
        assert fb.status == "done"
        dist = ((6 - 2) ** 2 + (5 - 1) ** 2) ** 0.5
        assert fb.result["distance_m"] == pytest.approx(dist, abs=1e-3)
        assert fb.result["duration_s"] == pytest.approx(dist / 2.0, abs=1e-3)
        assert elapsed >= dist / 2.0 * SCALE
        assert h.world.robots["bot"].place == "officeDesk"
        statuses = h.statuses(fb.command_id)
        assert statuses[:2] == ["accepted", "started"] and statuses[-1] == "done"
        progress = [f.progress for f in h.feedback[fb.command_id] if f.status == "progress"]
        assert progress == sorted(progress) and progress[-1] == 100.0
        bad = await h.run("bot", "navigate", target="moon")
        assert (bad.status, bad.reason_code) == ("failed", "precondition")
        assert "is_place(moon)" in (bad.reason or "")


async def test_fixed_robot_cannot_navigate(scene: dict[str, Any], make: Any) -> None:
    async with EdgeHarness(scene, time_scale=SCALE) as h:
        await h.add_robot("agilex_dual_arm", at="customTable")
        fb = await h.run("agilex", "navigate", target="kitchenTable")
        assert (fb.status, fb.reason_code) == ("rejected", "unknown_skill")


async def test_pick_preconditions_and_effects(scene: dict[str, Any], make: Any) -> None:
    async with EdgeHarness(scene, time_scale=SCALE) as h:
        await h.add_robot(make())
        far = await h.run("bot", "pick", object="knife")
        assert (far.status, far.reason_code) == ("failed", "precondition")
        assert "colocated(bot, knife)" in (far.reason or "")
        fixed = await h.run("bot", "pick", object="cup")
        assert fixed.status == "done" and h.world.holder("cup") == "bot"
        full = await h.run("bot", "pick", object="apple")
        assert "hand_free(bot)" in (full.reason or "") and h.world.holder("apple") is None
        await h.run("bot", "navigate", target="officeDesk")
        lamp = await h.run("bot", "place", object="cup", target="officeDesk")
        assert lamp.status == "done"
        heavy = await h.run("bot", "pick", object="table_lamp")
        assert "graspable(table_lamp)" in (heavy.reason or "")


async def test_place_into_container_and_refusals(scene: dict[str, Any], make: Any) -> None:
    async with EdgeHarness(scene, time_scale=SCALE) as h:
        await h.add_robot(make(embodiment={"arms": 2}))
        assert (await h.run("bot", "pick", object="apple")).status == "done"
        not_held = await h.run("bot", "place", object="banana", target="kitchenTable")
        assert "holding(bot, banana)" in (not_held.reason or "")
        away = await h.run("bot", "place", object="apple", target="basket")
        assert "colocated(bot, basket)" in (away.reason or "")
        await h.run("bot", "pick", object="pear")
        assert (await h.run("bot", "navigate", target="customTable")).status == "done"
        assert (await h.run("bot", "place", object="apple", target="basket")).status == "done"
        assert h.world.objects["apple"].location == "basket"
        assert h.world.place_of("apple") == "customTable"
        assert (await h.run("bot", "place", object="pear", target="basket")).status == "done"
        await h.run("bot", "pick", object="knife")
        full = await h.run("bot", "place", object="knife", target="basket")
        assert (full.status, full.reason_code) == ("failed", "full")  # memory refuses: capacity


async def test_handover_between_colocated_robots(scene: dict[str, Any], make: Any) -> None:
    async with EdgeHarness(scene, time_scale=SCALE) as h:
        await h.add_robot(make(name="a"))
        await h.add_robot(make(name="b"))
        await h.add_robot(make(name="c", start="officeDesk"))
        await h.run("a", "pick", object="apple")
        away = await h.run("a", "handover", object="apple", to="c")
        assert "colocated(a, c)" in (away.reason or "")
        fb = await h.run("a", "handover", object="apple", to="b")
        assert fb.status == "done" and h.world.holder("apple") == "b"
        await h.run("a", "pick", object="banana")
        busy = await h.run("a", "handover", object="banana", to="b")
        assert "hand_free(b)" in (busy.reason or "")
        self_ = await h.run("a", "handover", object="banana", to="a")
        assert self_.status == "failed"


async def test_detect_lists_kind_at_place(scene: dict[str, Any], make: Any) -> None:
    async with EdgeHarness(scene, time_scale=SCALE) as h:
        await h.add_robot(make())
        fb = await h.run("bot", "detect", kind="fruit")
        assert fb.result == {"place": "kitchenTable", "objects": ["apple", "banana", "pear"]}
        assert (await h.run("bot", "detect", kind="knife")).result["objects"] == []
        bad = await h.run("bot", "detect", colour="red")
        assert (bad.status, bad.reason_code) == ("rejected", "bad_args")


async def test_two_robots_contend_for_one_apple(scene: dict[str, Any], make: Any) -> None:
    async with EdgeHarness(scene, time_scale=SCALE) as h:
        await h.add_robot(make(name="a"))
        await h.add_robot(make(name="b"))
        ids = [await h.send(r, "pick", {"object": "apple"}) for r in ("a", "b")]
        results = [await h.wait(cid) for cid in ids]
        assert sorted(fb.status for fb in results) == ["done", "failed"]
        loser = next(fb for fb in results if fb.status == "failed")
        assert loser.reason_code == "already_held"  # both passed preconditions; memory refused
        winner = next(fb for fb in results if fb.status == "done")
        assert h.world.holder("apple") == winner.robot
        assert h.world.robots[loser.robot].holding == []
