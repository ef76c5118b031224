"""The storage engine through its API: log reads, segments, retention, read-only readers."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from robobus import memory_store

T0 = 1_700_000_000 * 10**9
SEC = 10**9


def _events(n: int, start: int = T0, step: int = SEC // 10) -> list[tuple[str, bytes, int]]:
    return [(f"p/robots/r{i % 3}/state", b"payload-%d" % i, start + i * step) for i in range(n)]


def test_append_scan_get_and_topic_index(tmp_path: Path) -> None:
    with memory_store.open(tmp_path / "s") as store:
        assert store.append_many(_events(60)) == 60
        assert store.append("p/other", b"x", T0 + 100 * SEC) == 61
        r1 = list(store.scan(pattern="p/robots/r1/state"))
        assert [e.payload for e in r1] == [b"payload-%d" % i for i in range(1, 60, 3)]
        window = list(store.scan(T0 + 2 * SEC, T0 + 3 * SEC, pattern="p/robots/+/state"))
        assert [e.seq for e in window] == list(range(21, 32))
        both = list(store.scan(T0 + 2 * SEC, T0 + 3 * SEC, pattern="p/robots/r2/state"))
        assert [e.seq for e in both] == [21, 24, 27, 30]
        ev = store.get(T0 + 5 * SEC // 10, 6)
        assert ev is not None and ev.topic == "p/robots/r2/state" and ev.payload == b"payload-5"
        assert store.get(T0, 99) is None
        after = list(store.scan(pattern="p/robots/r0/state", after=r1[2].key))
        assert after[0].seq == 10
        stats = store.stats()
        assert stats["events"] == 61 and stats["topics"]["p/other"] == 1
        assert stats["first_ns"] == T0 and stats["last_ns"] == T0 + 100 * SEC


def test_timestamps_going_backwards_are_clamped_so_keys_append(tmp_path: Path) -> None:
    with memory_store.open(tmp_path / "s") as store:
        store.append_many([("a", b"1", T0 + 5), ("a", b"2", T0 + 1)])
        assert [(e.ts_ns, e.seq) for e in store.scan()] == [(T0 + 5, 1), (T0 + 5, 2)]


def test_segment_rollover_and_retention_drop_whole_files(tmp_path: Path) -> None:
    opts: dict[str, Any] = {"segment_ns": 10 * SEC, "retention_ns": 25 * SEC}
    with memory_store.open(tmp_path / "s", **opts) as store:
        store.append_many(_events(500, step=SEC // 10))  # 50 s: five 10-s segments
        files = sorted((tmp_path / "s" / "log").glob("seg-*.mdb"))
        assert len(files) == 5
        assert store.stats()["segments"] == 5
        dropped = store.apply_retention(now_ns=T0 + 50 * SEC)
        assert [p.name for p in dropped] == [f.name for f in files[:2]]
        assert not any(p.exists() for p in dropped)
        remaining = list(store.scan())
        assert remaining[0].ts_ns == T0 + 20 * SEC and len(remaining) == 300
        assert store.stats()["events"] == 300
        store.append("p/late", b"x", T0 + 51 * SEC)
    with memory_store.open(tmp_path / "s", **opts) as store:  # the writer recovers its position
        assert store.append("p/late", b"y", T0 + 52 * SEC) == 502


def test_read_only_store_refuses_writes(tmp_path: Path) -> None:
    memory_store.open(tmp_path / "s").close()
    with memory_store.open(tmp_path / "s", readonly=True) as ro, \
            pytest.raises(memory_store.ReadOnlyStore, match="read-only"):
        ro.append("a", b"b")
    with pytest.raises(memory_store.MemoryStoreError, match="no event log"):
        memory_store.open(tmp_path / "missing", readonly=True)


def test_full_segment_names_the_option_to_raise(tmp_path: Path) -> None:
    with memory_store.open(tmp_path / "s", map_size=1 << 20) as store, \
            pytest.raises(memory_store.StoreFull, match="raise --map-size"):
        store.append_many([("t", b"x" * 1000, T0 + i) for i in range(5000)])


READER = """
import sys, memory_store
store = memory_store.open(sys.argv[1], readonly=True)
for line in sys.stdin:
    n = sum(1 for _ in store.scan(pattern=line.strip()))
    print(n, flush=True)
"""


def test_reader_process_sees_new_events_while_writer_writes(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with memory_store.open(path, segment_ns=SEC) as store:
        store.append("p/t", b"0", time.time_ns())
        reader = subprocess.Popen([sys.executable, "-c", READER, str(path)], text=True,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            assert reader.stdin is not None and reader.stdout is not None
            for round_ in range(1, 4):
                # each round crosses into a new segment file the reader has never opened
                store.append_many([("p/t", b"%d" % i, time.time_ns() + round_ * SEC)
                                   for i in range(100)])
                reader.stdin.write("p/t\n")
                reader.stdin.flush()
                assert int(reader.stdout.readline()) == 1 + 100 * round_
        finally:
            reader.kill()
            reader.wait(5)
