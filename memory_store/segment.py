"""One time segment of the event log: an LMDB environment in a single file.

A segment holds the events whose timestamps fall in ``[start_ns, start_ns + segment_ns)`` in
three named databases:

* ``events``: key = big-endian ``ts_ns`` (8 bytes) + ``seq`` (8 bytes), value = topic id
  (4 bytes, big-endian) + the raw payload. Keys only grow, so writes append to the B+tree.
* ``index``: key = topic id + the key of the first event of that topic in one committed batch,
  value = the 16-byte keys of that topic's events in the batch, concatenated. One index entry
  per topic per batch instead of per event keeps the group-commit path cheap, and a per-topic
  time range is still one cursor seek.
* ``topics``: topic name (UTF-8) -> topic id. Ids are local to the segment, so a segment file
  is self-contained and retention deletes it whole.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import lmdb

KEY_LEN = 16
TID_LEN = 4
#: LMDB's key size limit (``Environment.max_key_size()`` of the default build): the topic
#: table is keyed by the topic's UTF-8 name, so a longer topic cannot be recorded
MAX_TOPIC_BYTES = 511
SUFFIX = ".mdb"


def pack_key(ts_ns: int, seq: int) -> bytes:
    """The 16-byte event key: big-endian timestamp, then big-endian sequence number."""
    return ((ts_ns << 64) | seq).to_bytes(KEY_LEN, "big")


def unpack_key(key: bytes) -> tuple[int, int]:
    """``(ts_ns, seq)`` of a 16-byte event key."""
    value = int.from_bytes(key, "big")
    return value >> 64, value & 0xFFFF_FFFF_FFFF_FFFF


def segment_name(start_ns: int) -> str:
    """File name of the segment starting at ``start_ns`` (sorts by time)."""
    return f"seg-{start_ns:019d}{SUFFIX}"


def segment_start(path: Path) -> int | None:
    """The start time encoded in a segment file name, or None for other files."""
    name = path.name
    if not (name.startswith("seg-") and name.endswith(SUFFIX)):
        return None
    digits = name[4 : -len(SUFFIX)]
    return int(digits) if digits.isdigit() else None


@dataclass(slots=True)
class SegmentOptions:
    """LMDB settings of one segment."""

    map_size: int = 1 << 34
    readahead: bool = False
    sync: bool = True


class Segment:
    """An open segment environment, for writing (one process) or reading (any number)."""

    def __init__(self, path: Path, start_ns: int, opts: SegmentOptions, readonly: bool) -> None:
        self.path = path
        self.start_ns = start_ns
        self.readonly = readonly
        self.env = lmdb.open(
            str(path), subdir=False, map_size=opts.map_size, max_dbs=4, readonly=readonly,
            readahead=opts.readahead, sync=opts.sync, metasync=opts.sync, max_readers=256,
            create=not readonly,
        )
        self.events: lmdb._Database | None = None
        self.index: lmdb._Database | None = None
        self.topics_db: lmdb._Database | None = None
        self.tids: dict[str, int] = {}
        self.names: dict[int, str] = {}
        self.tid_bytes: dict[str, bytes] = {}
        if not readonly:
            with self.env.begin(write=True) as txn:
                self._open_dbs(txn)
            self.load_topics()

    def _open_dbs(self, txn: lmdb.Transaction | None = None) -> None:
        create = not self.readonly
        self.events = self.env.open_db(b"events", txn=txn, create=create)
        self.index = self.env.open_db(b"index", txn=txn, create=create)
        self.topics_db = self.env.open_db(b"topics", txn=txn, create=create)

    def ready(self) -> bool:
        """For readers: True once the writer has created the databases."""
        if self.events is not None:
            return True
        try:
            self._open_dbs()
        except lmdb.NotFoundError:
            return False
        return True

    def load_topics(self) -> None:
        """(Re)read the topic table."""
        if not self.ready():
            return
        with self.env.begin(db=self.topics_db) as txn:
            for name, tid in txn.cursor():
                self.tids[bytes(name).decode()] = int.from_bytes(tid, "big")
        self.names = {tid: name for name, tid in self.tids.items()}
        self.tid_bytes = {name: tid.to_bytes(TID_LEN, "big") for name, tid in self.tids.items()}

    def topic_name(self, tid: int) -> str:
        """The topic of ``tid``, reloading the table once if a writer added it meanwhile."""
        name = self.names.get(tid)
        if name is None:
            self.load_topics()
            name = self.names.get(tid, f"?topic{tid}")
        return name

    def size(self) -> int:
        """Bytes used on disk by this segment file."""
        with contextlib.suppress(FileNotFoundError):
            return self.path.stat().st_size
        return 0

    def close(self) -> None:
        self.env.close()

    # -- writing -----------------------------------------------------------------------------
    def new_topic(self, topic: str) -> bytes:
        """Assign the next topic id (persisted by the next :meth:`commit`)."""
        tid = len(self.tids) + 1
        self.tids[topic] = tid
        self.names[tid] = topic
        tid_b = tid.to_bytes(TID_LEN, "big")
        self.tid_bytes[topic] = tid_b
        return tid_b

    def commit(self, items: list[tuple[bytes, bytes]], groups: dict[bytes, list[bytes]],
               new: list[str]) -> None:
        """Append ``(key, tid + payload)`` items (keys ascending, newer than any stored) and
        one index entry per topic of the batch, in one durable transaction."""
        try:
            with self.env.begin(write=True) as txn:
                for topic in new:
                    txn.put(topic.encode(), self.tid_bytes[topic], db=self.topics_db)
                txn.cursor(self.events).putmulti(items, append=True)
                txn.cursor(self.index).putmulti(
                    [(tid_b + keys[0], b"".join(keys)) for tid_b, keys in groups.items()])
        except BaseException:
            for topic in new:  # the ids were not stored: hand them out again
                self.names.pop(self.tids.pop(topic), None)
                self.tid_bytes.pop(topic, None)
            raise

    def last_key(self) -> bytes | None:
        """The newest event key in this segment."""
        if not self.ready():
            return None
        with self.env.begin(db=self.events) as txn:
            cur = txn.cursor()
            return bytes(cur.key()) if cur.last() else None
