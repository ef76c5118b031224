"""Lifecycle faults as users make them, with every agent its own OS process.

* cancel, then ``kill -9`` of the brain, then a new brain: the task stays cancelled (in task
  memory too) and nothing of it is sent again;
* a retained instruction (``mosquitto_pub -r``) on a real Mosquitto: a brain started after it
  refuses it with an error naming it, clears it, and does not execute it;
* the same for a brain already running, on Mosquitto (``mosquitto_pub -r``; the brain
  subscribes to command topics with Retain As Published) and on the ZeroMQ hub (``robobus
  topic pub --retain``; the hub forwards a command's retain flag).
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from urllib.parse import urlsplit

import anyio
import msgspec
import pytest

from bench import scenes
from robobus import testing
from robobus.brain_agent.fleet import query_memory
from robobus.bus import Bus, BusOptions
from robobus.schemas.memory import MemoryQuery, TaskRecord
from robobus.schemas.messages import BrainStatus, ErrorReport, Instruction
from tests.brain.test_processes import Fleet, fleet

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["zmq", pytest.param("mqtt", marks=pytest.mark.broker)])
def process_url(request: pytest.FixtureRequest) -> str:
    """The ZeroMQ hub or the private Mosquitto (both started once per session)."""
    return str(request.getfixturevalue("hub_url" if request.param == "zmq" else "mosquitto_url"))
LONG_TASK = "Bring the fruit nearest the cup and a fruit knife to the office desk"


async def _ready_after(bus: Bus, fl: Fleet, since_ns: int) -> None:
    """Wait for a ``ready`` from a brain started after ``since_ns``."""
    async with bus.subscribe(fl.topics.brain_status, BrainStatus) as sub:
        with anyio.fail_after(30):
            async for msg in sub:
                if msg.data.ts_ns > since_ns and msg.data.state == "ready":  # not ``starting``
                    return


async def _record(bus: Bus, fl: Fleet, tid: str) -> TaskRecord:
    res = await query_memory(bus, fl.topics, MemoryQuery(kind="task", name=tid), 5.0)
    return msgspec.convert(res, TaskRecord)


@pytest.mark.faults
async def test_cancel_then_brain_kill9_stays_cancelled(tmp_path, hub_url) -> None:  # noqa: ANN001
    async with fleet(tmp_path, hub_url, scenes.DEMO_SCENE, scenes.DEMO_ROBOTS) as (fl, bus):
        tid = await fl.send(bus, LONG_TASK)
        await fl.until(lambda: "dispatched" in [s.status for s in fl.statuses[tid]])
        await fl.send(bus, f"cancel task {tid}")
        await fl.until(lambda: fl.status(tid))
        assert fl.status(tid).status == "cancelled"  # type: ignore[union-attr]
        # memory has folded the cancel (and refused what a brain would send after it)
        with anyio.fail_after(10):
            while (await _record(bus, fl, tid)).status != "cancelled":
                await anyio.sleep(0.1)
        fl.kill9("brain")
        restart_ns = time.time_ns()
        fl.start_brain()
        await _ready_after(bus, fl, restart_ns)
        # recovery ran before ready; a probe's statuses come after anything it emitted
        await fl.send(bus, "bring the apple to the office desk")
        seen = [s.status for s in fl.statuses[tid]]
        assert seen[seen.index("cancelled"):] == ["cancelled"], seen
        assert (await _record(bus, fl, tid)).status == "cancelled"
        resent = [c for _, c in fl.commands if c.task_id == tid and c.action == "run"
                  and c.ts_ns > restart_ns]
        print(f"LIFECYCLE cancel-then-brain-kill9 zmq: task {seen[-1]} after restart (memory "
              f"too), commands re-sent {len(resent)}")
        assert resent == [], resent


@pytest.mark.broker
async def test_retained_instruction_is_refused_and_cleared(tmp_path, mosquitto_url) -> None:  # noqa: ANN001
    with contextlib.ExitStack() as stack:
        fl = Fleet(tmp_path, mosquitto_url, scenes.DEMO_SCENE, [], stack)
        url = urlsplit(mosquitto_url)
        inst = Instruction("bring the apple to the office desk", task_id="kept1")
        subprocess.run(["mosquitto_pub", "-h", str(url.hostname), "-p", str(url.port), "-r",
                        "-q", "1", "-t", fl.topics.instructions, "-m",
                        msgspec.json.encode(inst).decode()], check=True, timeout=10)
        async with Bus.connect(mosquitto_url, name="tester", options=BusOptions(prefix=fl.prefix)) \
                as bus, bus.subscribe(fl.topics.errors, ErrorReport) as errors, \
                anyio.create_task_group() as tg:
            await tg.start(fl.watch, bus)
            started_ns = time.time_ns()
            fl.start_memory()
            t0 = time.monotonic()
            fl.start_brain()
            with anyio.fail_after(30):
                while (report := (await errors.get()).data).code != "retained_instruction":
                    pass
            refused_s = time.monotonic() - t0
            assert report.source == "brain" and report.topic == fl.topics.instructions
            assert "'kept1'" in report.reason and "bring the apple" in report.reason
            await _ready_after(bus, fl, started_ns)
            await fl.send(bus, "bring the apple to the office desk")  # the intake is past it
            assert "kept1" not in fl.statuses
            async with bus.subscribe(fl.topics.instructions) as late:
                with anyio.move_on_after(1.0):
                    msg = await late.get()
                    pytest.fail(f"the retained instruction is still there: {msg.payload!r}")
            print(f"LIFECYCLE retained-instruction-boot mqtt: refused and cleared {refused_s:.2f} s "
                  "after the brain process started, executed 0 times")
            tg.cancel_scope.cancel()


def _publish_retained(url: str, topic: str, text: str) -> None:
    """A retained publish the way a user makes one: ``mosquitto_pub -r`` or ``robobus topic pub
    --retain`` (a process of its own, not this test's connection)."""
    if url.startswith("mqtt"):
        parts = urlsplit(url)
        argv = ["mosquitto_pub", "-h", str(parts.hostname), "-p", str(parts.port), "-r", "-q",
                "1", "-t", topic, "-m", text]
    else:
        argv = testing.robobus_cmd("topic", "pub", topic, text, "--retain", "--qos", "1",
                                   "--bus", url)
    subprocess.run(argv, check=True, timeout=30, capture_output=True)


async def test_retained_instruction_to_a_live_brain_is_refused(tmp_path, process_url) -> None:  # noqa: ANN001
    with contextlib.ExitStack() as stack:
        fl = Fleet(tmp_path, process_url, scenes.DEMO_SCENE, [], stack)
        async with Bus.connect(process_url, name="tester", options=BusOptions(prefix=fl.prefix)) \
                as bus, bus.subscribe(fl.topics.errors, ErrorReport) as errors, \
                anyio.create_task_group() as tg:
            await tg.start(fl.watch, bus)
            started_ns = time.time_ns()
            fl.start_memory()
            fl.start_brain()
            await _ready_after(bus, fl, started_ns)
            inst = Instruction("bring the apple to the office desk", task_id="live1")
            t0 = time.monotonic()
            await anyio.to_thread.run_sync(_publish_retained, process_url, fl.topics.instructions,
                                           msgspec.json.encode(inst).decode())
            with anyio.fail_after(20):
                while (report := (await errors.get()).data).code != "retained_instruction":
                    pass
            refused_s = time.monotonic() - t0
            assert report.source == "brain" and "'live1'" in report.reason
            await fl.send(bus, "bring the apple to the office desk")  # the intake is past it
            assert "live1" not in fl.statuses
            async with bus.subscribe(fl.topics.instructions) as late:
                with anyio.move_on_after(1.0):
                    msg = await late.get()
                    pytest.fail(f"the retained instruction is still there: {msg.payload!r}")
            transport = process_url.split(":", 1)[0]
            print(f"LIFECYCLE retained-instruction-live {transport}: refused and cleared "
                  f"{refused_s:.2f} s after the publish (from the publishing process's start), "
                  "executed 0 times")
            tg.cancel_scope.cancel()
