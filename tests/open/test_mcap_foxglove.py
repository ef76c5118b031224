"""MCAP exports that Foxglove and Lichtblick open: every channel of a recorded fleet run passes
their JSON Schema reader's rules (tests/open/foxglove_rules.py), and the Python ``mcap`` reader
(an independent implementation of the format) decodes every message."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import msgspec
import pytest
from mcap.reader import make_reader

from bench import scenes
from robobus import testing
from robobus.memory_store.foxglove import GENERIC, foxglove_payload, foxglove_schema
from robobus.schemas.contract import MESSAGE_TYPES, TOPIC_TYPES
from robobus.schemas.messages import RobotState, TaskStatus
from tests.brain.test_processes import fleet
from tests.open.conftest import brain_ready
from tests.open.foxglove_rules import schema_problems, value_problems

pytestmark = pytest.mark.anyio


def test_every_message_type_passes_the_reader_rules_and_msgspecs_own_does_not() -> None:
    for type_ in (*MESSAGE_TYPES.values(), None):
        assert schema_problems(foxglove_schema(type_)) == [], type_
    assert schema_problems(GENERIC) == []
    # what the export wrote before (msgspec's schema as it is): refused for every topic type
    assert all(schema_problems(msgspec.json.schema(t)) for t in set(TOPIC_TYPES.values()))


def test_payloads_drop_nulls_and_carry_times_foxglove_reads() -> None:
    state = msgspec.msgpack.encode(RobotState(robot="g1", place=None, ts_ns=1_700_000_000_123_456_789))
    data = json.loads(foxglove_payload(state))
    assert data["ts"] == {"sec": 1_700_000_000, "nsec": 123_456_789} and "place" not in data
    assert value_problems(foxglove_schema(RobotState), data) == []
    assert json.loads(foxglove_payload(b'{"text": "bring the cup", "priority": 2}')) == {
        "text": "bring the cup", "priority": 2}  # a JSON instruction is the object it is
    assert json.loads(foxglove_payload(b"plain words")) == {"text": "plain words"}


@pytest.mark.broker
async def test_a_recorded_fleet_run_exports_for_foxglove(tmp_path: Path, mosquitto_url: str) -> None:
    async with fleet(tmp_path, mosquitto_url, scenes.DEMO_SCENE, scenes.DEMO_ROBOTS) as (fl, bus):
        await brain_ready(bus, fl.topics)
        await bus.publish(fl.topics.instructions, json.dumps(
            {"text": "Bring the apple to the office desk", "task_id": "fox1"}).encode(), qos=1)
        done = await fl.until(lambda: fl.status("fox1"), timeout=60)
        assert done.status == "done", done.reason
    out = tmp_path / "run.mcap"
    cli = subprocess.run(testing.robobus_cmd("export", str(tmp_path / "store"), "--mcap", str(out)),
                         capture_output=True, text=True, check=True, timeout=60)
    with out.open("rb") as fh:
        messages = list(make_reader(fh).iter_messages())
    assert f"wrote {len(messages)} messages" in cli.stdout
    schemas = {ch.topic: json.loads(schema.data) for schema, ch, _ in messages}
    for topic, schema in schemas.items():
        assert schema_problems(schema) == [], topic
    topics = set()
    for schema, channel, message in messages:
        data = json.loads(message.data)
        assert value_problems(json.loads(schema.data), data) == [], (channel.topic, data)
        topics.add(channel.topic.removeprefix(fl.prefix + "/").split("/")[0])
    assert {"instructions", "tasks", "robots", "brain", "world"} <= topics
    inst = [json.loads(m.data) for _, ch, m in messages if ch.topic == fl.topics.instructions]
    assert {"text": "Bring the apple to the office desk", "task_id": "fox1"}.items() \
        <= inst[0].items()
    task = [json.loads(m.data) for _, ch, m in messages if ch.topic == fl.topics.task("fox1")]
    assert [t["status"] for t in task][-1] == "done"
    assert all(t["ts"]["sec"] == t["ts_ns"] // 10**9 for t in task)
    assert msgspec.convert(task[-1], TaskStatus).task_id == "fox1"  # still the contract's shape
