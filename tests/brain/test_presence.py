"""Presence over a real Mosquitto, with memory, brain and an edge as separate processes.

Births and deaths carry a birth/death sequence (``Alive.bd_seq``): an edge re-asserts its birth
after every reconnect, and a death older than the current birth is ignored (issue 12). The
faults are made the way users make them: SIGSTOP past the keepalive, SIGTERM of the broker (it
publishes every will) and a restart on the same port, a stale death sent with mosquitto_pub.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import msgspec
import pytest
import yaml

from robobus import testing
from robobus.brain_agent.fleet import query_memory
from robobus.bus import Bus, BusOptions, Subscription
from robobus.schemas.memory import MemoryQuery
from robobus.schemas.messages import Alive, Instruction, MemoryStatus, TaskStatus
from robobus.schemas.topics import Topics
from robobus.schemas.world import WorldSnapshot

pytestmark = [pytest.mark.anyio, pytest.mark.faults]

ROBOT = "solo"  # the only robot: work is accepted only while the brain counts it alive
SCENE = {"places": {"home": {"position": [0.0, 0.0]}, "shelf": {"position": [2.0, 0.0]}},
         "objects": {"bolt": {"kind": "bolt", "at": "shelf"}, "nut": {"kind": "nut", "at": "home"}}}
PROFILE = {"name": ROBOT, "type": "test_bot", "start": "home", "telemetry_hz": 10,
           "embodiment": {"mobile": True, "arms": 1, "hands": 1, "speed": 1.0},
           "skills": {"navigate": {}, "pick": {"duration_s": 0.5}, "place": {"duration_s": 0.5}}}
#: how soon a hung edge is declared dead. ZeroMQ: the hub's own check (keepalive 0.5 s, about
#: 1.3 s). MQTT: the edge's keepalive is 2 s (MQTT's floor, bus/backends/mqtt_options.py), but
#: Mosquitto 2.0.x (2.0.0 to 2.0.20, src/keepalive.c) checks keepalives in one sweep every 6 s
#: and drops a client silent for more than keepalive*3/2 whole seconds, so the will comes 3 to
#: about 10 s after the edge's last packet whatever the load (bench/hung_edge.py: 4.0-8.9 s,
#: every will on the broker's 6 s grid); docs/reliability.md, Presence faults
PROMISE_S = {"zmq": 3.0, "mqtt": 10.0}
#: what the test allows: it only catches a will that never comes; the figure is printed
BOUND_S = 15.0


class Presence:
    """Processes of one fleet plus a tester bus that follows the robot's ``alive``."""

    def __init__(self, tmp: Path, url: str, stack: contextlib.ExitStack) -> None:
        self.tmp, self.url, self.stack = tmp, url, stack
        self.prefix = f"t{secrets.token_hex(4)}"
        self.topics = Topics(self.prefix)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        (tmp / "scene.yaml").write_text(yaml.safe_dump({"scene": SCENE}))
        (tmp / "solo.yaml").write_text(yaml.safe_dump(PROFILE))

    def spawn(self, name: str, *args: str) -> None:
        argv = testing.robobus_cmd(*args, "--bus", self.url, "--prefix", self.prefix)
        self.procs[name] = self.stack.enter_context(
            testing.spawn(argv, name=name, log_dir=self.tmp / "logs"))

    def start(self) -> None:
        self.spawn("memory", "memory", "--store", str(self.tmp / "store"), "--scene",
                   str(self.tmp / "scene.yaml"))
        self.spawn(ROBOT, "edge", "--profile", str(self.tmp / "solo.yaml"), "--time-scale", "0.05")
        self.spawn("brain", "brain")

    async def alive(self, sub: Subscription, online: bool, timeout: float = 30.0) -> Alive:
        """The next ``Alive`` of the robot saying ``online``."""
        with anyio.fail_after(timeout):
            while True:
                msg = await sub.get()
                if msg.data.online is online:
                    return msg.data

    async def run_task(self, bus: Bus, text: str, timeout: float = 30.0) -> TaskStatus:
        """Send ``text`` (again every 0.5 s until the brain accepts it); its final status."""
        tid = secrets.token_hex(3)
        async with bus.subscribe(self.topics.task(tid), TaskStatus) as statuses:
            with anyio.fail_after(timeout):
                accepted = False
                while not accepted:
                    await bus.publish(self.topics.instructions, Instruction(text, task_id=tid), qos=1)
                    with anyio.move_on_after(0.5):
                        msg = await statuses.get()
                        accepted = True
                while msg.data.status not in ("done", "failed", "cancelled"):
                    msg = await statuses.get()
        return msg.data


