"""The temporal memory: an append-only event log split into time segments.

Each segment is one LMDB file (:mod:`memory_store.segment`). The writer appends batches; any
number of readers in other processes open the same directory read-only and see every committed
batch through LMDB's shared memory map, without copying and without talking to the writer.
"""

from __future__ import annotations

import bisect
import heapq
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import lmdb
import msgspec

from robobus.bus.topics import matches
from robobus.memory_store.errors import MemoryStoreError, ReadOnlyStore, StoreFull, StoreWriteError
from robobus.memory_store.headers import HEADED, TID_MASK, Properties, unpack
from robobus.memory_store.segment import (
    KEY_LEN,
    MAX_TOPIC_BYTES,
    TID_LEN,
    Segment,
    SegmentOptions,
    pack_key,
    segment_name,
    segment_start,
    unpack_key,
)

HOUR_NS = 3600 * 10**9
#: an event to append: ``(topic, payload, ts_ns)``, or with a stored header as a fourth item
Record = tuple[str, bytes, int] | tuple[str, bytes, int, bytes]
MAX_KEY = b"\xff" * KEY_LEN
#: Above this many matching topics a pattern scan reads the whole time range and filters,
#: which beats merging that many per-topic index streams.
INDEX_MERGE_LIMIT = 32


class Event(msgspec.Struct, frozen=True, gc=False):
    """One recorded message (a msgspec struct: cheap to build on the read path).

    ``retain``, ``qos`` and ``props`` are what the bus said of the message when it was
    recorded (:mod:`memory_store.headers`); records older than them read as the defaults.
    """

    ts_ns: int
    seq: int
    topic: str
    payload: bytes
    retain: bool = False
    qos: int = 0
    props: Properties | None = None

    @property
    def key(self) -> bytes:
        return pack_key(self.ts_ns, self.seq)


