"""The store: the segmented event log plus a small LMDB environment for the views.

Layout of a store directory::

    STORE/log/seg-<start_ns>.mdb   one LMDB file per time segment (events, topic index, topics)
    STORE/views.mdb                robots, tasks, the world snapshot, the scene, the log position

Writers: one process (the memory agent, ``robobus record``, or a program using the API).
Readers: any number of processes, ``memory_store.open(path, readonly=True)``.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb
import msgspec
import structlog

from robobus.memory_store.errors import (
    MemoryStoreError,
    QueryError,
    ReadOnlyStore,
    StoreClosed,
    StoreFull,
    StoreWriteError,
)
from robobus.memory_store.log import HOUR_NS, Event, EventLog, LogSnapshot, Record
from robobus.memory_store.query import answer
from robobus.memory_store.segment import SegmentOptions
from robobus.memory_store.views import Dirty, RobotRecord, Views
from robobus.schemas.memory import MemoryQuery, QueryReply, TaskRecord
from robobus.schemas.tasks import FINAL
from robobus.schemas.topics import Topics
from robobus.schemas.world import Counter, Place, World, WorldObject, WorldRobot, WorldSnapshot

_META_WORLD, _META_SCENE, _META_POS = b"world", b"scene", b"log_position"
log = structlog.get_logger("memory.store")


@dataclass(slots=True)
class StoreOptions:
    """Store knobs. ``map_size`` is per segment; the views env is small."""

    map_size: int = 1 << 34
    segment_ns: int = HOUR_NS
    views_map_size: int = 1 << 30
    readahead: bool = False
    sync: bool = True
    retention_ns: int | None = None


@dataclass(frozen=True, slots=True)
class BadRecord:
    """A stored view record that failed its schema checks when read back (and was skipped)."""

    record: str
    reason: str


def salvage_world(raw: bytes, problems: list[BadRecord]) -> WorldSnapshot:
    """The entries of a stored world that pass their checks; each other one is noted."""
    try:
        data = msgspec.msgpack.decode(raw)
    except (msgspec.DecodeError, RecursionError) as exc:
        problems.append(BadRecord("meta/world", f"stored world is not msgpack: {exc}"))
        return WorldSnapshot()
    if not isinstance(data, dict):
        problems.append(BadRecord("meta/world", "stored world is not a map"))
        return WorldSnapshot()
    snap = WorldSnapshot()
    for section, type_ in (("places", Place), ("objects", WorldObject), ("robots", WorldRobot)):
        entries = data.get(section)
        for name, entry in (entries.items() if isinstance(entries, dict) else ()):
            try:
                getattr(snap, section)[str(name)] = msgspec.convert(entry, type_)
            except msgspec.ValidationError as exc:
                problems.append(BadRecord(f"meta/world/{section}/{str(name)[:80]}",
                                          f"stored {section[:-1]} {str(name)[:80]!r} skipped: {exc}"))
    try:
        snap.version = msgspec.convert(data.get("version", 0), Counter)
    except msgspec.ValidationError as exc:
        problems.append(BadRecord("meta/world/version", f"stored world version: {exc}"))
    return snap


class ViewStore:
    """Persisted views in ``views.mdb``: written once per group commit, read by anyone."""

    def __init__(self, path: Path, opts: StoreOptions, readonly: bool) -> None:
        self.env = lmdb.open(str(path), subdir=False, map_size=opts.views_map_size, max_dbs=4,
                             readonly=readonly, sync=opts.sync, metasync=opts.sync,
                             readahead=False, create=not readonly)
        create = not readonly
        self.robots_db = self.env.open_db(b"robots", create=create)
        self.tasks_db = self.env.open_db(b"tasks", create=create)
        self.meta_db = self.env.open_db(b"meta", create=create)
        #: stored records that failed their checks on the way in: skipped, to be reported
        self.problems: list[BadRecord] = []

    def save(self, dirty: Dirty, last_ts: int, last_seq: int) -> None:
        """Write the changed records; LMDB's refusals become :class:`MemoryStoreError`."""
        try:
            self._save(dirty, last_ts, last_seq)
        except lmdb.MapFullError as exc:
            raise StoreFull(self.env.path(), self.env.info()["map_size"]) from exc
        except lmdb.Error as exc:
            raise StoreWriteError(self.env.path(), f"{type(exc).__name__}: {exc}") from exc

    def _keyable(self, records: list[tuple[bytes, bytes]], db: str) -> list[tuple[bytes, bytes]]:
        limit = self.env.max_key_size()
        if all(0 < len(k) <= limit for k, _ in records):
            return records
        for key, _ in records:  # the views refuse such names first; never end the committer
            if not 0 < len(key) <= limit:
                log.error("view_record_not_keyable", db=db, key_bytes=len(key))
        return [(k, v) for k, v in records if 0 < len(k) <= limit]

    def _save(self, dirty: Dirty, last_ts: int, last_seq: int) -> None:
        with self.env.begin(write=True) as txn:
            txn.cursor(self.robots_db).putmulti(self._keyable(dirty.robots, "robots"))
            txn.cursor(self.tasks_db).putmulti(self._keyable(dirty.tasks, "tasks"))
            if dirty.world is not None:
                txn.put(_META_WORLD, dirty.world, db=self.meta_db)
            if dirty.scene is not None:
                txn.put(_META_SCENE, dirty.scene, db=self.meta_db)
            txn.put(_META_POS, msgspec.msgpack.encode((last_ts, last_seq)), db=self.meta_db)

    def _raw_meta(self, key: bytes) -> bytes | None:
        with self.env.begin(db=self.meta_db) as txn:
            raw = txn.get(key)
            return None if raw is None else bytes(raw)

    def _meta(self, key: bytes, type_: Any) -> Any:
        raw = self._raw_meta(key)
        return None if raw is None else self._decode(f"meta/{key.decode()}", raw, type_)

    def _decode(self, record: str, raw: bytes, type_: Any, note: bool = True) -> Any:
        """``raw`` as ``type_``, or None with the record noted in :attr:`problems` (a bad
        record read again by a query is skipped, not noted again: it was reported at start)."""
        try:
            return msgspec.msgpack.decode(raw, type=type_)
        except (msgspec.DecodeError, RecursionError) as exc:
            if note:
                self.problems.append(BadRecord(record, f"stored {record} does not decode: {exc}"))
            return None

    def world(self) -> WorldSnapshot | None:
        """The stored world; a bad record loses only its bad entries (see :attr:`problems`)."""
        raw = self._raw_meta(_META_WORLD)
        if raw is None:
            return None
        try:
            return msgspec.msgpack.decode(raw, type=WorldSnapshot)
        except (msgspec.DecodeError, RecursionError):
            return salvage_world(raw, self.problems)  # notes each entry it skips

    def scene(self) -> dict[str, Any] | None:
        return self._meta(_META_SCENE, dict[str, Any])

    def position(self) -> tuple[int, int]:
        """``(ts_ns, seq)`` of the last log event the persisted views include."""
        pos = self._meta(_META_POS, tuple[Counter, Counter])
        return pos if pos is not None else (0, 0)

    def _all(self, db: Any, type_: Any, name: str) -> dict[str, Any]:
        found: dict[str, Any] = {}
        with self.env.begin(db=db) as txn:
            for k, v in txn.cursor():
                key = bytes(k).decode(errors="replace")
                value = self._decode(f"{name}/{key[:80]}", bytes(v), type_)
                if value is not None:
                    found[key] = value
        return found

    def robots(self) -> dict[str, RobotRecord]:
        return self._all(self.robots_db, RobotRecord, "robots")

    def tasks(self, keep_finished: int | None = None) -> dict[str, TaskRecord]:
        """Stored task records; with ``keep_finished``, only the live ones and that many of the
        most recently finished (what the agent keeps in RAM; the rest stays on disk)."""
        if keep_finished is None:
            return self._all(self.tasks_db, TaskRecord, "tasks")
        live: dict[str, TaskRecord] = {}
        recent: list[tuple[int, str, TaskRecord]] = []  # a min-heap on updated_ns
        for key, rec in self._iter(self.tasks_db, TaskRecord, "tasks"):
            if rec.status not in FINAL:
                live[key] = rec
            elif len(recent) < keep_finished:
                heapq.heappush(recent, (rec.updated_ns, key, rec))
            elif keep_finished and (rec.updated_ns, key) > recent[0][:2]:
                heapq.heapreplace(recent, (rec.updated_ns, key, rec))
        return {**{key: rec for _, key, rec in recent}, **live}

    def _iter(self, db: Any, type_: Any, name: str, note: bool = True
              ) -> Iterator[tuple[str, Any]]:
        with self.env.begin(db=db) as txn:
            for k, v in txn.cursor():
                key = bytes(k).decode(errors="replace")
                value = self._decode(f"{name}/{key[:80]}", bytes(v), type_, note)
                if value is not None:
                    yield key, value

    def task(self, task_id: str) -> TaskRecord | None:
        """One stored task record (None if absent, or if it does not decode: noted)."""
        key = task_id.encode()
        if not 0 < len(key) <= self.env.max_key_size():
            return None
        with self.env.begin(db=self.tasks_db) as txn:
            raw = txn.get(key)
            raw = None if raw is None else bytes(raw)
        return None if raw is None else self._decode(f"tasks/{task_id[:80]}", raw, TaskRecord,
                                                     note=False)

    def task_ids(self, after: str = "", limit: int = 1000) -> list[str]:
        """Up to ``limit`` stored task ids after ``after``, in key order; keys only, no record
        is read (a brain's filter of known task ids loads from these, page by page)."""
        ids: list[str] = []
        start = after.encode(errors="replace")
        with self.env.begin(db=self.tasks_db) as txn:
            cur = txn.cursor()
            if not (cur.set_range(start) if start else cur.first()):
                return ids
            for k in cur.iternext(keys=True, values=False):
                key = bytes(k)
                if key == start:
                    continue
                ids.append(key.decode(errors="replace"))
                if len(ids) == limit:
                    break
        return ids

    def iter_tasks(self, skip: Container[str] = (), max_bytes: int | None = None
                   ) -> Iterator[TaskRecord]:
        """Stored task records that decode, but those in ``skip``; a bad one is skipped.
        Past ``max_bytes`` of records, :class:`QueryError` (``too_large``): the answer could
        not be sent anyway, and the agent reads them on its event loop."""
        total = 0
        with self.env.begin(db=self.tasks_db) as txn:
            for k, v in txn.cursor():
                key = bytes(k).decode(errors="replace")
                if key in skip:
                    continue
                total += len(v)
                if max_bytes is not None and total > max_bytes:
                    raise QueryError(f"the stored tasks exceed the {max_bytes}-byte limit of a "
                                     "reply: ask for status=active or one task", "too_large")
                rec = self._decode(f"tasks/{key[:80]}", bytes(v), TaskRecord, note=False)
                if rec is not None:
                    yield rec

    def load_into(self, views: Views) -> tuple[int, int]:
        """Fill ``views``; with an archive set, only the tasks it keeps in RAM are loaded."""
        keep = views.max_finished if views.archive is not None else None
        views.restore(self.world(), self.scene(), self.robots(), self.tasks(keep))
        return self.position()

    def close(self) -> None:
        self.env.close()


