"""``robobus edge --fleet N``: many robots in one process, each a robot of its own on the bus.

Fifty simulated robots in one process beside the memory agent and the brain (all processes, on
the ZeroMQ hub): every robot registers and is alive with a presence of its own (its own
``Alive`` and last will), none is declared dead while the fleet starts, every one publishes state,
and they take tasks from the brain; a world change made by someone else (here the test, as a
tool would) reaches the robots it names through the fleet's one world-event subscription, a
handover's receiver included; ``kill -9`` of the process makes the hub publish fifty last
wills, one per robot.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import anyio
import msgspec
import pytest

from bench import scenes
from robobus.bus import Bus, BusOptions
from robobus.schemas.messages import Alive, RobotState
from robobus.schemas.world import WorldChange, WorldReply
from tests.brain.test_processes import Fleet

pytestmark = pytest.mark.anyio
N = 50
NAMES = [f"fb_{i:04d}" for i in range(N)]


async def _presences(bus: Bus, fl: Fleet, online: bool, seen: dict[str, Alive]) -> None:
    """Collect alives until every fleet robot's says ``online``."""
    async with bus.subscribe(fl.topics.alive("+"), Alive) as sub:
        async for msg in sub:
            if msg.data.robot in NAMES and msg.data.online == online:
                seen[msg.data.robot] = msg.data
                if len(seen) == N:
                    return


async def _deaths(bus: Bus, fl: Fleet, out: list[Alive]) -> None:
    async with bus.subscribe(fl.topics.alive("+"), Alive) as sub:
        async for msg in sub:
            if not msg.data.online:
                out.append(msg.data)


async def _state_of(bus: Bus, fl: Fleet, robot: str, holding: list[str]) -> RobotState:
    """The first state of ``robot`` that holds exactly ``holding``."""
    async with bus.subscribe(fl.topics.state(robot), RobotState) as sub:
        async for msg in sub:
            if msg.data.holding == holding:
                return msg.data
    raise AssertionError("state subscription ended")


async def test_fifty_robots_in_one_process_register_live_and_take_tasks(
        tmp_path: Path, hub_url: str) -> None:
    with contextlib.ExitStack() as stack:
        fl = Fleet(tmp_path, hub_url, scenes.DEMO_SCENE, [{"name": n} for n in NAMES], stack)
        fl.start_memory()
        fl.spawn("fleet", "edge", "--fleet", str(N), "--profile", "realman_single_arm",
                 "--name", "fb", "--at", "customTable,kitchenTable", "--time-scale", "0.05")
        fl.start_brain()
        async with Bus.connect(hub_url, name="tester", options=BusOptions(prefix=fl.prefix)) as bus, \
                anyio.create_task_group() as tg:
            await tg.start(fl.watch, bus)
            deaths: list[Alive] = []
            tg.start_soon(_deaths, bus, fl, deaths)
            await fl.registered(bus)  # every registration, within 30 s
            alive: dict[str, Alive] = {}
            with anyio.fail_after(20):
                await _presences(bus, fl, True, alive)
            assert all(a.online and a.bd_seq > 0 for a in alive.values())
            async with bus.subscribe(fl.topics.state("+"), RobotState) as states:
                with anyio.fail_after(10):
                    stating = set()
                    async for msg in states:
                        stating.add(msg.data.robot)
                        if stating >= set(NAMES):
                            break

            orders = {"fb_0003": "officeDesk", "fb_0030": "kitchenTable"}
            tids = [await fl.send(bus, "fb_0003, go to the office desk"),
                    await fl.send(bus, "fb_0030, go to the kitchen table")]
            tids.append(await fl.send(bus, "bring the knife to the office desk"))
            for tid in tids:
                st = await fl.until(lambda t=tid: fl.status(t), timeout=30)
                assert st.status == "done", st.reason
            world = await fl.world(bus)
            assert {r: world.robots[r].place for r in orders} == orders
            assert world.place_of("knife") == "officeDesk"
            holder = next(r for r, c in fl.commands if c.args.get("object") == "knife")
            assert holder in NAMES

            # fb_0021 and fb_0023 start at the kitchen table, where the apple is
            for change in (WorldChange("pick", robot="fb_0021", object="apple"),
                           WorldChange("handover", robot="fb_0021", object="apple",
                                       target="fb_0023")):
                reply = await bus.request(fl.topics.world_change, change, timeout=10)
                assert msgspec.msgpack.decode(reply.payload, type=WorldReply).ok, reply.payload
            with anyio.fail_after(10):  # the receiver's state, from the world event alone
                assert (await _state_of(bus, fl, "fb_0023", ["apple"])).place == "kitchenTable"
                await _state_of(bus, fl, "fb_0021", [])
            assert deaths == []  # none while the fleet started and worked

            dead: dict[str, Alive] = {}
            fl.kill9("fleet")
            with anyio.fail_after(20):  # 2 s keepalives: the hub declares each dead in ~5 s
                await _presences(bus, fl, False, dead)
            # each robot's own will: its death carries its own birth's sequence number
            assert all(dead[r].bd_seq == alive[r].bd_seq for r in NAMES)
            tg.cancel_scope.cancel()
