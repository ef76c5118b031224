"""The brain agent with the real memory and edge agents (in-process, ``memory://`` bus)."""

from __future__ import annotations

import pytest

from bench import scenes
from robobus.brain_agent.config import BrainConfig
from robobus.schemas.messages import FaultSpec

pytestmark = pytest.mark.anyio
DEMO = "Bring the fruit nearest the cup and a fruit knife to the office desk"


async def test_demo_instruction_status_stream_and_world(rig_factory) -> None:  # noqa: ANN001
    async with rig_factory() as rig:
        tid = await rig.send(DEMO)
        st = await rig.status(tid)
        assert st.status == "done", st.reason
        seen = rig.seen(tid)
        assert seen[:2] == ["accepted", "planned"]
        assert {"dispatched", "step_done"} <= set(seen)
        planned = next(s for s in rig.statuses[tid] if s.status == "planned")
        assert planned.plan is not None and planned.plan.steps
        world = await rig.world()
        assert world.place_of("apple") == world.place_of("knife") == "officeDesk"
        assert world.place_of("banana") == "kitchenTable"


@pytest.mark.parametrize(("text", "check"), [
    ("put the knife in the basket", lambda w: w.objects["knife"].location == "basket"),
    ("g1, go to the custom table", lambda w: w.robots["g1"].place == "customTable"),
    ("realman_1, pick up the knife", lambda w: w.holder("knife") == "realman_1"),
    ("hand the banana to agilex", lambda w: w.holder("banana") == "agilex"),
    ("bring all fruit on the kitchen table to the custom table",
     lambda w: w.place_of("apple") == w.place_of("banana") == "customTable"),
    ("take the fruit nearest the cup to the office desk",
     lambda w: w.place_of("apple") == "officeDesk" and w.place_of("banana") == "kitchenTable"),
])
async def test_each_instruction_form(rig_factory, text: str, check) -> None:  # noqa: ANN001
    async with rig_factory() as rig:
        tid = await rig.send(text)
        st = await rig.status(tid)
        assert st.status == "done", st.reason
        assert check(await rig.world())


async def test_bad_instructions_fail_clearly_and_brain_keeps_serving(rig_factory) -> None:  # noqa: ANN001
    async with rig_factory() as rig:
        bad = {
            "do a backflip": "do not understand",
            "bring the pear to the office desk": "unknown object 'pear'",
            "agilex, go to the office desk": "fixed",
            "cancel task nope": "cannot cancel task 'nope'",
        }
        ids = {await rig.send(text): fragment for text, fragment in bad.items()}
        for tid, fragment in ids.items():
            st = await rig.status(tid)
            assert st.status == "failed" and fragment in (st.reason or ""), st.reason
        await rig.bus.publish(rig.topics.instructions, b"\x81\xa4text\x05", qos=1)  # bad msgpack
        tid = await rig.send("put the knife in the basket")
        assert (await rig.status(tid)).status == "done"


async def test_replan_after_injected_skill_failure(rig_factory) -> None:  # noqa: ANN001
    async with rig_factory() as rig:
        await rig.fault("agilex", FaultSpec(skill="pick", times=1))
        tid = await rig.send("put the knife in the basket")
        st = await rig.status(tid)
        assert st.status == "done", st.reason
        seen = rig.seen(tid)
        assert "step_failed" in seen and "replanning" in seen
        assert st.replans >= 1
        world = await rig.world()
        assert world.objects["knife"].location == "basket"


async def test_gives_up_after_bounded_retries(rig_factory) -> None:  # noqa: ANN001
    async with rig_factory(brain=BrainConfig(max_failures=1)) as rig:
        for robot in ("agilex", "realman_1", "g1"):
            await rig.fault(robot, FaultSpec(skill="pick", times=10))
        tid = await rig.send("put the knife in the basket")
        st = await rig.status(tid)
        assert st.status == "failed" and "gave up after 2 failures" in st.reason, st.reason


async def test_skill_timeout_is_a_failure_and_bounded(rig_factory) -> None:  # noqa: ANN001
    config = BrainConfig(timeout_scale=0.0005, timeout_margin_s=0.0, max_failures=1)
    async with rig_factory(brain=config, time_scale=0.1) as rig:
        tid = await rig.send("g1, go to the office desk")
        st = await rig.status(tid)
        assert st.status == "failed" and "gave up after 2 failures" in st.reason, st.reason
        failures = [s.reason or "" for s in rig.statuses[tid] if s.status == "step_failed"]
        assert failures and all("timeout" in r or "timed out" in r for r in failures), failures


