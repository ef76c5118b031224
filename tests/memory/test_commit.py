"""Group commit: what the committer has taken from the queue is committed, even when its task is
cancelled at that very moment (an agent stopping)."""

from __future__ import annotations

from pathlib import Path

import anyio
import msgspec
import pytest

from robobus import memory_store
from robobus.memory_store.commit import CommitOptions, GroupCommitter
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
