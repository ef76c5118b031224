"""Scheduler, feedback: a step's results, refused results, and replanning a task."""

from __future__ import annotations

import msgspec
import structlog

from robobus.brain_agent.errors import BrainError
from robobus.brain_agent.sched_base import SchedulerBase
from robobus.brain_agent.tasks import StepRun, Task
from robobus.schemas.messages import SkillFeedback

log = structlog.get_logger("brain.scheduler")
#: Answers to the brain's own cancel of an abandoned command: expected, not reported.
_CANCEL_ANSWERS = frozenset({"cancelled", "rejected"})


class Feedback(SchedulerBase):
    """Follows skill feedback and replans (a part of :class:`~robobus.brain_agent.scheduler.Scheduler`)."""

    async def on_feedback(self, fb: SkillFeedback) -> None:
        """Follow a step's feedback. Only the robot the step was dispatched to speaks for it
        (the topic's robot equals the payload's, checked on intake): anything else, or a
        result for a step the brain already ended, is refused with one report (issue 13)."""
        run = self.commands.get(fb.command_id)
        if run is None:
            if not self._late(fb):
                await self._orphan_feedback(fb)
            return
        if fb.robot != run.robot:
            self._foreign(fb, run.robot)
            return
        if fb.status == "progress":
            self.status.emit(run.task, "progress", step_id=run.step.id, robot=run.robot,
                             command_id=run.command_id,
                             skill=run.step.skill, progress=fb.progress)
        elif fb.status == "done":
            await self.step_ended(run, "done", None)
        elif fb.status in ("failed", "rejected", "cancelled"):
            reason = fb.reason or fb.reason_code or fb.status
            await self.step_ended(run, "cancelled" if fb.status == "cancelled" else "failed",
                                  f"{reason} [{fb.reason_code}]" if fb.reason_code else reason)

    async def step_ended(self, run: StepRun, outcome: str, reason: str | None) -> None:
        """A running step finished: record it, then continue, replan or wrap up its task."""
        if run.state != "running":
            return
        run.state = outcome  # type: ignore[assignment]
        if run.watchdog is not None:
            run.watchdog.cancel()
        self.commands.pop(run.command_id, None)
        for robot in run.holds:  # not a scan of every robot: O(1) per step at 1,000 robots
            if self.robot_run.get(robot) is run:
                del self.robot_run[robot]
        task = run.task
        fields = {"step_id": run.step.id, "robot": run.robot, "skill": run.step.skill,
                  "command_id": run.command_id}
        if outcome == "done":
            self.status.emit(task, "step_done", **fields)
        else:
            self.status.emit(task, "step_failed", reason=reason, **fields)
        if task.phase == "running":
            if outcome == "done" and task.complete():
                self.finish(task, "done", "all steps done")
            elif outcome != "done":
                task.failures += 1
                task.last_failure = f"{run.describe()} failed: {reason}"
                task.excluded.add(run.robot)
                self._to_replanning(task)
        await self._settle(task)
        await self.pump()

    def _late(self, fb: SkillFeedback) -> bool:
        """True (and reported) for feedback on a command whose step the brain ended itself."""
        ended = self.abandoned.get(fb.command_id)
        if ended is None:
            return False
        robot, why = ended
        if robot != fb.robot:
            self._foreign(fb, robot)
        elif fb.status not in _CANCEL_ANSWERS:
            self._refuse(fb, f"late {fb.status!r} for command {fb.command_id!r} of robot "
                             f"{robot!r}: the brain had ended its step ({why})", "late_result")
        return True

    def _foreign(self, fb: SkillFeedback, owner: str) -> None:
        """Refuse a result ``fb.robot`` sent for a command dispatched to ``owner``."""
        self._refuse(fb, f"robot {fb.robot!r} sent a result for command {fb.command_id!r}, "
                         f"which was dispatched to {owner!r}", "foreign_result")

    def _refuse(self, fb: SkillFeedback, reason: str, code: str) -> None:
        log.warning("feedback_refused", robot=fb.robot, command=fb.command_id, code=code)
        self.bus.report_error_soon(self.topics.feedback(fb.robot), reason, code,
                                   msgspec.msgpack.encode(fb))

    def _to_replanning(self, task: Task) -> None:
        task.phase = "replanning"
        task.drop_pending()

    async def _settle(self, task: Task) -> None:
        """Once a replanning/preempted task has nothing running, plan it again."""
        if task.running() or task.orphans:
            return
        if task.phase == "replanning":
            await self.replan(task)
        elif task.phase == "preempted":
            await self.resume_preempted()

    async def replan(self, task: Task) -> None:
        """Replan ``task`` from a fresh world, within the failure budget."""
        if task.failures > self.config.max_failures:
            self.finish(task, "failed", f"gave up after {task.failures} failures; last: "
                                        f"{task.last_failure}")
            return
        task.replans += 1
        self.status.emit(task, "replanning", reason=task.last_failure)
        await self.fleet.refresh()
        if task.phase != "replanning":
            return
        try:
            goals = task.goals or await self.goals_for(
                task, self.context(task, strict=False, project_ahead=False))
            task.goals = goals
            plan = self.make_plan(task, goals)
        except BrainError as exc:
            why = f"{exc.reason} (after: {task.last_failure})" if task.last_failure else exc.reason
            self.finish(task, "failed", why)
            return
        await self.install(task, plan)
