"""JSON as a first-class wire encoding, and times JavaScript can hold (issue 14).

* Every decoder reads msgpack and JSON alike, told apart by MQTT 5 Content Type or the payload;
  anything else gets an honest error.
* A fleet started with ``?codec=json`` is read whole by ``mosquitto_sub -F %J``: every message,
  retained presence included, is a JSON object labelled ``application/json`` with Payload Format
  Indicator 1; a JavaScript-style instruction (``ts_ns`` written as a float) is accepted.
* A fleet whose agents speak different encodings runs a multi-robot task to ``done``, and junk on
  a robot's feedback topic is refused once, by the brain (its owner), naming both encodings.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import msgspec
import pytest

from bench import scenes
from robobus.asyncapi import payload_schemas
from robobus.bus import Bus, BusOptions
from robobus.schemas.codec import JSON, MSGPACK, decode_as, encode
from robobus.schemas.errors import DecodeError
from robobus.schemas.memory import MemoryQuery, QueryReply
from robobus.schemas.messages import (
    TICK_NS,
    Alive,
    BrainStatus,
    ErrorReport,
    Instruction,
    Plan,
    PlanStep,
    RobotState,
    SkillCommand,
    TaskStatus,
    now_ns,
)
from tests.brain.test_processes import Fleet, fleet

pytestmark = pytest.mark.anyio
JS_NOW = 1.7651234567890e18  # Date.now() * 1e6 in JavaScript: a float above 2**53
SAMPLES = [
    Instruction("bring the apple", priority=2, task_id="t1", reply_to="my/reply", correlation="c"),
    TaskStatus("t1", "planned", plan=Plan("t1", [PlanStep("s1", "g1", "pick", {"object": "apple"})])),
    RobotState("g1", holding=["apple"], commands=["c1"]),
    SkillCommand("c1", "pick", {"object": "apple"}, timeout_s=3.5),
    Alive("g1", True, bd_seq=7),
    BrainStatus("brain", "ready", "symbolic", bd_seq=3, instance="i"),
    ErrorReport("brain", "p/instructions", "decode", "bad", sender="app", task_id="t1"),
    MemoryQuery(kind="task", name="t1"),
    QueryReply(ok=True, result={"status": "done"}),
]


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
@pytest.mark.parametrize("codec", ["msgpack", "json"])
def test_either_encoding_decodes_labelled_or_not(msg: Any, codec: str) -> None:
    payload = encode(msg, codec)
    label = JSON if codec == "json" else MSGPACK
    assert payload[:1] == b"{" if codec == "json" else payload[0] >= 0x80
    assert decode_as(payload, type(msg), "t") == msg
    assert decode_as(payload, type(msg), "t", label) == msg
    assert decode_as(b" \n" + payload if codec == "json" else payload, type(msg), "t") == msg


@pytest.mark.parametrize(("payload", "label", "says"), [
    (b"", None, "not msgpack (a map) and not JSON (an object)"),
    (b"\x05hello", None, "it starts with 0x05"),
    (b"[1, 2]", None, "it starts with 0x5b"),
    (b"\x93\x01\x02\x03", None, "not msgpack"),  # a msgpack array
    (b'{"robot": "g1", "online": tru', None, "malformed JSON"),
    (msgspec.msgpack.encode({"robot": "g1", "online": True}), JSON, "malformed JSON"),
    (b'{"robot": "g1", "online": true}', MSGPACK, "declared application/msgpack"),
    (b'{"robot": 7, "online": true}', None, "Expected `str`, got `int`"),
])
def test_neither_encoding_is_an_honest_error(payload: bytes, label: str | None, says: str) -> None:
    with pytest.raises(DecodeError, match=re.escape(says)) as info:
        decode_as(payload, Alive, "p/robots/g1/alive", label)
    assert "Expected `object`, got `int`" not in str(info.value)  # the old '{' read as fixint 123


def test_times_javascript_can_hold() -> None:
    stamp = now_ns()
    assert stamp % TICK_NS == 0 and int(float(stamp)) == stamp  # exact as an IEEE double
    assert TaskStatus("t", "accepted").ts_ns % TICK_NS == 0
    # a JavaScript client's float time, as msgpack-JS (float64) and JSON write it, is accepted
    js = {"robot": "g1", "online": True, "ts_ns": JS_NOW}
    for payload in (msgspec.msgpack.encode(js), json.dumps(js).encode()):
        assert decode_as(payload, Alive).ts_ns == int(JS_NOW)
    inst = decode_as(json.dumps({"text": "go", "ts_ns": JS_NOW, "priority": 2.0}).encode(),
                     Instruction)
    assert (inst.ts_ns, inst.priority) == (int(JS_NOW), 2)
    with pytest.raises(DecodeError, match="got `float`"):  # not integral: refused
        decode_as(msgspec.msgpack.encode({**js, "ts_ns": 1.5}), Alive)
    # the published schema says "integer", which JSON Schema defines by value (1.0 is one)
    schema = payload_schemas("#/$defs/{name}")["Alive"]["properties"]["ts_ns"]
    assert schema["type"] == "integer"


def _fmt_lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def _kind(topic: str, prefix: str) -> str:
    parts = topic[len(prefix) + 1:].split("/")
    if parts[0] == "robots":
        return parts[2]
    return "inbox" if parts[0] == "_inbox" else "/".join(parts[:2] if parts[0] == "memory" else parts[:1])


@pytest.mark.broker
async def test_a_json_fleet_reads_as_json_with_mosquitto_sub(tmp_path: Path, mosquitto_url: str
                                                             ) -> None:
    url = f"{mosquitto_url}?codec=json"
    parts = urlsplit(mosquitto_url)
    async with fleet(tmp_path, url, scenes.DEMO_SCENE, scenes.DEMO_ROBOTS) as (fl, bus):
        sub = subprocess.Popen(["mosquitto_sub", "-V", "mqttv5", "-h", str(parts.hostname),
                                "-p", str(parts.port), "-t", f"{fl.prefix}/#", "-F", "%J"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            await anyio.sleep(0.5)  # subscribed (the retained values come first)
            # a JavaScript client: ts_ns as Date.now() * 1e6, a float
            js = json.dumps({"text": "bring the apple to the office desk", "task_id": "js1",
                             "ts_ns": JS_NOW})
            await anyio.to_thread.run_sync(lambda: subprocess.run(
                ["mosquitto_pub", "-V", "mqttv5", "-h", str(parts.hostname), "-p", str(parts.port),
                 "-t", fl.topics.instructions, "-m", js, "-q", "1"], check=True, timeout=20))
            st = await fl.until(lambda: fl.status("js1"), timeout=40)
            assert st.status == "done", st.reason
            await anyio.sleep(0.5)
        finally:
            sub.terminate()
            out, err = sub.communicate(timeout=10)
    assert not err.strip(), err  # %J complains about any payload that is not JSON
    lines = _fmt_lines(out)
    kinds = {_kind(m["topic"], fl.prefix) for m in lines}
    assert {"instructions", "tasks", "skills", "feedback", "state", "alive", "registration",
            "brain", "memory/status", "memory/query", "inbox", "world"} <= kinds, kinds
    for m in lines:
        props = m.get("properties", {})
        if m["payloadlen"] == 0:
            continue
        assert isinstance(m["payload"], dict), m
        if m["topic"] != fl.topics.instructions:  # robobus's own publishes: labelled
            assert props.get("content-type") == "application/json", m
            assert props.get("payload-format-indicator") == 1, m
    assert any(m["retain"] and m["topic"].endswith("/alive") for m in lines)  # presence too


@contextlib.asynccontextmanager
async def _mixed_fleet(tmp: Path, url: str) -> Any:
    """Memory and one robot on msgpack; the brain and two robots on JSON."""
    json_url = f"{url}?codec=json"
    with contextlib.ExitStack() as stack:
        fl = Fleet(tmp, url, scenes.DEMO_SCENE, scenes.DEMO_ROBOTS, stack)
        fl.start_memory()
        for spec in scenes.DEMO_ROBOTS:
            fl.url = url if spec["name"] == "g1" else json_url
            fl.start_edge(spec)
        fl.url = json_url
        fl.start_brain()
        async with Bus.connect(url, name="tester", options=BusOptions(prefix=fl.prefix)) as bus, \
                anyio.create_task_group() as tg:
            await tg.start(fl.watch, bus)
            await fl.registered(bus)
            yield fl, bus
            tg.cancel_scope.cancel()


@pytest.mark.broker
async def test_a_mixed_encoding_fleet_works_and_refuses_junk_once(tmp_path: Path,
                                                                  mosquitto_url: str) -> None:
    async with _mixed_fleet(tmp_path, mosquitto_url) as (fl, bus), \
            bus.subscribe(fl.topics.errors, ErrorReport) as errors:
        tid = await fl.send(bus, "Bring the fruit nearest the cup and a fruit knife to the "
                                 "office desk")
        st = await fl.until(lambda: fl.status(tid), timeout=60)
        assert st.status == "done", st.reason
        robots = {r for r, _ in fl.commands}
        assert len(robots) >= 2, robots  # commands crossed encodings
        junk = fl.topics.feedback("g1")
        await bus.publish(junk, b"\x05\x06 junk", qos=1)
        with anyio.fail_after(20):
            while (report := (await errors.get()).data).topic != junk:
                pass
        await anyio.sleep(1.5)  # time for any second report
        again = [m.data for m in iter(errors.get_nowait, None) if m.data.topic == junk]
    # the owner of what robots report (schemas.owners), naming who sent it
    assert (report.source, report.sender) == ("brain", "tester"), report
    assert "not msgpack (a map) and not JSON (an object)" in report.reason
    assert not again, again
