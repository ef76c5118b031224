"""Single hostile messages against the memory agent as a process on a real Mosquitto (issue 13).

Each case sends what a plain MQTT client could (``mosquitto_pub``), then checks that the agent
reported it once on ``P/errors``, stayed alive, stored nothing bad, kept what it had accepted,
survives its own restart, and still accepts a valid change afterwards.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import lmdb
import msgspec
import pytest
import yaml

from robobus import testing
from robobus.bus import Bus, BusOptions, RequestTimeout, Subscription
from robobus.schemas.memory import MemoryQuery, QueryReply
from robobus.schemas.messages import ErrorReport, TaskStatus
from robobus.schemas.topics import Topics
from robobus.schemas.world import WorldChange, WorldEvent, WorldReply

pytestmark = [pytest.mark.anyio, pytest.mark.broker,
              pytest.mark.skipif(shutil.which("mosquitto_pub") is None,
                                 reason="needs mosquitto_pub")]

SCENE = {"places": {"kitchenTable": {"position": [2.0, 1.0]}, "shelf": {"position": [0.0, 4.0]}},
         "objects": {"apple": {"kind": "fruit", "at": "kitchenTable"}}}


@dataclass
class Memory:
    """A memory agent process plus a client, its error reports and the way to restart it."""

    url: str
    store: Path
    scene: Path
    topics: Topics
    client: Bus
    errors: Subscription
    map_size: str = "1GiB"
    proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        parts = urlsplit(self.url)
        url = f"{self.url}?session=persistent&client_id={self.topics.prefix}-memory"
        assert parts.port is not None
        return testing.robobus_cmd("memory", "--bus", url, "--store", str(self.store),
                                   "--scene", str(self.scene), "--prefix", self.topics.prefix,
                                   "--window-ms", "2", "--map-size", self.map_size)

    async def pub(self, topic: str, payload: bytes) -> None:
        """Publish with the real ``mosquitto_pub`` at QoS 1 (the payload on stdin)."""
        port = str(urlsplit(self.url).port)
        await anyio.run_process(["mosquitto_pub", "-h", "127.0.0.1", "-p", port, "-q", "1",
                                 "-t", topic, "-s"], input=payload)

    async def query(self, **fields: Any) -> QueryReply:
        msg = await self.client.request(self.topics.memory_query, MemoryQuery(**fields),
                                        timeout=10)
        return msgspec.msgpack.decode(msg.payload, type=QueryReply)

    async def change(self, **fields: Any) -> WorldReply:
        msg = await self.client.request(self.topics.world_change, WorldChange(**fields),
                                        timeout=10)
        return msgspec.msgpack.decode(msg.payload, type=WorldReply)

    async def report(self, code: str, timeout: float = 10.0) -> ErrorReport:
        """The next report with ``code`` from the memory agent (others are skipped)."""
        with anyio.fail_after(timeout):
            while True:
                report: ErrorReport = (await self.errors.get()).data
                if report.code == code and report.source.startswith("memory"):
                    return report

    async def ready(self) -> None:
        with anyio.fail_after(30):
            while True:
                try:
                    await self.client.request(self.topics.memory_query,
                                              MemoryQuery(kind="robots"), timeout=0.5)
                    return
                except RequestTimeout:
                    assert self.proc is not None and self.proc.poll() is None, "agent died"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def objects(self) -> dict[str, Any]:
        world = await self.query(kind="world")
        assert world.ok, world.error
        return dict(world.result.get("objects", {}))


@contextlib.contextmanager
def _process(memory: Memory) -> Iterator[subprocess.Popen[bytes]]:
    with testing.spawn(memory.argv(), name="memory", env={"ROBOBUS_LOG": "warning"}) as proc:
        memory.proc = proc
        yield proc


@contextlib.asynccontextmanager
async def memory_agent(url: str, tmp_path: Path, prefix: str, **kw: Any
                       ) -> AsyncIterator[tuple[Memory, contextlib.ExitStack]]:
    scene = tmp_path / "scene.yaml"
    scene.write_text(yaml.safe_dump({"scene": SCENE}))
    topics = Topics(prefix)
    async with Bus.connect(url, name="poison-client", options=BusOptions(prefix=prefix)) as bus:
        async with bus.subscribe(topics.errors, ErrorReport, maxsize=10_000) as errors:
            memory = Memory(url, tmp_path / "store", scene, topics, bus, errors, **kw)
            with contextlib.ExitStack() as stack:
                stack.enter_context(_process(memory))
                await memory.ready()
                yield memory, stack


async def restart(memory: Memory, stack: contextlib.ExitStack) -> None:
    """Stop the agent (SIGTERM) and start it again on the same store."""
    assert memory.alive(), "the agent died"
    stack.close()
    stack.enter_context(_process(memory))
    await memory.ready()


async def test_bad_positions_are_refused_and_never_stored(
        mosquitto_url: str, tmp_path: Path, prefix: str) -> None:
    async with memory_agent(mosquitto_url, tmp_path, prefix) as (mem, stack):
        assert (await mem.change(op="add_object", object="plum", target="shelf",
                                 data={"kind": "fruit", "position": [0.5, 4.0]})).ok
        bad = {"ab": "ab", "nan": [math.nan, 1.0], "inf": [math.inf, 0.0], "long": [1.0, 2.0, 3.0],
               "short": [1.0], "huge": [1e300, 0.0]}
        for name, position in bad.items():
            change = WorldChange("add_object", object=f"bad_{name}", target="kitchenTable",
                                 data={"position": position})
            await mem.pub(mem.topics.world_change, msgspec.msgpack.encode(change))
            report = await mem.report("invalid")
            assert report.topic == mem.topics.world_change and "position" in report.reason
        assert mem.alive()
        objects = await mem.objects()
        assert "plum" in objects and not any(n.startswith("bad_") for n in objects)
        await restart(mem, stack)
        objects = await mem.objects()
        assert objects["plum"]["position"] == [0.5, 4.0]
        assert not any(n.startswith("bad_") for n in objects)
        assert (await mem.change(op="add_object", object="fig", target="shelf")).ok


async def test_a_bad_stored_world_record_is_reported_and_skipped(
        mosquitto_url: str, tmp_path: Path, prefix: str) -> None:
    async with memory_agent(mosquitto_url, tmp_path, prefix) as (mem, stack):
        assert (await mem.change(op="add_object", object="plum", target="shelf")).ok
        stack.close()
        # What an older version could store: an object whose position is a string.
        env = lmdb.open(str(mem.store / "views.mdb"), subdir=False, max_dbs=4)
        meta = env.open_db(b"meta")
        with env.begin(write=True, db=meta) as txn:
            world = msgspec.msgpack.decode(txn.get(b"world"))
            world["objects"]["poison"] = {"name": "poison", "kind": "x", "location": "shelf",
                                          "position": "ab"}
            txn.put(b"world", msgspec.msgpack.encode(world))
        env.close()
        stack.enter_context(_process(mem))
        await mem.ready()
        report = await mem.report("bad_record")
        assert "poison" in report.reason and "views.mdb" in report.topic
        objects = await mem.objects()
        assert "plum" in objects and "apple" in objects and "poison" not in objects
        assert (await mem.change(op="add_object", object="fig", target="shelf")).ok
        await restart(mem, stack)
        assert {"plum", "fig", "apple"} <= set(await mem.objects())


async def test_out_of_range_world_event_sequence_is_refused(
        mosquitto_url: str, tmp_path: Path, prefix: str) -> None:
    async with memory_agent(mosquitto_url, tmp_path, prefix) as (mem, stack):
        first = await mem.change(op="add_object", object="plum", target="shelf")
        assert first.ok and first.event is not None
        forged = WorldChange("add_object", object="forged", target="shelf")
        raw = msgspec.msgpack.encode({"seq": 2**64 - 1, "change": forged, "ts_ns": 1})
        await mem.pub(mem.topics.world_events, raw)
        assert "seq" in (await mem.report("decode")).reason
        # In range but skipping ahead: would push the version to its maximum.
        ahead = WorldEvent(seq=2**63 - 1, change=forged, ts_ns=1)
        await mem.pub(mem.topics.world_events, msgspec.msgpack.encode(ahead))
        await mem.report("seq_gap")
        assert "forged" not in await mem.objects()
        second = await mem.change(op="add_object", object="fig", target="shelf")
        assert second.ok and second.event is not None
        assert second.event.seq == first.event.seq + 1
        await restart(mem, stack)
        fourth = await mem.change(op="add_object", object="kiwi", target="shelf")
        assert fourth.ok and fourth.event is not None and fourth.event.seq == second.event.seq + 1


async def test_a_topic_over_the_lmdb_key_limit_is_reported_not_fatal(
        mosquitto_url: str, tmp_path: Path, prefix: str) -> None:
    async with memory_agent(mosquitto_url, tmp_path, prefix) as (mem, stack):
        await mem.pub(f"{prefix}/ok/before", b"kept-1")
        long_topic = f"{prefix}/x/" + "a" * 600
        await mem.pub(long_topic, b"too-long")
        report = await mem.report("topic_too_long")
        assert "511" in report.reason
        await mem.pub(f"{prefix}/ok/after", b"kept-2")
        await restart(mem, stack)  # the broker must not redeliver it into a crash loop
        events = await mem.query(kind="events", pattern=f"{prefix}/ok/#")
        assert [e["payload"] for e in events.result["events"]] == [b"kept-1", b"kept-2"]
        assert mem.alive()
        assert (await mem.change(op="add_object", object="fig", target="shelf")).ok


async def test_replies_over_the_size_limit_are_paged_or_refused(
        mosquitto_url: str, tmp_path: Path, prefix: str) -> None:
    async with memory_agent(mosquitto_url, tmp_path, prefix) as (mem, stack):
        big = [bytes([65 + i]) * 400_000 for i in range(4)]
        for payload in big:
            await mem.pub(f"{prefix}/big/blob", payload)
        got: list[bytes] = []
        cursor = None
        for _ in range(10):  # 1.6 MB of events: more than one reply can carry
            page = await mem.query(kind="events", pattern=f"{prefix}/big/#", limit=10_000,
                                   cursor=cursor)
            assert page.ok, page.error
            got += [e["payload"] for e in page.result["events"]]
            cursor = page.next_cursor
            if cursor is None:
                break
        assert got == big
        for i in range(4):  # tasks whose records together pass 1 MiB
            status = TaskStatus(task_id=f"T{i}", status="accepted", text="t" * 300_000)
            await mem.client.publish(mem.topics.task(f"T{i}"), status, qos=1)
        everything = await mem.query(kind="tasks", status="all")
        assert not everything.ok and everything.code == "too_large"
        assert "limit" in (everything.error or "")
        await mem.report("too_large")
        one = await mem.query(kind="task", name="T0")
        assert one.ok and one.result["task_id"] == "T0"
        await restart(mem, stack)
        assert (await mem.query(kind="task", name="T3")).ok
        assert (await mem.change(op="add_object", object="fig", target="shelf")).ok


async def test_a_full_map_is_reported_and_reads_go_on(
        mosquitto_url: str, tmp_path: Path, prefix: str) -> None:
    async with memory_agent(mosquitto_url, tmp_path, prefix, map_size="256KiB") as (mem, stack):
        await mem.pub(f"{prefix}/ok/first", b"stored")
        assert (await mem.query(kind="events", pattern=f"{prefix}/ok/#")).result["events"]
        for i in range(12):
            await mem.client.publish(f"{prefix}/fill/x", bytes([i]) * 30_000, qos=1)
        report = await mem.report("store_full")
        assert "map size" in report.reason
        assert mem.alive()
        events = await mem.query(kind="events", pattern=f"{prefix}/ok/#")
        assert events.ok and [e["payload"] for e in events.result["events"]] == [b"stored"]
        refused = await mem.change(op="add_object", object="fig", target="shelf")
        assert not refused.ok and refused.code == "store_full"
        mem.map_size = "64MiB"  # space comes back: nothing that was sent is lost
        await restart(mem, stack)
        with anyio.fail_after(20):
            while True:
                filled = await mem.query(kind="events", pattern=f"{prefix}/fill/#", limit=100)
                if len(filled.result["events"]) == 12:
                    break
                await anyio.sleep(0.2)
        assert (await mem.change(op="add_object", object="fig", target="shelf")).ok
