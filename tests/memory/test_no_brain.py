"""An instruction sent while no brain runs gets an answer (issue 12, safe intake).

Memory agent as a process, no brain: ``mosquitto_rr`` (MQTT 5 Response Topic) and a ZeroMQ
client (the ``reply_to`` field) each get a ``failed`` status whose reason starts ``no_brain:``,
with the correlation data echoed. Once a brain is ``ready`` the answer is the brain's own
``accepted``, and the memory agent stays quiet (one answer per instruction).
"""

from __future__ import annotations

import contextlib
import json
import secrets
from pathlib import Path

import anyio
import pytest

from bench import scenes
from robobus.bus import Bus, BusOptions
from robobus.schemas.messages import BrainStatus, Instruction, TaskStatus
from tests.brain.test_processes import Fleet
from tests.bus.test_replies import mosquitto_rr

pytestmark = pytest.mark.anyio


@pytest.mark.broker
async def test_mosquitto_rr_without_a_brain_gets_no_brain(tmp_path: Path, mosquitto_url: str
                                                          ) -> None:
    url = f"{mosquitto_url}?codec=json"  # a JSON fleet: mosquitto_rr -F %J shows the answer
    with contextlib.ExitStack() as stack:
        fl = Fleet(tmp_path, url, scenes.DEMO_SCENE, [], stack)
        fl.start_memory()
        async with Bus.connect(url, name="t", options=BusOptions(prefix=fl.prefix)) as bus:
            await _memory_ready(bus, fl)
        reply = f"my/reply/{secrets.token_hex(3)}"

        def ask() -> str:
            return mosquitto_rr(mosquitto_url, fl.topics.instructions, reply,
                                json.dumps({"text": "bring the apple to the office desk"}),
                                "-D", "publish", "correlation-data", "req-7")

        got = json.loads(await anyio.to_thread.run_sync(ask))
        assert got["properties"]["correlation-data"] == "req-7", got
        assert got["payload"]["status"] == "failed", got
        assert got["payload"]["reason"].startswith("no_brain:"), got


async def test_reply_inbox_without_a_brain_then_with_one(tmp_path: Path, hub_url: str) -> None:
    with contextlib.ExitStack() as stack:
        fl = Fleet(tmp_path, hub_url, scenes.DEMO_SCENE, scenes.DEMO_ROBOTS, stack)
        fl.start_memory()
        inbox = f"{fl.prefix}/_inbox/client-{secrets.token_hex(3)}"
        async with Bus.connect(hub_url, name="t", options=BusOptions(prefix=fl.prefix)) as bus, \
                bus.subscribe(inbox, TaskStatus) as replies:
            await _memory_ready(bus, fl)
            await bus.publish(fl.topics.instructions, Instruction(
                "bring the apple to the office desk", task_id="nb1", reply_to=inbox,
                correlation="c-1"), qos=1)
            with anyio.fail_after(10):
                first = await anext(aiter(replies))
            assert first.data.status == "failed" and first.data.task_id == "nb1", first.data
            assert (first.data.reason or "").startswith("no_brain:"), first.data.reason
            assert first.correlation == b"c-1"
            # a brain arrives: the answer is its own, and the memory agent keeps quiet
            for spec in scenes.DEMO_ROBOTS:
                fl.start_edge(spec)
            fl.start_brain()
            async with bus.subscribe(fl.topics.brain_status, BrainStatus) as status:
                with anyio.fail_after(30):
                    async for msg in status:
                        if msg.data.state == "ready":
                            break
            await bus.publish(fl.topics.instructions, Instruction(
                "bring the apple to the office desk", task_id="nb2", reply_to=inbox), qos=1)
            seen: list[TaskStatus] = []
            with anyio.fail_after(30):
                async for msg in replies:
                    seen.append(msg.data)
                    if msg.data.status in {"done", "failed", "cancelled"}:
                        break
            assert [s.task_id for s in seen] == ["nb2"] * len(seen), seen
            assert seen[0].status == "accepted" and seen[-1].status == "done", seen
            assert not any((s.reason or "").startswith("no_brain") for s in seen), seen
            # a robot group with no brain of its own (issue 16): answered for that group,
            # although the ungrouped brain is ready
            await bus.publish(fl.topics.group_instructions("ants"), Instruction(
                "bring the apple to the office desk", task_id="nb3", reply_to=inbox), qos=1)
            with anyio.fail_after(10):
                third = await anext(aiter(replies))
            assert third.data.task_id == "nb3" and third.data.status == "failed", third.data
            reason = third.data.reason or ""
            assert reason.startswith("no_brain:") and "groups/ants/brain/status" in reason, reason


async def _memory_ready(bus: Bus, fl: Fleet) -> None:
    from robobus.schemas.messages import MemoryStatus
    async with bus.subscribe(fl.topics.memory_status, MemoryStatus) as sub:
        with anyio.fail_after(30):
            async for msg in sub:
                if msg.data.online:
                    break
    await anyio.sleep(1.2)  # the agent's settle time for a brain status that never comes
