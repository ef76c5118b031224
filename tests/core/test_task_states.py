"""The task state machine (schemas/tasks.py) and every component that applies it.

The graph is checked directly; then hypothesis drives random interleavings of what happens to
tasks (accept, plan, steps starting, failing and finishing, cancel, preemption, a robot's death,
a brain kill -9 and restart, forged statuses) through the brain's status publisher, the memory
agent's task view and the scenario runner's fold, and checks that no transition out of a final
status is ever accepted and that the three agree.
"""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from robobus.brain_agent.tasks import StatusPublisher, Task, not_resumable
from robobus.launch.observe import follow
from robobus.memory_store.views import Rejected, Views
from robobus.schemas import Refused, is_final, next_status
from robobus.schemas.memory import TaskRecord
from robobus.schemas.messages import Plan, PlanStep, TaskStatus
from robobus.schemas.tasks import ACTIVE, FINAL, STATUSES, TRANSITIONS
from robobus.schemas.topics import Topics

TOPICS = Topics("t")
PLAN = Plan("?", [PlanStep("s1", "r1", "pick"), PlanStep("s2", "r2", "place", after=["s1"])])


def test_final_statuses_have_no_way_out() -> None:
    for final in FINAL:
        assert TRANSITIONS[final] == frozenset()
        for incoming in STATUSES:
            step = next_status(final, incoming)
            assert isinstance(step, Refused) and step.code == "final", (final, incoming)


def test_only_accepted_starts_a_task() -> None:
    assert next_status(None, "accepted") == "accepted"
    for incoming in set(STATUSES) - {"accepted"}:
        step = next_status(None, incoming)
        assert isinstance(step, Refused) and step.code == "not_accepted"


def test_every_active_status_can_end_and_the_graph_covers_every_status() -> None:
    assert set(TRANSITIONS) == {None, *STATUSES}
    assert ACTIVE | FINAL == set(STATUSES) and is_final("cancelled") and not is_final("planned")
    for active in ACTIVE:
        assert all(next_status(active, final) == final for final in FINAL)


def test_refusals_carry_a_code_and_a_reason() -> None:
    assert next_status("planned", "nonsense") == Refused(
        "planned", "nonsense", "unknown_status", "'nonsense' is not a task status")
    step = next_status("accepted", "step_done")
    assert isinstance(step, Refused) and step.code == "out_of_order"
    step = next_status("planned", "accepted")
    assert isinstance(step, Refused) and step.code == "already_accepted"


def test_the_view_refuses_leaving_cancelled_and_reports_it() -> None:
    """The reproduced fault: ``cancelled`` then ``step_failed`` made the record active again."""
    views = Views(TOPICS)
    for status in ("accepted", "planned", "dispatched", "cancelled"):
        assert _fold(views, "c1", status, plan=PLAN, step_id="s1") == []
    [effect] = _fold(views, "c1", "step_failed", step_id="s1")
    assert isinstance(effect, Rejected) and effect.code == "final"
    assert views.tasks["c1"].status == "cancelled"
    assert views.tasks["c1"].steps == {"s1": "dispatched"}


def test_the_view_creates_records_only_from_accepted() -> None:
    """A forged active status for an unknown task makes no record a brain could resume."""
    views = Views(TOPICS)
    [effect] = _fold(views, "forged", "dispatched", plan=PLAN, step_id="s1")
    assert isinstance(effect, Rejected) and effect.code == "not_accepted"
    [effect] = _fold(views, "forged", "done", topic_id="other")
    assert isinstance(effect, Rejected) and effect.code == "task_mismatch"
    assert views.tasks == {}


def test_recovery_refuses_final_and_forged_records() -> None:
    ok = TaskRecord("t1", text="bring the apple", status="dispatched", plan=PLAN,
                    steps={"s1": "dispatched"})
    assert not_resumable(ok) is None
    cases = {"final": msgspec.structs.replace(ok, status="cancelled"),
             "unknown_status": msgspec.structs.replace(ok, status="whatever"),
             "forged_task": msgspec.structs.replace(ok, text="")}
    forged_steps = msgspec.structs.replace(ok, steps={"nope": "dispatched"})
    for code, rec in cases.items():
        assert (not_resumable(rec) or ("", ""))[1] == code
    assert (not_resumable(forged_steps) or ("", ""))[1] == "forged_task"


def test_the_runner_follows_the_machine() -> None:
    assert follow(None, "planned") == "planned"  # a recording that starts late
    assert follow("cancelled", "step_failed") is None
    assert follow("planned", "dispatched") == "dispatched"


def _fold(views: Views, task_id: str, status: str, *, topic_id: str | None = None,
          **fields: Any) -> list[Any]:
    msg = TaskStatus(task_id, status, text="bring the apple", **fields)  # type: ignore[arg-type]
    return views.observe(TOPICS.task(topic_id or task_id), msgspec.msgpack.encode(msg), 1)


class Brainless:
    """The brain's status publisher without a bus: what it would publish, in order."""

    def __init__(self) -> None:
        self.publisher = StatusPublisher(None, TOPICS)  # type: ignore[arg-type]

    def drain(self) -> list[TaskStatus]:
        queue = self.publisher._queue  # what run() or a dispatch's flush() would post, in order
        out = list(queue)
        queue.clear()
        return out


