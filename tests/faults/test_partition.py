"""A network partition of one robot, in a network namespace this test creates.

The robot nearest the apple runs its edge agent inside its own namespace, joined to the host by
a veth pair; the hub, memory, brain and a second robot run on the host end. When the robot
starts picking, the test takes the link down: its heartbeats stop, the hub declares it dead
(last will: offline) and the brain gives the delivery to the other robot. Then the link comes
back: the robot's connection resumes, the hub no longer knows it, it says hello again and
republishes its registration and ``alive``, and it is online again. Needs root (``ip netns``);
skipped elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from robobus import testing
from robobus.bus import Bus, BusOptions, RequestTimeout
from robobus.schemas.memory import MemoryQuery
from robobus.schemas.messages import Alive, BrainStatus, Instruction, SkillFeedback, TaskStatus
from robobus.schemas.topics import Topics

pytestmark = [pytest.mark.anyio, pytest.mark.faults]
ROOT = Path(__file__).resolve().parents[2]
SCENE = """
places:
  kitchenTable: {position: [2.0, 1.0]}
  hallway:      {position: [4.0, 1.0]}
  officeDesk:   {position: [6.0, 5.0]}
objects:
  apple: {kind: fruit, at: kitchenTable, position: [2.1, 1.2]}
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@contextlib.contextmanager
def namespace() -> Iterator[tuple[str, str, str, str]]:
    """A namespace and a veth pair: yields (namespace, host link, host IP, namespace IP)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 for a network namespace")
    tag = secrets.token_hex(3)
    ns, host_if, ns_if = f"rb{tag}", f"rbh{tag}", f"rbn{tag}"
    net = f"10.{200 + int(tag[:2], 16) % 50}.{int(tag[2:4], 16)}"
    host_ip, ns_ip = f"{net}.1", f"{net}.2"
    try:
        _ip("netns", "add", ns)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot create a network namespace here: {exc.stderr!r}")
    try:
        _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _ip("link", "set", ns_if, "netns", ns)
        _ip("addr", "add", f"{host_ip}/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("-n", ns, "addr", "add", f"{ns_ip}/30", "dev", ns_if)
        _ip("-n", ns, "link", "set", ns_if, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        yield ns, host_if, host_ip, ns_ip
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("link", "del", host_if)  # takes its peer with it
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("netns", "del", ns)


def _edge(url: str, prefix: str, name: str, at: str) -> list[str]:
    return testing.robobus_cmd("edge", "--profile", str(ROOT / "profiles/unitree_g1.yaml"),
                               "--name", name, "--at", at, "--bus", url, "--prefix", prefix,
                               "--time-scale", "0.5")


async def test_a_partitioned_robot_is_replaced_then_rejoins(tmp_path: Path) -> None:
    prefix = f"np{secrets.token_hex(3)}"
    t = Topics(prefix)
    scene = tmp_path / "scene.yaml"
    scene.write_text(SCENE)
    logs = tmp_path / "logs"
    with namespace() as (ns, host_if, host_ip, _), contextlib.ExitStack() as stack:
        port = testing.free_port(span=3)
        url = f"zmq://{host_ip}:{port}"
        spawn = lambda argv, name: stack.enter_context(  # noqa: E731
            testing.spawn(argv, name=name, log_dir=logs))
        spawn(testing.robobus_cmd("hub", "--bus", url), "hub")
        testing.wait_port(port + 2, host=host_ip)
        spawn(testing.robobus_cmd("memory", "--store", str(tmp_path / "store"), "--scene",
                                  str(scene), "--bus", url, "--prefix", prefix), "memory")
        spawn(["ip", "netns", "exec", ns, *_edge(url, prefix, "g1", "kitchenTable")], "edge-g1")
        spawn(_edge(url, prefix, "g2", "hallway"), "edge-g2")
        async with Bus.connect(url, name="drill", options=BusOptions(prefix=prefix)) as bus, \
                bus.subscribe(t.alive("g1"), Alive) as alive, \
                bus.subscribe(t.feedback("g1"), SkillFeedback) as g1_feedback, \
                bus.subscribe(t.task("fetch"), TaskStatus) as task, \
                bus.subscribe(t.brain_status, BrainStatus) as brain:
            with anyio.fail_after(40):  # memory up, both robots registered there
                while True:
                    with contextlib.suppress(RequestTimeout):
                        robots = (await bus.request(t.memory_query, MemoryQuery(kind="robots"),
                                                    timeout=1)).payload
                        if b"g1" in robots and b"g2" in robots:
                            break
                    await anyio.sleep(0.2)
            spawn(testing.robobus_cmd("brain", "--bus", url, "--prefix", prefix), "brain")
            with anyio.fail_after(30):  # the brain has loaded the world and recovered its tasks
                while (await brain.get()).data.state != "ready":  # ``starting`` comes first
                    pass
            await bus.publish(t.instructions, Instruction(
                "Bring the apple to the office desk", task_id="fetch"), qos=1)
            with anyio.fail_after(30):  # g1 is nearest: it starts picking
                async for msg in g1_feedback:
                    if msg.data.skill == "pick" and msg.data.status == "started":
                        break
            _ip("link", "set", host_if, "down")
            cut = time.monotonic()
            try:
                with anyio.fail_after(10):  # the hub's last will for g1
                    async for msg in alive:
                        if not msg.data.online:
                            will_s = time.monotonic() - cut
                            break
                statuses: list[TaskStatus] = []
                with anyio.fail_after(60):
                    async for msg in task:
                        statuses.append(msg.data)
                        if msg.data.status in ("done", "failed"):
                            done_s = time.monotonic() - cut
                            break
            finally:
                _ip("link", "set", host_if, "up")
                healed = time.monotonic()
            assert statuses[-1].status == "done", statuses[-1].reason
            after = [s.robot for s in statuses if s.status == "dispatched"]
            assert after and after[-1] == "g2", after
            with anyio.fail_after(30):  # healed: g1 says hello again and is online
                async for msg in alive:
                    if msg.data.online:
                        online_s = time.monotonic() - healed
                        break
            where = await bus.request(t.memory_query, MemoryQuery(kind="where", name="apple"),
                                      timeout=5)
            assert b"officeDesk" in where.payload
    print("FAULT", json.dumps({"drill": "partition", "bus": "zmq", "will_after_cut_s": will_s,
                               "task_done_after_cut_s": done_s, "online_after_heal_s": online_s,
                               "dispatched": after}), file=sys.stderr)