@contextlib.asynccontextmanager
async def fleet(tmp: Path, url: str) -> AsyncIterator[tuple[Presence, Bus, Subscription, Alive]]:
    """A running fleet whose robot did a first task; yields it, the tester bus, a
    subscription to the robot's ``alive`` and the robot's first birth."""
    with contextlib.ExitStack() as stack:
        fl = Presence(tmp, url, stack)
        async with Bus.connect(url, name="tester", options=BusOptions(prefix=fl.prefix)) as bus, \
                bus.subscribe(fl.topics.alive(ROBOT), Alive) as alive:
            fl.start()
            birth = await fl.alive(alive, True)
            first = await fl.run_task(bus, "bring the bolt to home")
            assert first.status == "done", first.reason
            yield fl, bus, alive, birth


@pytest.fixture(params=[pytest.param("mqtt", marks=pytest.mark.broker), "zmq"])
def process_url(request: pytest.FixtureRequest) -> str:
    """The session's Mosquitto or ZeroMQ hub process."""
    return request.getfixturevalue("mosquitto_url" if request.param == "mqtt" else "hub_url")


async def test_sigstop_past_keepalive_then_sigcont_rebirth(tmp_path: Path, process_url: str
                                                            ) -> None:
    """A hung edge is declared offline within about the promise; once it runs again it publishes a
    new birth and the brain gives it work again (MQTT: a reconnect; ZeroMQ: a rejoin)."""
    async with fleet(tmp_path, process_url) as (fl, bus, alive, first):
        edge = fl.procs[ROBOT]
        os.killpg(edge.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            death = await fl.alive(alive, False, timeout=BOUND_S)
            detected = time.monotonic() - stopped
        finally:
            os.killpg(edge.pid, signal.SIGCONT)
            resumed = time.monotonic()
        # the will is the first birth's death: same sequence, not older than that birth
        assert death.bd_seq == first.bd_seq and death.ts_ns > first.ts_ns, (first, death)
        # ZeroMQ's rejoin restores the old retained birth first (same bd_seq as the death:
        # everyone ignores it), then the new birth follows
        birth = await fl.alive(alive, True, timeout=15)
        while birth.bd_seq <= death.bd_seq:
            birth = await fl.alive(alive, True, timeout=15)
        reborn = time.monotonic() - resumed
        done = await fl.run_task(bus, "bring the bolt to the shelf")
        transport = process_url.split(":")[0]
        print(f"LIFECYCLE sigstop-past-keepalive {transport}: offline {detected:.2f} s after "
              f"SIGSTOP (promise {PROMISE_S[transport]:.0f} s), new birth {reborn:.2f} s after SIGCONT, "
              f"next task {done.status}")
        assert done.status == "done", done.reason


@pytest.mark.broker
async def test_broker_sigterm_and_restart_fleet_comes_back(tmp_path: Path) -> None:
    """SIGTERM of Mosquitto publishes every will; restarted on the same port, the robot is
    born again and a new instruction completes."""
    port = testing.free_port()
    conf = testing.write_mosquitto_conf(tmp_path, port)
    url = f"mqtt://{testing.LOOPBACK}:{port}"
    with contextlib.ExitStack() as brokers:
        broker = brokers.enter_context(testing.spawn([testing.mosquitto_binary(), "-c", str(conf)],
                                                     name="mosquitto"))
        testing.wait_port(port)
        async with fleet(tmp_path, url) as (fl, bus, alive, first):
            broker.send_signal(signal.SIGTERM)
            stopped = time.monotonic()
            death = await fl.alive(alive, False, timeout=10)  # heard before the broker went
            offline_s = time.monotonic() - stopped
            assert death.bd_seq == first.bd_seq
            broker.wait(10)
            brokers.enter_context(testing.spawn([testing.mosquitto_binary(), "-c", str(conf)],
                                                name="mosquitto-again"))
            birth = await fl.alive(alive, True, timeout=30)
            online_s = time.monotonic() - stopped
            assert birth.bd_seq > first.bd_seq
            done = await fl.run_task(bus, "bring the bolt to the shelf", timeout=40)
            print(f"LIFECYCLE broker-sigterm mqtt: will (offline) {offline_s:.2f} s after SIGTERM, "
                  f"online again {online_s:.2f} s after it once restarted (bd_seq "
                  f"{first.bd_seq} -> {birth.bd_seq}), next task {done.status}")
            assert done.status == "done", done.reason


@pytest.mark.broker
@pytest.mark.skipif(shutil.which("mosquitto_pub") is None, reason="mosquitto_pub not installed")
async def test_stale_death_by_hand_does_not_take_robot_offline(tmp_path: Path, mosquitto_url: str
                                                               ) -> None:
    """A death with an older ``bd_seq`` (``mosquitto_pub -r``) is ignored by the brain and the
    memory agent: the robot stays online and takes work."""
    async with fleet(tmp_path, mosquitto_url) as (fl, bus, alive, birth):
        stale = tmp_path / "stale.bin"
        stale.write_bytes(msgspec.msgpack.encode(Alive(ROBOT, False, bd_seq=birth.bd_seq - 1)))
        port = mosquitto_url.rsplit(":", 1)[1]
        subprocess.run(["mosquitto_pub", "-h", testing.LOOPBACK, "-p", port, "-r", "-q", "1",
                        "-t", fl.topics.alive(ROBOT), "-f", str(stale)], check=True, timeout=10)
        seen = await fl.alive(alive, False, timeout=10)  # it did reach every subscriber
        assert seen.bd_seq == birth.bd_seq - 1
        done = await fl.run_task(bus, "bring the bolt to the shelf")
        assert done.status == "done", done.reason
        world = await query_memory(bus, fl.topics, MemoryQuery(kind="world"), 5.0)
        assert msgspec.convert(world, WorldSnapshot).robots[ROBOT].alive is True



@pytest.mark.broker
async def test_memory_agent_presence(tmp_path: Path, mosquitto_url: str) -> None:
    """The memory agent is born once it answers; a clean stop leaves ``offline``, a kill -9
    the will: the matching death of that birth."""
    with contextlib.ExitStack() as stack:
        fl = Presence(tmp_path, mosquitto_url, stack)
        async with Bus.connect(mosquitto_url, name="tester", options=BusOptions(prefix=fl.prefix)
                               ) as bus, bus.subscribe(fl.topics.memory_status, MemoryStatus) as sub:

            async def next_status(online: bool) -> MemoryStatus:
                with anyio.fail_after(30):
                    while (msg := await sub.get()).data.online is not online:
                        pass
                return msg.data

            for stop in (testing.stop, testing.kill9):
                fl.spawn("memory", "memory", "--store", str(tmp_path / "store"))
                birth = await next_status(True)
                stop(fl.procs.pop("memory"))
                death = await next_status(False)
                assert death.bd_seq == birth.bd_seq and death.ts_ns > birth.ts_ns, (birth, death)
            async with bus.subscribe(fl.topics.memory_status, MemoryStatus) as late:
                with anyio.fail_after(5):
                    kept = await late.get()
            assert kept.retain and kept.data == death  # offline stays, never an empty value
