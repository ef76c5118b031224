"""The brain's task statuses go out pipelined (issue 16, item 2): a window of acknowledged
publishes in flight, every task's statuses still in order on the wire, through a hub process.
"""

from __future__ import annotations

from collections.abc import Awaitable
from contextlib import AbstractContextManager
from typing import Any

import anyio
import pytest

from robobus.brain_agent.tasks import StatusPublisher, Task
from robobus.bus import Bus, BusOptions
from robobus.schemas.messages import TaskStatus
from robobus.schemas.topics import Topics

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]
TASKS = 40
#: a legal sequence of statuses for one task (schemas/tasks.py), final last
SEQUENCE = ("accepted", "planned", "dispatched", "progress", "step_done", "dispatched", "done")
WINDOW = 16


class Counted:
    """The brain's bus, counting its acknowledgements in flight (most at once)."""

    def __init__(self, bus: Bus) -> None:
        self.bus, self.in_flight, self.most = bus, 0, 0

    async def post(self, topic: str, payload: Any, **kw: Any) -> Awaitable[None]:
        ack = await self.bus.post(topic, payload, **kw)
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        return self._settled(ack)

    def coalesce(self) -> AbstractContextManager[None]:
        return self.bus.coalesce()

    async def _settled(self, ack: Awaitable[None]) -> None:
        try:
            await ack
        finally:
            self.in_flight -= 1


async def test_statuses_are_pipelined_and_stay_in_order_per_task(hub_url: str, prefix: str) -> None:
    topics = Topics(prefix)
    seen: dict[str, list[str]] = {}
    opts = BusOptions(prefix=prefix)
    async with Bus.connect(hub_url, name="brain", options=opts) as bus, \
            Bus.connect(hub_url, name="watcher", options=opts) as watcher, \
            watcher.subscribe(topics.task(), TaskStatus) as sub, anyio.create_task_group() as tg:
        counted = Counted(bus)
        publisher = StatusPublisher(counted, topics, window=WINDOW)  # type: ignore[arg-type]
        tg.start_soon(publisher.run)
        tasks = [Task(f"t{i}", "bring the apple to the office desk") for i in range(TASKS)]
        for status in SEQUENCE:  # interleaved across tasks, as a busy brain emits them
            for task in tasks:
                publisher.emit(task, status)
        with anyio.fail_after(30):
            async for msg in sub:
                st: TaskStatus = msg.data
                seen.setdefault(st.task_id, []).append(st.status)
                if sum(map(len, seen.values())) == TASKS * len(SEQUENCE):
                    break
        publisher.close()
        with anyio.fail_after(10):
            while counted.in_flight:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert seen == {task.id: list(SEQUENCE) for task in tasks}
    assert 1 < counted.most <= WINDOW + 1, counted.most
    assert publisher.failures == 0
