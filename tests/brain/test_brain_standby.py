"""Brain presence and a standby brain (issue 12), agents as processes on a real Mosquitto
(and the takeover on the ZeroMQ hub too)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import anyio
import pytest

from bench import scenes
from robobus.bus import Bus, Subscription
from robobus.schemas.messages import BrainStatus, SkillFeedback
from tests.brain.test_processes import Fleet, fleet

pytestmark = [pytest.mark.anyio, pytest.mark.faults, pytest.mark.broker]
TAKEOVER_S = 2.0


@pytest.fixture(params=["zmq", "mqtt"])
def process_url(request: pytest.FixtureRequest) -> str:
    """The ZeroMQ hub or the private Mosquitto (both started once per session)."""
    return str(request.getfixturevalue("hub_url" if request.param == "zmq" else "mosquitto_url"))


async def _next(sub: Subscription, *states: str, timeout: float = 30.0) -> BrainStatus:
    with anyio.fail_after(timeout):
        while (msg := await sub.get()).data.state not in states:
            pass
    return msg.data


async def test_kill9_brain_leaves_its_death(tmp_path: Path, mosquitto_url: str) -> None:
    """A plain subscriber sees the brain's birth, then after kill -9 its will: ``offline``
    with the birth's ``bd_seq``, retained."""
    async with fleet(tmp_path, mosquitto_url, scenes.DEMO_SCENE, scenes.DEMO_ROBOTS) as (fl, bus):
        async with bus.subscribe(fl.topics.brain_status, BrainStatus) as sub:
            birth = await _next(sub, "ready")
            fl.kill9("brain")
            death = await _next(sub, "offline", timeout=10)
        assert death.bd_seq == birth.bd_seq > 0 and death.instance == birth.instance
        async with bus.subscribe(fl.topics.brain_status, BrainStatus) as late:
            with anyio.fail_after(5):
                kept = await late.get()
        assert kept.retain and kept.data == death


async def _instances(bus: Bus, fl: Fleet, want: dict[str, str]) -> dict[str, BrainStatus]:
    """The retained per-instance presences once they say ``want`` (instance -> state)."""
    with anyio.fail_after(10):
        while True:
            async with bus.subscribe(fl.topics.brain_instance_status(), BrainStatus) as sub:
                seen: dict[str, BrainStatus] = {}
                with anyio.move_on_after(0.5):
                    async for msg in sub:
                        assert msg.topic == fl.topics.brain_instance_status(msg.data.instance)
                        seen[msg.data.instance] = msg.data
            if {i: s.state for i, s in seen.items()} == want:
                return seen


async def test_standby_brain_takes_over_without_repeating_commands(tmp_path: Path,
                                                                   process_url: str) -> None:
    """Over Mosquitto and the ZeroMQ hub: a second brain is a standby (each instance's own
    retained presence says which is which); kill -9 of the active mid-task, the standby is
    ready within 2 s, the task ends done and no skill command is sent or executed twice."""
    transport = process_url.split(":", 1)[0]
    async with fleet(tmp_path, process_url, scenes.DEMO_SCENE, scenes.DEMO_ROBOTS) as (fl, bus):
        async with bus.subscribe(fl.topics.brain_status, BrainStatus) as sub, \
                bus.subscribe(fl.topics.feedback(), SkillFeedback) as fbs:
            active = await _next(sub, "ready")
            fl.spawn("brain2", "brain")
            standby = await _next(sub, "standby")
            assert standby.instance != active.instance
            both = await _instances(bus, fl, {active.instance: "ready",
                                              standby.instance: "standby"})
            assert both[standby.instance].bd_seq > 0
            tid = await fl.send(bus, "Bring the fruit nearest the cup and a fruit knife to the "
                                "office desk")
            await fl.until(lambda: [s.status for s in fl.statuses[tid]].count("step_done") >= 1)
            fl.kill9("brain")
            killed = time.monotonic()
            death = await _next(sub, "offline", timeout=10)
            assert death.instance == active.instance
            ready = await _next(sub, "ready", timeout=10)
            took = time.monotonic() - killed
            assert ready.instance == standby.instance and ready.bd_seq > 0
            after = await _instances(bus, fl, {active.instance: "offline",
                                               standby.instance: "ready"})
            assert after[active.instance].bd_seq == both[active.instance].bd_seq  # its will
            st = await fl.until(lambda: fl.status(tid), timeout=40)
            assert st.status == "done", st.reason
            await anyio.sleep(0.5)
            done = Counter(m.data.command_id for m in _drain(fbs) if m.data.status == "done")
        sent = Counter(c.command_id for _, c in fl.commands)
        print(f"LIFECYCLE second-brain {transport}: takeover {took:.2f} s after kill -9 of the "
              f"active brain, task done, commands {sum(sent.values())}, duplicated "
              f"{sum(n - 1 for n in sent.values())}, executed twice "
              f"{sum(n - 1 for n in done.values())}")
        assert took < TAKEOVER_S, took
        assert max(sent.values()) == 1, sent  # no skill command sent twice
        assert done and max(done.values()) == 1, done  # each executed once
        world = await fl.world(bus)
        assert world.place_of("apple") == world.place_of("knife") == "officeDesk"


def _drain(sub: Subscription) -> list:  # type: ignore[type-arg]
    out = []
    while (msg := sub.get_nowait()) is not None:
        out.append(msg)
    return out


