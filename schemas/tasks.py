"""The task lifecycle, written once: which status may follow which on ``P/tasks/{id}``.

A task's statuses form a graph. It starts with ``accepted`` (only a brain publishes that, when
it takes an instruction), is ``planned``, runs its steps (``dispatched``, ``progress``,
``step_done``, ``step_failed``), may be ``replanning`` or ``preempted`` any number of times, and
ends in one final status: ``done``, ``failed`` or ``cancelled``. Nothing follows a final status.

:func:`next_status` is the one transition function. The brain applies it before it publishes,
the memory agent's task view before it stores, the scenario runner before it summarises, and a
client may apply it to the statuses it reads::

    from robobus.schemas import Refused, next_status
    step = next_status(current, incoming)   # current: None for a task not seen yet
    if isinstance(step, Refused):
        ...  # step.code, step.reason
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, cast, get_args

import msgspec

from robobus.schemas.messages import TaskState

#: Every task status, in the order of the lifecycle.
STATUSES: Final[tuple[TaskState, ...]] = get_args(TaskState)
#: Final statuses: a task that reached one of them never changes again.
FINAL: Final[frozenset[TaskState]] = frozenset({"done", "failed", "cancelled"})
#: Statuses about one step of the plan (they carry ``step_id``).
STEP: Final[frozenset[TaskState]] = frozenset({"dispatched", "progress", "step_done", "step_failed"})
#: Non-final statuses: a task in one of them is active (a restarted brain resumes it).
ACTIVE: Final[frozenset[TaskState]] = frozenset(STATUSES) - FINAL

# A plan exists from ``planned`` on; its steps may report, be replanned or preempted, in any
# order (several steps run at once, and a cancelled step's result arrives after a preemption).
_REPLAN: frozenset[TaskState] = frozenset({"planned", "replanning", "preempted"})
_WORKING: frozenset[TaskState] = _REPLAN | STEP
_PLANNING: frozenset[TaskState] = frozenset({"planned", "replanning"})

#: The graph: for each status (``None``: no status yet), the statuses that may follow it.
TRANSITIONS: Final[Mapping[TaskState | None, frozenset[TaskState]]] = {
    None: frozenset({"accepted"}),
    # a brain restarted while the task was being planned resumes it with ``replanning``
    "accepted": _PLANNING | FINAL,
    **{status: _WORKING | FINAL for status in _WORKING},
    **{status: frozenset() for status in FINAL},
}


_ALL: frozenset[str] = frozenset(STATUSES)


class Refused(msgspec.Struct, frozen=True):
    """A status that may not follow the current one: ``code`` for programs, ``reason`` for people.

    Codes: ``final`` (the task has ended), ``not_accepted`` (no task was accepted under that
    id), ``already_accepted`` (an id taken again), ``unknown_status``, ``out_of_order``.
    """

    current: str | None
    incoming: str
    code: str
    reason: str


def is_final(status: str | None) -> bool:
    """True for ``done``, ``failed`` and ``cancelled``."""
    return status in FINAL


def next_status(current: str | None, incoming: str) -> TaskState | Refused:
    """The status a task moves to when ``incoming`` arrives in ``current``, or why it may not.

    ``current`` is None for a task with no status yet. Pure: the same answer everywhere.
    """
    if incoming not in _ALL:
        return Refused(current, incoming, "unknown_status", f"{incoming!r} is not a task status")
    if current is not None and current not in _ALL:
        return Refused(current, incoming, "unknown_status",
                       f"the task is in {current!r}, which is not a task status")
    if incoming in TRANSITIONS[cast("TaskState | None", current)]:  # a status, checked above
        return incoming
    return Refused(current, incoming, *_why(current, incoming))


def _why(current: str | None, incoming: str) -> tuple[str, str]:
    if current in FINAL:
        return "final", f"the task has ended ({current}); {incoming!r} cannot follow"
    if current is None:
        return "not_accepted", f"{incoming!r} for a task that no brain accepted"
    if incoming == "accepted":
        return "already_accepted", f"the task was already accepted (now {current})"
    return "out_of_order", f"{incoming!r} cannot follow {current!r}"
