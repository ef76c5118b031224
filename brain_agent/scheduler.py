"""The DAG scheduler: dispatch ready steps, follow feedback, replan, preempt, cancel.

All state lives on the event loop; handlers change it before they await, so interleaved
feedback never sees a half-made transition. A robot runs one brain step at a time (the
per-robot queue); several tasks run at once on disjoint robots; a higher-priority task takes
the robots its plan needs from lower-priority ones, which are replanned once robots are free.
Tasks that share a robot take turns on it in install order, and a queued task is planned on the
world as the tasks ahead of it leave it (:mod:`robobus.brain_agent.sharing`).
"""

from __future__ import annotations

import anyio.abc
import msgspec

from robobus.brain_agent.config import BrainConfig
from robobus.brain_agent.fleet import FleetView
from robobus.brain_agent.goals import GoalSet
from robobus.brain_agent.guard import Guard
from robobus.brain_agent.planners import Planner
from robobus.brain_agent.sched_dispatch import Dispatch
from robobus.brain_agent.sched_feedback import Feedback
from robobus.brain_agent.sched_plan import Planning
from robobus.brain_agent.sched_recover import Recovery
from robobus.brain_agent.tasks import StatusPublisher, Task
from robobus.bus import Bus
from robobus.schemas.messages import Plan
from robobus.schemas.topics import Topics

_goal_decoder = msgspec.json.Decoder(GoalSet)


def goals_of(plan: Plan | None) -> GoalSet | None:
    """The bound goals a plan was made for (stored as JSON in ``plan.goal``), if any."""
    if plan is None or not plan.goal.startswith("{"):
        return None
    try:
        return _goal_decoder.decode(plan.goal)
    except msgspec.DecodeError:
        return None


class Scheduler(Planning, Dispatch, Feedback, Recovery):
    """Executes tasks' plans on the fleet and keeps them going when things fail.

    Its parts: :class:`~robobus.brain_agent.sched_plan.Planning`,
    :class:`~robobus.brain_agent.sched_dispatch.Dispatch` (with the watchdog and reconcile),
    :class:`~robobus.brain_agent.sched_feedback.Feedback` (with replanning) and
    :class:`~robobus.brain_agent.sched_recover.Recovery` (offline robots, preemption,
    cancellation, crash recovery); the state is :class:`~robobus.brain_agent.sched_base.SchedulerBase`.
    """

    def __init__(self, bus: Bus, topics: Topics, fleet: FleetView, planner: Planner,
                 config: BrainConfig, status: StatusPublisher, tg: anyio.abc.TaskGroup,
                 *, guard: Guard | None = None) -> None:
        super().__init__(bus, topics, fleet, planner, config, status, tg, guard=guard)
        fleet.on_offline.append(self.on_offline)

    def shed(self, task: Task, reason: str) -> None:
        """End a task that is not taken (admission, issue 16): no plan, no command, nothing
        live. ``accepted`` then ``failed`` is the state machine's only way to a final status
        (the memory agent records only tasks a brain accepted); the id stays taken."""
        task.phase = "failed"
        self._remember(task)
        self.status.emit(task, "accepted")
        self.status.emit(task, "failed", reason=reason)
