"""An unsecured bus (issue 13): clearing a robot's retained registration (an empty value) takes
it out of the brain's fleet, and a registration with absurd values is refused, never planned
with. In-process agents on one bus (tests/brain/conftest.py's Rig)."""

from __future__ import annotations

from typing import Any

import anyio
import msgspec
import pytest

from bench import scenes
from robobus.schemas.messages import ErrorReport

pytestmark = pytest.mark.anyio
ROBOTS = [r for r in scenes.DEMO_ROBOTS if r["mobile"]]  # either can fetch the apple alone


async def test_a_cleared_registration_leaves_the_fleet(rig_factory: Any) -> None:
    async with rig_factory(robots=ROBOTS) as rig, \
            rig.bus.subscribe(rig.topics.errors, ErrorReport) as errors:
        first = await rig.send("bring the apple to the office desk")
        assert (await rig.status(first)).status == "done"
        gone = rig.command_robot[rig.commands[0].command_id]
        # absurd values are refused by the schema (speed is at most 100 m/s), never planned with
        fast = {"robot": "fast", "type": "test_bot",
                "profile": {"speed": 1000, "mobile": True, "hands": 2, "start": "kitchenTable"}}
        await rig.bus.publish(rig.topics.registration("fast"), msgspec.msgpack.encode(fast),
                              retain=True, qos=1)
        await rig.bus.publish(rig.topics.registration(gone), b"", retain=True, qos=1)
        sent = len(rig.commands)
        second = await rig.send("bring the apple to the kitchen table")
        assert (await rig.status(second)).status == "done"
        later = {rig.command_robot[c.command_id] for c in rig.commands[sent:]}
        assert later and gone not in later and "fast" not in later, later
        with anyio.fail_after(5):
            while (report := (await errors.get()).data).topic != rig.topics.registration("fast"):
                pass
        assert report.code == "decode" and "speed" in report.reason, report