class TaskLifecycle(RuleBasedStateMachine):
    """One task id through random events; the brain may be killed and restarted at any time."""

    def __init__(self) -> None:
        super().__init__()
        self.views = Views(TOPICS)
        self.brain = Brainless()
        self.task: Task | None = None
        self.published: list[str] = []  # every status the brains put on the task's topic
        self.runner: str | None = None
        self.steps_running: set[str] = set()

    @initialize()
    def accept(self) -> None:
        self.task = Task("t1", "bring the apple")
        self.brain.publisher.emit(self.task, "accepted")
        self._deliver()

    def _deliver(self) -> None:
        for msg in self.brain.drain():
            self.published.append(msg.status)
            effects = self.views.observe(TOPICS.task(msg.task_id), msgspec.msgpack.encode(msg), 1)
            assert effects == [], effects  # the brain never sends what memory refuses
            self.runner = follow(self.runner, msg.status) or self.runner

    def _emit(self, status: str, **fields: Any) -> None:
        if self.task is not None:
            self.brain.publisher.emit(self.task, status, **fields)
            self._deliver()

    # -- what the scheduler does ---------------------------------------------------------
    @rule()
    def plan(self) -> None:
        self._emit("planned", plan=PLAN)

    @rule(step=st.sampled_from(["s1", "s2"]))
    def step_starts(self, step: str) -> None:
        self.steps_running.add(step)
        self._emit("dispatched", step_id=step)
        self._emit("progress", step_id=step, progress=0.5)

    @rule(step=st.sampled_from(["s1", "s2"]), ok=st.booleans())
    def step_ends(self, step: str, ok: bool) -> None:
        self.steps_running.discard(step)
        self._emit("step_done" if ok else "step_failed", step_id=step)

    @rule()
    def cancel(self) -> None:
        """``cancel task``: ``cancelled``, then the cancelled steps' failures arrive."""
        self._emit("cancelled", reason="cancelled by task c")
        for step in sorted(self.steps_running):
            self._emit("step_failed", step_id=step, reason="cancelled")

    @rule()
    def preempt(self) -> None:
        self._emit("preempted", reason="preempted by task p")
        for step in sorted(self.steps_running):
            self._emit("step_failed", step_id=step)
        self.steps_running.clear()

    @rule()
    def robot_dies(self) -> None:
        for step in sorted(self.steps_running):
            self._emit("step_failed", step_id=step, reason="robot r1 went offline")
        self.steps_running.clear()
        self._emit("replanning", reason="robot r1 went offline")

    @rule(final=st.sampled_from(sorted(FINAL)))
    def finish(self, final: str) -> None:
        self._emit(final, reason="end")

    @rule()
    def brain_killed_and_restarted(self) -> None:
        """kill -9: the brain forgets everything; the new one resumes from the durable record."""
        self.brain = Brainless()
        self.task = None
        rec = self.views.tasks.get("t1")
        if rec is None or not_resumable(rec) is not None:
            return
        self.task = Task(rec.task_id, rec.text, rec.priority, status=rec.status)  # type: ignore[arg-type]
        self._emit("replanning", reason="brain restarted; resuming from task memory")

    @precondition(lambda self: is_final(self.views.tasks["t1"].status))
    @rule(status=st.sampled_from(STATUSES))
    def forged_status_after_the_end(self, status: str) -> None:
        """Someone else publishes on an ended task's topic: memory refuses and reports it."""
        [effect] = _fold(self.views, "t1", status, step_id="s1", plan=PLAN)
        assert isinstance(effect, Rejected) and effect.code == "final"

    @rule(status=st.sampled_from(sorted(ACTIVE - {"accepted"})))
    def forged_active_record(self, status: str) -> None:
        """A forged active status for a task no brain accepted makes no record."""
        [effect] = _fold(self.views, "forged", status, step_id="s1", plan=PLAN)
        assert isinstance(effect, Rejected) and effect.code == "not_accepted"
        assert "forged" not in self.views.tasks

    # -- invariants ----------------------------------------------------------------------
    @invariant()
    def nothing_follows_a_final_status(self) -> None:
        finals = [i for i, s in enumerate(self.published) if is_final(s)]
        assert not finals or finals[0] == len(self.published) - 1, self.published

    @invariant()
    def memory_and_brain_agree(self) -> None:
        rec = self.views.tasks.get("t1")
        assert rec is not None
        if self.task is not None:
            assert rec.status == self.task.status
        if self.published and is_final(self.published[-1]):
            assert rec.status == self.published[-1]

    @invariant()
    def a_final_task_is_never_resumed(self) -> None:
        rec = self.views.tasks["t1"]
        if is_final(rec.status):
            assert not_resumable(rec) is not None
            assert self.task is None or self.task.status == rec.status

    @invariant()
    def the_runner_agrees(self) -> None:
        if self.runner is not None and is_final(self.runner):
            assert self.views.tasks["t1"].status == self.runner


TaskLifecycle.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_task_lifecycle = TaskLifecycle.TestCase