class MemoryStore:
    """Event log + views. Use :func:`memory_store.open`."""

    def __init__(self, path: str | Path, *, readonly: bool = False,
                 options: StoreOptions | None = None) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self.options = opts = options or StoreOptions()
        if not readonly:
            self.path.mkdir(parents=True, exist_ok=True)
        seg = SegmentOptions(map_size=opts.map_size, readahead=opts.readahead, sync=opts.sync)
        self.log = EventLog(self.path / "log", readonly=readonly, segment_ns=opts.segment_ns,
                            seg_opts=seg)
        self.views_store = ViewStore(self.path / "views.mdb", opts, readonly)
        self.closed = False

    # -- writing ------------------------------------------------------------------------------
    def append(self, topic: str, payload: bytes, ts_ns: int | None = None) -> int:
        """Record one event and commit it; the returned sequence number is the acknowledgement."""
        return self.append_many([(topic, payload, ts_ns or time.time_ns())])

    def append_many(self, events: Iterable[Record]) -> int:
        """Record ``(topic, payload, ts_ns[, header])`` events in one durable transaction;
        last seq (``header``: :func:`memory_store.headers.pack`)."""
        self._check_writable()
        return self.log.append(events)

    def commit(self, events: list[Record], dirty: Dirty | None) -> int:
        """Group commit: the events, then the views that include them (writer thread)."""
        self._check_writable()
        seq = self.log.append(events)
        if dirty is not None:
            try:
                self.views_store.save(dirty, self.log.last_ts, seq)
            except MemoryStoreError as exc:
                exc.stored = len(events)  # type: ignore[attr-defined]  # the log has them
                raise
        return seq

    def apply_retention(self, now_ns: int | None = None) -> list[Path]:
        """Drop segments older than the retention window; returns the deleted files."""
        if self.options.retention_ns is None:
            return []
        return self.log.drop_before((now_ns or time.time_ns()) - self.options.retention_ns)

    def _check_writable(self) -> None:
        if self.closed:
            raise StoreClosed(f"store {self.path} is closed")
        if self.readonly:
            raise ReadOnlyStore(f"store {self.path} is open read-only")

    # -- reading ------------------------------------------------------------------------------
    def get(self, ts_ns: int, seq: int) -> Event | None:
        """One event by key."""
        return self.log.get(ts_ns, seq)

    def snapshot(self) -> LogSnapshot:
        """Reusable read transactions for many point gets (``with store.snapshot() as s``)."""
        return self.log.snapshot()

    def scan(self, t0: int = 0, t1: int = 2**63 - 1, pattern: str | None = None,
             after: bytes | None = None) -> Iterator[Event]:
        """Events in ``[t0, t1]`` on topics matching ``pattern``, oldest first."""
        return self.log.scan(t0, t1, pattern, after)

    def views(self, topics: Topics | None = None) -> Views:
        """The persisted spatial, embodiment and task memory, as of the last commit."""
        views = Views(topics, live=False)
        self.views_store.load_into(views)
        return views

    def world(self) -> World:
        snap = self.views_store.world()
        return World(snap)

    def robot(self, name: str) -> RobotRecord | None:
        with self.views_store.env.begin(db=self.views_store.robots_db) as txn:
            raw = txn.get(name.encode())
            return None if raw is None else msgspec.msgpack.decode(raw, type=RobotRecord)

    def task(self, task_id: str) -> TaskRecord | None:
        with self.views_store.env.begin(db=self.views_store.tasks_db) as txn:
            raw = txn.get(task_id.encode())
            return None if raw is None else msgspec.msgpack.decode(raw, type=TaskRecord)

    def query(self, q: MemoryQuery) -> QueryReply:
        """Answer a :class:`MemoryQuery` from this process, without the agent."""
        return answer(q, self.views(), self.log)

    def stats(self) -> dict[str, Any]:
        """Counts per topic, time span, segments and bytes on disk."""
        return self.log.stats()

    # -- lifecycle ----------------------------------------------------------------------------
    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.log.close()
            self.views_store.close()

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_store(path: str | Path, readonly: bool = False, **options: Any) -> MemoryStore:
    """Open (or create) the store at ``path``; ``options`` are :class:`StoreOptions` fields."""
    return MemoryStore(path, readonly=readonly, options=StoreOptions(**options))


def rebuild_views(store: MemoryStore, topics: Topics | None = None,
                  scene: dict[str, Any] | None = None) -> Views:
    """Fold the whole log into fresh views: spatial memory comes from the recorded scene and
    ``world/events`` alone, so the result equals the memory the agent kept."""
    views = Views(topics, live=False)
    if scene is not None:
        views.seed(scene)
    for ev in store.scan():
        views.observe(ev.topic, ev.payload, ev.ts_ns)
    return views


def rebuild_world(path: str | Path, topics: Topics | None = None,
                  scene: dict[str, Any] | None = None) -> World:
    """The world rebuilt from the log at ``path`` (opened read-only)."""
    with MemoryStore(path, readonly=True) as store:
        return rebuild_views(store, topics, scene).world
