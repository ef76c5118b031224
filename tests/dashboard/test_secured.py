"""On a secured bus (a ZeroMQ hub with CURVE keys and the policy of ``secure init``) the
dashboard instructs only if its account may: an operator's dashboard does, and the hub passes
it on; a viewer's (an account whose grants in policy.json were edited down to reading) refuses,
says why, and nothing of it reaches the bus."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import anyio
import msgspec
import pytest
from websockets.asyncio.client import connect

from robobus import testing
from robobus.bus import Bus
from robobus.bus.policy import Policy, dump
from robobus.schemas.messages import Instruction
from robobus.schemas.topics import Topics
from robobus.secure import SecureConfig, secure_init
from tests.dashboard.conftest import dashboard
from tests.dashboard.test_gateway import _answer

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def secure_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("dash-secure")
    secure_init(SecureConfig(directory, robots=["r1"], operators=["operator", "viewer"],
                             port=testing.free_port()))
    policy = msgspec.json.decode((directory / "policy.json").read_bytes(), type=Policy)
    policy.accounts["viewer"].publish = []  # may look, may not instruct
    (directory / "policy.json").write_bytes(dump(policy))
    return directory


@pytest.fixture(scope="module")
def secure_hub(secure_dir: Path) -> Iterator[str]:
    with testing.hub(extra=["--curve-keys", str(secure_dir / "zmq")]) as url:
        yield url



async def test_the_policy_decides_who_may_instruct(tmp_path: Path, secure_dir: Path,
                                                   secure_hub: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    topics = Topics()
    monkeypatch.setenv("ROBOBUS_ZMQ_KEYS", str(secure_dir / "zmq"))
    monkeypatch.setenv("ROBOBUS_ZMQ_CLIENT", "brain")  # the brain's account reads instructions
    async with Bus.connect(secure_hub, name="watcher") as bus, \
            bus.subscribe(topics.instructions_from("+"), Instruction) as sent:  # accounts' own
        for account, allowed in (("viewer", False), ("operator", True)):
            with dashboard(tmp_path, secure_hub, "robobus", env=testing.account_env(secure_dir, account),
                           name=f"dashboard-{account}") as url:
                ws = await connect(url.replace("http://", "ws://") + "ws", max_size=None)
                hello = json.loads(await ws.recv())
                assert (hello["account"], hello["may_instruct"]) == (account, allowed), hello
                got = await _answer(ws, json.dumps({"kind": "instruct", "priority": 2,
                                                    "text": f"bring the apple ({account})"}))
                assert got["kind"] == ("accepted" if allowed else "error"), got
                if not allowed:
                    assert got["code"] == "forbidden" and "may not publish" in got["reason"]
                await ws.close()
        with anyio.fail_after(10):
            msg = await sent.get()
        assert (msg.data.text, msg.data.source, msg.data.priority) == \
            ("bring the apple (operator)", "dashboard:operator", 2)
        with anyio.move_on_after(0.5):
            extra = await sent.get()
            pytest.fail(f"more than the operator's instruction reached the bus: {extra.data}")
