"""Execution semantics in-process: concurrency, queueing, cancellation, timeouts, faults."""

from __future__ import annotations

from typing import Any

import anyio
import msgspec
import pytest

from robobus.edge_agent.harness import EdgeHarness
from robobus.schemas.messages import ErrorReport, FaultSpec, RobotState

pytestmark = pytest.mark.anyio


def first(h: EdgeHarness, cid: str, status: str) -> int:
    return next(f.ts_ns for f in h.feedback[cid] if f.status == status)


async def test_two_arms_run_concurrently_one_arm_queues(scene: dict[str, Any], make: Any) -> None:
    async with EdgeHarness(scene, time_scale=0.05) as h:
        await h.add_robot(make(name="two", embodiment={"arms": 2}))
        await h.add_robot(make(name="one"))
        a, b = [await h.send("two", "pick", {"object": o}) for o in ("apple", "banana")]
        c, d = [await h.send("one", "detect", {"kind": k}) for k in ("fruit", "cup")]
        e = await h.send("one", "navigate", {"target": "officeDesk"})  # base: runs beside detect
        for cid in (a, b, c, d, e):
            assert (await h.wait(cid)).status == "done"
        assert first(h, b, "started") < first(h, a, "done")  # both arms at once
        assert first(h, d, "started") >= first(h, c, "done")  # one sensor: queued
        assert first(h, e, "started") < first(h, c, "done")


async def test_cancel_running_navigate_leaves_robot_in_place(scene: dict[str, Any],
                                                             make: Any) -> None:
    async with EdgeHarness(scene, time_scale=0.2) as h:
        await h.add_robot(make(embodiment={"speed": 0.5}))
        cid = await h.send("bot", "navigate", {"target": "officeDesk"})
        await h.wait(cid, {"progress"})
        await h.cancel("bot", cid)
        fb = await h.wait(cid)
        assert (fb.status, fb.reason_code) == ("cancelled", "cancelled")
        assert h.world.robots["bot"].place == "kitchenTable"
        assert (await h.run("bot", "detect", kind="cup")).result["objects"] == ["cup"]


async def test_cancel_queued_command(scene: dict[str, Any], make: Any) -> None:
    async with EdgeHarness(scene, time_scale=0.2) as h:
        await h.add_robot(make(skills={"pick": {"duration_s": 5.0}}))
        running = await h.send("bot", "pick", {"object": "apple"})
        queued = await h.send("bot", "pick", {"object": "banana"})
        await h.wait(running, {"started"})
        async with h.bus.subscribe(h.topics.state("bot"), RobotState) as sub:
            async for msg in sub:  # the retained value, or the next tick
                if msg.data.busy:
                    assert msg.data.current == ["pick"]
                    break
        await h.cancel("bot", queued)
        assert (await h.wait(queued)).status == "cancelled"
        assert h.statuses(queued) == ["accepted", "cancelled"]
        await h.cancel("bot", running)
        assert (await h.wait(running)).status == "cancelled"
        assert h.world.holder("apple") is None


async def test_timeout_fails_with_reason(scene: dict[str, Any], make: Any) -> None:
    async with EdgeHarness(scene, time_scale=0.01) as h:
        await h.add_robot(make(skills={"pick": {"duration_s": 200.0, "timeout_s": 10.0}}))
        fb = await h.run("bot", "pick", object="apple")
        assert (fb.status, fb.reason_code) == ("failed", "timeout")
        assert h.world.holder("apple") is None
        cid = await h.send("bot", "detect", {"kind": "cup"}, timeout_s=500.0)
        assert (await h.wait(cid)).status == "done"


async def test_failure_injection_from_profile_and_topic(scene: dict[str, Any], make: Any) -> None:
    prof = make(faults=[{"skill": "pick", "object": "apple", "times": 1}])
    async with EdgeHarness(scene, time_scale=0.01) as h:
        await h.add_robot(prof)
        fb = await h.run("bot", "pick", object="apple")
        assert (fb.status, fb.reason_code) == ("failed", "injected")
        assert h.world.holder("apple") is None  # the world did not change
        assert (await h.run("bot", "pick", object="apple")).status == "done"  # retry works
        await h.fault("bot", FaultSpec(skill="navigate", times=1, reason="wheel slip"))
        await anyio.wait_all_tasks_blocked()
        nav = await h.run("bot", "navigate", target="customTable")
        assert nav.reason_code == "injected" and "wheel slip" in (nav.reason or "")
        assert h.world.robots["bot"].place == "kitchenTable"
        await h.fault("bot", FaultSpec(skill="detect", times=1))
        await anyio.wait_all_tasks_blocked()
        assert (await h.run("bot", "detect", kind="cup")).reason_code == "injected"


