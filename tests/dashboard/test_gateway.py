"""The dashboard's WebSocket gateway, spoken to by a plain WebSocket client (``websockets``).

Bad input gets an ``error`` frame saying why and the session goes on; nothing is lost: the
valid instruction sent after all of it reaches the bus. A dashboard without the right to
instruct refuses and publishes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from robobus.bus import Bus, BusOptions
from robobus.bus.policy import dump
from robobus.dashboard.access import instruct_permission
from robobus.dashboard.app import WS_MAX_SIZE
from robobus.dashboard.gateway import FRAME_LIMIT
from robobus.schemas.messages import Instruction
from robobus.schemas.topics import Topics
from robobus.secure import SecureConfig, default_policy
from tests.dashboard.conftest import dashboard

pytestmark = pytest.mark.anyio
ANSWERS = {"error", "accepted", "pong"}


async def _session(url: str) -> ClientConnection:
    ws = await connect(url.replace("http://", "ws://") + "ws", max_size=None)
    with anyio.fail_after(10):
        while json.loads(await ws.recv())["kind"] != "live":
            pass
    return ws


async def _answer(ws: ClientConnection, frame: str | bytes) -> dict[str, Any]:
    await ws.send(frame)
    with anyio.fail_after(10):
        while (got := json.loads(await ws.recv()))["kind"] not in ANSWERS:
            pass  # bus traffic relayed meanwhile
    return got


async def test_bad_frames_get_error_frames_and_lose_nothing(tmp_path: Path, hub_url: str,
                                                           prefix: str) -> None:
    topics = Topics(prefix)
    async with Bus.connect(hub_url, name="tester", options=BusOptions(prefix=prefix)) as bus, \
            bus.subscribe(topics.instructions, Instruction) as sent:
        with dashboard(tmp_path, hub_url, prefix) as url:
            ws = await _session(url)
            bad: list[tuple[str | bytes, str]] = [
                ("not json {", "malformed"), ("[1, 2]", "malformed"), ('{"kind": 7}', "malformed"),
                ('{"kind": "fly", "ref": "r1"}', "unknown_kind"), (b"\x00\x01", "binary"),
                ("x" * (FRAME_LIMIT + 1), "too_large"),
                ('{"kind": "instruct", "text": "bring the apple", "priority": "high"}', "invalid"),
                ('{"kind": "instruct", "text": "bring the apple", "priority": 1e12}', "invalid"),
                ('{"kind": "instruct", "text": "   "}', "invalid"),
                ('{"kind": "instruct", "text": "go", "extra": 1}', "invalid"),
            ]
            for frame, code in bad:
                got = await _answer(ws, frame)
                assert (got["kind"], got["code"]) == ("error", code), (frame[:40], got)
                assert got["reason"]
            assert (await _answer(ws, '{"kind": "fly", "ref": "r1"}'))["ref"] == "r1"
            ok = await _answer(ws, json.dumps({"kind": "instruct", "text": "bring the apple",
                                               "priority": 5, "ref": "a"}))
            assert ok["kind"] == "accepted" and ok["ref"] == "a", ok
            with anyio.fail_after(10):
                msg = await sent.get()
            assert (msg.data.text, msg.data.priority, msg.data.task_id) == \
                ("bring the apple", 5, ok["task_id"])
            assert msg.data.source == "dashboard:anonymous"
            # over the protocol's own limit: the connection is closed (1009), the server stays
            await ws.send("y" * (WS_MAX_SIZE + 1))
            with pytest.raises(ConnectionClosed) as closed:
                with anyio.fail_after(10):
                    while True:
                        await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
            again = await _session(url)
            assert (await _answer(again, '{"kind": "ping"}'))["kind"] == "pong"
            await again.close()


async def test_read_only_dashboard_refuses_to_instruct(tmp_path: Path, hub_url: str,
                                                       prefix: str) -> None:
    topics = Topics(prefix)
    async with Bus.connect(hub_url, name="tester", options=BusOptions(prefix=prefix)) as bus, \
            bus.subscribe(topics.instructions) as sent:
        with dashboard(tmp_path, hub_url, prefix, "--read-only") as url:
            ws = await connect(url.replace("http://", "ws://") + "ws")
            hello = json.loads(await ws.recv())
            assert hello["kind"] == "hello" and hello["may_instruct"] is False
            got = await _answer(ws, '{"kind": "instruct", "text": "bring the apple"}')
            assert (got["kind"], got["code"]) == ("error", "forbidden")
            assert "--read-only" in got["reason"]
            assert (await _answer(ws, '{"kind": "ping"}'))["kind"] == "pong"
            await ws.close()
        with anyio.move_on_after(0.5):
            await sent.get()
            pytest.fail("a read-only dashboard published an instruction")


def test_the_policy_decides_on_a_secured_bus(tmp_path: Path) -> None:
    """``secure init``'s policy: an operator may instruct, a robot account may not; without
    a policy to ask, a secured dashboard stays read-only; an unsecured one may."""
    policy = tmp_path / "policy.json"
    policy.write_bytes(dump(default_policy(SecureConfig(tmp_path, robots=["r1"]))))
    # on a secured bus an account instructs on its own topic (issue 13), as the app asks
    topic, own = Topics().instructions, Topics().instructions_from
    mqtt = "mqtts://127.0.0.1:8883"
    as_operator = instruct_permission(mqtt, own("operator"), policy=str(policy),
                                      env={"ROBOBUS_MQTT_USERNAME": "operator"})
    assert as_operator.may_instruct and as_operator.account == "operator"
    shared = instruct_permission(mqtt, topic, policy=str(policy),
                                 env={"ROBOBUS_MQTT_USERNAME": "operator"})
    assert not shared.may_instruct  # the shared topic is the brain's and memory's only
    as_robot = instruct_permission(mqtt, own("r1"), policy=str(policy),
                                   env={"ROBOBUS_MQTT_USERNAME": "r1"})
    assert not as_robot.may_instruct and "may not publish" in as_robot.reason
    keys = tmp_path / "zmq"
    keys.mkdir()  # policy.json sits beside the key directory, as secure init writes it
    zmq = instruct_permission("zmq://127.0.0.1:7650", own("operator"),
                              env={"ROBOBUS_ZMQ_KEYS": str(keys), "ROBOBUS_ZMQ_CLIENT": "operator"})
    assert zmq.may_instruct and zmq.account == "operator"
    blind = instruct_permission(mqtt, topic, env={"ROBOBUS_MQTT_USERNAME": "operator"})
    assert not blind.may_instruct and "no policy.json" in blind.reason
    assert instruct_permission("mqtt://127.0.0.1:1883", topic, env={}).may_instruct
    assert not instruct_permission("mqtt://127.0.0.1:1883", topic, read_only=True,
                                   env={}).may_instruct
