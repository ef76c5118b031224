"""Scheduler, dispatch: ready steps to robots, the step watchdog, resends from robot states."""

from __future__ import annotations

import asyncio

import anyio
import structlog

from robobus.brain_agent.sched_base import SchedulerBase
from robobus.brain_agent.sharing import involved
from robobus.brain_agent.tasks import StepRun
from robobus.bus import BusError
from robobus.schemas.messages import RobotState, SkillCommand

log = structlog.get_logger("brain.scheduler")
#: Commands whose step the brain ended itself (robot offline, timeout): a result for one of
#: them arriving later is refused and reported, never applied (issue 12).
MAX_ABANDONED = 10_000


class Dispatch(SchedulerBase):
    """Sends ready steps and watches them (a part of :class:`~robobus.brain_agent.scheduler.Scheduler`)."""

    async def pump(self) -> None:
        """Dispatch every ready step whose robot is free, higher priority first."""
        running = [t for t in self.live.values() if t.phase == "running"]
        for task in sorted(running, key=lambda t: (-t.priority, t.order)):
            if task.phase != "running":
                continue
            for run in task.ready():
                if task.phase == "running" and self._may_run(run):
                    await self.dispatch(run)

    def _may_run(self, run: StepRun) -> bool:
        """Every robot the step involves is idle and not held by a task ahead in its line."""
        robots = involved(run.step, self.fleet.registrations)
        return (not any(r in self.robot_run for r in robots)
                and self.lines.first(run, robots, self.fleet.registrations))

    async def dispatch(self, run: StepRun) -> None:
        task, step = run.task, run.step
        run.command_id = f"{task.id}.{step.id}.{task.replans}"
        run.state = "running"
        self.commands[run.command_id] = run
        run.holds = tuple(involved(step, self.fleet.registrations))  # a handover's receiver too
        for robot in run.holds:
            self.robot_run[robot] = run
        spec = next((s for s in self.fleet.registrations[run.robot].skills if s.name == step.skill), None)
        timeout = (spec.timeout_s if spec else 60.0) * self.config.timeout_scale
        cmd = SkillCommand(run.command_id, step.skill, dict(step.args), task_id=task.id,
                           step_id=step.id, timeout_s=timeout)
        # the loop's clock (anyio.current_time() is the same clock, found anew on each call)
        loop = asyncio.get_running_loop()
        run.command, run.sent_at = cmd, loop.time()
        try:
            # the task's statuses go first, and with the command as one batch (one control
            # message on ZeroMQ): its record reaches the wire before the command does
            with self.bus.coalesce():
                await self.status.flush()
                ack = await self.bus.post(self.topics.skill(run.robot, step.skill), cmd, qos=1)
            await ack
        except BusError as exc:
            await self.step_ended(run, "failed", f"could not send the command: {exc}")
            return
        self.status.emit(task, "dispatched", step_id=step.id, robot=run.robot, skill=step.skill,
                         command_id=run.command_id)
        limit = timeout + self.config.timeout_margin_s
        # A loop timer, not a task with a cancel scope: arming and cancelling one per step is
        # on the dispatch path (anyio's CancelScope.cancel formats the task's repr).
        run.watchdog = loop.call_later(limit, self._watchdog, run, limit)

    def reconcile(self, state: RobotState) -> None:
        """Compare a robot's state with the step the brain believes it runs.

        A command missing from ``state.commands`` a while after it was sent was lost on the
        way, or its result was (a broker restart drops both): send it again. The robot answers
        a repeat with where the command stands and never runs it twice.
        """
        run = self.robot_run.get(state.robot)
        if run is None or run.state != "running" or run.command is None or run.robot != state.robot:
            return
        if run.command_id in state.commands or (state.busy and not state.commands):
            return  # held; or an edge too old to list its commands
        now = anyio.current_time()
        if now - run.sent_at < self.config.resend_after_s:
            return
        run.sent_at = now
        run.resends += 1
        log.info("command_resent", task=run.task.id, step=run.step.id, robot=run.robot,
                 command=run.command_id, resends=run.resends)
        self._spawn("command resend", run.task, self._send, run, run.command,
                    "command_resend_failed")

    def _watchdog(self, run: StepRun, limit: float) -> None:
        run.watchdog = None
        if run.state == "running":
            try:
                self._spawn("step timeout", run.task, self._timed_out, run, limit,
                            name=f"timeout-{run.command_id}")
            except RuntimeError:  # the brain is stopping: its task group is closed
                pass

    async def _timed_out(self, run: StepRun, limit: float) -> None:
        if run.state != "running":
            return
        await self._send_cancel(run)
        self._abandon(run, "its step timed out")
        await self.step_ended(run, "failed", f"no result within {limit:.1f}s (timeout)")

    def _abandon(self, run: StepRun, why: str) -> None:
        """Remember that the brain ended ``run`` itself: a late result for it is refused."""
        self.abandoned[run.command_id] = (run.robot, why)
        while len(self.abandoned) > MAX_ABANDONED:
            self.abandoned.popitem(last=False)

    async def _send_cancel(self, run: StepRun) -> None:
        cmd = SkillCommand(run.command_id, run.step.skill, task_id=run.task.id,
                           step_id=run.step.id, action="cancel")
        await self._send(run, cmd, "cancel_not_sent")

    async def _send(self, run: StepRun, cmd: SkillCommand, failed: str) -> None:
        """A follow-up command (a cancel, a resend) to ``run``'s robot. A failure is only
        logged as ``failed``: the watchdog, the robot's will or the next state settles it."""
        try:
            await self.bus.publish(self.topics.skill(run.robot, cmd.skill), cmd, qos=1)
        except BusError as exc:
            log.warning(failed, task=run.task.id, step=run.step.id, robot=run.robot,
                        command=cmd.command_id, error=str(exc))