async def test_bad_commands_are_rejected_and_reported(scene: dict[str, Any], make: Any) -> None:
    async with EdgeHarness(scene, time_scale=0.01) as h:
        await h.add_robot(make())
        errors: list[ErrorReport] = []
        async with h.bus.subscribe(h.topics.errors, ErrorReport) as sub:
            topic = h.topics.skill("bot", "pick")
            await h.bus.publish(topic, b"\xc1garbage", qos=1)
            await h.bus.publish(topic, {"command_id": "w", "robot": "other",
                                        "args": {"object": "apple"}}, qos=1)
            await h.bus.publish(topic, {"command_id": "m", "skill": "place"}, qos=1)
            await h.bus.publish(topic, {"command_id": "n", "args": []}, qos=1)
            await h.bus.publish(topic, b'{"command_id": "j", "args": {"object": "nothing"}}',
                                qos=1)
            dup = await h.send("bot", "detect", {"kind": "cup"})
            await h.send("bot", "detect", {"kind": "fruit"}, command_id=dup)  # id reused
            with anyio.fail_after(5):
                async for msg in sub:
                    errors.append(msg.data)
                    if len(errors) == 6:
                        break
        assert sorted(e.code for e in errors) == sorted(
            ["decode", "wrong_robot", "skill_mismatch", "decode", "precondition", "duplicate"])
        assert (await h.wait("w")).reason_code == "wrong_robot"
        assert (await h.wait("j")).reason == ("precondition not met: known(nothing), "
                                              "colocated(bot, nothing), graspable(nothing)")
        assert (await h.run("bot", "pick", object="apple")).status == "done"  # still serving


async def test_a_resent_command_is_answered_with_where_it_stands(scene: dict[str, Any],
                                                                 make: Any) -> None:
    """At-least-once delivery: a repeat is never run twice; it gets the command's state."""
    # time scale 0.5: the navigate runs ~3 s, long enough to be repeated while it runs
    async with EdgeHarness(scene, time_scale=0.5) as h:
        await h.add_robot(make())
        cid = await h.send("bot", "navigate", {"target": "officeDesk"})
        await h.wait(cid, {"started"})
        async with h.bus.subscribe(h.topics.state("bot"), RobotState) as sub:
            with anyio.fail_after(5):
                async for msg in sub:
                    if msg.data.busy:
                        assert msg.data.commands == [cid]  # the brain compares it with its own
                        break
        await h.send("bot", "navigate", {"target": "officeDesk"}, command_id=cid)
        with anyio.fail_after(5):
            while h.statuses(cid).count("accepted") < 2:  # the repeat: "still yours, running"
                await anyio.sleep(0.01)
        done = await h.wait(cid, timeout=15)
        assert done.status == "done"
        await h.send("bot", "navigate", {"target": "officeDesk"}, command_id=cid)
        with anyio.fail_after(5):
            while h.statuses(cid).count("done") < 2:  # the repeat of a finished one: its result
                await anyio.sleep(0.01)
        assert h.statuses(cid).count("started") == 1  # ran once


async def test_state_telemetry_and_resume_after_restart(scene: dict[str, Any], make: Any) -> None:
    async with EdgeHarness(scene, time_scale=0.01) as h:
        await h.add_robot(make())
        await h.run("bot", "pick", object="apple")
        await h.run("bot", "navigate", target="officeDesk")
        async with h.bus.subscribe(h.topics.state("bot"), RobotState) as sub:
            state: RobotState = (await sub.get()).data
        assert (state.place, state.holding, state.busy) == ("officeDesk", ["apple"], False)
        assert (state.pose.x, state.pose.y) == (6.0, 5.0)
        await h.stop_robot("bot")
        await h.add_robot(make())  # profile says kitchenTable; memory remembers officeDesk
        async with h.bus.subscribe(h.topics.state("bot"), RobotState) as sub:
            async for msg in sub:
                if msg.data.ts_ns > state.ts_ns:
                    break
        assert (msg.data.place, msg.data.holding) == ("officeDesk", ["apple"])
        assert (await h.run("bot", "place", object="apple", target="officeDesk")).status == "done"


async def test_registration_carries_profile_and_skill_specs(scene: dict[str, Any]) -> None:
    from robobus.schemas.messages import Alive, RobotRegistration

    async with EdgeHarness(scene) as h:
        await h.add_robot("agilex_dual_arm")
        async with h.bus.subscribe(h.topics.registration("agilex"), RobotRegistration) as sub:
            reg: RobotRegistration = (await sub.get()).data
        async with h.bus.subscribe(h.topics.alive("agilex"), Alive) as sub:
            assert (await sub.get()).data.online
        assert reg.type == "agilex_dual_arm"
        assert reg.profile["mobile"] is False and reg.profile["hands"] == 2
        assert sorted(s.name for s in reg.skills) == ["detect", "handover", "pick", "place"]
        pick = next(s for s in reg.skills if s.name == "pick")
        assert pick.timeout_s == 30 and msgspec.json.encode(pick.args_schema)
