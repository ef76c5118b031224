"""Answering :class:`MemoryQuery` (``schemas/memory.py``), locally or for the agent.

:func:`answer` is one function for both paths: the agent passes its live views, a local reader
passes ``store.views()``. Every refusal is a :class:`QueryError` with a precise reason and a
machine-readable ``code`` (``malformed``, ``missing_field``, ``invalid``, ``unknown``,
``bad_cursor``, ``bad_pattern``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from robobus.bus.errors import TopicError
from robobus.bus.topics import validate_filter
from robobus.memory_store.errors import QueryError
from robobus.memory_store.log import EventLog
from robobus.memory_store.segment import KEY_LEN
from robobus.memory_store.views import Views
from robobus.schemas.codec import decode_as
from robobus.schemas.errors import DecodeError
from robobus.schemas.memory import MemoryQuery, QueryReply
from robobus.schemas.tasks import FINAL
from robobus.schemas.world import WorldConflict

MAX_LIMIT = 10_000
#: msgpack bytes of one event entry besides its topic and payload (keys, ints, headers)
_EVENT_OVERHEAD = 64
MAX_K = 1000
#: bytes of stored task records a ``tasks`` query reads from disk at most (a reply is <= 1 MiB)
_TASKS_READ_MAX = 1 << 20

#: bytes of task ids one ``task_ids`` page holds at most (a reply is <= 1 MiB)
_IDS_PAGE_BYTES = 256 << 10
#: LMDB's key size limit: a stored task id is never longer
_MAX_ID_BYTES = 511

#: Query kinds that read the event log (blocking I/O: the agent runs them in a thread).
LOG_KINDS = frozenset({"events"})


def parse(payload: bytes) -> MemoryQuery:
    """Decode a query or raise ``QueryError(code="malformed")`` saying what is wrong."""
    try:  # msgpack or JSON (issue 14)
        return decode_as(payload, MemoryQuery, "memory/query")
    except DecodeError as exc:
        raise QueryError(f"malformed query: {exc.reason}", "malformed") from exc


def answer(q: MemoryQuery, views: Views, log: EventLog | None,
           max_bytes: int | None = None) -> QueryReply:
    """Answer ``q``; refusals come back as ``ok=False`` replies, never as exceptions.
    ``max_bytes`` bounds a page of events (it ends early, with a cursor to go on)."""
    try:
        if q.kind in LOG_KINDS:
            if log is None:
                raise QueryError("this memory has no event log", "invalid")
            return events(q, log, max_bytes)
        if q.kind == "task_ids":
            return task_ids(q, views)
        return QueryReply(ok=True, result=_HANDLERS[q.kind](q, views))
    except QueryError as exc:
        return QueryReply(ok=False, error=exc.reason, code=exc.code)


def refuse(exc: QueryError) -> QueryReply:
    return QueryReply(ok=False, error=exc.reason, code=exc.code)


def _need(q: MemoryQuery, field: str) -> Any:
    value = getattr(q, field)
    if value is None or value == "":
        raise QueryError(f"query {q.kind!r} needs {field!r}", "missing_field")
    return value


def _known(views: Views, name: str) -> None:
    w = views.world
    if name not in w.objects and name not in w.places and name not in w.robots:
        raise QueryError(f"unknown object, place or robot {name!r}", "unknown")


def _world(q: MemoryQuery, views: Views) -> Any:
    return views.world.snapshot()


def _where(q: MemoryQuery, views: Views) -> dict[str, Any]:
    name = _need(q, "name")
    _known(views, name)
    w = views.world
    location: str | None
    if name in w.objects:
        location = w.objects[name].location
    elif name in w.robots:
        location = w.robots[name].place
    else:
        location = name
    return {"object": name, "location": location, "place": w.place_of(name),
            "position": w.position_of(name)}


def _contents(q: MemoryQuery, views: Views) -> list[str]:
    name = _need(q, "name")
    _known(views, name)
    return views.world.contents(name)


def _nearest(q: MemoryQuery, views: Views) -> list[str]:
    kind, to = _need(q, "of_kind"), _need(q, "to")
    if not 1 <= q.k <= MAX_K:
        raise QueryError(f"k must be between 1 and {MAX_K}, got {q.k}", "invalid")
    try:
        return views.world.nearest(kind, to, q.k)
    except WorldConflict as exc:
        raise QueryError(exc.reason, "unknown") from exc


def robot_view(views: Views, name: str) -> dict[str, Any]:
    """The ``robot`` query's result for one robot."""
    rec = views.robots.get(name)
    wr = views.world.robots.get(name)
    if rec is None and wr is None:
        raise QueryError(f"unknown robot {name!r}", "unknown")
    alive = rec.alive if rec is not None and rec.alive is not None else (wr.alive if wr else None)
    return {
        "registration": rec.registration if rec else None,
        "state": rec.state if rec else None,
        "feedback": rec.feedback if rec else None,
        "alive": alive,
        "holding": list(wr.holding) if wr else [],
        "place": wr.place if wr else None,
    }


