"""Tasks that share robots (issue 15, item 5): who may use a robot next, where it will be, and
which objects in its hands may be put down.

* **Lines**: each robot serves the tasks that planned work on it one after the other, in the
  order their plans were installed. A task's step is dispatched only when no task ahead of it
  in every involved robot's line still has a step pending there. The robots a step involves
  are its own and every robot one of its arguments names: the receiver of a handover is held
  by the task until the handover ends (it is not the step's robot, so before this it could be
  sent to another task's step in the middle of it). Lines follow one global order (install
  time), so the first task never waits for a later one: no two tasks can wait for each other.
* **Projection**: a task queued behind others is planned on the world as their remaining steps
  leave it (:func:`project`), so a robot is costed from where its earlier steps end, holding
  what they leave in its hands, from when they end (``busy_until``).
* **Released objects**: what a preempted, cancelled or failed task left in a robot's hand may
  be put down by another task; what a finished task left there on purpose is kept
  (:class:`~robobus.brain_agent.search.Sharing`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping

from robobus.brain_agent.simworld import sim_copy
from robobus.brain_agent.tasks import StepRun, Task
from robobus.brain_agent.validate import change_for
from robobus.schemas.messages import PlanStep, RobotRegistration, SkillSpec
from robobus.schemas.world import World, WorldConflict

_OPEN = ("pending", "running")


#: (robot, skill) -> (the registration it was read from, the skill's spec, its robot-valued
#: parameters). Validated by the registration's identity (a new registration replaces the
#: object): ``involved`` is asked for every open step of every live task on each plan
#: (``open_work``), and searching the skill list each time was a tenth of the brain's CPU
#: under load (issue 16, item 2). Bounded by robots x skills.
_SPECS: dict[tuple[str, str], tuple[RobotRegistration, SkillSpec | None, tuple[str, ...]]] = {}


def _lookup(step: PlanStep, fleet: Mapping[str, RobotRegistration]
            ) -> tuple[SkillSpec | None, tuple[str, ...]]:
    reg = fleet.get(step.robot)
    if reg is None:
        return None, ()
    key = (step.robot, step.skill)
    hit = _SPECS.get(key)
    if hit is None or hit[0] is not reg:
        spec = next((s for s in reg.skills if s.name == step.skill), None)
        params = tuple(a for a, k in spec.param_kinds.items() if k == "robot") if spec else ()
        hit = _SPECS[key] = (reg, spec, params)
    return hit[1], hit[2]


def skill_spec(step: PlanStep, fleet: Mapping[str, RobotRegistration]) -> SkillSpec | None:
    """The spec of the step's skill in its robot's registration (the first of that name)."""
    return _lookup(step, fleet)[0]



def involved(step: PlanStep, fleet: Mapping[str, RobotRegistration]) -> set[str]:
    """The step's robot and every robot its arguments name (a handover's receiver)."""
    out = {step.robot}
    for a in _lookup(step, fleet)[1]:
        if isinstance(v := step.args.get(a), str):
            out.add(v)
    return out


def claimed(task: Task, fleet: Mapping[str, RobotRegistration]) -> set[str]:
    """Robots ``task`` still needs: involved in one of its pending or running steps."""
    out: set[str] = set()
    for run in task.runs.values():
        if run.state in _OPEN:
            out |= involved(run.step, fleet)
    return out


def open_work(task: Task, fleet: Mapping[str, RobotRegistration]) -> dict[str, float]:
    """Robot -> estimated seconds of ``task``'s open steps that involve it (a handover's
    receiver waits through it too); the keys are :func:`claimed`."""
    out: dict[str, float] = {}
    for run in task.runs.values():
        if run.state in _OPEN:
            # :func:`involved` inline, without a set per step: this runs for every open step
            # of every live task on each plan (:meth:`Scheduler.context`)
            step = run.step
            robots = involved(step, fleet) if _lookup(step, fleet)[1] else (step.robot,)
            for robot in robots:
                out[robot] = out.get(robot, 0.0) + step.est_s
    return out


def plan_objects(task: Task) -> set[str]:
    """Objects the steps of ``task``'s plan name (what it may leave in a robot's hand)."""
    out: set[str] = set()
    for run in task.runs.values():
        out.update(v for k, v in run.step.args.items() if k == "object" and isinstance(v, str))
    return out


class Lines:
    """Per robot, the tasks with work on it, in install order."""

    def __init__(self) -> None:
        self._lines: dict[str, list[Task]] = {}
        self._robots: dict[str, set[str]] = {}  # task id -> robots whose lines hold it
        self._joined: dict[str, int] = {}  # task id -> when it joined (install order)
        self._count = itertools.count()

    def join(self, task: Task, fleet: Mapping[str, RobotRegistration]) -> None:
        """``task`` installed a plan: it goes to the back of each line its plan involves."""
        self.leave(task)
        robots = claimed(task, fleet)
        for robot in robots:
            self._lines.setdefault(robot, []).append(task)
        self._robots[task.id] = robots
        self._joined[task.id] = next(self._count)

    def rank(self, task: Task) -> int:
        """Install order of ``task`` among those in a line (-1 if in none)."""
        return self._joined.get(task.id, -1)

    def leave(self, task: Task) -> None:
        self._joined.pop(task.id, None)
        for robot in self._robots.pop(task.id, ()):
            line = self._lines.get(robot, [])
            if task in line:
                line.remove(task)
            if not line:
                self._lines.pop(robot, None)

    def first(self, run: StepRun, robots: Iterable[str],
              fleet: Mapping[str, RobotRegistration]) -> bool:
        """True if no task ahead of ``run``'s in these robots' lines has a step pending there.
        A task ahead with none left there never gets one (a new plan joins again at the
        back), so it leaves that line here."""
        for robot in robots:
            line = self._lines.get(robot, [])
            while line and line[0] is not run.task:
                other = line[0]
                if any(r.state == "pending" and robot in involved(r.step, fleet)
                       for r in other.runs.values()):
                    return False
                line.pop(0)
                self._robots.get(other.id, set()).discard(robot)
        return True


def project(world: World, tasks: Iterable[Task], fleet: Mapping[str, RobotRegistration]
            ) -> World:
    """``world`` as the open steps of ``tasks`` (in order, each in plan order) leave it. A step
    that does not apply (the world moved on) is skipped; the live world is not changed."""
    out = sim_copy(world)
    for task in tasks:
        for run in task.runs.values():
            if run.state not in _OPEN:
                continue
            # the step's change, made once per registration of its robot (a new one replaces
            # the object): each plan applies every open step of every task ahead
            reg, hit = fleet.get(run.step.robot), run.change
            if hit is None or hit[0] is not reg:
                spec = skill_spec(run.step, fleet)
                hit = run.change = (reg, change_for(run.step, spec) if spec is not None else None)
            change = hit[1]
            if change is None:
                continue
            try:
                out.apply(change)
            except WorldConflict:
                continue
    return out
