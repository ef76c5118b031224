"""The contract as one table: every message type, and which one travels on which topic.

Whatever reads the bus without subscribing to one type (the scenario runner's observer, the
MCAP export, ``robobus schema``) looks the type up here, so a topic is declared once.
"""

from __future__ import annotations

import msgspec

from robobus.schemas.memory import MemoryQuery, QueryReply, TaskRecord
from robobus.schemas.messages import (
    Alive,
    BrainStatus,
    ErrorReport,
    FaultSpec,
    Instruction,
    Plan,
    RobotRegistration,
    RobotState,
    SkillCommand,
    SkillFeedback,
    TaskStatus,
)
from robobus.schemas.world import WorldChange, WorldEvent, WorldReply, WorldSnapshot

#: Every public message type, by the name used in ``robobus schema``: what travels on a topic
#: (see :data:`TOPIC_TYPES`), the replies to requests, and what those carry (plans, snapshots,
#: task records).
MESSAGE_TYPES: dict[str, type[msgspec.Struct]] = {
    t.__name__: t for t in (
        Instruction, TaskStatus, Plan, SkillCommand, SkillFeedback, RobotRegistration,
        RobotState, Alive, BrainStatus, ErrorReport, FaultSpec,
        MemoryQuery, QueryReply, TaskRecord,
        WorldChange, WorldEvent, WorldReply, WorldSnapshot,
    )
}

#: Topic levels below the prefix -> the message on that topic; ``+`` is any one level (a robot,
#: a skill, a task id). Replies travel on the requester's inbox and are typed by their request:
#: ``memory/query`` is answered with :class:`QueryReply`, ``memory/change`` with
#: :class:`WorldReply`. The retained ``world/scene`` is a free-form scene mapping.
TOPIC_TYPES: dict[tuple[str, ...], type[msgspec.Struct]] = {
    ("instructions",): Instruction,
    ("errors",): ErrorReport,
    ("tasks", "+"): TaskStatus,
    ("robots", "+", "registration"): RobotRegistration,
    ("robots", "+", "alive"): Alive,
    ("robots", "+", "state"): RobotState,
    ("robots", "+", "feedback"): SkillFeedback,
    ("robots", "+", "faults"): FaultSpec,
    ("robots", "+", "skills", "+"): SkillCommand,
    ("brain", "status"): BrainStatus,
    ("memory", "query"): MemoryQuery,
    ("memory", "change"): WorldChange,
    ("world", "events"): WorldEvent,
}
_LONGEST = max(len(levels) for levels in TOPIC_TYPES)


def message_type(topic: str, prefix: str | None = None) -> type[msgspec.Struct] | None:
    """The message type the contract puts on ``topic``, or None for any other topic.

    With ``prefix``, only topics under it match. Without, the topic's last levels decide, the
    longest match first (a recorded log does not say which prefix it was recorded under).
    """
    parts = topic.split("/")
    if prefix is not None:
        base = prefix.split("/")
        return _lookup(parts[len(base):]) if parts[:len(base)] == base else None
    for start in range(max(0, len(parts) - _LONGEST), len(parts)):
        found = _lookup(parts[start:])
        if found is not None:
            return found
    return None


def _lookup(levels: list[str]) -> type[msgspec.Struct] | None:
    for pattern, type_ in TOPIC_TYPES.items():
        if len(pattern) == len(levels) and all(
                p in ("+", level) for p, level in zip(pattern, levels, strict=True)):
            return type_
    return None
