"""Scheduler, planning: the plan context, reading an instruction, planning and installing a plan."""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio
import msgspec
import structlog

from robobus.brain_agent.context import PlanContext
from robobus.brain_agent.errors import BrainError, ParseError, PlanningError
from robobus.brain_agent.goals import CancelTask, GoalSet
from robobus.brain_agent.resolve import bind_goals
from robobus.brain_agent.sched_base import SchedulerBase
from robobus.brain_agent.search import Sharing, plan_goals
from robobus.brain_agent.sharing import claimed, open_work, plan_objects, project
from robobus.brain_agent.tasks import Task
from robobus.schemas.messages import Plan
from robobus.schemas.world import World

log = structlog.get_logger("brain.scheduler")
_goal_json = msgspec.json.Encoder()


@dataclass(slots=True)
class Round:
    """What one planning round (:meth:`Planning.make_plan`: up to four searches, nothing
    changing between them) computes once for all its contexts: each live task's open work and
    the world the tasks ahead leave. Computed per search, they were a third of the brain's
    CPU per instruction with a few dozen tasks live (issue 16, item 2)."""

    works: dict[str, dict[str, float]] = field(default_factory=dict)
    world: World | None = None


class Planning(SchedulerBase):
    """Plans tasks and installs their plans (a part of :class:`~robobus.brain_agent.scheduler.Scheduler`)."""

    def context(self, task: Task, *, strict: bool, project_ahead: bool = True,
                memo: Round | None = None) -> PlanContext:
        """Plan context for ``task``: robots of equal/higher-priority tasks are excluded
        (``strict``) or only delayed by their remaining work (not strict), on the world those
        tasks' open steps leave (``project_ahead``; reading an instruction binds its words on
        the world as it is). ``memo``: what an earlier call of the same planning round found."""
        memo = memo or Round()
        exclude = set(task.excluded)
        busy: dict[str, float] = {}
        ahead: list[Task] = []
        regs = self.fleet.registrations
        for other in self.live.values():
            if other is task or other.phase not in ("running", "replanning"):
                continue
            if other.priority < task.priority:
                continue
            work = memo.works.get(other.id)
            if work is None:
                work = memo.works[other.id] = open_work(other, regs)
            if strict:
                exclude.update(work)
            elif work:
                ahead.append(other)
                for robot, seconds in work.items():
                    busy[robot] = busy.get(robot, 0.0) + seconds
        # queued behind others: plan on the world their open steps leave (place, hands, objects)
        ahead.sort(key=self.lines.rank)
        world = self.fleet.world
        if ahead and project_ahead:
            if memo.world is None:
                memo.world = project(world, ahead, regs)
            world = memo.world
        return PlanContext(world=world, fleet=self.fleet.fleet(), task_id=task.id,
                           busy_until=busy, exclude=frozenset(exclude), priority=task.priority,
                           text=task.text, origin=task.origin or self.config.deliver_to)

    async def goals_for(self, task: Task, ctx: PlanContext) -> GoalSet:
        """Parse the instruction and bind it. For a backend that takes feedback (a model), the
        bound goals must also plan: a parse, bind, planning or validation failure is fed back
        and the backend asked again, ``parse_retries`` times; then the task fails with
        ``unconfirmed_reading``. An error marked ``retryable = False`` (a grammar refusal, a
        missing model) fails at once."""
        feedback = self.planner.retry_with_feedback
        attempts = 1 + self.config.parse_retries if feedback else 1
        for attempt in range(attempts):
            try:
                goals = await self._parse(task, ctx)
                if any(isinstance(g, CancelTask) for g in goals.goals):
                    return goals
                bound = bind_goals(goals, ctx)
                if feedback:
                    self.make_plan(task, bound)  # a plan that fails is fed back too
                return bound
            except BrainError as exc:
                if not feedback or not getattr(exc, "retryable", True):
                    raise
                log.info("reading_rejected", task=task.id, attempt=attempt + 1, reason=exc.reason)
                if attempt + 1 >= attempts:
                    raise ParseError(f"the {self.planner.name} planner's reading could not be "
                                     f"confirmed in {attempts} attempt(s); last: {exc.reason}",
                                     "unconfirmed_reading") from exc
                ctx.feedback.append(exc.reason)
        raise ParseError("no goals")  # pragma: no cover - the loop returns or raises

    async def _parse(self, task: Task, ctx: PlanContext) -> GoalSet:
        """Call the backend; a backend crash fails this task, never the brain (plug-in boundary)."""
        try:
            return await self.planner.parse(task.text, ctx)
        except BrainError:
            raise
        except Exception as exc:  # noqa: BLE001 - translated into the task's failure reason
            log.exception("planner_crashed", task=task.id, planner=self.planner.name)
            raise PlanningError(f"planner {self.planner.name!r} failed: {exc!r}", "planner_error") \
                from exc

    def sharing(self, task: Task, *, allow_kept: bool = False) -> Sharing:
        """Which held objects ``task``'s plan may put down: those released by preempted,
        cancelled or failed tasks, and those of lower-priority tasks it would preempt."""
        released = set(self.released)
        for other in self.live.values():
            if other is not task and other.priority < task.priority:
                released |= plan_objects(other)
        return Sharing(frozenset(released), allow_kept)

    def make_plan(self, task: Task, goals: GoalSet, memo: Round | None = None) -> Plan:
        """Plan from the current world: first on free robots, then queueing behind others;
        putting down an object a finished task left in a robot's hand only if nothing else
        works (the ``planned`` status then says so). ``memo``: the round's, if nothing changed
        since it was made."""
        self.put_down.pop(task.id, None)
        memo = memo or Round()
        try:
            return self._plan_keeping(task, goals, self.sharing(task), memo)
        except PlanningError as exc:
            last = self.sharing(task, allow_kept=True)
            try:
                plan = self._plan_keeping(task, goals, last, memo)
            except PlanningError:
                raise exc from None
            if last.put_down:
                self.put_down[task.id] = (last.put_down, exc.reason)
            return plan

    def _plan_keeping(self, task: Task, goals: GoalSet, sharing: Sharing, memo: Round) -> Plan:
        goal_text = _goal_json.encode(goals).decode()
        name = self.planner.name
        try:
            # its refusal is never shown (a plan queueing behind others is tried next): no
            # explanation is worked out for it
            return plan_goals(goals, self.context(task, strict=True, memo=memo), planner=name,
                              goal_text=goal_text, sharing=sharing, explain=False)
        except PlanningError:
            ctx = self.context(task, strict=False, memo=memo)
            try:
                return plan_goals(goals, ctx, planner=name, goal_text=goal_text, sharing=sharing)
            except PlanningError:
                if not task.excluded:
                    raise
                ctx.exclude = frozenset()  # no other robot can do it: let the failed one retry
                return plan_goals(goals, ctx, planner=name, goal_text=goal_text, sharing=sharing)

    def _put_down_note(self, task: Task) -> str | None:
        noted = self.put_down.pop(task.id, None)
        if noted is None:
            return None
        pairs, why = noted
        said = "; ".join(
            f"robot {robot!r} puts down {obj!r}, which "
            + (f"task {self.kept_by[obj]!r}" if obj in self.kept_by else "an earlier task")
            + " left in its hand" for robot, obj in pairs)
        return f"{said}: no plan that keeps it exists ({why})"

    async def start_task(self, task: Task) -> None:
        """Plan a new task and start it (or fail it with the reason)."""
        self.add(task)
        self.status.emit(task, "accepted")
        try:
            await self._wait_world()
            # A planner that never waits (inline) reads and plans with nothing running in
            # between: the reading's context and the plan's share one round (each live task's
            # open work is worked out once, not twice; issue 16, item 2).
            memo = Round() if self.planner.inline else None
            if task.goals is None:
                goals = await self.goals_for(task, self.context(task, strict=False,
                                                                project_ahead=False, memo=memo))
                cancel = next((g for g in goals.goals if isinstance(g, CancelTask)), None)
                if cancel is not None:
                    await self.cancel_task(cancel.task_id, task)
                    return
                task.goals = goals
            plan = self.make_plan(task, task.goals, memo)
        except BrainError as exc:
            self.finish(task, "failed", exc.reason)
            return
        await self.install(task, plan)

    async def _wait_world(self) -> None:
        if self.fleet.world_ready.is_set():
            return
        with anyio.move_on_after(self.config.world_wait_s):
            await self.fleet.world_ready.wait()
        if not self.fleet.world_ready.is_set():
            raise PlanningError("the memory agent has not provided the world yet", "no_world")

    async def install(self, task: Task, plan: Plan) -> None:
        task.install(plan)
        task.phase = "running"
        self.lines.join(task, self.fleet.registrations)
        self.released -= plan_objects(task)
        note = self._put_down_note(task)
        if note is not None:
            log.info("kept_object_put_down", task=task.id, reason=note)
            self.status.emit(task, "planned", plan=plan, reason=note)
        else:
            self.status.emit(task, "planned", plan=plan)
        for victim in self._victims(task):
            await self.preempt(victim, task)
        if not plan.steps:
            self.finish(task, "done", "the goals already hold")
            return
        await self.pump()

    def _victims(self, task: Task) -> list[Task]:
        needed = claimed(task, self.fleet.registrations)
        return [t for t in self.live.values() if t is not task and t.phase in ("running", "replanning")
                and t.priority < task.priority and claimed(t, self.fleet.registrations) & needed]
