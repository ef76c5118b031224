"""Task memory in RAM is bounded (issue 13): live tasks plus the most recent finished ones.

The memory agent's RSS grew about 6 KB per task without bound (50 -> 88 MB after 6,228 tasks).
Thousands of tasks go through an agent that keeps 50 finished tasks in RAM: its task dict stays
within live + 50, an old finished task is still answered (read back from views.mdb), listings by
status see every task, a status for an evicted finished task is still refused as ``final``, and
after a restart the agent loads only what it keeps. RSS per task is a bench figure
(``python -m bench.memory --tasks``), not asserted here.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from robobus.bus import Bus, BusOptions
from robobus.memory_store.agent import MemoryAgent, MemoryConfig, _serve
from robobus.memory_store.commit import CommitOptions
from robobus.memory_store.query import answer
from robobus.memory_store.store import open_store
from robobus.memory_store.views import Dirty, Views
from robobus.schemas.memory import MemoryQuery, QueryReply, TaskRecord
from robobus.schemas.messages import ErrorReport, TaskStatus
from robobus.schemas.topics import Topics

KEEP = 50
TASKS = 3000
LIVE = 7  # tasks left running: never evicted


@contextlib.asynccontextmanager
async def agent_on(url: str, store: Path, prefix: str) -> AsyncIterator[MemoryAgent]:
    """The memory agent in this process (so the test can look at its views)."""
    config = MemoryConfig(store=store, commit=CommitOptions(window_s=0.002),
                          max_finished_tasks=KEEP)
    db = open_store(store)
    try:
        async with Bus.connect(url, name="memory", options=BusOptions(prefix=prefix)) as bus, \
                anyio.create_task_group() as tg:
            agent = MemoryAgent(bus, config, db)
            await anyio.to_thread.run_sync(agent.restore)
            await tg.start(_serve, agent)
            yield agent
            tg.cancel_scope.cancel()
    finally:
        db.close()


async def _query(client: Bus, t: Topics, **fields: Any) -> QueryReply:
    msg = await client.request(t.memory_query, MemoryQuery(**fields), timeout=10)
    return msgspec.msgpack.decode(msg.payload, type=QueryReply)


async def _run_tasks(client: Bus, t: Topics) -> None:
    for i in range(TASKS):
        tid = f"T{i:05d}"
        await client.publish(t.task(tid), TaskStatus(task_id=tid, status="accepted",
                                                     text=f"task {i}", ts_ns=i + 1))
        await client.publish(t.task(tid), TaskStatus(task_id=tid, status="planned",
                                                     ts_ns=i + 1))
        if i < TASKS - LIVE:
            status = "done" if i % 3 else "failed"
            await client.publish(t.task(tid), TaskStatus(task_id=tid, status=status,
                                                         reason="r", ts_ns=i + 2))
        if i % 500 == 0:
            await anyio.sleep(0.01)  # let the agent's commits (and trims) run between bursts


def _in_ram(agent: MemoryAgent) -> int:
    assert agent.views is not None
    return len(agent.views.tasks)


@pytest.mark.anyio
async def test_old_tasks_leave_ram_and_are_still_answered(tmp_path: Path) -> None:
    url, prefix = f"memory://{secrets.token_hex(4)}", f"b{secrets.token_hex(3)}"
    t, store = Topics(prefix), tmp_path / "store"
    async with Bus.connect(url, name="client", options=BusOptions(prefix=prefix)) as client:
        async with agent_on(url, store, prefix) as agent:
            with anyio.fail_after(60):
                await _run_tasks(client, t)
                assert (await _query(client, t, kind="tasks", status="active")).ok
                for _ in range(200):  # trims follow commits; a few more commits settle them
                    if _in_ram(agent) <= KEEP + LIVE:
                        break
                    await client.publish(f"{prefix}/tick", b"x", qos=1)
                    await anyio.sleep(0.01)
            assert _in_ram(agent) <= KEEP + LIVE, _in_ram(agent)
            await _check_answers(client, t)
        async with agent_on(url, store, prefix) as agent:  # a restart loads only what it keeps
            assert _in_ram(agent) == KEEP + LIVE
            await _check_answers(client, t)


async def _check_answers(client: Bus, t: Topics) -> None:
    old = await _query(client, t, kind="task", name="T00001")
    assert old.ok and old.result["status"] == "done" and old.result["text"] == "task 1"
    assert (await _query(client, t, kind="task", name="T00000")).result["status"] == "failed"
    active = await _query(client, t, kind="tasks", status="active")
    assert [r["task_id"] for r in active.result] == [f"T{i:05d}" for i in range(TASKS - LIVE,
                                                                               TASKS)]
    done = await _query(client, t, kind="tasks", status="done")
    assert len(done.result) == sum(1 for i in range(TASKS - LIVE) if i % 3)
    async with client.subscribe(t.errors, ErrorReport) as errors:
        late = TaskStatus(task_id="T00001", status="step_failed", step_id="s1", ts_ns=9)
        await client.publish(t.task("T00001"), late, qos=1)  # evicted, yet still final
        with anyio.fail_after(10):
            report = (await errors.get()).data
        assert report.code == "final" and report.topic == t.task("T00001"), report
    again = await _query(client, t, kind="task", name="T00001")
    assert again.result["status"] == "done"


def test_a_tasks_query_reads_at_most_a_reply_of_stored_records(tmp_path: Path) -> None:
    """Old tasks are read from disk on the agent's event loop: never more than a reply holds."""
    with open_store(tmp_path / "store") as db:
        big = [(f"D{i}".encode(), msgspec.msgpack.encode(
            TaskRecord(task_id=f"D{i}", status="done", text="t" * 100_000))) for i in range(12)]
        db.views_store.save(Dirty(tasks=big), 1, 1)
        views = Views()
        views.archive = db.views_store
        refused = answer(MemoryQuery(kind="tasks", status="done"), views, None)
        assert not refused.ok and refused.code == "too_large", refused
        one = answer(MemoryQuery(kind="task", name="D3"), views, None)
        assert one.ok and one.result.task_id == "D3"
        assert answer(MemoryQuery(kind="tasks", status="active"), views, None).result == []
