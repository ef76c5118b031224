"""Runs skill commands concurrently where resources allow, queues the rest.

One skill at a time per resource unit: the base, each arm, each sensor. Commands wait in
FIFO order; a queued command starts as soon as a unit of its resource frees up. Every state
change is reported through ``emit`` as a :class:`SkillFeedback`, in order.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import msgspec
import structlog

from robobus.schemas.messages import FeedbackState, SkillCommand, SkillFeedback
from robobus.schemas.world import WorldConflict
from robobus.skills.context import ContextHooks, SkillContext, SkillParams, WorldPort
from robobus.skills.errors import SkillError, SkillFailed, SkillRejected, UnknownSkill
from robobus.skills.faults import FaultInjector
from robobus.skills.registry import SkillDef

#: Real seconds added to every scaled timeout: bus round trips to the memory agent do not
#: shrink with the time scale, so a tiny scale must not fail skills on overhead.
TIMEOUT_SLACK_S = 0.5
RECENT_IDS = 4096

log = structlog.get_logger("edge.executor")


@dataclass(eq=False, slots=True)
class Job:
    """One accepted command."""

    cmd: SkillCommand
    sdef: SkillDef
    args: msgspec.Struct
    params: SkillParams
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    cancel_requested: bool = False  # the scope also fires on the timeout: tell them apart

    def feedback(self, robot: str, status: FeedbackState, **kw: Any) -> SkillFeedback:
        return self.feedback_for(self.cmd, robot, status, **kw)

    @staticmethod
    def feedback_for(cmd: SkillCommand, robot: str, status: FeedbackState, **kw: Any
                     ) -> SkillFeedback:
        return SkillFeedback(command_id=cmd.command_id, robot=robot, skill=cmd.skill,
                             status=status, task_id=cmd.task_id, step_id=cmd.step_id, **kw)


class Executor:
    """Validates, queues, runs, times out and cancels the skill commands of one robot."""

    def __init__(
        self,
        robot: str,
        skills: dict[str, tuple[SkillDef, SkillParams]],
        resources: dict[str, int],
        *,
        port: WorldPort,
        hooks: ContextHooks,
        emit: Callable[[SkillFeedback], None],
        faults: FaultInjector | None = None,
        time_scale: float = 1.0,
    ) -> None:
        self.robot = robot
        self.skills = skills
        self.free = dict(resources)
        self.port = port
        self.hooks = hooks
        self.emit = emit
        self.faults = faults or FaultInjector()
        self.time_scale = time_scale
        self._queue: deque[Job] = deque()
        self._running: dict[str, Job] = {}
        # command id -> (the command, its final feedback once it has one): answers repeats
        self._recent: OrderedDict[str, tuple[SkillCommand, SkillFeedback | None]] = OrderedDict()
        self._tg: anyio.abc.TaskGroup | None = None
        self._idle = anyio.Event()
        self._idle.set()

    # -- status ----------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return bool(self._running or self._queue)

    def current(self) -> list[str]:
        return [j.cmd.skill for j in self._running.values()]

    def held(self) -> list[str]:
        """Ids of the commands queued or running."""
        return [*self._running, *(j.cmd.command_id for j in self._queue)]

    async def wait_idle(self) -> None:
        await self._idle.wait()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
                  ) -> None:
        """Own the task group the skills run in, until cancelled."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            task_status.started()
            await anyio.sleep_forever()

    # -- intake ----------------------------------------------------------------------------
    def submit(self, cmd: SkillCommand) -> None:
        """Accept ``cmd`` (or raise ``SkillRejected``/``UnknownSkill``) and schedule it."""
        seen = self._recent.get(cmd.command_id)
        if seen is not None:
            self._answer_repeat(cmd, *seen)
            return
        if cmd.skill not in self.skills:
            raise UnknownSkill(cmd.skill, sorted(self.skills))
        sdef, params = self.skills[cmd.skill]
        job = Job(cmd, sdef, sdef.parse_args(cmd.args), params)
        self._recent[cmd.command_id] = (cmd, None)
        if len(self._recent) > RECENT_IDS:
            self._recent.popitem(last=False)
        self._queue.append(job)
        # Schedule before emitting: the skill task is then queued ahead of the feedback
        # publisher, so a free skill's first line runs before any feedback is encoded.
        self._schedule()
        self.emit(job.feedback(self.robot, "accepted"))

    def _answer_repeat(self, cmd: SkillCommand, first: SkillCommand,
                       outcome: SkillFeedback | None) -> None:
        """Delivery is at least once (the brain resends what it believes lost): the same
        command again is answered with where it stands, never run twice. The same id for a
        different command is refused."""
        if (cmd.skill, cmd.args) != (first.skill, first.args):
            raise SkillRejected(f"command id {cmd.command_id!r} was used for another command",
                                "duplicate")
        self.emit(outcome or Job.feedback_for(first, self.robot, "accepted"))

    def _finished(self, fb: SkillFeedback) -> None:
        entry = self._recent.get(fb.command_id)
        if entry is not None:
            self._recent[fb.command_id] = (entry[0], fb)
        self.emit(fb)

    def cancel(self, command_id: str, reason: str = "cancel requested") -> bool:
        """Cancel a queued or running command; False if there is none with that id."""
        for job in self._queue:
            if job.cmd.command_id == command_id:
                self._queue.remove(job)
                self._finished(job.feedback(self.robot, "cancelled", reason_code="cancelled",
                                            reason=reason))
                self._update_idle()
                return True
        running = self._running.get(command_id)
        if running is None:
            return False
        running.cancel_requested = True
        running.scope.cancel()
        return True

    def cancel_all(self, reason: str) -> None:
        for cid in [j.cmd.command_id for j in (*self._queue, *self._running.values())]:
            self.cancel(cid, reason)

    # -- scheduling ------------------------------------------------------------------------
    def _schedule(self) -> None:
        assert self._tg is not None, "Executor.run() is not running"
        for job in list(self._queue):
            res = job.sdef.resource
            if res != "none" and self.free.get(res, 0) <= 0:
                continue
            if res != "none":
                self.free[res] -= 1
            self._queue.remove(job)
            self._running[job.cmd.command_id] = job
            self._tg.start_soon(self._execute, job, name=f"skill:{job.cmd.command_id}")
        self._update_idle()

    def _update_idle(self) -> None:
        if self.busy and self._idle.is_set():
            self._idle = anyio.Event()
        elif not self.busy:
            self._idle.set()

    async def _execute(self, job: Job) -> None:
        self.emit(job.feedback(self.robot, "started"))
        outcome: SkillFeedback | None = None
        try:
            outcome = await self._outcome(job)
        finally:
            self._running.pop(job.cmd.command_id, None)
            if job.sdef.resource != "none":
                self.free[job.sdef.resource] += 1
            if outcome is None:  # the agent itself is stopping: say so, start nothing new
                outcome = job.feedback(self.robot, "cancelled", reason_code="shutdown",
                                       reason="edge agent stopping")
            else:
                self._schedule()
            self._finished(outcome)

    async def _outcome(self, job: Job) -> SkillFeedback:
        ctx = self._context(job)
        timeout = self._timeout(job)
        result: Any = None
        job.scope.deadline = anyio.current_time() + timeout
        try:
            with job.scope:
                result = await self._run_skill(job, ctx)
        except SkillError as exc:
            return job.feedback(self.robot, "failed", reason_code=exc.code, reason=exc.reason)
        except Exception as exc:  # noqa: BLE001 - a faulty skill must fail its command, not the agent
            log.exception("skill_crashed", robot=self.robot, skill=job.cmd.skill)
            return job.feedback(self.robot, "failed", reason_code="error",
                                reason=f"skill {job.cmd.skill} raised {exc!r}")
        if result is not None:
            return job.feedback(self.robot, "done", progress=100.0, result=result)
        if ctx.committed:  # cancelled or timed out after the world changed: it did happen
            return job.feedback(self.robot, "done", progress=100.0, result={"late": True})
        if not job.cancel_requested:
            return job.feedback(self.robot, "failed", reason_code="timeout",
                                reason=f"{job.cmd.skill} did not finish within {timeout:.2f}s")
        return job.feedback(self.robot, "cancelled", reason_code="cancelled",
                            reason="cancelled before completion; world unchanged")

    def _timeout(self, job: Job) -> float:
        sim = job.cmd.timeout_s or job.params.timeout_s or job.sdef.timeout_s
        return sim * (self.time_scale if job.sdef.scaled else 1.0) + TIMEOUT_SLACK_S

    def _context(self, job: Job) -> SkillContext:
        obj = getattr(job.args, "object", None)
        return SkillContext(self.robot, job.cmd, port=self.port, params=job.params,
                            time_scale=self.time_scale, hooks=self.hooks,
                            fault=self.faults.draw(job.cmd.skill, obj if isinstance(obj, str)
                                                   else None))

    async def _run_skill(self, job: Job, ctx: SkillContext) -> dict[str, Any]:
        sdef = job.sdef
        if sdef.preconditions:
            await self._check(sdef, job, ctx)
        value = await sdef.fn(ctx, job.args)
        if ctx.fault is not None:  # a skill that never asked for a world change
            raise SkillFailed(f"{ctx.fault.reason}: injected failure of {sdef.name}", "injected")
        out = msgspec.to_builtins(value) if value is not None else {}
        return out if isinstance(out, dict) else {"value": out}

    async def _check(self, sdef: SkillDef, job: Job, ctx: SkillContext) -> None:
        world = await ctx.world()
        if self.robot not in world.robots:
            raise SkillFailed(f"robot {self.robot!r} is not in the memory agent's world "
                              "(registration not seen yet?)", "unknown_robot")
        # Unknown names first: "known(nothing)" says more than the predicates it breaks.
        known = [f"known(?{p})" for p, kind in sdef.param_kinds.items() if kind != "kind"]
        try:
            unmet = world.unmet([*known, *sdef.preconditions], sdef.bindings(self.robot, job.args))
        except WorldConflict as exc:
            raise SkillFailed(f"{sdef.name} has a bad precondition: {exc.reason}", exc.code) from exc
        if unmet:
            raise SkillFailed(f"precondition not met: {', '.join(unmet)}", "precondition")
