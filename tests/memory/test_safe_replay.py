"""Safe record and replay (issue 12, item 4), with the recorder, the replay and the fleet as
processes on a real hub or Mosquitto:

* the recorder keeps the retain flag and QoS; a subscriber that starts after the replay gets the
  retained value with its flag;
* ``--prefix`` and ``--remap`` rename topics;
* a replay onto a live fleet's prefix does not drive it: commands are withheld by default,
  ``--include-commands`` alone is refused there, and with ``--onto-live-fleet`` the brain and the
  edge ignore the replayed instruction and skill command;
* a store written in the old record format (no header) still reads and replays;
* the content type (MQTT 5) is recorded with the other properties, and a header with keys this
  reader does not know still reads.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import anyio
import msgspec
import pytest

from bench import scenes
from robobus import memory_store, testing
from robobus.bus import Bus, BusOptions
from robobus.memory_store import headers
from robobus.memory_store.replay import ReplayOptions, recorded_prefix, remap, replay
from robobus.memory_store.segment import TID_LEN, Segment, SegmentOptions, pack_key, segment_name
from robobus.schemas.messages import BrainStatus, Instruction, RobotState, SkillCommand, SkillFeedback
from tests.brain.test_processes import fleet

pytestmark = pytest.mark.anyio
T0 = 1_700_000_000 * 10**9


def _cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(testing.robobus_cmd(*args), capture_output=True, text=True, timeout=60,
                          check=check)


async def _acli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``_cli`` off the event loop: the test's own bus client keeps its keepalive meanwhile."""
    return await anyio.to_thread.run_sync(lambda: _cli(*args, check=check))


async def _record(out: Path, url: str, prefix: str, duration: float) -> subprocess.Popen[str]:
    """``robobus record`` of ``prefix/#`` as a process, returned once it is subscribed."""
    argv = testing.robobus_cmd("record", str(out), "--bus", url, "--prefix", prefix,
                               "--topics", f"{prefix}/#", "--duration", str(duration))
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stderr is not None
    with anyio.fail_after(20):
        while "memory_ready" not in await anyio.to_thread.run_sync(proc.stderr.readline):
            pass
    return proc


