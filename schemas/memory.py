"""Request/reply messages of the memory agent (``robobus/memory/query``) and task records."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from robobus.schemas.messages import Base, Count, Int64, Nanos, Plan, Priority

QueryKind = Literal[
    "world",     # -> memory_store.world.WorldSnapshot
    "where",     # name -> {"object", "location", "place", "position"}
    "contents",  # name -> [object names at/in/held by name]
    "nearest",   # of_kind, to, k -> [object names]
    "robot",     # name -> latest {"registration", "state", "alive", "holding", "place"}
    "robots",    # -> {robot: same as "robot"}
    "events",    # pattern, t0_ns, t1_ns, limit, cursor -> {"events": [...], "next_cursor"}
    "task",      # name=task_id -> TaskRecord
    "tasks",     # status="active"|"all" -> [TaskRecord]
    "task_ids",  # cursor, limit -> {"ids": [task ids in order], "next_cursor"} (one page)
]


class MemoryQuery(Base):
    """A query to the memory agent. Unused fields are omitted."""

    kind: QueryKind
    name: str | None = None
    of_kind: str | None = None
    to: str | None = None
    k: Int64 = 1
    pattern: str | None = None
    t0_ns: Int64 | None = None
    t1_ns: Int64 | None = None
    limit: Int64 = 100
    cursor: str | None = None
    status: str | None = None


class QueryReply(Base):
    """The answer: ``ok`` with ``result``, or ``ok=False`` with a precise ``error``."""

    ok: bool
    result: Any = None
    error: str | None = None
    code: str | None = None
    next_cursor: str | None = None


class TaskRecord(Base):
    """Durable task memory, built from ``robobus/tasks/{id}`` messages; lets a brain recover.

    Bounded like :class:`~robobus.schemas.messages.TaskStatus`: a forged record with
    ``replans`` at 2**64-1 killed every brain that resumed it (issue 13).
    """

    task_id: str
    text: str = ""
    priority: Priority = 0
    status: str = "accepted"
    plan: Plan | None = None
    reason: str | None = None
    replans: Count = 0
    created_ns: Nanos = 0
    updated_ns: Nanos = 0
    steps: dict[str, str] = msgspec.field(default_factory=dict)  # step id -> last status
    #: command id -> its step's last status: a world change of an ended command is refused
    commands: dict[str, str] = msgspec.field(default_factory=dict)
