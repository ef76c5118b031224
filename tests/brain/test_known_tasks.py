"""A client's task id costs no round trip to memory (issue 16, item 1).

The brain keeps a Bloom filter of every task id memory knows (loaded at boot with the paged
``task_ids`` query, kept current from ``P/tasks/+``): a fresh id starts at once, only a "maybe"
is asked of memory, and an id memory has is still refused as ``duplicate_task`` by a brain
restarted since it was used.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import anyio
import msgspec
import pytest

from bench import scenes
from robobus.brain_agent.known_tasks import BloomFilter, IdFilter, KnownTasks
from robobus.bus import Bus, BusOptions
from robobus.memory_store.query import answer
from robobus.memory_store.store import open_store
from robobus.memory_store.views import Dirty, Views
from robobus.schemas.memory import MemoryQuery, TaskRecord
from robobus.schemas.messages import BrainStatus, ErrorReport, Instruction, TaskStatus
from tests.brain.test_processes import Fleet


def test_bloom_filter_has_no_false_negatives_and_few_false_positives() -> None:
    ids = [f"task-{i}" for i in range(5000)]
    bloom = BloomFilter(len(ids), fp_rate=0.01)
    for t in ids:
        bloom.add(t)
    assert all(t in bloom for t in ids)
    false = sum(f"other-{i}" in bloom for i in range(20_000))
    assert false < 20_000 * 0.03, false  # 1 % expected
    again = BloomFilter(len(ids), fp_rate=0.01)  # stable hashing: the same bits in any process
    again.add("task-7")
    assert "task-7" in again and "task-8" not in again
    grown = IdFilter(capacity=100)
    for t in ids:
        grown.add(t)
    assert len(grown.stages) > 1 and len(grown) == 5000 and all(t in grown for t in ids)
    known = KnownTasks()
    assert known.maybe("anything")  # not loaded yet: every id is asked of memory
    known.loaded = True
    known.add("seen")
    assert known.maybe("seen") and not known.maybe("unseen-id")


def test_task_ids_query_pages_ram_and_stored_ids(tmp_path: Path) -> None:
    with open_store(tmp_path / "store") as db:
        stored = [(f"s{i:03}".encode(), msgspec.msgpack.encode(TaskRecord(f"s{i:03}")))
                  for i in range(25)]
        db.views_store.save(Dirty(tasks=stored), 1, 1)
        views = Views()
        views.archive = db.views_store
        views.tasks = {t: TaskRecord(t) for t in ("r1", "s004", "a0")}  # s004 in both
        seen: list[str] = []
        cursor: str | None = None
        for _ in range(10):
            reply = answer(MemoryQuery(kind="task_ids", limit=7, cursor=cursor), views, None)
            assert reply.ok and len(reply.result["ids"]) <= 7, reply
            seen += reply.result["ids"]
            cursor = reply.next_cursor
            if cursor is None:
                break
        assert seen == sorted({"r1", "a0", *(f"s{i:03}" for i in range(25))})
        bad = answer(MemoryQuery(kind="task_ids", limit=0), views, None)
        assert (bad.ok, bad.code) == (False, "invalid")
        long = answer(MemoryQuery(kind="task_ids", cursor="x" * 600), views, None)
        assert (long.ok, long.code) == (False, "bad_cursor")
        odd = answer(MemoryQuery(kind="task_ids", cursor="s010\ud800"), views, None)
        assert odd.ok and odd.result["ids"][0] == "s011", odd


async def _ready(status: object, after_ns: int) -> None:
    with anyio.fail_after(40):
        while True:
            msg = await status.get()  # type: ignore[attr-defined]
            if msg.data.state == "ready" and msg.data.ts_ns > after_ns:
                return


async def test_fresh_ids_skip_memory_and_duplicates_are_refused_after_restart(
        tmp_path: Path, hub_url: str) -> None:
    """One fleet (memory + brain, no robots: a task that starts is ``accepted``); a brain of
    the whole fleet, killed and started again, then a group's brain."""
    with contextlib.ExitStack() as stack:
        fl = Fleet(tmp_path, hub_url, scenes.DEMO_SCENE, [], stack)
        t = fl.topics
        queried: list[str] = []  # task ids the brain asked memory about
        reports: list[ErrorReport] = []
        async with Bus.connect(hub_url, name="tester", options=BusOptions(prefix=fl.prefix)) \
                as bus, bus.subscribe(t.brain_status, BrainStatus) as status, \
                bus.subscribe(t.group_brain_status("g"), BrainStatus) as group_status, \
                bus.subscribe(t.memory_query) as queries, \
                bus.subscribe(t.errors, ErrorReport) as errors, anyio.create_task_group() as tg:

            async def count() -> None:
                async for msg in queries:
                    q = msgspec.msgpack.decode(msg.payload, type=MemoryQuery)
                    if q.kind == "task":
                        queried.append(q.name or "")

            async def collect() -> None:
                async for msg in errors:
                    reports.append(msg.data)
                    fl.changed.set()

            tg.start_soon(count)
            tg.start_soon(collect)
            await tg.start(fl.watch, bus)
            t0 = time.time_ns()
            fl.start_memory()
            fl.start_brain()
            await _ready(status, t0)

            async def send(task_id: str) -> None:
                await bus.publish(t.instructions, Instruction("bring the apple to the office "
                                                              "desk", task_id=task_id), qos=1)

            def started(task_id: str) -> TaskStatus | None:
                return fl.status(task_id, frozenset({"accepted"}))

            def refused(task_id: str) -> ErrorReport | None:
                return next((r for r in reports if r.task_id == task_id
                             and r.code == "duplicate_task"), None)

            await send("fresh-1")  # a fresh id: started without asking memory
            await fl.until(lambda: fl.status("fresh-1"))  # final (no robot): not resumed
            fl.kill9("brain")  # its RAM goes; memory keeps fresh-1
            t1 = time.time_ns()
            fl.start_brain()
            await _ready(status, t1)
            await send("fresh-1")
            report = await fl.until(lambda: refused("fresh-1"))
            assert "task memory has it" in report.reason
            await send("fresh-2")
            await fl.until(lambda: started("fresh-2"))
            assert queried == ["fresh-1"]  # the filter was loaded from memory
            assert [s.status for s in fl.statuses["fresh-1"]].count("accepted") == 1

            # a group's brain follows P/tasks/+ (other groups' brains take tasks meanwhile): a
            # status memory refuses (no record starts 'running') still enters its filter
            fl.kill9("brain")
            t2 = time.time_ns()
            fl.spawn("group-brain", "brain", "--group", "g", "--robots", "x*")
            await _ready(group_status, t2)
            await bus.publish(t.task("ghost"), TaskStatus("ghost", "running"), qos=1)
            await fl.until(lambda: any(r.topic == t.task("ghost") for r in reports))
            await bus.publish(t.group_instructions("g"), Instruction("bring the apple to the "
                                                                     "office desk", task_id="ghost"),
                              qos=1)
            await fl.until(lambda: started("ghost"))  # the false positive: asked, then started
            assert queried == ["fresh-1", "ghost"]
            tg.cancel_scope.cancel()


pytestmark = pytest.mark.anyio
