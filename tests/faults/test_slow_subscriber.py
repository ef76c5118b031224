"""A slow subscriber must not stall the bus, nor make a robot miss commands.

The slow subscriber is a real `robobus topic echo '#'` process whose stdout nobody reads: once
the pipe fills it stops reading the bus. A second process floods telemetry. Commands sent at the
same time must all arrive, on ZeroMQ and on MQTT.
"""

from __future__ import annotations

import subprocess

import anyio
import pytest

from robobus import testing
from robobus.bus import Bus, Overflow

pytestmark = [pytest.mark.anyio, pytest.mark.faults]

COMMANDS = 300
FLOOD = 20_000


@pytest.fixture(params=["zmq", "mqtt"])
def url(request: pytest.FixtureRequest) -> str:
    if request.param == "zmq":
        return request.getfixturevalue("hub_url")
    return request.getfixturevalue("mosquitto_url")


async def test_slow_subscriber_does_not_stall_commands(url: str, prefix: str) -> None:
    slow = subprocess.Popen(testing.robobus_cmd("topic", "echo", f"{prefix}/#", "--bus", url),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    flood = None
    try:
        async with Bus.connect(url, name="robot") as robot, \
                robot.subscribe(f"{prefix}/robots/r1/skills/+", overflow=Overflow.BLOCK) as cmds, \
                Bus.connect(url, name="brain") as brain:
            await anyio.sleep(1.0)  # let the echo process subscribe (it prints nothing until then)
            flood = subprocess.Popen(
                testing.robobus_cmd("topic", "pub", f"{prefix}/robots/r1/state", '{"x": 1}',
                                    "--repeat", str(FLOOD), "--rate", "5000", "--bus", url),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            got: set[int] = set()
            with anyio.fail_after(60):
                for i in range(COMMANDS):
                    await brain.publish(f"{prefix}/robots/r1/skills/pick", str(i), qos=1)
                    await anyio.sleep(0.005)
                while len(got) < COMMANDS:
                    got.add(int((await cmds.get()).payload))
            assert got == set(range(COMMANDS))
            assert slow.poll() is None, "the slow subscriber is still alive (and still slow)"
    finally:
        for proc in (slow, flood):
            if proc is not None:
                testing.stop(proc)
