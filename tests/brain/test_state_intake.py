"""Robot states at a group's brain (issue 16, items 2 and 7): another group's robot's state is
dropped by its topic before it is decoded; its own robots' states are decoded and checked as
before. In-process on a ``memory://`` bus (the brain's
subscriptions only: no planning), so it costs well under a second."""

from __future__ import annotations

import secrets
from contextlib import AsyncExitStack

import anyio
import pytest

from robobus.brain_agent.agent import Brain
from robobus.brain_agent.config import BrainConfig
from robobus.brain_agent.groups import RobotGroup
from robobus.brain_agent.states import RobotTopics
from robobus.bus import Bus, BusOptions
from robobus.schemas.messages import ErrorReport, RobotState
from robobus.schemas.topics import Topics

pytestmark = pytest.mark.anyio


def test_robot_topics_decide_once_per_topic() -> None:
    topics = Topics("p")
    led = RobotTopics(topics, RobotGroup.parse("g", "a*"))
    assert led("p/robots/a1/state") == ("a1", True)
    assert led("p/robots/b1/state") == ("b1", False)
    assert led("p/world/events") == (None, True)  # not a robot topic: not the group's to drop
    assert RobotTopics(topics, None)("p/robots/b1/state") == ("b1", True)


async def test_group_brain_drops_other_groups_states_before_decoding() -> None:
    url, prefix = f"memory://states-{secrets.token_hex(3)}", f"s{secrets.token_hex(3)}"
    topics, opts = Topics(prefix), BusOptions(prefix=prefix)
    errors: list[ErrorReport] = []
    async with Bus.connect(url, name="client", options=opts) as client, \
            client.subscribe(topics.errors, ErrorReport) as reports, \
            Bus.connect(url, name="brain-g", options=opts) as bus, \
            anyio.create_task_group() as tg, AsyncExitStack() as stack:
        brain = Brain(bus, BrainConfig(name="brain-g", group=RobotGroup.parse("g", "a*")), tg)
        await brain.subscribe_all(stack)
        # the latest state per topic is kept (conflated): one input per robot topic at a time
        await client.publish(topics.state("b1"), b"\xc1 not msgpack")  # another group's: dropped
        await client.publish(topics.state("b2"), RobotState("b2", place="dock"))
        # its own: skipped (memory reports a bad state: it owns the topic), the next is served
        await client.publish(topics.state("a1"), b"\xc1 not msgpack")
        await client.publish(topics.state("a3"), RobotState("a2"))  # names another robot
        with anyio.fail_after(5):
            async for msg in reports:
                errors.append(msg.data)
                if len(errors) == 1:
                    break
            await client.publish(topics.state("a1"), RobotState("a1", place="dock"))
            while "a1" not in brain.fleet.states:
                await anyio.sleep(0.01)
        await anyio.sleep(0.1)
        late = len(reports)  # nothing more came
        tg.cancel_scope.cancel()
    assert late == 0
    assert [(e.code, e.topic) for e in errors] == [("robot_mismatch", topics.state("a3"))]
    assert "payload names robot 'a2'" in errors[0].reason
    assert brain.fleet.states["a1"].place == "dock"
    assert set(brain.fleet.states) == {"a1"}
