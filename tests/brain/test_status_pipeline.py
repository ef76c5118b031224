"""The brain's task statuses go out pipelined (issue 16, item 2): a window of acknowledged
publishes in flight, every task's statuses still in order on the wire, through a hub process.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Awaitable
from contextlib import AbstractContextManager
from typing import Any

import anyio
import pytest

from robobus import testing
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


async def test_flush_is_bounded_when_the_hub_stops_acknowledging(prefix: str) -> None:
    """A dispatch's flush waits at most ``flush_wait`` for the status window or the other
    drainer: with the hub stopped (SIGSTOP) the window stays full, and a skill command must not
    wait for the bus's whole ack timeout. Nothing queued is lost: once the hub runs again
    every status arrives, in order (a resent one may arrive twice: at least once)."""
    port = testing.free_port(span=3)
    url = f"zmq://{testing.LOOPBACK}:{port}"
    topics = Topics(prefix)
    opts = BusOptions(prefix=prefix)
    tasks = [Task(f"s{i}", "bring the apple to the office desk") for i in range(8)]
    seen: list[str] = []
    with testing.spawn(testing.robobus_cmd("hub", "--bus", url), name="hub") as hub:
        for p in (port, port + 1, port + 2):
            testing.wait_port(p)
        async with Bus.connect(url, name="brain", options=opts) as bus, \
                Bus.connect(url, name="watcher", options=opts) as watcher, \
                watcher.subscribe(topics.task(), TaskStatus) as sub, \
                anyio.create_task_group() as tg:
            publisher = StatusPublisher(bus, topics, window=4, flush_wait=0.5)
            tg.start_soon(publisher.run)
            publisher.emit(tasks[0], "accepted")
            with anyio.fail_after(10):
                seen.append((await anext(aiter(sub))).data.task_id)
            os.killpg(hub.pid, signal.SIGSTOP)
            try:
                for task in tasks[1:]:
                    publisher.emit(task, "accepted")
                # this flush takes the free drainer lock, fills the window and waits for room;
                # the next finds the background drainer holding the lock, waiting for room
                for _ in range(2):
                    began = anyio.current_time()
                    await publisher.flush()
                    waited = anyio.current_time() - began
                    assert 0.4 <= waited < 3.0, waited
            finally:
                os.killpg(hub.pid, signal.SIGCONT)
            wanted = {task.id for task in tasks}
            with anyio.fail_after(20):
                async for msg in sub:
                    seen.append(msg.data.task_id)
                    if wanted <= set(seen):
                        break
            publisher.close()
            tg.cancel_scope.cancel()
    # at least once: a status unacknowledged past the resend sweep (1 s) while the hub was
    # stopped is sent again, and the hub then delivers both copies; first copies in order
    assert list(dict.fromkeys(seen)) == [task.id for task in tasks], seen
    assert publisher.failures == 0
