"""The launcher's readiness: scenario time 0 waits for the brain's own ready status."""

from __future__ import annotations

import secrets
import time

import anyio
import anyio.abc
import pytest

from robobus.bus import Bus
from robobus.launch import fleet
from robobus.launch.errors import NotReady
from robobus.schemas.memory import QueryReply
from robobus.schemas.messages import BrainStatus
from robobus.schemas.topics import Topics

pytestmark = pytest.mark.anyio


async def _memory(bus: Bus, robots: list[str], *,
                  task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """A memory agent that knows ``robots`` (all the launcher asks it before the brain)."""
    async with bus.subscribe(Topics(bus.options.prefix).memory_query) as queries:
        task_status.started()
        async for msg in queries:
            await bus.reply(msg, QueryReply(ok=True, result={r: {} for r in robots}))


def _robots_up(ready: fleet.Readiness) -> None:
    for robot in ready.robots:
        ready.saw("RobotRegistration", {"robot": robot, "ts_ns": time.time_ns()})
        ready.saw("Alive", {"robot": robot, "online": True, "ts_ns": time.time_ns()})


async def test_the_launcher_waits_for_the_brains_ready_status() -> None:
    url = f"memory://ready-{secrets.token_hex(4)}"
    async with Bus.connect(url, name="memory") as memory, Bus.connect(url, name="brain") as brain, \
            Bus.connect(url, name="launcher") as bus, anyio.create_task_group() as tg:
        await tg.start(_memory, memory, ["g1"])
        topic = Topics(bus.options.prefix).brain_status
        earlier = BrainStatus("brain", "ready", "symbolic")  # a previous run's brain, retained
        await brain.publish(topic, earlier, retain=True, qos=1)
        ready = fleet.Readiness(["g1"], time.time_ns())
        _robots_up(ready)
        # what the launcher once took for the end of the brain's boot: no longer counts
        ready.saw("Raw", {"kind": "tasks", "status": "active", "ts_ns": time.time_ns()})
        with pytest.raises(NotReady, match="the brain's ready status"):
            await fleet.wait_ready(bus, ready, timeout=0.2, brain_boot=0.3)
        assert ready.memory_ok and not ready.brain_ready

        await brain.publish(topic, BrainStatus("brain", "ready", "symbolic"), retain=True, qos=1)
        with anyio.fail_after(5):  # retained: seen although it came before the launcher asked
            await fleet.wait_ready(bus, ready, timeout=5)
        assert ready.brain_ready
        tg.cancel_scope.cancel()