@pytest.mark.broker
@pytest.mark.parametrize("transport", ["mqtt", "zmq"])
async def test_retained_and_qos1_survive_record_and_replay(
        tmp_path: Path, prefix: str, transport: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("mosquitto_url" if transport == "mqtt" else "hub_url")
    out, moved = tmp_path / "rec", f"{prefix}x"
    opts = BusOptions(prefix=prefix)
    async with Bus.connect(url, name="src", options=opts) as src:
        # retained before the recorder starts: it reaches the recorder as a retained value
        await src.publish(f"{prefix}/custom/config", b"mode=fast", retain=True, qos=1)
        proc = await _record(out, url, prefix, 2.0)
        try:
            await src.publish(f"{prefix}/custom/events", b"e1", qos=1)
            assert await anyio.to_thread.run_sync(proc.wait, 20) == 0
        finally:
            testing.stop(proc)  # type: ignore[arg-type]
        await src.publish(f"{prefix}/custom/config", b"", retain=True, qos=1)  # cleared
    with memory_store.open(out, readonly=True) as store:
        got = {ev.topic.rsplit("/", 1)[-1]: ev for ev in store.scan()}
    assert got["config"].retain and got["config"].payload == b"mode=fast"
    assert not got["events"].retain and got["events"].props is not None
    assert got["events"].props.sender == "src"
    if transport == "mqtt":  # the hub does not tell its subscribers a message's QoS
        assert got["events"].qos == 1 and got["config"].qos == 1
    done = await _acli("replay", str(out), "--bus", url, "--prefix", moved, "--speed", "10")
    assert "replayed 2 events" in done.stdout, done
    async with Bus.connect(url, name="late", options=BusOptions(prefix=moved)) as late, \
            late.subscribe(f"{moved}/custom/#") as sub:
        with anyio.fail_after(10):
            msg = await sub.get()
    assert msg.topic == f"{moved}/custom/config" and msg.payload == b"mode=fast" and msg.retain
    assert msg.replayed


async def test_prefix_and_remap_rename_topics(tmp_path: Path, prefix: str, hub_url: str) -> None:
    path, new, other = tmp_path / "log", f"{prefix}n", f"{prefix}o"
    state = msgspec.msgpack.encode(RobotState(robot="g1", battery=0.5))
    with memory_store.open(path) as store:
        store.append_many([(f"{prefix}/robots/g1/state", state, T0),
                           (f"{prefix}/custom/a", b"a", T0 + 1000),
                           (f"{prefix}/custom/b/c", b"c", T0 + 2000)])
    async with Bus.connect(hub_url, name="watch") as bus, bus.subscribe("#") as sub:
        done = await _acli("replay", str(path), "--bus", hub_url, "--prefix", new,
                    "--remap", f"{prefix}/custom/b:{other}/bee")
        assert "replayed 3 events" in done.stdout, done
        topics: list[str] = []
        with anyio.fail_after(10):
            while len(topics) < 3:
                msg = await sub.get()
                if msg.topic.startswith((prefix, new, other)):
                    topics.append(msg.topic)
    assert sorted(topics) == sorted([f"{new}/robots/g1/state", f"{new}/custom/a",
                                     f"{other}/bee/c"])
    assert remap("a/b", (("a", "x"),)) == "x/b" and remap("ab/c", (("a", "x"),)) == "ab/c"
    assert recorded_prefix(["p/q/robots/g1/state", "p/q/custom"]) == "p/q"
    refused = await _acli("replay", str(path), "--bus", hub_url, "--remap", "nocolon", check=False)
    assert refused.returncode != 0 and "FROM:TO" in refused.stderr


async def _ready(bus: Bus, topic: str) -> None:
    async with bus.subscribe(topic, BrainStatus) as sub:
        with anyio.fail_after(30):
            while (await sub.get()).data.state != "ready":  # ``starting`` comes first
                pass


@pytest.mark.broker
@pytest.mark.faults
async def test_replay_onto_a_live_fleet_does_not_drive_it(tmp_path: Path,
                                                          mosquitto_url: str) -> None:
    robot = scenes.DEMO_ROBOTS[1]["name"]
    async with fleet(tmp_path, mosquitto_url, scenes.DEMO_SCENE, [scenes.DEMO_ROBOTS[1]]) \
            as (fl, bus):
        await _ready(bus, fl.topics.brain_status)
        log = tmp_path / "recorded"
        cmd = SkillCommand(command_id="rp-1", skill="navigate", args={"target": "officeDesk"},
                           task_id="replayed1")
        inst = Instruction("bring the apple to the office desk", task_id="replayed1")
        with memory_store.open(log) as store:
            store.append_many([
                (fl.topics.instructions, msgspec.msgpack.encode(inst), T0),
                (fl.topics.skill(robot, "navigate"), msgspec.msgpack.encode(cmd), T0 + 10**6),
                (f"{fl.prefix}/custom/x", b"x", T0 + 2 * 10**6)])
        async with bus.subscribe(fl.topics.feedback(robot), SkillFeedback) as feedback:
            plain = await _acli("replay", str(log), "--bus", mosquitto_url)
            assert "replayed 1 events; 2 command events withheld" in plain.stdout, plain
            refused = await _acli("replay", str(log), "--bus", mosquitto_url, "--include-commands",
                           check=False)
            assert refused.returncode == 1 and "a fleet is live" in refused.stderr
            assert f"robot {robot!r}" in refused.stderr and "--onto-live-fleet" in refused.stderr
            forced = await _acli("replay", str(log), "--bus", mosquitto_url, "--include-commands",
                          "--onto-live-fleet")
            assert "replayed 3 events" in forced.stdout, forced
            # the replayed command was on the bus, marked; a live instruction still works
            await fl.until(lambda: any(c.command_id == "rp-1" for _, c in fl.commands))
            live = await fl.send(bus, "bring the apple to the office desk")
            with anyio.move_on_after(1.5):
                async for msg in feedback:
                    assert msg.data.command_id != "rp-1", "the edge ran a replayed command"
        assert "replayed1" not in fl.statuses and live in fl.statuses
        print("LIFECYCLE replay-onto-live-fleet mqtt: 2 command events withheld by default, "
              "--include-commands refused, forced replay executed 0 commands and planned 0 "
              "instructions, a live instruction still taken")


def _old_format_store(path: Path, prefix: str) -> None:
    """Write segment records the way the recorder did before headers (topic id + payload)."""
    memory_store.open(path).close()  # the directory layout and an empty views.mdb
    seg = Segment(path / "log" / segment_name(T0), T0, SegmentOptions(map_size=1 << 24), False)
    try:
        tids = [seg.new_topic(f"{prefix}/old/{i}") for i in range(2)]
        keys = [pack_key(T0 + i * 1000, i + 1) for i in range(4)]
        items = [(k, tids[i % 2] + b"v%d" % i) for i, k in enumerate(keys)]
        seg.commit(items, {tids[0]: keys[0::2], tids[1]: keys[1::2]},
                   [f"{prefix}/old/{i}" for i in range(2)])
        assert all(len(v) == TID_LEN + 2 for _, v in items)
    finally:
        seg.close()


async def test_an_old_format_store_still_reads_and_replays(tmp_path: Path, prefix: str) -> None:
    path = tmp_path / "old"
    _old_format_store(path, prefix)
    url = f"memory://{prefix}"
    with memory_store.open(path, readonly=True) as store:
        events = list(store.scan())
        assert [(e.payload, e.retain, e.qos, e.props) for e in events] == [
            (b"v%d" % i, False, 0, None) for i in range(4)]
        async with Bus.connect(url, name="robobus-replay") as pub, \
                Bus.connect(url, name="sub") as watch, watch.subscribe(f"{prefix}/#") as sub:
            start = time.monotonic()
            assert await replay(pub, store, ReplayOptions(speed=100.0)) == 4
            got = [sub.get_nowait() for _ in range(4)]
            assert time.monotonic() - start < 5
    assert [(m.payload, m.retain, m.replayed) for m in got if m] == [
        (b"v%d" % i, False, True) for i in range(4)]


def test_the_header_keeps_the_content_type_and_skips_unknown_keys() -> None:
    props = headers.Properties("reply/x", b"c1", "src", "application/json")
    head = headers.pack(True, 1, props)
    assert headers.unpack(head + b"{}", 0) == (True, 1, props, len(head))
    # a newer writer's key this reader does not know costs nothing
    body = msgspec.msgpack.encode({"s": "src", "ct": "text/plain", "zz": [1, 2]})
    newer = bytes((0x01 | 0x08,)) + len(body).to_bytes(2, "big") + body
    _, _, read, _ = headers.unpack(newer, 0)
    assert read == headers.Properties(sender="src", content_type="text/plain")


@pytest.mark.broker
async def test_a_recording_keeps_the_content_type(tmp_path: Path, prefix: str,
                                                  mosquitto_url: str) -> None:
    """``mosquitto_pub -D publish content-type``: the recorder keeps it with the event, and a
    replay publishes it with it again."""
    out, port = tmp_path / "rec", mosquitto_url.rsplit(":", 1)[1]
    proc = await _record(out, mosquitto_url, prefix, 1.5)
    try:
        await anyio.to_thread.run_sync(lambda: subprocess.run(
            ["mosquitto_pub", "-h", testing.LOOPBACK, "-p", port, "-V", "mqttv5", "-q", "1",
             "-t", f"{prefix}/custom/json", "-m", '{"a": 1}',
             "-D", "publish", "content-type", "text/x-demo"], check=True, timeout=10))
        assert await anyio.to_thread.run_sync(proc.wait, 20) == 0
    finally:
        testing.stop(proc)  # type: ignore[arg-type]
    with memory_store.open(out, readonly=True) as store:
        (ev,) = [e for e in store.scan() if e.topic.endswith("/custom/json")]
    assert ev.props is not None and ev.props.content_type == "text/x-demo" and ev.qos == 1
    moved = f"{prefix}m"
    async with Bus.connect(mosquitto_url, name="watch", options=BusOptions(prefix=moved)) as bus, \
            bus.subscribe(f"{moved}/custom/#") as sub:
        done = await _acli("replay", str(out), "--bus", mosquitto_url, "--prefix", moved)
        assert "replayed 1 events" in done.stdout, done
        with anyio.fail_after(10):
            msg = await sub.get()
    assert (msg.payload, msg.content_type, msg.replayed) == (b'{"a": 1}', "text/x-demo", True)


def test_the_header_keeps_user_properties_and_old_headers_read() -> None:
    props = headers.Properties(sender="s", user=(("k", "v"),), payload_format=1)
    head = headers.pack(False, 2, props)
    retain, qos, read, _ = headers.unpack(head + b"payload", 0)
    assert (retain, qos, read) == (False, 2, props)
    old = headers.pack(True, 1, headers.Properties(sender="s"))  # written before "u" and "pf"
    assert headers.unpack(old, 0)[2] == headers.Properties(sender="s")
