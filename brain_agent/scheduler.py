"""The DAG scheduler: dispatch ready steps, follow feedback, replan, preempt, cancel.

All state lives on the event loop; handlers change it before they await, so interleaved
feedback never sees a half-made transition. A robot runs one brain step at a time (the
per-robot queue); several tasks run at once on disjoint robots; a higher-priority task takes
the robots its plan needs from lower-priority ones, which are replanned once robots are free.
Tasks that share a robot take turns on it in install order, and a queued task is planned on the
world as the tasks ahead of it leave it (:mod:`robobus.brain_agent.sharing`).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any

import anyio
import msgspec
import structlog

from robobus.brain_agent.config import BrainConfig
from robobus.brain_agent.context import PlanContext
from robobus.brain_agent.errors import BrainError, ParseError, PlanningError
from robobus.brain_agent.fleet import FleetView
from robobus.brain_agent.goals import CancelTask, GoalSet
from robobus.brain_agent.guard import Guard
from robobus.brain_agent.planners import Planner
from robobus.brain_agent.resolve import bind_goals
from robobus.brain_agent.search import Sharing, plan_goals
from robobus.brain_agent.sharing import (
    Lines,
    claimed,
    involved,
    open_work,
    plan_objects,
    project,
)
from robobus.brain_agent.tasks import StatusPublisher, StepRun, Task
from robobus.bus import Bus, BusError
from robobus.schemas.messages import Plan, RobotState, SkillCommand, SkillFeedback
from robobus.schemas.topics import Topics

log = structlog.get_logger("brain.scheduler")
#: Finished tasks remembered (for duplicate instructions and "cancel task" answers).
MAX_REMEMBERED = 10_000
#: Commands whose step the brain ended itself (robot offline, timeout): a result for one of
#: them arriving later is refused and reported, never applied (issue 12).
MAX_ABANDONED = 10_000
#: Answers to the brain's own cancel of an abandoned command: expected, not reported.
_CANCEL_ANSWERS = frozenset({"cancelled", "rejected"})
_goal_json = msgspec.json.Encoder()
_goal_decoder = msgspec.json.Decoder(GoalSet)


def goals_of(plan: Plan | None) -> GoalSet | None:
    """The bound goals a plan was made for (stored as JSON in ``plan.goal``), if any."""
    if plan is None or not plan.goal.startswith("{"):
        return None
    try:
        return _goal_decoder.decode(plan.goal)
    except msgspec.DecodeError:
        return None


class Scheduler:
    """Executes tasks' plans on the fleet and keeps them going when things fail."""

    def __init__(self, bus: Bus, topics: Topics, fleet: FleetView, planner: Planner,
                 config: BrainConfig, status: StatusPublisher, tg: anyio.abc.TaskGroup,
                 *, guard: Guard | None = None) -> None:
        self.bus, self.topics, self.fleet, self.planner = bus, topics, fleet, planner
        self.config, self.status, self.tg = config, status, tg
        self.guard = guard or Guard(bus)
        self.tasks: OrderedDict[str, Task] = OrderedDict()  # every task seen (bounded)
        self.live: dict[str, Task] = {}  # tasks not yet done/failed/cancelled
        self.commands: dict[str, StepRun] = {}
        self.robot_run: dict[str, StepRun] = {}
        #: command id -> (robot, why the brain ended its step), oldest first (bounded)
        self.abandoned: OrderedDict[str, tuple[str, str]] = OrderedDict()
        #: per robot, the tasks with work on it in install order (they take turns)
        self.lines = Lines()
        #: objects a preempted, cancelled or failed task left in hand: others may put them down
        self.released: set[str] = set()
        #: object -> the task that finished with it in a robot's hand (kept there)
        self.kept_by: dict[str, str] = {}
        #: task id -> kept objects its next plan puts down, and why no plan keeps them (said on
        #: its ``planned`` status)
        self.put_down: dict[str, tuple[list[tuple[str, str]], str]] = {}
        fleet.on_offline.append(self.on_offline)

    def _spawn(self, what: str, task: Task, fn: Any, *args: Any, name: str | None = None
               ) -> None:
        """A background task about ``task``: an exception in it is reported on the task's
        topic and counted (:class:`Guard`), never the end of the brain."""
        self.guard.spawn(self.tg, what, self.topics.task(task.id), fn, *args, name=name)

    def add(self, task: Task) -> None:
        """Track ``task``; the oldest finished tasks are forgotten beyond ``MAX_REMEMBERED``."""
        self.live[task.id] = task
        self._remember(task)

    def shed(self, task: Task, reason: str) -> None:
        """End a task that is not taken (admission, issue 16): no plan, no command, nothing
        live. ``accepted`` then ``failed`` is the state machine's only way to a final status
        (the memory agent records only tasks a brain accepted); the id stays taken."""
        task.phase = "failed"
        self._remember(task)
        self.status.emit(task, "accepted")
        self.status.emit(task, "failed", reason=reason)

    def _remember(self, task: Task) -> None:
        self.tasks[task.id] = task
        while len(self.tasks) > MAX_REMEMBERED:
            # the oldest finished task; live ones are kept (at most max_pending are skipped,
            # so a flood of shed tasks behind one long task cannot grow this without bound)
            old_id = next((k for k, t in self.tasks.items() if not t.active), None)
            if old_id is None:
                break
            del self.tasks[old_id]

    # -- planning ------------------------------------------------------------------------
    def context(self, task: Task, *, strict: bool, project_ahead: bool = True) -> PlanContext:
        """Plan context for ``task``: robots of equal/higher-priority tasks are excluded
        (``strict``) or only delayed by their remaining work (not strict), on the world those
        tasks' open steps leave (``project_ahead``; reading an instruction binds its words on
        the world as it is)."""
        exclude = set(task.excluded)
        busy: dict[str, float] = {}
        ahead: list[Task] = []
        regs = self.fleet.registrations
        for other in self.live.values():
            if other is task or other.phase not in ("running", "replanning"):
                continue
            if other.priority < task.priority:
                continue
            work = open_work(other, regs)
            if strict:
                exclude.update(work)
            elif work:
                ahead.append(other)
                for robot, seconds in work.items():
                    busy[robot] = busy.get(robot, 0.0) + seconds
        # queued behind others: plan on the world their open steps leave (place, hands, objects)
        ahead.sort(key=self.lines.rank)
        world = project(self.fleet.world, ahead, regs) if ahead and project_ahead \
            else self.fleet.world
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

    def make_plan(self, task: Task, goals: GoalSet) -> Plan:
        """Plan from the current world: first on free robots, then queueing behind others;
        putting down an object a finished task left in a robot's hand only if nothing else
        works (the ``planned`` status then says so)."""
        self.put_down.pop(task.id, None)
        try:
            return self._plan_keeping(task, goals, self.sharing(task))
        except PlanningError as exc:
            last = self.sharing(task, allow_kept=True)
            try:
                plan = self._plan_keeping(task, goals, last)
            except PlanningError:
                raise exc from None
            if last.put_down:
                self.put_down[task.id] = (last.put_down, exc.reason)
            return plan

    def _plan_keeping(self, task: Task, goals: GoalSet, sharing: Sharing) -> Plan:
        goal_text = _goal_json.encode(goals).decode()
        name = self.planner.name
        try:
            return plan_goals(goals, self.context(task, strict=True), planner=name,
                              goal_text=goal_text, sharing=sharing)
        except PlanningError:
            ctx = self.context(task, strict=False)
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
            if task.goals is None:
                goals = await self.goals_for(task, self.context(task, strict=False,
                                                                project_ahead=False))
                cancel = next((g for g in goals.goals if isinstance(g, CancelTask)), None)
                if cancel is not None:
                    await self.cancel_task(cancel.task_id, task)
                    return
                task.goals = goals
            plan = self.make_plan(task, task.goals)
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

    # -- dispatch ------------------------------------------------------------------------
    async def pump(self) -> None:
        """Dispatch every ready step whose robot is free, higher priority first."""
        for task in sorted(self.live.values(), key=lambda t: (-t.priority, t.order)):
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
        for robot in involved(step, self.fleet.registrations):  # a handover holds its receiver
            self.robot_run[robot] = run
        spec = next((s for s in self.fleet.registrations[run.robot].skills if s.name == step.skill), None)
        timeout = (spec.timeout_s if spec else 60.0) * self.config.timeout_scale
        cmd = SkillCommand(run.command_id, step.skill, dict(step.args), task_id=task.id,
                           step_id=step.id, timeout_s=timeout)
        run.command, run.sent_at = cmd, anyio.current_time()
        try:
            await self.status.sent()  # the task's record reaches the wire before its command
            await self.bus.publish(self.topics.skill(run.robot, step.skill), cmd, qos=1)
        except BusError as exc:
            await self.step_ended(run, "failed", f"could not send the command: {exc}")
            return
        self.status.emit(task, "dispatched", step_id=step.id, robot=run.robot, skill=step.skill,
                         command_id=run.command_id)
        limit = timeout + self.config.timeout_margin_s
        # A loop timer, not a task with a cancel scope: arming and cancelling one per step is
        # on the dispatch path (anyio's CancelScope.cancel formats the task's repr).
        run.watchdog = asyncio.get_running_loop().call_later(limit, self._watchdog, run, limit)

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

    # -- feedback ------------------------------------------------------------------------
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
        for robot in [r for r, held in self.robot_run.items() if held is run]:
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

    # -- robots going away, preemption, cancellation --------------------------------------
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
        """A fresh state says ``robot`` is idle: steps the previous brain sent it have ended."""
        for task in self.live.values():
            for step, who in list(task.orphans.items()):
                if who == robot:
                    del task.orphans[step]
                    self._spawn("replan", task, self._settle, task)
