"""Interoperability with the real ``mosquitto_pub`` / ``mosquitto_sub``, bad input, reconnects."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import msgspec
import pytest
from anyio.abc import Process

from robobus import testing
from robobus.bus import Bus, BusOptions, ConnectError, DisconnectedError, Overflow
from robobus.bus.backends.mqtt_options import MqttOptionError, credentials_from_env, parse
from robobus.schemas.messages import ErrorReport, Instruction, RobotState

pytestmark = [pytest.mark.anyio, pytest.mark.broker,
              pytest.mark.skipif(shutil.which("mosquitto_pub") is None,
                                 reason="mosquitto-clients not installed")]
WAIT = 5.0


def port_of(url: str) -> str:
    return str(urlsplit(url).port)


async def mosquitto_pub(url: str, topic: str, payload: bytes, tmp_path: Path) -> None:
    data = tmp_path / "payload.bin"
    data.write_bytes(payload)
    await anyio.run_process(["mosquitto_pub", "-h", "127.0.0.1", "-p", port_of(url),
                             "-q", "1", "-t", topic, "-f", str(data)])


async def read_line(proc: Process, buf: bytearray) -> str:
    assert proc.stdout is not None
    while b"\n" not in buf:
        buf += await proc.stdout.receive()
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return line.decode()


@pytest.mark.parametrize(
    "payload",
    [
        b"bring the apple to the desk",
        b'{"text": "bring the apple to the desk", "priority": 2, "task_id": "t42"}',
        msgspec.msgpack.encode({"text": "bring the apple to the desk", "priority": 2,
                                "task_id": "t42"}),
    ],
    ids=["text", "json", "msgpack"],
)
async def test_mosquitto_pub_instruction_is_typed(
    mosquitto_url: str, prefix: str, payload: bytes, tmp_path: Path
) -> None:
    topic = f"{prefix}/instructions"
    async with Bus.connect(mosquitto_url, name="brain") as bus, \
            bus.subscribe(topic, Instruction) as sub:
        await mosquitto_pub(mosquitto_url, topic, payload, tmp_path)
        with anyio.fail_after(WAIT):
            msg = await sub.get()
    assert isinstance(msg.data, Instruction)
    assert msg.data.text == "bring the apple to the desk"
    if payload[:1] != b"b":
        assert (msg.data.priority, msg.data.task_id) == (2, "t42")


async def test_robobus_publish_seen_by_mosquitto_sub(mosquitto_url: str, prefix: str) -> None:
    topic = f"{prefix}/robots/g1/state"
    # mosquitto_sub block-buffers a piped stdout: line-buffer it to see SUBACK as it happens.
    argv = ["stdbuf", "-oL", "mosquitto_sub", "-h", "127.0.0.1", "-p", port_of(mosquitto_url), "-t", topic,
            "-d", "-C", "1", "-W", "10"]
    async with await anyio.open_process(argv) as proc, \
            Bus.connect(mosquitto_url, name="edge") as bus:
        buf = bytearray()
        with anyio.fail_after(WAIT):
            while "received SUBACK" not in await read_line(proc, buf):
                pass
            await bus.publish(topic, "hello from robobus", qos=1)
            while not (line := await read_line(proc, buf)).startswith("hello"):
                pass
    assert line == "hello from robobus"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xc1\x00 not msgpack", "malformed"),
        (msgspec.msgpack.encode({"robot": 7, "battery": "full"}), "schema"),
        (b"\x80" * 5000, "exceeds"),
    ],
    ids=["malformed", "wrong_schema", "oversized"],
)
async def test_bad_input_reported_and_subscriber_goes_on(
    mosquitto_url: str, prefix: str, payload: bytes, reason: str, tmp_path: Path
) -> None:
    topic = f"{prefix}/robots/g1/state"
    opts = BusOptions(prefix=prefix, max_payload=1000)
    async with (
        Bus.connect(mosquitto_url, name="monitor") as monitor,
        monitor.subscribe(f"{prefix}/errors", ErrorReport) as errors,
        Bus.connect(mosquitto_url, name="memory", options=opts) as bus,
        bus.subscribe(f"{prefix}/robots/+/state", RobotState) as states,
    ):
        await mosquitto_pub(mosquitto_url, topic, payload, tmp_path)
        await mosquitto_pub(mosquitto_url, topic, msgspec.msgpack.encode(
            RobotState(robot="g1", battery=0.25)), tmp_path)
        with anyio.fail_after(WAIT):
            msg = await states.get()
            report = (await errors.get()).data
    assert msg.data.robot == "g1" and msg.data.battery == 0.25
    assert report.topic == topic and report.source == "memory"
    assert reason in report.reason


async def test_broker_restart_reconnects_and_resubscribes(tmp_path: Path, prefix: str) -> None:
    port = testing.free_port()
    argv = [testing.mosquitto_binary(), "-c", str(testing.write_mosquitto_conf(tmp_path, port))]
    url, topic = f"mqtt://127.0.0.1:{port}", f"{prefix}/cmd"
    with testing.spawn(argv, name="mosquitto") as first:
        await anyio.to_thread.run_sync(testing.wait_port, port)
        async with Bus.connect(url, name="edge") as bus, bus.subscribe(topic) as sub:
            await bus.publish(topic, b"before", qos=1)
            with anyio.fail_after(WAIT):
                assert (await sub.get()).payload == b"before"
            await anyio.to_thread.run_sync(testing.stop, first)
            with testing.spawn(argv, name="mosquitto-again"):
                await anyio.to_thread.run_sync(testing.wait_port, port)
                with anyio.fail_after(15):
                    await bus.publish(topic, b"after", qos=1)  # waits for the reconnect
                    assert (await sub.get()).payload == b"after"


async def test_without_reconnect_a_lost_broker_ends_subscriptions(tmp_path: Path,
                                                                   prefix: str) -> None:
    port = testing.free_port()
    argv = [testing.mosquitto_binary(), "-c", str(testing.write_mosquitto_conf(tmp_path, port))]
    url = f"mqtt://127.0.0.1:{port}?reconnect=0&publish_wait=0.2"
    with testing.spawn(argv, name="mosquitto") as broker:
        await anyio.to_thread.run_sync(testing.wait_port, port)
        async with Bus.connect(url, name="edge") as bus, bus.subscribe(f"{prefix}/x") as sub:
            await anyio.to_thread.run_sync(testing.stop, broker)
            with anyio.fail_after(WAIT), pytest.raises(DisconnectedError):
                await sub.get()  # the iterator raises; it does not quietly stop
            with pytest.raises(DisconnectedError):
                await bus.publish(f"{prefix}/x", b"nobody listens")


async def test_paused_reader_loses_nothing(mosquitto_url: str, prefix: str) -> None:
    """A tiny inbound buffer forces socket-level backpressure (reader paused and resumed)."""
    n = 3000
    slow_url = f"{mosquitto_url}?max_pending=20"
    async with (
        Bus.connect(mosquitto_url, name="flood") as flood,
        Bus.connect(slow_url, name="slow") as slow,
        slow.subscribe(f"{prefix}/burst", maxsize=5, overflow=Overflow.BLOCK) as sub,
    ):
        for i in range(n):
            await flood.publish(f"{prefix}/burst", i.to_bytes(4, "big"))
        with anyio.fail_after(30):
            got = [int.from_bytes((await sub.get()).payload, "big") for _ in range(n)]
    assert got == list(range(n))


async def test_unreachable_broker_fails_fast() -> None:
    url = f"mqtt://127.0.0.1:{testing.free_port()}"
    start = time.monotonic()
    with pytest.raises(ConnectError) as err:
        async with Bus.connect(url, name="lonely"):
            pass
    assert time.monotonic() - start < 4.0
    assert url.removeprefix("mqtt://") in str(err.value)


async def test_publish_after_close_raises(mosquitto_url: str, prefix: str) -> None:
    async with Bus.connect(mosquitto_url, name="x") as bus:
        await bus.abort()
        with pytest.raises(DisconnectedError):
            await bus.publish(f"{prefix}/t", b"late")


async def test_persistent_session_keeps_messages_while_away(
    mosquitto_url: str, prefix: str
) -> None:
    url = f"{mosquitto_url}?session=persistent&client_id={prefix}-memory&expiry=60"
    topic = f"{prefix}/world/change"
    async with Bus.connect(url, name="memory") as bus, bus.subscribe(topic):
        await bus.abort()  # crash: the broker keeps the session and its subscription
    async with Bus.connect(mosquitto_url, name="edge") as edge:
        for i in range(5):
            await edge.publish(topic, str(i), qos=1)
    async with Bus.connect(url, name="memory") as bus, bus.subscribe(topic) as sub:
        with anyio.fail_after(WAIT):
            got = [(await sub.get()).payload for _ in range(5)]
    assert got == [b"0", b"1", b"2", b"3", b"4"]


def test_credentials_never_in_url(tmp_path: Path) -> None:
    with pytest.raises(MqttOptionError, match="ROBOBUS_MQTT_USERNAME"):
        parse("mqtt://user:secret@127.0.0.1:1883", "c", 1.0)
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    creds = credentials_from_env({"ROBOBUS_MQTT_USERNAME": "robot",
                                  "ROBOBUS_MQTT_PASSWORD_FILE": str(secret)})
    assert creds is not None and creds.password == "s3cret"
    assert "s3cret" not in repr(creds)
    opts = parse("mqtts://broker?session=persistent&keepalive=5&ca=/x.pem", "memory-ab12", 1.0)
    assert (opts.port, opts.tls, opts.client_id, opts.keepalive_s, opts.ca) == \
        (8883, True, "memory", 5, "/x.pem")
    with pytest.raises(MqttOptionError, match="unknown"):
        parse("mqtt://h?sesion=persistent", "c", 1.0)
