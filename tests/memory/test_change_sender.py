"""``P/memory/change`` from a robot's edge changes only that robot and what it holds (issue
13): the memory agent checks the change's ``robot`` against the sender the bus carries."""

from __future__ import annotations

import secrets
from pathlib import Path

import anyio
import msgspec
import pytest

from robobus.bus import Bus, BusOptions
from robobus.schemas.messages import Alive, ErrorReport, RobotRegistration
from robobus.schemas.world import WorldChange, WorldReply
from tests.memory.conftest import running_agent

pytestmark = pytest.mark.anyio
PROFILE = {"type": "unitree_g1", "mobile": True, "hands": 1, "speed": 1.0, "start": "kitchenTable"}


async def test_robot_changes_only_itself_and_what_it_holds(tmp_path: Path, scene_file: Path
                                                            ) -> None:
    url, prefix = f"memory://{secrets.token_hex(4)}", f"t{secrets.token_hex(3)}"
    async with running_agent(tmp_path / "store", prefix, scene_file, url) as run:
        t = run.topics
        async with run.client.subscribe(t.world_events) as events:
            for robot in ("g1", "g2"):
                reg = RobotRegistration(robot=robot, type="unitree_g1", profile=PROFILE)
                await run.client.publish(t.registration(robot), reg, retain=True, qos=1)
                await run.client.publish(t.alive(robot), Alive(robot, True), retain=True, qos=1)
            for _ in range(2):
                with anyio.fail_after(5):
                    await events.get()
        opts = BusOptions(prefix=prefix)
        async with Bus.connect(url, name="g1", options=opts) as g1, \
                run.client.subscribe(t.errors, ErrorReport) as errors:

            async def change(**fields: object) -> WorldReply:
                msg = await g1.request(t.world_change, WorldChange(**fields), timeout=5)  # type: ignore[arg-type]
                return msgspec.msgpack.decode(msg.payload, type=WorldReply)

            moved = await change(op="move", robot="g2", target="shelf")
            assert not moved.ok and moved.code == "not_yours", moved
            with anyio.fail_after(5):
                report = (await errors.get()).data
            assert report.code == "not_yours" and "'g2'" in report.reason
            gone = await change(op="remove_object", object="apple")
            assert not gone.ok and gone.code == "not_yours", gone
            assert (await change(op="pick", robot="g2", object="apple")).code == "not_yours"
            # its own moves and what it holds are its own
            assert (await change(op="move", robot="g1", target="shelf")).ok
            assert (await change(op="pick", robot="g1", object="banana")).ok
            assert (await change(op="remove_object", object="banana")).ok
            # a sender that is no robot (a tool, the brain) is not limited by this check
            msg = await run.client.request(t.world_change, WorldChange("move", robot="g2",
                                                                       target="shelf"), timeout=5)
            assert msgspec.msgpack.decode(msg.payload, type=WorldReply).ok