def _robot(q: MemoryQuery, views: Views) -> dict[str, Any]:
    return robot_view(views, _need(q, "name"))


def _robots(q: MemoryQuery, views: Views) -> dict[str, Any]:
    names = sorted({*views.robots, *views.world.robots})
    return {name: robot_view(views, name) for name in names}


def _task(q: MemoryQuery, views: Views) -> Any:
    task_id = _need(q, "name")
    rec = views.task(task_id)  # an old finished task is read back from disk
    if rec is None:
        raise QueryError(f"unknown task {task_id!r}", "unknown")
    return rec


def _tasks(q: MemoryQuery, views: Views) -> list[Any]:
    status = q.status or "all"
    # live tasks are always in RAM; any other status may need the records kept on disk
    found = views.tasks.values() if status == "active" else views.all_tasks(_TASKS_READ_MAX)
    recs = sorted(found, key=lambda r: (r.created_ns, r.task_id))
    if status == "all":
        return recs
    if status == "active":
        return [r for r in recs if r.status not in FINAL]
    return [r for r in recs if r.status == status]


def events(q: MemoryQuery, log: EventLog, max_bytes: int | None = None) -> QueryReply:
    """One page of events; ``next_cursor`` is set when more may follow. A page ends early
    once its events would take more than ``max_bytes`` encoded (a reply must fit the bus)."""
    if not 1 <= q.limit <= MAX_LIMIT:
        raise QueryError(f"limit must be between 1 and {MAX_LIMIT}, got {q.limit}", "invalid")
    t0, t1 = q.t0_ns or 0, q.t1_ns if q.t1_ns is not None else 2**63 - 1
    if t0 < 0 or t1 < t0:
        raise QueryError(f"bad time range: t0_ns={t0} t1_ns={t1}", "invalid")
    pattern = q.pattern or "#"
    try:
        validate_filter(pattern)
    except TopicError as exc:
        raise QueryError(str(exc), "bad_pattern") from exc
    after = _cursor(q.cursor)
    page: list[dict[str, Any]] = []
    budget = max_bytes if max_bytes is not None else -1
    full = False
    for ev in log.scan(t0, t1, pattern, after):
        size = len(ev.payload) + len(ev.topic.encode(errors="replace")) + _EVENT_OVERHEAD
        if max_bytes is not None and page and size > budget:
            full = True  # the rest comes with the next page
            break
        budget -= size
        page.append({"ts_ns": ev.ts_ns, "seq": ev.seq, "topic": ev.topic, "payload": ev.payload})
        if len(page) == q.limit:
            full = True
            break
    nxt = _encode_cursor(page[-1]) if full else None
    return QueryReply(ok=True, result={"events": page, "next_cursor": nxt}, next_cursor=nxt)


def task_ids(q: MemoryQuery, views: Views) -> QueryReply:
    """One page of every task id memory knows (in RAM or stored), in code point order after
    ``cursor`` (the last id of the previous page); ``next_cursor`` is set when more may follow.
    Keys only: no record is decoded, so a brain loads its filter of known ids cheaply."""
    if not 1 <= q.limit <= MAX_LIMIT:
        raise QueryError(f"limit must be between 1 and {MAX_LIMIT}, got {q.limit}", "invalid")
    after = q.cursor or ""
    if len(after.encode(errors="replace")) > _MAX_ID_BYTES:  # no stored key is that long
        raise QueryError(f"bad cursor {after[:64]!r}: longer than a task id", "bad_cursor")
    ram = sorted(t for t in views.tasks if t > after)
    stored = views.archive.task_ids(after, q.limit) if views.archive is not None else []
    merged = sorted({*ram[:q.limit], *stored})
    page: list[str] = []
    size = 0
    for task_id in merged[:q.limit]:
        size += len(task_id.encode(errors="replace")) + 3  # msgpack str header
        if page and size > _IDS_PAGE_BYTES:
            break
        page.append(task_id)
    more = len(page) < len(merged) or len(ram) > q.limit or len(stored) == q.limit
    nxt = page[-1] if more and page else None
    return QueryReply(ok=True, result={"ids": page, "next_cursor": nxt}, next_cursor=nxt)


def _cursor(cursor: str | None) -> bytes | None:
    if not cursor:
        return None
    try:
        raw = bytes.fromhex(cursor)
    except ValueError as exc:
        raise QueryError(f"bad cursor {cursor!r}: not hex", "bad_cursor") from exc
    if len(raw) != KEY_LEN:
        raise QueryError(f"bad cursor {cursor!r}: expected {KEY_LEN} bytes", "bad_cursor")
    return raw


def _encode_cursor(event: dict[str, Any]) -> str:
    return ((event["ts_ns"] << 64) | event["seq"]).to_bytes(KEY_LEN, "big").hex()


_HANDLERS: dict[str, Callable[[MemoryQuery, Views], Any]] = {
    "world": _world, "where": _where, "contents": _contents, "nearest": _nearest,
    "robot": _robot, "robots": _robots, "task": _task, "tasks": _tasks,
}
