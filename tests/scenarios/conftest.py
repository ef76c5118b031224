"""Fixtures for the scenario tests: a synthetic event log (as the runner would observe it)."""

from __future__ import annotations

from typing import Any

import pytest

from robobus.launch.observe import RUNNER, Observed

T0 = 1_700_000_000_000_000_000


def _ev(t: float, topic: str, type_: str, data: dict[str, Any]) -> Observed:
    ns = T0 + int(t * 1e9)
    if type_ != RUNNER:
        data = {**data, "ts_ns": ns}
    return Observed(ns, topic, type_, data)


class Log:
    """Builds a plausible event list: instructions, commands, feedback, task statuses, faults."""

    def __init__(self) -> None:
        self.events: list[Observed] = [_ev(0.0, "$runner/ready", RUNNER, {"kind": "ready"})]
        self._n = 0

    def instruction(self, t: float, task: str, text: str = "do it") -> None:
        self.events.append(_ev(t, "$runner/instruction", RUNNER,
                               {"kind": "instruction", "task_id": task, "text": text,
                                "ts_ns": T0 + int(t * 1e9)}))

    def status(self, t: float, task: str, status: str, **extra: Any) -> None:
        self.events.append(_ev(t, f"robobus/tasks/{task}", "TaskStatus",
                               {"task_id": task, "status": status, **extra}))

    def skill(self, t: float, dur: float, robot: str, skill: str, arg: str, task: str,
              outcome: str = "done") -> None:
        self._n += 1
        cid = f"c{self._n}"
        self.events.append(_ev(t, f"robobus/robots/{robot}/skills/{skill}", "SkillCommand",
                               {"command_id": cid, "skill": skill, "args": {"x": arg},
                                "task_id": task}))
        fb = {"command_id": cid, "robot": robot, "skill": skill, "task_id": task}
        self.events.append(_ev(t + 0.001, f"robobus/robots/{robot}/feedback", "SkillFeedback",
                               {**fb, "status": "started"}))
        if outcome != "open":
            self.events.append(_ev(t + dur, f"robobus/robots/{robot}/feedback", "SkillFeedback",
                                   {**fb, "status": outcome, "reason_code": None if outcome == "done"
                                    else "injected"}))

    def fault(self, t: float, robot: str, fault: str, label: str) -> None:
        self.events.append(_ev(t, "$runner/fault", RUNNER,
                               {"kind": "fault", "fault": fault, "robot": robot, "label": label}))

    def offline(self, t: float, robot: str) -> None:
        self.events.append(_ev(t, f"robobus/robots/{robot}/alive", "Alive",
                               {"robot": robot, "online": False}))

    def sorted(self) -> list[Observed]:
        return sorted(self.events, key=lambda e: e.t_ns)


@pytest.fixture
def demo_events() -> list[Observed]:
    """Fruit-and-knife with a grasp failure, a replan, a kill and a preempting task."""
    log = Log()
    log.instruction(0.0, "t0", "Bring the fruit nearest the cup and a fruit knife to the office desk")
    log.status(0.0005, "t0", "accepted")
    log.status(0.001, "t0", "planned")
    log.skill(0.002, 1.5, "g1", "pick", "apple", "t0", "failed")
    log.fault(0.0, "g1", "fail_skill", "fail pick x1")
    log.status(1.51, "t0", "replanning", replans=1)
    log.skill(1.52, 1.0, "g1", "pick", "apple", "t0")
    log.skill(0.002, 2.0, "agilex", "pick", "knife", "t0")
    log.skill(2.1, 1.0, "agilex", "place", "knife", "t0")
    log.skill(0.002, 3.0, "realman_1", "navigate", "kitchenTable", "t0")
    log.skill(3.1, 0.8, "g1", "place", "apple", "t0")
    log.skill(4.0, 4.0, "realman_1", "navigate", "officeDesk", "t0")
    log.instruction(5.0, "urgent", "g1, go to the office desk")
    log.status(5.001, "urgent", "accepted")
    log.skill(5.002, 2.0, "g1", "navigate", "officeDesk", "urgent")
    log.status(7.1, "urgent", "done")
    log.skill(6.0, 5.0, "spare", "navigate", "officeDesk", "t0", "open")
    log.fault(6.5, "spare", "kill", "kill")
    log.offline(7.0, "spare")
    log.status(8.1, "t0", "done")
    return log.sorted()
