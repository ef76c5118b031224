"""Group commit: what the committer has taken from the queue is committed, even when its task is
cancelled at that very moment (an agent stopping)."""

from __future__ import annotations

from pathlib import Path

import anyio
import msgspec
import pytest

from robobus import memory_store
from robobus.memory_store.commit import CommitOptions, GroupCommitter
from robobus.memory_store.segment import pack_key
from robobus.memory_store.views import Views
from robobus.schemas.messages import Alive
from robobus.schemas.topics import Topics

pytestmark = pytest.mark.anyio
T0 = 1_700_000_000 * 10**9


async def test_a_batch_taken_when_the_agent_stops_is_committed_with_its_views(
        tmp_path: Path) -> None:
    topics = Topics("p")
    for steps in range(4):  # cancel at each point of the committer's cycle in turn
        path = tmp_path / f"s{steps}"
        with memory_store.open(path) as store:
            views = Views(topics, live=True)
            committer = GroupCommitter(store, views, CommitOptions(window_s=0.0))
            alive = msgspec.msgpack.encode(Alive(robot="g2", online=False))
            async with anyio.create_task_group() as tg:
                await tg.start(committer.run)
                committer.put(topics.alive("g2"), alive, T0)
                views.observe(topics.alive("g2"), alive, T0)
                for _ in range(steps):
                    await anyio.lowlevel.checkpoint()
                tg.cancel_scope.cancel()
        with memory_store.open(path, readonly=True) as ro:
            assert [e.topic for e in ro.scan()] == [topics.alive("g2")], steps
            record = ro.robot("g2")
            assert record is not None and record.alive is False, steps


async def test_views_are_saved_at_most_every_views_every_s_and_the_log_fills_the_gap(
        tmp_path: Path) -> None:
    """Every commit stores the log; the views go to views.mdb with the first commit, then only
    after ``views_every_s`` or when :meth:`sync` asks (issue 16 item 7). A restart loads the
    stored views and folds in the log after their position, so what came between is kept."""
    topics = Topics("p")
    with memory_store.open(tmp_path / "s") as store:
        views = Views(topics, live=True)
        committer = GroupCommitter(store, views, CommitOptions(window_s=0.0, views_every_s=3600))
        async with anyio.create_task_group() as tg:
            await tg.start(committer.run)

            async def alive(online: bool, bd_seq: int) -> None:
                raw = msgspec.msgpack.encode(Alive(robot="g2", online=online, bd_seq=bd_seq))
                committer.put(topics.alive("g2"), raw, T0 + bd_seq)
                views.observe(topics.alive("g2"), raw, T0 + bd_seq)
                await committer.flush()

            await alive(True, 1)
            await alive(False, 1)
            stored = store.robot("g2")
            assert stored is not None and stored.alive is True  # the second commit: log only
            assert len(list(store.scan())) == 2
            await committer.sync()
            stored = store.robot("g2")
            assert stored is not None and stored.alive is False
            await alive(True, 2)  # in the log, not in views.mdb: what a kill -9 would leave
            rebuilt = Views(topics, live=False)
            ts, seq = store.views_store.load_into(rebuilt)
            assert rebuilt.robots["g2"].alive is False
            for ev in store.scan(after=pack_key(ts, seq)):
                rebuilt.observe(ev.topic, ev.payload, ev.ts_ns)
            assert rebuilt.robots["g2"].alive is True and rebuilt.robots["g2"].bd_seq == 2
            tg.cancel_scope.cancel()


async def test_views_left_unsaved_are_saved_when_due_without_another_event(
        tmp_path: Path) -> None:
    """A commit that skipped the views (saved at most every ``views_every_s``) must not leave
    them unsaved until the next event: an idle agent saves them when they are due."""
    topics = Topics("p")
    with memory_store.open(tmp_path / "s") as store:
        views = Views(topics, live=True)
        committer = GroupCommitter(store, views, CommitOptions(window_s=0.0, views_every_s=0.3))
        async with anyio.create_task_group() as tg:
            await tg.start(committer.run)
            for i, online in enumerate((True, False)):
                raw = msgspec.msgpack.encode(Alive(robot="g2", online=online, bd_seq=1))
                committer.put(topics.alive("g2"), raw, T0 + i)
                views.observe(topics.alive("g2"), raw, T0 + i)
                await committer.flush()
            stored = store.robot("g2")
            assert stored is not None and stored.alive is True  # the second commit: log only
            with anyio.fail_after(5):  # no event comes; the views are saved when due
                while (stored := store.robot("g2")) is None or stored.alive:
                    await anyio.sleep(0.05)
            assert not views.dirty
            tg.cancel_scope.cancel()
