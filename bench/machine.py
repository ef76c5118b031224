"""Helpers shared by the benchmarks and the tests that reuse them: not part of the product.

``quiet_disk`` settles the machine before a latency section; ``load_file`` imports helper files
from a folder that is not a package (``tests/fuzz/``).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path
from types import ModuleType


def load_file(path: Path, name: str) -> ModuleType:
    """Import the file at ``path`` as module ``name``, once (for helper files in a folder that
    is not a package, such as ``tests/fuzz/``, shared by a test and a benchmark)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def quiet_disk(limit_mb: float = 64, timeout_s: float = 60) -> float:
    """Wait (bounded) until the kernel has little left to write back; returns the seconds
    waited. Latency sections measured during a writeback storm measure the disk."""
    started = time.monotonic()
    os.sync()
    while time.monotonic() - started < timeout_s:
        info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        pending_kb = sum(int(info[k].split()[0]) for k in ("Dirty", "Writeback") if k in info)
        if pending_kb / 1024 <= limit_mb:
            break
        time.sleep(0.5)
    return time.monotonic() - started
