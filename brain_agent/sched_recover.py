"""Scheduler, recovery: robots going offline, preemption, cancellation, ending tasks, and
resuming tasks after a brain restart."""

from __future__ import annotations

import anyio
import structlog

from robobus.brain_agent.errors import PlanningError
from robobus.brain_agent.sched_base import SchedulerBase
from robobus.brain_agent.sched_plan import _goal_json
from robobus.brain_agent.search import plan_goals
from robobus.brain_agent.sharing import claimed, plan_objects
from robobus.brain_agent.tasks import Task
from robobus.schemas.messages import SkillFeedback

log = structlog.get_logger("brain.scheduler")


class Recovery(SchedulerBase):
    """Handles robots leaving, preemption, cancellation and crash recovery (a part of
    :class:`~robobus.brain_agent.scheduler.Scheduler`)."""

    async def on_offline(self, robot: str) -> None:
        run = self.robot_run.get(robot)
        if run is not None:
            self._abandon(run, f"robot {robot} went offline")
            await self.step_ended(run, "failed", f"robot {robot} went offline")
        for task in list(self.live.values()):
            if task.phase == "running" and robot in claimed(task, self.fleet.registrations):
                task.last_failure = f"robot {robot} went offline"
                task.failures += 1
                self._to_replanning(task)
                await self._settle(task)

    async def preempt(self, victim: Task, by: Task) -> None:
        self.released |= plan_objects(victim)
        victim.phase = "preempted"
        victim.drop_pending()
        self.status.emit(victim, "preempted", reason=f"preempted by task {by.id} "
                                                     f"(priority {by.priority} > {victim.priority})")
        for run in victim.running():
            await self._send_cancel(run)

    async def resume_preempted(self) -> None:
        """Replan preempted tasks (highest priority first) whose robots are free again."""
        for task in sorted(self.live.values(), key=lambda t: (-t.priority, t.order)):
            if task.phase != "preempted" or task.running() or task.goals is None:
                continue
            try:
                plan = plan_goals(task.goals, self.context(task, strict=True),
                                  planner=self.planner.name,
                                  goal_text=_goal_json.encode(task.goals).decode(),
                                  sharing=self.sharing(task))
            except PlanningError:
                if not any(t.phase == "running" for t in self.live.values()):
                    task.last_failure = task.last_failure or "preempted"
                    self._to_replanning(task)
                    await self.replan(task)
                continue
            task.replans += 1
            await self.install(task, plan)

    async def cancel_task(self, target_id: str, by: Task) -> None:
        target = self.tasks.get(target_id)
        if target is None or not target.active:
            state = "unknown" if target is None else f"already {target.phase}"
            self.finish(by, "failed", f"cannot cancel task {target_id!r}: {state}")
            return
        running = target.running()
        self.released |= plan_objects(target)
        self.lines.leave(target)
        target.phase = "cancelled"
        target.drop_pending()
        self.status.emit(target, "cancelled", reason=f"cancelled by task {by.id}")
        for run in running:
            await self._send_cancel(run)
        self.finish(by, "done", f"cancelled task {target_id}")

    def finish(self, task: Task, phase: str, reason: str) -> None:
        """End a task with ``done``/``failed``/``cancelled`` and a readable reason."""
        self._left_in_hand(task, phase)
        task.phase = phase  # type: ignore[assignment]
        task.drop_pending()
        self.lines.leave(task)
        self.live.pop(task.id, None)
        self.status.emit(task, phase, reason=reason)
        self._spawn("dispatch after a task", task, self._after_finish, name=f"after-{task.id}")

    def _left_in_hand(self, task: Task, phase: str) -> None:
        """What ``task`` leaves in robots' hands: kept if it is done (it was the point: "pick up
        the sock"), released for other tasks if it failed or was cancelled."""
        objects = plan_objects(task)
        if phase == "done":
            self.released -= objects
            for obj in objects:
                self.kept_by[obj] = task.id
        else:
            self.released |= objects

    async def _after_finish(self) -> None:
        await self.resume_preempted()
        await self.pump()

    # -- crash recovery ------------------------------------------------------------------
    async def _orphan_feedback(self, fb: SkillFeedback) -> None:
        task = self.tasks.get(fb.task_id or "")
        if task is None or fb.step_id not in task.orphans:
            return
        if task.orphans[fb.step_id] != fb.robot:
            self._refuse(fb, f"robot {fb.robot!r} sent a result for step {fb.step_id!r} of task "
                             f"{task.id!r}, which runs on {task.orphans[fb.step_id]!r}",
                         "foreign_result")
            return
        if fb.status in ("done", "failed", "rejected", "cancelled"):
            del task.orphans[fb.step_id]
            await self._settle(task)

    async def resume(self, task: Task, orphans: dict[str, str]) -> None:
        """Adopt an active task from task memory: wait for its in-flight steps, then replan."""
        task.phase = "replanning"
        task.orphans = dict(orphans)
        self.add(task)
        if task.orphans:
            self.orphaned[task.id] = task
        self.status.emit(task, "replanning", reason="brain restarted; resuming from task memory")
        if task.orphans:
            self._spawn("orphan wait", task, self._orphan_timeout, task,
                        name=f"orphans-{task.id}")
        await self._wait_world()
        await self._settle(task)

    async def _orphan_timeout(self, task: Task) -> None:
        await anyio.sleep(self.config.orphan_wait_s)
        if task.orphans:
            task.orphans.clear()
            await self._settle(task)

    def robot_idle(self, robot: str) -> None:
        """A fresh state says ``robot`` is idle: steps the previous brain sent it have ended.

        Only resumed tasks have such steps (:attr:`orphaned`): with none, an idle state costs
        nothing here (it walked every live task for each of 10,000 states a second; issue 16).
        """
        for task in list(self.orphaned.values()):
            if self.live.get(task.id) is not task or not task.orphans:
                del self.orphaned[task.id]  # ended, or its orphans settled otherwise
                continue
            for step, who in list(task.orphans.items()):
                if who == robot:
                    del task.orphans[step]
                    self._spawn("replan", task, self._settle, task)
