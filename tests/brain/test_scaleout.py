"""Several brains on one fleet (issue 16, item 4): one active brain per robot group, agents as
processes on the ZeroMQ hub."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections import defaultdict
from pathlib import Path

import anyio
import pytest

from bench import scenes
from robobus.brain_agent.groups import GroupError, RobotGroup
from robobus.bus import Bus, BusOptions, Subscription
from robobus.schemas.memory import TaskRecord
from robobus.schemas.messages import BrainStatus, Instruction, Plan, PlanStep, SkillCommand
from tests.brain.test_processes import Fleet

pytestmark = pytest.mark.anyio
GROUPS = {"ants": "ant_*", "bees": "bee_*"}
ROBOTS = [{"name": f"{g}_{i}", "mobile": True, "hands": 1, "speed": 1.0, "start": start}
          for g in ("ant", "bee") for i, start in ((1, "kitchenTable"), (2, "customTable"))]


def test_group_selector_task_ids_and_recovery() -> None:
    ants = RobotGroup.parse("ants", "ant_*, queen")
    assert ants.has("ant_7") and ants.has("queen") and not ants.has("bee_1")
    assert ants.new_task_id().startswith("ants-") and ants.new_task_id() != ants.new_task_id()
    plan = lambda robot: Plan("x", [PlanStep("s1", robot, "navigate")])  # noqa: E731
    assert ants.owns(TaskRecord("x1", plan=plan("ant_1")))
    assert not ants.owns(TaskRecord("ants-1", plan=plan("bee_1")))  # the plan decides
    assert ants.owns(TaskRecord("ants-2")) and not ants.owns(TaskRecord("bees-2"))
    for name, robots in (("a/b", "x"), ("", "x"), ("ok", " , ")):
        with pytest.raises(GroupError):
            RobotGroup.parse(name, robots)


async def _commands(sub: Subscription, fl: Fleet, senders: dict[str, set[str]],
                    *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    task_status.started()
    async for msg in sub:
        senders[fl.topics.robot_of(msg.topic) or "?"].add(msg.sender or "?")


async def _send(fl: Fleet, bus: Bus, group: str, text: str) -> str:
    """Publish on the group's topic until its brain accepts (same id: duplicates ignored)."""
    tid = secrets.token_hex(3)
    with anyio.fail_after(30):
        while tid not in fl.statuses:
            await bus.publish(fl.topics.group_instructions(group), Instruction(text, task_id=tid),
                              qos=1)
            with anyio.move_on_after(0.5):
                await fl.until(lambda: tid in fl.statuses)
    return tid


async def _ready(sub: Subscription, want: set[str], gone: str = "") -> dict[str, BrainStatus]:
    """group -> its active brain's ``ready`` birth, once every group in ``want`` has one (of
    another instance than ``gone``)."""
    seen: dict[str, BrainStatus] = {}
    with anyio.fail_after(30):
        while not want <= set(seen):
            msg = await sub.get()
            if msg.data.state == "ready" and msg.data.instance != gone:
                seen[msg.topic.split("/")[-3]] = msg.data
    return seen


async def _done(fl: Fleet, *tids: str) -> None:
    for tid in tids:
        st = await fl.until(lambda t=tid: fl.status(t), timeout=30)
        assert st.status == "done", (tid, st.reason)


async def test_two_groups_two_brains_never_share_a_robot(tmp_path: Path, hub_url: str) -> None:
    """Two groups (one with a standby): both groups' instructions complete; every command a
    robot gets comes from its group's brain; kill -9 of one group's active brain does not stop
    the other group, and that group's standby takes over."""
    with contextlib.ExitStack() as stack:
        fl = Fleet(tmp_path, hub_url, scenes.DEMO_SCENE, ROBOTS, stack)
        fl.start_memory()
        for spec in ROBOTS:
            fl.start_edge(spec)
        for group, robots in GROUPS.items():
            fl.spawn(f"brain-{group}", "brain", "--group", group, "--robots", robots)
        async with Bus.connect(hub_url, name="tester", options=BusOptions(prefix=fl.prefix)) \
                as bus, bus.subscribe(fl.topics.group_brain_status(), BrainStatus) as status, \
                bus.subscribe(fl.topics.skill(), SkillCommand) as cmds, \
                anyio.create_task_group() as tg:
            senders: dict[str, set[str]] = defaultdict(set)
            await tg.start(fl.watch, bus)
            await tg.start(_commands, cmds, fl, senders)
            await fl.registered(bus)
            first = await _ready(status, set(GROUPS))
            fl.spawn("brain-ants-2", "brain", "--group", "ants", "--robots", GROUPS["ants"])
            a1 = await _send(fl, bus, "ants", "bring the apple to the office desk")
            b1 = await _send(fl, bus, "bees", "bring the knife to the kitchen table")
            await _done(fl, a1, b1)
            fl.kill9("brain-ants")  # the standby has had the whole task to come up
            killed = time.monotonic()
            b2 = await _send(fl, bus, "bees", "bring the banana to the office desk")
            await _done(fl, b2)
            bees_on = time.monotonic() - killed
            ants = (await _ready(status, {"ants"}, first["ants"].instance))["ants"]
            a2 = await _send(fl, bus, "ants", "bring the cup to the custom table")
            await _done(fl, a2)
            tg.cancel_scope.cancel()
    assert ants.instance != first["ants"].instance  # the standby took over
    assert first["ants"].brain == "brain-ants" and first["bees"].brain == "brain-bees"
    print(f"SCALEOUT bees done {bees_on:.2f} s after kill -9 of the ants' brain; senders "
          f"{dict(senders)}")
    assert {r.split("_")[0] for r in senders} == {"ant", "bee"}, senders  # both groups worked
    for robot, who in senders.items():  # one brain per robot, and its group's
        assert who == {f"brain-{robot.split('_')[0]}s"}, (robot, who)
    by_task = {c.task_id for _, c in fl.commands}
    assert by_task == {a1, b1, b2, a2}, by_task
