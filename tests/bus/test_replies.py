"""Replies to instructions and correlated, once-only refusals (issue 14), with agents as processes.

* ``mosquitto_rr -V mqttv5 -t P/instructions -e my/reply`` gets the brain's ``accepted`` (the
  task id) on its response topic, correlation data echoed; a Bus on that topic then sees the
  terminal status. Both encodings: the fleet publishes msgpack or, started with ``?codec=json``,
  JSON (``mosquitto_rr -F %J`` prints it).
* ZeroMQ has no MQTT properties on the wire for plain clients: the ``reply_to`` and
  ``correlation`` fields of the instruction name the reply inbox.
* A refused instruction is reported once on ``P/errors`` (with sender and task id), and on the
  reply topic, even while a passive ``robobus topic echo P/#`` and the memory agent's recorder
  watch the topic.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import pytest

from bench import scenes
from robobus import testing
from robobus.bus import Bus, BusOptions, Subscription
from robobus.schemas.codec import decode_as
from robobus.schemas.messages import BrainStatus, ErrorReport, Instruction, TaskStatus
from tests.brain.test_processes import Fleet, fleet

pytestmark = pytest.mark.anyio
FINAL = {"done", "failed", "cancelled"}


def _host_port(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", str(parts.port)


def mosquitto_rr(url: str, topic: str, reply: str, message: str, *extra: str,
                 fmt: str = "%J") -> str:
    """Run the real ``mosquitto_rr`` (MQTT 5); what it prints of the first reply."""
    host, port = _host_port(url)
    out = subprocess.run(["mosquitto_rr", "-V", "mqttv5", "-h", host, "-p", port, "-t", topic,
                          "-e", reply, "-m", message, "-W", "30", "-F", fmt, *extra],
                         capture_output=True, timeout=40, check=True, text=True)
    return out.stdout


@pytest.mark.broker
@pytest.mark.parametrize("codec", ["msgpack", "json"])
async def test_mosquitto_rr_gets_the_task_and_its_outcome(tmp_path: Path, mosquitto_url: str,
                                                          codec: str) -> None:
    url = f"{mosquitto_url}?codec={codec}"
    reply = f"my/reply/{secrets.token_hex(3)}"
    async with fleet(tmp_path, url, scenes.DEMO_SCENE, scenes.DEMO_ROBOTS) as (fl, bus), \
            bus.subscribe(reply, TaskStatus) as replies:
        text = "bring the apple to the office desk"
        fmt = "%J" if codec == "json" else "%C %x"  # %J refuses what is not JSON

        def ask() -> str:
            return mosquitto_rr(url, fl.topics.instructions, reply, json.dumps({"text": text}),
                                "-D", "publish", "correlation-data", "req-1", fmt=fmt)

        printed = await anyio.to_thread.run_sync(ask)
        if codec == "json":  # %J shows a JSON payload as the object it is
            got = json.loads(printed)
            props = got["properties"]
            assert props["correlation-data"] == "req-1", got
            assert props["content-type"] == "application/json"
            assert props["payload-format-indicator"] == 1
            assert got["payload"]["status"] == "accepted", got
            task_id = got["payload"]["task_id"]
        else:
            ctype, hexed = printed.split()
            assert ctype == "application/msgpack"
            first = decode_as(bytes.fromhex(hexed), TaskStatus)
            assert first.status == "accepted"
            task_id = first.task_id
        statuses: list[TaskStatus] = []
        with anyio.fail_after(40):
            async for msg in replies:
                statuses.append(msg.data)
                assert msg.correlation == b"req-1" and msg.content_type == f"application/{codec}"
                if msg.data.status in FINAL:
                    break
        assert statuses[-1].status == "done", statuses[-1].reason
        assert statuses[0].status == "accepted" and statuses[-1].task_id == task_id
        assert "progress" not in {s.status for s in statuses}
        # the same statuses went to the task's own topic (another subscription: wait for it)
        assert (await fl.until(lambda: fl.status(task_id))).status == "done"


async def _brain_only(stack: contextlib.ExitStack, tmp: Path, url: str) -> Fleet:
    fl = Fleet(tmp, url, scenes.DEMO_SCENE, [], stack)
    fl.spawn("brain", "brain", "--no-recover")
    return fl


async def _listening(bus: Bus, fl: Fleet) -> None:
    """Until the brain's first status: it subscribes to instructions before it says anything."""
    async with bus.subscribe(fl.topics.brain_status, BrainStatus) as status:
        with anyio.fail_after(30):
            await status.get()


