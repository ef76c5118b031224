"""Tasks that share robots (issue 15, item 5) with every agent a separate process on the ZeroMQ
hub: an object left in hand on purpose is kept, and a handover's receiver is held until the
handover ends, in one fleet."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from robobus.bus import Bus, BusOptions
from tests.brain.test_processes import TIME_SCALE, Fleet, _profile

pytestmark = pytest.mark.anyio

SCENE = {
    "places": {"bench": {"position": [0.0, 0.0]}, "bath": {"position": [6.0, 0.0]},
               "dock": {"position": [0.0, 4.0]}},
    "objects": {"sock": {"kind": "sock", "at": "bench"}, "towel": {"kind": "towel", "at": "bench"}},
}
#: cart cannot pick: the towel reaches it by a handover from the fixed arm
ROBOTS = [{"name": "bender", "mobile": True, "hands": 1, "speed": 1.0, "start": "bench"},
          {"name": "arm", "mobile": False, "hands": 2, "speed": 0.0, "start": "bench"},
          {"name": "cart", "mobile": True, "hands": 1, "speed": 1.0, "start": "dock",
           "no_pick": True}]


class SharingFleet(Fleet):
    def start_edge(self, spec: dict[str, Any]) -> None:
        profile = _profile(spec)
        if spec.get("no_pick"):
            del profile["skills"]["pick"]
        path = self.tmp / f"{spec['name']}.yaml"
        path.write_text(yaml.safe_dump(profile))
        self.spawn(spec["name"], "edge", "--profile", str(path), "--time-scale", TIME_SCALE)


async def test_kept_objects_and_held_receivers_over_processes(tmp_path: Path, hub_url: str) -> None:
    """bender picks up the sock and keeps it: the towel for the bath goes by arm -> cart (before,
    bender, standing at the towel, put the sock down for it). cart, also sent to the dock,
    goes only after the handover (and its delivery) are done."""
    with contextlib.ExitStack() as stack:
        fl = SharingFleet(tmp_path, hub_url, SCENE, ROBOTS, stack)
        fl.start_memory()
        for spec in ROBOTS:
            fl.start_edge(spec)
        fl.start_brain()
        async with Bus.connect(hub_url, name="tester", options=BusOptions(prefix=fl.prefix)) \
                as bus, anyio.create_task_group() as tg:
            await tg.start(fl.watch, bus)
            await fl.registered(bus)
            sock = await fl.send(bus, "bender, pick up the sock")
            assert (await fl.until(lambda: fl.status(sock), timeout=30)).status == "done"
            towel = await fl.send(bus, "bring the towel to the bath")
            dock = await fl.send(bus, "cart, go to the dock")
            for tid in (towel, dock):
                st = await fl.until(lambda t=tid: fl.status(t), timeout=30)
                assert st.status == "done", st.reason
            plan = next(s.plan for s in fl.statuses[towel] if s.status == "planned")
            assert plan is not None
            assert [(s.robot, s.skill) for s in plan.steps if s.skill != "navigate"] == [
                ("arm", "pick"), ("arm", "handover"), ("cart", "place")]
            handed = next(s for s in fl.statuses[towel]
                          if s.status == "step_done" and s.skill == "handover")
            went = next(s for s in fl.statuses[dock] if s.status == "dispatched")
            assert went.ts_ns > handed.ts_ns, "cart was sent off during the handover"
            world = await fl.world(bus)
            assert world.holder("sock") == "bender"
            assert world.place_of("towel") == "bath" and world.robots["cart"].place == "dock"
            tg.cancel_scope.cancel()