class EventLog:
    """A directory of time segments; ``readonly`` readers may run in other processes."""

    def __init__(self, root: Path, *, readonly: bool = False, segment_ns: int = HOUR_NS,
                 seg_opts: SegmentOptions | None = None) -> None:
        if readonly and not root.is_dir():
            raise MemoryStoreError(f"no event log at {root}")
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.readonly = readonly
        self.segment_ns = segment_ns
        self.seg_opts = seg_opts or SegmentOptions()
        self._open: dict[int, Segment] = {}
        self._starts: list[int] = []
        self._mtime = -1
        self._lock = threading.RLock()
        self._head: Segment | None = None
        self._head_end = -1
        self.last_ts = 0
        self.last_seq = 0
        if not readonly:
            self._recover()

    # -- segments ----------------------------------------------------------------------------
    def starts(self) -> list[int]:
        """Start times of the segments on disk, oldest first (re-listed when the dir changes)."""
        with self._lock:
            mtime = os.stat(self.root).st_mtime_ns
            # Directory mtimes tick coarsely (a few ms): within a second of a change, a file
            # created in the same tick could hide behind an unchanged mtime, so list again.
            if mtime != self._mtime or time.time_ns() - mtime < 10**9:
                found = (segment_start(p) for p in self.root.iterdir())
                self._starts = sorted(s for s in found if s is not None)
                self._mtime = mtime
            return list(self._starts)

    def segment(self, start: int) -> Segment:
        """The open segment starting at ``start``."""
        with self._lock:
            seg = self._open.get(start)
            if seg is None:
                path = self.root / segment_name(start)
                seg = self._open[start] = Segment(path, start, self.seg_opts, self.readonly)
            return seg

    def _recover(self) -> None:
        starts = self.starts()
        if not starts:
            return
        head = self.segment(starts[-1])
        last = head.last_key()
        if last is not None:
            self.last_ts, self.last_seq = unpack_key(last)
        self._head = head
        self._head_end = head.start_ns - head.start_ns % self.segment_ns + self.segment_ns

    def _roll(self, ts: int) -> Segment:
        start = ts - ts % self.segment_ns
        if self._head is not None:
            start = max(start, self._head.start_ns + 1)
        with self._lock:
            head = self._head = self.segment(start)
            self._starts = sorted({*self._starts, start})
        self._head_end = ts - ts % self.segment_ns + self.segment_ns
        return head

    # -- writing -------------------------------------------------------------------------------
    def append(self, events: Iterable[Record]) -> int:
        """Commit ``(topic, payload, ts_ns[, header])`` events durably; return the last
        sequence number (``header``: :func:`memory_store.headers.pack`, ``b""`` for none).

        Timestamps are clamped to be non-decreasing, so keys always append. An event whose
        timestamp crosses the current segment's end opens the next segment. One pass over
        the events builds both the records and the per-topic index groups: this loop is the
        direct-ingest hot path.
        """
        if self.readonly:
            raise ReadOnlyStore(f"event log {self.root} is open read-only")
        events = list(events)
        for ev in events:  # LMDB keys the topic table by name: up to 511 bytes
            topic = ev[0]
            if len(topic) > MAX_TOPIC_BYTES // 4 and len(topic.encode()) > MAX_TOPIC_BYTES:
                raise StoreWriteError(str(self.root), f"topic of {len(topic.encode())} bytes is "
                                      f"longer than {MAX_TOPIC_BYTES}", "topic_too_long")
        seq, last_ts, seg_end = self.last_seq, self.last_ts, self._head_end
        stored = 0
        seg = self._head
        tids: dict[str, bytes] = seg.tid_bytes if seg is not None else {}
        items: list[tuple[bytes, bytes]] = []
        add = items.append
        groups: dict[bytes, list[bytes]] = {}
        new: list[str] = []
        headed: dict[bytes, bytes] = {}  # tid -> the tid with its top bit set, per batch
        for ev in events:
            topic, payload, ts = ev[0], ev[1], ev[2]
            if ts < last_ts:
                ts = last_ts
            if ts >= seg_end:
                self._commit(seg, items, groups, new, seq, last_ts, stored)
                stored += len(items)
                items, groups, new = [], {}, []
                add = items.append
                seg = self._roll(ts)
                seg_end, tids = self._head_end, seg.tid_bytes
            seq += 1
            last_ts = ts
            key = ((ts << 64) | seq).to_bytes(KEY_LEN, "big")
            tid = tids.get(topic)
            if tid is None:
                tid = seg.new_topic(topic)  # type: ignore[union-attr]
                new.append(topic)
            if len(ev) == 4 and ev[3]:  # the top bit of the stored id says a header follows
                htid = headed.get(tid)
                if htid is None:
                    htid = headed[tid] = (int.from_bytes(tid, "big") | HEADED).to_bytes(
                        TID_LEN, "big")
                add((key, htid + ev[3] + payload))
            else:
                add((key, tid + payload))
            group = groups.get(tid)
            if group is None:
                groups[tid] = [key]
            else:
                group.append(key)
        self._commit(seg, items, groups, new, seq, last_ts, stored)
        return seq

    def _commit(self, seg: Segment | None, items: list[tuple[bytes, bytes]],
                groups: dict[bytes, list[bytes]], new: list[str], seq: int, ts: int,
                stored: int) -> None:
        """Commit one segment's part of a batch; a refusal says how many events before it
        (``stored``, in earlier segments) did commit."""
        if not items or seg is None:
            return
        try:
            seg.commit(items, groups, new)
        except lmdb.MapFullError as exc:
            raise _stored(StoreFull(str(seg.path), self.seg_opts.map_size), stored) from exc
        except lmdb.Error as exc:  # disk full, I/O error: say so instead of ending the agent
            raise _stored(StoreWriteError(str(seg.path), f"{type(exc).__name__}: {exc}"),
                          stored) from exc
        self.last_seq, self.last_ts = seq, ts

    # -- reading ---------------------------------------------------------------------------------
    def _covering(self, t0: int, t1: int) -> list[int]:
        starts = self.starts()
        first = max(bisect.bisect_right(starts, t0) - 1, 0)
        return [s for s in starts[first:] if s <= t1]

    def get(self, ts_ns: int, seq: int) -> Event | None:
        """The event with key ``(ts_ns, seq)``, or None."""
        found = self._covering(ts_ns, ts_ns)
        if not found:
            return None
        seg = self.segment(found[0])
        if not seg.ready():
            return None
        key = pack_key(ts_ns, seq)
        with seg.env.begin(db=seg.events) as txn:
            value = txn.get(key)
            if value is None:
                return None
            return decode_event(ts_ns, seq, value, seg.topic_name)

    def snapshot(self) -> LogSnapshot:
        """A consistent read view with its transactions kept open: the fastest point gets."""
        return LogSnapshot(self)

    def scan_raw(self, t0: int = 0, t1: int = 2**63 - 1) -> Iterator[tuple[bytes, bytes]]:
        """Raw ``(key, value)`` pairs in ``[t0, t1]``: no decoding, the fastest range read."""
        lo, hi = pack_key(t0, 0), pack_key(t1, 2**64 - 1)
        for start in self._covering(t0, t1):
            seg = self.segment(start)
            if not seg.ready():
                continue
            with seg.env.begin(db=seg.events) as txn:
                cur = txn.cursor()
                if not cur.set_range(lo):
                    continue
                for key, value in cur.iternext():
                    if key > hi:
                        return
                    yield key, value

    def scan(self, t0: int = 0, t1: int = 2**63 - 1, pattern: str | None = None,
             after: bytes | None = None) -> Iterator[Event]:
        """Events with ``t0 <= ts_ns <= t1`` on topics matching ``pattern``, oldest first.

        ``after`` (an event key) resumes a paginated scan just past that event.
        """
        lo, hi = pack_key(t0, 0), pack_key(t1, 2**64 - 1)
        if after is not None and after >= lo:
            lo = (int.from_bytes(after, "big") + 1).to_bytes(KEY_LEN, "big")
            t0 = unpack_key(lo)[0]
        for start in self._covering(t0, t1):
            seg = self.segment(start)
            if seg.ready():
                yield from self._scan_segment(seg, lo, hi, pattern)

    def _scan_segment(self, seg: Segment, lo: bytes, hi: bytes,
                      pattern: str | None) -> Iterator[Event]:
        seg.load_topics()
        with seg.env.begin() as txn:
            if pattern is None or pattern == "#":
                pairs: Iterator[tuple[bytes, bytes]] = _range(txn.cursor(seg.events), lo, hi)
            else:
                tids = [tid for name, tid in list(seg.tids.items()) if matches(pattern, name)]
                if not tids:
                    return
                pairs = self._pattern_pairs(txn, seg, tids, lo, hi)
            names, name_of, from_bytes = seg.names, seg.topic_name, int.from_bytes
            for key, value in pairs:
                tid = from_bytes(value[:TID_LEN])
                if tid & HEADED:
                    yield decode_event(from_bytes(key[:8]), from_bytes(key[8:]), value, name_of)
                    continue
                yield Event(from_bytes(key[:8]), from_bytes(key[8:]),
                            names.get(tid) or name_of(tid), value[TID_LEN:])

    def _pattern_pairs(self, txn: lmdb.Transaction[bytes], seg: Segment, tids: list[int], lo: bytes,
                       hi: bytes) -> Iterator[tuple[bytes, bytes]]:
        if len(tids) > INDEX_MERGE_LIMIT:
            wanted = set(tids)
            for key, value in _range(txn.cursor(seg.events), lo, hi):
                if int.from_bytes(value[:TID_LEN], "big") & TID_MASK in wanted:
                    yield key, value
            return
        streams = [_topic_keys(txn.cursor(seg.index), tid, lo, hi) for tid in tids]
        for key in heapq.merge(*streams):
            event = txn.get(key, db=seg.events)
            if event is not None:  # always: the index is written in the events' transaction
                yield key, event

    # -- maintenance -----------------------------------------------------------------------------
    def stats(self) -> dict[str, object]:
        """Counts per topic (from the index, not the events), time span, bytes on disk."""
        counts: dict[str, int] = {}
        total = size = 0
        for start in self.starts():
            seg = self.segment(start)
            size += seg.size()
            if not seg.ready():
                continue
            seg.load_topics()
            with seg.env.begin(db=seg.index) as txn:
                for ikey, value in txn.cursor():
                    name = seg.topic_name(int.from_bytes(ikey[:TID_LEN], "big"))
                    counts[name] = counts.get(name, 0) + len(value) // KEY_LEN
                    total += len(value) // KEY_LEN
        first, last = self._span()
        return {"events": total, "topics": dict(sorted(counts.items())), "first_ns": first,
                "last_ns": last, "segments": len(self.starts()), "bytes": size}

    def _span(self) -> tuple[int | None, int | None]:
        first = next(self.scan_raw(), None)
        last = None
        for start in reversed(self.starts()):
            key = self.segment(start).last_key()
            if key is not None:
                last = unpack_key(key)[0]
                break
        return (unpack_key(first[0])[0] if first else None), last

    def drop_before(self, ts_ns: int) -> list[Path]:
        """Delete whole segments whose time range ends at or before ``ts_ns`` (retention)."""
        if self.readonly:
            raise ReadOnlyStore(f"event log {self.root} is open read-only")
        starts = self.starts()
        dropped: list[Path] = []
        with self._lock:
            for start, nxt in zip(starts, starts[1:], strict=False):
                if nxt > ts_ns or (self._head is not None and start == self._head.start_ns):
                    break
                seg = self._open.pop(start, None)
                if seg is not None:
                    seg.close()
                path = self.root / segment_name(start)
                for victim in (path, Path(f"{path}-lock")):
                    victim.unlink(missing_ok=True)
                dropped.append(path)
        return dropped

    def close(self) -> None:
        with self._lock:
            for seg in self._open.values():
                seg.close()
            self._open.clear()
            self._head = None