async def _next(sub: Subscription, code: str | None = None, timeout: float = 20.0) -> ErrorReport:
    """The next error report (with ``code``, skipping others)."""
    with anyio.fail_after(timeout):
        while True:
            report = (await sub.get()).data
            if code is None or report.code == code:
                return report  # type: ignore[no-any-return]


async def test_reply_inbox_in_the_instruction_on_zeromq(tmp_path: Path, hub_url: str) -> None:
    """No memory agent: the brain accepts at once (the task then waits for the world)."""
    with contextlib.ExitStack() as stack:
        fl = await _brain_only(stack, tmp_path, hub_url)
        inbox = f"{fl.prefix}/_inbox/client-{secrets.token_hex(3)}"
        async with Bus.connect(hub_url, name="asker", options=BusOptions(prefix=fl.prefix)) as bus, \
                bus.subscribe(inbox) as replies, bus.subscribe(fl.topics.errors, ErrorReport) as errors:
            await _listening(bus, fl)
            inst = Instruction("bring the apple to the office desk", task_id="t-zmq",
                               reply_to=inbox, correlation="c-7")
            await bus.publish(fl.topics.instructions, inst, qos=1)
            with anyio.fail_after(20):
                msg = await replies.get()
            status = decode_as(msg.payload, TaskStatus)
            assert (status.task_id, status.status, msg.correlation) == ("t-zmq", "accepted", b"c-7")
            # the same id again: refused, on the reply inbox and once on P/errors
            again = Instruction("bring the knife", task_id="t-zmq", reply_to=inbox,
                                correlation="c-8", source="asker-app")
            await bus.publish(fl.topics.instructions, again, qos=1)
            with anyio.fail_after(20):
                msg = await replies.get()
            refusal = decode_as(msg.payload, ErrorReport)
            assert msg.correlation == b"c-8"
            assert (refusal.code, refusal.task_id, refusal.sender) == \
                ("duplicate_task", "t-zmq", "asker")
            report = await _next(errors)
            assert (report.code, report.task_id) == ("duplicate_task", "t-zmq")
            # a reply topic that is a fleet topic is refused (it could be a robot's commands)
            evil = Instruction("x", task_id="t-evil", reply_to=fl.topics.skill("r1", "pick"))
            await bus.publish(fl.topics.instructions, evil, qos=1)
            report = await _next(errors)
            assert (report.code, report.task_id) == ("bad_reply_topic", "t-evil")


@pytest.mark.broker
async def test_a_refusal_is_reported_once_with_observers_running(tmp_path: Path,
                                                                 mosquitto_url: str) -> None:
    """An oversized and an undecodable instruction, sent with a response topic while the
    memory agent records everything and ``robobus topic echo P/#`` watches: one report each on
    ``P/errors`` (from the brain, naming the sender), and one on the reply topic."""
    reply = f"my/errors/{secrets.token_hex(3)}"
    with contextlib.ExitStack() as stack:
        fl = await _brain_only(stack, tmp_path, mosquitto_url)
        fl.start_memory()
        echo = stack.enter_context(testing.spawn(testing.robobus_cmd(
            "topic", "echo", f"{fl.prefix}/#", "--bus", mosquitto_url), name="echo",
            log_dir=tmp_path / "logs"))
        async with Bus.connect(mosquitto_url, name="sender-app",
                               options=BusOptions(prefix=fl.prefix, max_payload=4 << 20)) as bus, \
                bus.subscribe(fl.topics.errors, ErrorReport) as errors, \
                bus.subscribe(reply, ErrorReport) as replies:
            await _listening(bus, fl)
            big = b'{"text": "' + b"a" * (1 << 20) + b'"}'
            await bus.publish(fl.topics.instructions, big, qos=1, response_topic=reply,
                              correlation=b"big")
            await bus.publish(fl.topics.instructions, b"\xff\xfe not an instruction", qos=1,
                              response_topic=reply, correlation=b"junk")
            got = {(await _next(replies)).code, (await _next(replies)).code}
            assert got == {"too_large", "decode"}
            await anyio.sleep(2.0)  # time for any duplicate to arrive
            reports = [m.data for m in iter(errors.get_nowait, None)
                       if m.data.topic == fl.topics.instructions]
            extra = [m.data for m in iter(replies.get_nowait, None)]
        assert echo.poll() is None, "topic echo died"
    assert sorted(r.code for r in reports) == ["decode", "too_large"], \
        [(r.source, r.code) for r in reports]
    assert all(r.source == "brain" and r.sender == "sender-app" for r in reports), reports
    assert not extra, extra
    assert "neither msgpack, JSON nor UTF-8 text" in next(r.reason for r in reports
                                                          if r.code == "decode")
