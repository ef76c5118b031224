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
    MemoryStatus,
    Plan,
    RegistrationProfile,
    RobotRegistration,
    RobotState,
    SkillCommand,
    SkillFeedback,
    TaskStatus,
)
from robobus.schemas.world import (
    ObjectData,
    PlaceData,
    RobotData,
    WorldChange,
    WorldEvent,
    WorldReply,
    WorldSnapshot,
)

#: Every public message type, by the name used in ``robobus schema``: what travels on a topic
#: (see :data:`TOPIC_TYPES`), the replies to requests, and what those carry (plans, snapshots,
#: task records).
MESSAGE_TYPES: dict[str, type[msgspec.Struct]] = {
    t.__name__: t for t in (
        Instruction, TaskStatus, Plan, SkillCommand, SkillFeedback, RobotRegistration,
        RobotState, Alive, BrainStatus, MemoryStatus, ErrorReport, FaultSpec,
        MemoryQuery, QueryReply, TaskRecord,
        WorldChange, WorldEvent, WorldReply, WorldSnapshot,
    )
}

#: Structs that type the known keys of a free-form map inside a message, not messages of their
#: own: ``RobotRegistration.profile`` and ``WorldChange.data``. Agents check those maps with them.
FIELD_SHAPES: tuple[type[msgspec.Struct], ...] = (RegistrationProfile, ObjectData, RobotData, PlaceData)

#: Topic levels below the prefix -> the message on that topic; ``+`` is any one level (a robot,
#: a skill, a task id). Replies travel on the requester's inbox and are typed by their request:
#: ``memory/query`` is answered with :class:`QueryReply`, ``memory/change`` with
#: :class:`WorldReply`. The retained ``world/scene`` is a free-form scene mapping.
TOPIC_TYPES: dict[tuple[str, ...], type[msgspec.Struct]] = {
    ("instructions",): Instruction,
    ("instructions", "+"): Instruction,  # an account's own, on a secured bus (issue 13)
    ("errors",): ErrorReport,
    ("tasks", "+"): TaskStatus,
    ("robots", "+", "registration"): RobotRegistration,
    ("robots", "+", "alive"): Alive,
    ("robots", "+", "state"): RobotState,
    ("robots", "+", "feedback"): SkillFeedback,
    ("robots", "+", "faults"): FaultSpec,
    ("robots", "+", "skills", "+"): SkillCommand,
    ("brain", "status"): BrainStatus,
    ("brain", "+", "status"): BrainStatus,
    ("groups", "+", "instructions"): Instruction,
    ("groups", "+", "instructions", "+"): Instruction,  # an account's own, for a group's brain
    ("groups", "+", "brain", "status"): BrainStatus,
    ("memory", "query"): MemoryQuery,
    ("memory", "status"): MemoryStatus,
    ("memory", "change"): WorldChange,
    ("world", "events"): WorldEvent,
}
_LONGEST = max(len(levels) for levels in TOPIC_TYPES)

#: Topics that make the fleet act: a replay withholds them unless asked (``robobus replay
#: --include-commands``), and agents ignore replayed messages on them (``Message.replayed``).
#: Instructions start (and cancel or preempt, by priority) tasks; skill commands run or cancel
#: skills; faults are injected into edges; world changes rewrite spatial memory.
COMMAND_TOPICS: tuple[tuple[str, ...], ...] = (
    ("instructions",),
    ("instructions", "+"),
    ("groups", "+", "instructions"),
    ("groups", "+", "instructions", "+"),
    ("robots", "+", "skills", "+"),
    ("robots", "+", "faults"),
    ("memory", "change"),
)

#: Topics the agents always publish retained. MQTT delivers a live retained publish without its
#: flag, so a recorder running before a robot registered cannot see it: replay restores it here.
RETAINED_TOPICS: tuple[tuple[str, ...], ...] = (
    ("robots", "+", "registration"),
    ("robots", "+", "alive"),
    ("robots", "+", "state"),
    ("brain", "status"),
    ("brain", "+", "status"),
    ("groups", "+", "brain", "status"),
    ("world", "scene"),
)


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
        if _fits(pattern, levels):
            return type_
    return None


def _fits(pattern: tuple[str, ...], levels: list[str]) -> bool:
    return len(pattern) == len(levels) and all(
        p in ("+", level) for p, level in zip(pattern, levels, strict=True))


def _ends_with(table: tuple[tuple[str, ...], ...], topic: str) -> tuple[str, ...] | None:
    parts = topic.split("/")
    for pattern in table:
        if len(parts) > len(pattern) and _fits(pattern, parts[-len(pattern):]):
            return pattern
    return None


def is_command(topic: str) -> bool:
    """Whether ``topic`` (under any prefix) is one of :data:`COMMAND_TOPICS`.

    Matched on the last levels, like :func:`message_type` without a prefix: a recorded log does
    not say its prefix, and a false match only withholds a message from a replay.
    """
    return _ends_with(COMMAND_TOPICS, topic) is not None


def is_retained_topic(topic: str) -> bool:
    """Whether ``topic`` (under any prefix) is one of :data:`RETAINED_TOPICS`."""
    return _ends_with(RETAINED_TOPICS, topic) is not None


def prefix_of(topic: str) -> str | None:
    """The prefix of a contract topic (``a/b/robots/g1/state`` -> ``a/b``), else None."""
    parts = topic.split("/")
    for start in range(max(1, len(parts) - _LONGEST), len(parts)):
        if _lookup(parts[start:]) is not None:
            return "/".join(parts[:start])
    return None