async def test_two_concurrent_tasks_on_disjoint_robots(rig_factory) -> None:  # noqa: ANN001
    async with rig_factory() as rig:
        a = await rig.send("realman_1, go to the office desk")
        b = await rig.send("g1, go to the custom table")
        sa, sb = await rig.status(a), await rig.status(b)
        assert sa.status == sb.status == "done"
        dispatched = [c.task_id for c in rig.commands if c.action == "run"]
        assert dispatched[:2] in ([a, b], [b, a]), "both dispatched before either finished"
        world = await rig.world()
        assert world.robots["realman_1"].place == "officeDesk"
        assert world.robots["g1"].place == "customTable"


async def test_priority_preemption(rig_factory) -> None:  # noqa: ANN001
    async with rig_factory(time_scale=0.1) as rig:
        low = await rig.send("g1, go to the office desk", priority=0)
        await rig.status(low, {"dispatched"})
        high = await rig.send("g1, pick up the banana", priority=5)
        st = await rig.status(high)
        assert st.status == "done", st.reason
        assert "preempted" in rig.seen(low)
        assert any(c.action == "cancel" and c.task_id == low for c in rig.commands)
        st_low = await rig.status(low)
        assert st_low.status == "done", st_low.reason
        world = await rig.world()
        assert world.robots["g1"].place == "officeDesk" and world.holder("banana") == "g1"


async def test_cancel_task(rig_factory) -> None:  # noqa: ANN001
    async with rig_factory(time_scale=0.1) as rig:
        tid = await rig.send("g1, go to the office desk")
        await rig.status(tid, {"dispatched"})
        stop = await rig.send(f"cancel task {tid}")
        assert (await rig.status(stop)).status == "done"
        assert (await rig.status(tid)).status == "cancelled"


async def test_reassign_when_robot_dies_mid_skill(rig_factory) -> None:  # noqa: ANN001
    async with rig_factory(scene=scenes.REASSIGN_SCENE, robots=scenes.REASSIGN_ROBOTS,
                           time_scale=0.05) as rig:
        tid = await rig.send("bring the bolt to home")
        await rig.until(lambda: any(c.skill == "navigate" for c in rig.commands))
        first = next(c for c in rig.commands if c.skill == "navigate")
        victim = rig.command_robot[first.command_id]
        await rig.crash(victim)
        st = await rig.status(tid)
        assert st.status == "done", st.reason
        other = ({"near_bot", "far_bot"} - {victim}).pop()
        world = await rig.world()
        assert world.place_of("bolt") == "home"
        assert any(c.command_id.startswith(tid) and c.args.get("object") == "bolt" for c in rig.commands)
        assert any(s.robot == other for s in rig.statuses[tid] if s.status == "step_done")


async def test_brain_crash_and_restart_resumes_task(rig_factory) -> None:  # noqa: ANN001
    async with rig_factory(time_scale=0.05) as rig:
        tid = await rig.send(DEMO)
        await rig.until(lambda: rig.seen(tid).count("step_done") >= 1)
        await rig.crash("brain")
        await rig.start_brain()
        st = await rig.status(tid, timeout=20)
        assert st.status == "done", st.reason
        assert "brain restarted" in " ".join(s.reason or "" for s in rig.statuses[tid])
        world = await rig.world()
        assert world.place_of("apple") == world.place_of("knife") == "officeDesk"


async def test_equal_priority_task_queues_behind_the_robots_owner(rig_factory) -> None:  # noqa: ANN001
    async with rig_factory(time_scale=0.05) as rig:
        first = await rig.send("g1, go to the office desk")
        second = await rig.send("g1, go to the custom table")
        assert (await rig.status(first)).status == "done"
        assert (await rig.status(second)).status == "done"
        assert "preempted" not in rig.seen(first)
        world = await rig.world()
        assert world.robots["g1"].place == "customTable"


ONE_HAND_SCENE = {
    "places": {"shelf": {"position": [0.0, 0.0]}, "desk": {"position": [20.0, 0.0]},
               "sink": {"position": [0.0, 3.0]}},
    "objects": {"book": {"kind": "book", "at": "shelf"}, "mug": {"kind": "cup", "at": "shelf"}},
}
ONE_HAND_ROBOT = [{"name": "solo", "mobile": True, "hands": 1, "speed": 1.0, "start": "shelf"}]


async def test_preempted_one_handed_robot_puts_down_its_load(rig_factory) -> None:  # noqa: ANN001
    async with rig_factory(scene=ONE_HAND_SCENE, robots=ONE_HAND_ROBOT, time_scale=0.05) as rig:
        slow = await rig.send("bring the book to the desk", priority=0)
        await rig.until(lambda: "step_done" in rig.seen(slow))  # the book is in its only hand
        urgent = await rig.send("bring the mug to the sink", priority=5)
        assert (await rig.status(urgent)).status == "done"
        assert (await rig.status(slow, timeout=20)).status == "done"
        world = await rig.world()
        assert world.place_of("mug") == "sink" and world.place_of("book") == "desk"
