"""Task memory ties a world change to its step (issue 12): a change whose task is final, or
whose command's step the brain ended (robot declared dead, step reassigned), is refused."""

from __future__ import annotations

import msgspec

from robobus.memory_store.views import Views
from robobus.schemas.messages import TaskStatus
from robobus.schemas.topics import Topics
from robobus.schemas.world import WorldChange

TOPICS = Topics("robobus")


def fold(views: Views, *statuses: TaskStatus) -> None:
    for st in statuses:
        assert views.observe(TOPICS.task(st.task_id), msgspec.msgpack.encode(st), st.ts_ns) == []


def move(command_id: str | None, task_id: str | None = "t1") -> WorldChange:
    return WorldChange("move", robot="a", target="shelf", command_id=command_id, task_id=task_id)


def test_change_of_an_ended_step_or_final_task_is_late() -> None:
    views = Views(TOPICS)
    fold(views, TaskStatus("t1", "accepted"), TaskStatus("t1", "planned"),
         TaskStatus("t1", "dispatched", step_id="s1", robot="a", command_id="t1.s1.0"))
    assert views.late_change(move("t1.s1.0")) is None  # in flight: the world decides
    fold(views, TaskStatus("t1", "step_failed", step_id="s1", robot="a", command_id="t1.s1.0"),
         TaskStatus("t1", "replanning"), TaskStatus("t1", "planned", replans=1),
         TaskStatus("t1", "dispatched", step_id="s1", robot="b", command_id="t1.s1.1"))
    late = views.late_change(move("t1.s1.0"))
    assert late is not None and late.code == "late_change" and "step_failed" in late.reason
    assert views.late_change(move("t1.s1.1")) is None  # the reassigned step's own change
    fold(views, TaskStatus("t1", "failed", reason="gave up"))
    late = views.late_change(move("t1.s1.1"))
    assert late is not None and late.code == "late_change" and "failed" in late.reason


def test_change_without_a_known_task_is_judged_by_the_world() -> None:
    views = Views(TOPICS)
    assert views.late_change(move(None, None)) is None
    assert views.late_change(move("x.s1.0", "unknown")) is None
