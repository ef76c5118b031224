"""Crash durability: ``kill -9`` under load loses no acknowledged event."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anyio
import msgspec
import pytest

from robobus import memory_store, testing
from robobus.bus import Bus, BusOptions, RequestTimeout
from robobus.schemas.memory import MemoryQuery, QueryReply

pytestmark = [pytest.mark.anyio, pytest.mark.faults]


async def wait_ready(bus: Bus, timeout: float = 20.0) -> None:
    """Until the agent answers a query (its subscriptions are then live)."""
    with anyio.fail_after(timeout):
        while True:
            try:
                await bus.request(bus.topic("memory", "query"), MemoryQuery(kind="robots"),
                                  timeout=0.5)
                return
            except RequestTimeout:
                continue


async def _acked(bus: Bus, topic: str, cursor: str | None) -> tuple[list[bytes], str | None]:
    msg = await bus.request(bus.topic("memory", "query"),
                            MemoryQuery(kind="events", pattern=topic, limit=10_000,
                                        cursor=cursor), timeout=10)
    reply = msgspec.msgpack.decode(msg.payload, type=QueryReply)
    assert reply.ok, reply.error
    events = reply.result["events"]
    return [ev["payload"] for ev in events], _key(events[-1]) if events else cursor


def _key(ev: dict[str, int]) -> str:
    return ((ev["ts_ns"] << 64) | ev["seq"]).to_bytes(16, "big").hex()


def _agent(url: str, store: Path, prefix: str) -> list[str]:
    return testing.robobus_cmd("memory", "--bus", url, "--store", str(store), "--prefix", prefix,
                               "--window-ms", "2")


async def test_kill9_agent_under_load_keeps_every_acknowledged_event(
        tmp_path: Path, prefix: str, hub_url: str) -> None:
    store = tmp_path / "store"
    topic = f"{prefix}/load/x"
    acked: list[bytes] = []
    async with Bus.connect(hub_url, name="load", options=BusOptions(prefix=prefix)) as bus:
        with testing.spawn(_agent(hub_url, store, prefix), name="memory") as proc:
            await wait_ready(bus)
            sent = 0
            cursor = None
            async with anyio.create_task_group() as tg:
                async def publish() -> None:  # ~20k events/s, below the agent's capacity
                    nonlocal sent
                    while True:
                        await bus.publish(topic, b"%d" % sent)
                        sent += 1
                        if sent % 200 == 0:
                            await anyio.sleep(0.01)

                tg.start_soon(publish)
                while len(acked) < 10_000:
                    page, cursor = await _acked(bus, topic, cursor)
                    acked += page
                testing.kill9(proc)  # the publisher is still going
                tg.cancel_scope.cancel()
        assert sent >= len(acked) >= 10_000
        with testing.spawn(_agent(hub_url, store, prefix), name="memory-again"):
            await wait_ready(bus)
            await bus.publish(topic, b"after-restart")
            stored: list[bytes] = []
            cursor = None
            while True:
                page, cursor = await _acked(bus, topic, cursor)
                if not page:
                    break
                stored += page
    assert set(acked) <= set(stored), "acknowledged events lost by kill -9"
    assert stored[-1] == b"after-restart"
    numbers = [int(p) for p in stored[:-1]]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)


WRITER = """
import sys, time, memory_store
store = memory_store.open(sys.argv[1])
i = 0
while True:
    seq = store.append_many([("w/t", b"%d" % (i + k), time.time_ns()) for k in range(1000)])
    i += 1000
    print(seq, flush=True)
"""


def test_kill9_direct_api_writer_keeps_every_acknowledged_batch(tmp_path: Path) -> None:
    path = tmp_path / "s"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    assert proc.stdout is not None
    acks = [int(proc.stdout.readline()) for _ in range(30)]
    testing.kill9(proc)  # type: ignore[arg-type]
    with memory_store.open(path, readonly=True) as store:
        events = list(store.scan())
    assert len(events) >= acks[-1]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[acks[-1] - 1].payload == b"%d" % (acks[-1] - 1)
