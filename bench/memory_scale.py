"""The scale run of ``bench/memory.py``: build a large log, then read it cold.

``python -m bench.memory --scale --scale-events 100000000 --scale-dir /big/disk``.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

from robobus import memory_store

PAYLOAD = b"x" * 256
T0 = 1_700_000_000 * 10**9


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _evict(path: Path) -> None:
    """Drop the store's pages from the page cache (only these files; no root needed)."""
    for seg in path.rglob("*.mdb"):
        fd = os.open(seg, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def scale_run(root: Path, n: int, samples: int = 2000) -> dict[str, Any]:
    """Build an ``n``-event log (256-byte payloads, ten time segments), then read it cold."""
    spacing = 1000  # ns between events
    segment_ns = max(10**9, n * spacing // 10)
    path = root / "scale"
    batch = 10_000
    t = time.perf_counter()
    with memory_store.open(path, map_size=1 << 40, segment_ns=segment_ns) as store:
        for start in range(0, n, batch):
            count = min(batch, n - start)
            store.append_many([(f"scale/r{(start + i) & 63}", PAYLOAD,
                                T0 + (start + i) * spacing) for i in range(count)])
    build_s = time.perf_counter() - t
    size = sum(p.stat().st_size for p in path.rglob("*.mdb"))
    _evict(path)
    with memory_store.open(path, readonly=True, readahead=False) as store:
        picks = [random.randrange(n) for _ in range(samples)]
        get_lat = []
        with store.snapshot() as snap:
            for i in picks:
                a = time.perf_counter_ns()
                ev = snap.get(T0 + i * spacing, i + 1)
                get_lat.append((time.perf_counter_ns() - a) / 1e3)
                assert ev is not None
        _evict(path)
        seek_lat = []
        for i in random.sample(range(n), min(samples, n)):
            a = time.perf_counter_ns()
            next(store.log.scan_raw(T0 + i * spacing, T0 + i * spacing + 10**6))
            seek_lat.append((time.perf_counter_ns() - a) / 1e3)
    return {"events": n, "build_s": build_s, "build_per_s": n / build_s, "bytes": size,
            "segments": len(list((path / "log").glob("seg-*.mdb"))),
            "ram_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
            "cold_get_p50_us": pct(get_lat, 0.5), "cold_get_p99_us": pct(get_lat, 0.99),
            "cold_seek_p50_us": pct(seek_lat, 0.5), "cold_seek_p99_us": pct(seek_lat, 0.99),
            "path": str(path)}
