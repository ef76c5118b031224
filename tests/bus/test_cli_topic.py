"""``robobus topic pub|echo|hz|list`` as real subprocesses against a broker and a hub."""

from __future__ import annotations

import json
import time

import anyio
import msgspec
import pytest
from anyio.abc import Process

from robobus import testing
from robobus.bus import Message
from robobus.cli.topic import Format, decode_payload, encode_data, render

TIMEOUT = 20.0


@pytest.fixture(params=["mqtt", "zmq"])
def proc_bus_url(request: pytest.FixtureRequest) -> str:
    """A bus that separate processes can share."""
    if request.param == "zmq":
        return request.getfixturevalue("hub_url")
    request.applymarker(pytest.mark.broker)
    return request.getfixturevalue("mosquitto_url")


async def robobus(*args: str) -> str:
    """Run ``robobus ARGS`` to completion; its stdout."""
    with anyio.fail_after(TIMEOUT):
        done = await anyio.run_process(testing.robobus_cmd(*args), check=False)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


async def wait_subscribed(proc: Process) -> None:
    """Read the watcher's stderr until it logs that its subscription is live."""
    assert proc.stderr is not None
    seen = b""
    with anyio.fail_after(TIMEOUT):
        while b"subscribed" not in seen:
            seen += await proc.stderr.receive()


async def finish(proc: Process) -> str:
    assert proc.stdout is not None
    out = b""
    with anyio.fail_after(TIMEOUT):
        async for chunk in proc.stdout:
            out += chunk
        assert await proc.wait() == 0
    return out.decode()


@pytest.mark.anyio
async def test_pub_then_echo_live(proc_bus_url: str, prefix: str) -> None:
    cmd = testing.robobus_cmd("topic", "echo", f"{prefix}/+", "--bus", proc_bus_url,
                              "-n", "3", "-v")
    async with await anyio.open_process(cmd) as echo:
        await wait_subscribed(echo)
        await robobus("topic", "pub", f"{prefix}/json", '{"a": [1, 2]}', "--bus", proc_bus_url)
        await robobus("topic", "pub", f"{prefix}/raw", '{"a": 1}', "--raw", "--qos", "1",
                      "--bus", proc_bus_url)
        await robobus("topic", "pub", f"{prefix}/text", "bring the apple", "--bus", proc_bus_url)
        out = await finish(echo)
    assert out.splitlines() == [f'{prefix}/json {{"a":[1,2]}}', f'{prefix}/raw {{"a": 1}}',
                                f"{prefix}/text bring the apple"]


@pytest.mark.anyio
async def test_retained_echo_yaml_and_list(proc_bus_url: str, prefix: str) -> None:
    topic = f"{prefix}/robots/g1/state"
    await robobus("topic", "pub", topic, '{"robot": "g1", "battery": 0.5}', "--retain",
                  "--qos", "1", "--bus", proc_bus_url)
    out = await robobus("topic", "echo", topic, "-n", "1", "-f", "yaml", "--bus", proc_bus_url)
    assert out.splitlines() == ["robot: g1", "battery: 0.5", "---"]
    listing = await robobus("topic", "list", f"{prefix}/#", "-d", "0.5", "--bus", proc_bus_url)
    assert f"{topic}  count=1" in listing and "retained" in listing
    await robobus("topic", "pub", topic, "", "--retain", "--qos", "1", "--bus", proc_bus_url)
    listing = await robobus("topic", "list", f"{prefix}/#", "-d", "0.3", "--bus", proc_bus_url)
    assert topic not in listing


@pytest.mark.anyio
async def test_hz_reports_rate_and_latency(proc_bus_url: str, prefix: str) -> None:
    topic = f"{prefix}/tele"
    cmd = testing.robobus_cmd("topic", "hz", topic, "--bus", proc_bus_url, "-n", "20",
                              "--window", "10")
    async with await anyio.open_process(cmd) as hz:
        await wait_subscribed(hz)
        data = json.dumps({"seq": 1, "ts_ns": time.time_ns()})
        await robobus("topic", "pub", topic, data, "--repeat", "20", "--rate", "200",
                      "--bus", proc_bus_url)
        out = await finish(hz)
    last = out.strip().splitlines()[-1]
    assert "average rate:" in last and "window: 10 total: 20" in last
    assert "latency p50:" in last


def test_payload_rendering() -> None:
    packed = msgspec.msgpack.encode({"text": "hi", "blob": b"\x01\x02"})
    assert decode_payload(packed) == ("msgpack", {"text": "hi", "blob": "0102"})
    assert decode_payload(b"5") == ("text", "5")  # one ASCII char is also a msgpack int
    assert decode_payload(b"\xff\xfe") == ("hex", "fffe")
    msg = Message("t/x", packed)
    assert render(msg, Format.json, verbose=True) == 't/x {"text":"hi","blob":"0102"}'
    assert render(msg, Format.yaml, verbose=False) == "text: hi\nblob: '0102'\n---"
    assert encode_data('{"a": 1}', raw=False) == msgspec.msgpack.encode({"a": 1})
    assert encode_data('{"a": 1}', raw=True) == b'{"a": 1}'
    assert encode_data("not json", raw=False) == b"not json"
