"""A step's result counts only from the robot it was dispatched to, and only while the brain
still waits for it (issues 12 and 13): a result from another robot, or one that arrives after
the brain declared the robot dead and ended its step, is refused with one report."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from robobus.bus import Subscription
from robobus.schemas.messages import ErrorReport, SkillCommand, SkillFeedback

pytestmark = pytest.mark.anyio


async def _first_command(rig: Any, task_id: str) -> SkillCommand:
    return await rig.until(lambda: next((c for c in rig.commands if c.task_id == task_id
                                         and c.action == "run"), None), timeout=30)


async def _report(sub: Subscription, code: str, timeout: float = 15.0) -> ErrorReport:
    with anyio.fail_after(timeout):
        while (msg := await sub.get()).data.code != code:
            pass
    return msg.data


def _forged(cmd: SkillCommand, robot: str) -> SkillFeedback:
    return SkillFeedback(command_id=cmd.command_id, robot=robot, skill=cmd.skill, status="done",
                         task_id=cmd.task_id, step_id=cmd.step_id)


async def test_other_robot_cannot_finish_a_step(rig_factory: Any) -> None:
    """Robot B says ``done`` for robot A's command (its id read from the bus): A's step is not
    finished by it, one ``foreign_result`` report is published, the task still completes."""
    async with rig_factory(time_scale=1.0) as rig, \
            rig.bus.subscribe(rig.topics.errors, ErrorReport) as errors:
        tid = await rig.send("bring the cup to the officeDesk")
        cmd = await _first_command(rig, tid)
        owner = rig.command_robot[cmd.command_id]
        other = next(r["name"] for r in rig.robots if r["name"] != owner)
        await rig.bus.publish(rig.topics.feedback(other), _forged(cmd, other), qos=1)
        report = await _report(errors, "foreign_result")
        assert other in report.reason and owner in report.reason
        assert not any(s.status == "step_done" and s.step_id == cmd.step_id
                       for s in rig.statuses.get(tid, [])), rig.seen(tid)
        final = await rig.status(tid, timeout=60)
        assert final.status == "done", final.reason
        done = [s for s in rig.statuses[tid] if s.status == "step_done" and s.step_id == cmd.step_id]
        assert [s.robot for s in done][:1] == [owner]


async def test_late_result_of_dead_robot_is_refused(rig_factory: Any) -> None:
    """Once the brain declared a robot offline and ended its step, that robot's ``done`` for the
    old command is refused (``late_result``) and does not touch the task."""
    async with rig_factory(time_scale=1.0) as rig, \
            rig.bus.subscribe(rig.topics.errors, ErrorReport) as errors:
        tid = await rig.send("bring the cup to the officeDesk")
        cmd = await _first_command(rig, tid)
        owner = rig.command_robot[cmd.command_id]
        await rig.crash(owner)
        await rig.until(lambda: any(s.status == "step_failed" and s.step_id == cmd.step_id
                                    for s in rig.statuses.get(tid, [])), timeout=30)
        before = list(rig.statuses[tid])
        await rig.bus.publish(rig.topics.feedback(owner), _forged(cmd, owner), qos=1)
        report = await _report(errors, "late_result")
        assert cmd.command_id in report.reason and "offline" in report.reason
        after = [s for s in rig.statuses[tid][len(before):] if s.robot == owner]
        assert not any(s.status == "step_done" for s in after), rig.seen(tid)
