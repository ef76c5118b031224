"""The scheduler's shared state, and the methods its parts call across each other.

:class:`~robobus.brain_agent.scheduler.Scheduler` is made of parts, one per concept
(planning, dispatch, feedback, recovery), each a mixin of :class:`SchedulerBase`. The
declarations under ``TYPE_CHECKING`` only tell the type checker what another part provides.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from robobus.brain_agent.config import BrainConfig
from robobus.brain_agent.fleet import FleetView
from robobus.brain_agent.guard import Guard
from robobus.brain_agent.planners import Planner
from robobus.brain_agent.sharing import Lines
from robobus.brain_agent.tasks import StatusPublisher, StepRun, Task
from robobus.bus import Bus
from robobus.schemas.topics import Topics

if TYPE_CHECKING:
    from robobus.brain_agent.context import PlanContext
    from robobus.brain_agent.goals import GoalSet
    from robobus.brain_agent.search import Sharing
    from robobus.schemas.messages import Plan, SkillFeedback

#: Finished tasks remembered (for duplicate instructions and "cancel task" answers).
MAX_REMEMBERED = 10_000


class SchedulerBase:
    """The scheduler's state: tasks, running commands, robots' lines and held objects."""

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
        #: resumed tasks waiting for steps a previous brain sent (``Task.orphans``), in the
        #: order resumed: a robot's idle state looks only at these, not at every live task
        self.orphaned: dict[str, Task] = {}

    def _spawn(self, what: str, task: Task, fn: Any, *args: Any, name: str | None = None
               ) -> None:
        """A background task about ``task``: an exception in it is reported on the task's
        topic and counted (:class:`Guard`), never the end of the brain."""
        self.guard.spawn(self.tg, what, self.topics.task(task.id), fn, *args, name=name)

    def add(self, task: Task) -> None:
        """Track ``task``; the oldest finished tasks are forgotten beyond ``MAX_REMEMBERED``."""
        self.live[task.id] = task
        self._remember(task)

    def _remember(self, task: Task) -> None:
        self.tasks[task.id] = task
        while len(self.tasks) > MAX_REMEMBERED:
            # the oldest finished task; live ones are kept (at most max_pending are skipped,
            # so a flood of shed tasks behind one long task cannot grow this without bound)
            old_id = next((k for k, t in self.tasks.items() if not t.active), None)
            if old_id is None:
                break
            del self.tasks[old_id]

    if TYPE_CHECKING:  # provided by the parts (sched_plan, sched_dispatch, ...)
        def context(self, task: Task, *, strict: bool, project_ahead: bool = True
                    ) -> PlanContext: ...
        async def goals_for(self, task: Task, ctx: PlanContext) -> GoalSet: ...
        def sharing(self, task: Task, *, allow_kept: bool = False) -> Sharing: ...
        def make_plan(self, task: Task, goals: GoalSet) -> Plan: ...
        async def _wait_world(self) -> None: ...
        async def install(self, task: Task, plan: Plan) -> None: ...
        async def pump(self) -> None: ...
        def _abandon(self, run: StepRun, why: str) -> None: ...
        async def _send_cancel(self, run: StepRun) -> None: ...
        async def step_ended(self, run: StepRun, outcome: str, reason: str | None) -> None: ...
        def _refuse(self, fb: SkillFeedback, reason: str, code: str) -> None: ...
        def _to_replanning(self, task: Task) -> None: ...
        async def _settle(self, task: Task) -> None: ...
        async def replan(self, task: Task) -> None: ...
        async def preempt(self, victim: Task, by: Task) -> None: ...
        async def resume_preempted(self) -> None: ...
        async def cancel_task(self, target_id: str, by: Task) -> None: ...
        def finish(self, task: Task, phase: str, reason: str) -> None: ...
        async def _orphan_feedback(self, fb: SkillFeedback) -> None: ...
