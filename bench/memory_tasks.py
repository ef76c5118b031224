"""RSS of a ``robobus memory`` process per task it has seen (issue 13: ~6 KB per task, unbounded).

A hub and a memory agent run as processes; a client publishes the statuses of N tasks (accepted,
planned, two steps dispatched and done, done: 7 messages each, with their text and command ids)
and, after every chunk, waits for a query answer (the agent's stream is ordered, so it has folded
the chunk) and reads the agent's ``VmRSS``. Run from the repository root::

    .venv/bin/python -m bench.memory --tasks 6000
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
import msgspec

from robobus import testing
from robobus.bus import Bus
from robobus.schemas.memory import MemoryQuery
from robobus.schemas.messages import TaskStatus
from robobus.schemas.topics import Topics

CHUNK = 500


def rss_kib(pid: int, field: str = "RssAnon") -> int:
    """Resident memory of ``pid`` in KiB (Linux ``/proc``). ``RssAnon`` is the heap: LMDB's
    mapped pages (``RssFile``) are the page cache of the store, counted in ``VmRSS`` too."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


def _statuses(i: int) -> list[TaskStatus]:
    tid = f"bench-task-{i:06d}"
    steps = [TaskStatus(task_id=tid, status=s, step_id=f"s{k}", robot="g1", skill="pick",
                        command_id=f"{tid}-c{k}") for k in (1, 2) for s in ("dispatched",
                                                                             "step_done")]
    return [TaskStatus(task_id=tid, status="accepted", priority=1,
                       text=f"bring the apple number {i} to the office desk"),
            TaskStatus(task_id=tid, status="planned"), *steps,
            TaskStatus(task_id=tid, status="done", reason="all steps done")]


async def _drive(url: str, pid: int, tasks: int) -> list[tuple[int, int, int]]:
    t = Topics()
    samples: list[tuple[int, int, int]] = []
    async with Bus.connect(url, name="bench-tasks") as bus:
        with anyio.fail_after(30):
            while True:
                try:
                    await bus.request(t.memory_query, MemoryQuery(kind="robots"), timeout=0.5)
                    break
                except Exception:  # noqa: BLE001 - not up yet
                    await anyio.sleep(0.1)
        samples.append((0, rss_kib(pid), rss_kib(pid, "VmRSS")))
        for start in range(0, tasks, CHUNK):
            for i in range(start, min(start + CHUNK, tasks)):
                for st in _statuses(i):
                    await bus.publish(t.task(st.task_id), st)
            reply = await bus.request(t.memory_query, MemoryQuery(kind="tasks", status="active"),
                                      timeout=30)
            assert msgspec.msgpack.decode(reply.payload)["ok"]
            await anyio.sleep(0.2)  # a few commits (and trims) after the chunk
            samples.append((min(start + CHUNK, tasks), rss_kib(pid), rss_kib(pid, "VmRSS")))
            print(f"[bench] {samples[-1][0]} tasks: RssAnon {samples[-1][1] / 1024:.1f} MiB, "
                  f"VmRSS {samples[-1][2] / 1024:.1f} MiB", file=sys.stderr, flush=True)
    return samples


def rss_per_task(tasks: int) -> dict[str, Any]:
    """RSS samples and the growth per task after the first 1,000 (warm-up) tasks."""
    with tempfile.TemporaryDirectory(prefix="robobus-bench-tasks-") as root, \
            testing.hub() as url:
        argv = testing.robobus_cmd("memory", "--bus", url, "--store", f"{root}/store")
        with testing.spawn(argv, name="memory", env={"ROBOBUS_LOG": "warning"}) as proc:
            samples = anyio.run(_drive, url, proc.pid, tasks)
    base = next((s for s in samples if s[0] >= 1000), samples[0])
    end = samples[-1]
    span = max(1, end[0] - base[0])
    return {"tasks": tasks, "messages": tasks * 7, "samples_kib": samples,
            "anon_start_mib": round(samples[0][1] / 1024, 1),
            "anon_end_mib": round(end[1] / 1024, 1),
            "rss_start_mib": round(samples[0][2] / 1024, 1), "rss_end_mib": round(end[2] / 1024, 1),
            "anon_bytes_per_task_after_1000": round((end[1] - base[1]) * 1024 / span),
            "rss_bytes_per_task_after_1000": round((end[2] - base[2]) * 1024 / span)}