def decode_event(ts_ns: int, seq: int, value: bytes | memoryview,
                 name_of: Callable[[int], str]) -> Event:
    """The event in a stored value (topic id, an optional header, the payload)."""
    tid = int.from_bytes(value[:TID_LEN], "big")
    if not tid & HEADED:
        return Event(ts_ns, seq, name_of(tid), bytes(value[TID_LEN:]))
    try:
        retain, qos, props, start = unpack(value, TID_LEN)
    except IndexError:  # a damaged value whose header was cut off: ended every scan (fuzz)
        return Event(ts_ns, seq, name_of(tid & TID_MASK), b"")
    return Event(ts_ns, seq, name_of(tid & TID_MASK), bytes(value[start:]), retain, qos, props)


def _stored(exc: MemoryStoreError, stored: int) -> MemoryStoreError:
    exc.stored = stored  # type: ignore[attr-defined]
    return exc


class LogSnapshot:
    """Read transactions on every segment, opened lazily and reused; use as a context manager.

    ``get`` costs a bisect and one B+tree lookup in the shared mmap: no copy of the value
    until ``Event`` is built (``get_raw`` skips even that).
    """

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self.starts = log.starts()
        self._txns: dict[int, tuple[Segment, lmdb.Transaction[memoryview]]] = {}

    def _txn(self, ts_ns: int) -> tuple[Segment, lmdb.Transaction[memoryview]] | None:
        i = bisect.bisect_right(self.starts, ts_ns) - 1
        if i < 0:
            return None
        start = self.starts[i]
        found = self._txns.get(start)
        if found is None:
            seg = self.log.segment(start)
            if not seg.ready():
                return None
            found = self._txns[start] = (seg, seg.env.begin(db=seg.events, buffers=True))
        return found

    def get_raw(self, ts_ns: int, seq: int) -> memoryview | None:
        """The stored value (topic id, header if its top bit is set, payload) as a zero-copy
        view, valid until close (:func:`decode_event` reads it)."""
        found = self._txn(ts_ns)
        return None if found is None else found[1].get(((ts_ns << 64) | seq).to_bytes(KEY_LEN, "big"))

    def get(self, ts_ns: int, seq: int) -> Event | None:
        found = self._txn(ts_ns)
        if found is None:
            return None
        seg, txn = found
        value = txn.get(((ts_ns << 64) | seq).to_bytes(KEY_LEN, "big"))
        if value is None:
            return None
        return decode_event(ts_ns, seq, value, seg.topic_name)

    def close(self) -> None:
        for _, txn in self._txns.values():
            txn.abort()
        self._txns.clear()

    def __enter__(self) -> LogSnapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _range(cur: lmdb.Cursor[bytes], lo: bytes, hi: bytes) -> Iterator[tuple[bytes, bytes]]:
    if not cur.set_range(lo):
        return
    for key, value in cur.iternext():
        if key > hi:
            return
        yield key, value


def _topic_keys(cur: lmdb.Cursor[bytes], tid: int, lo: bytes, hi: bytes) -> Iterator[bytes]:
    """Event keys of topic ``tid`` in ``[lo, hi]`` from the per-batch topic index."""
    tid_b = tid.to_bytes(TID_LEN, "big")
    if cur.set_range(tid_b + lo):
        # The batch entry just before the seek point may still hold keys >= lo.
        if not cur.prev():
            cur.first()
    elif not cur.last():
        return
    for ikey, value in cur.iternext():
        prefix = ikey[:TID_LEN]
        if prefix < tid_b:
            continue
        if prefix > tid_b or ikey[TID_LEN:] > hi:
            return
        for i in range(0, len(value), KEY_LEN):
            key = value[i : i + KEY_LEN]
            if lo <= key <= hi:
                yield key
