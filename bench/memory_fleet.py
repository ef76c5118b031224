"""The memory agent's CPU per robot state with a thousand robots at 10 Hz (issue 16 item 7).

    python -m bench.memory_fleet [--robots 1000] [--hz 10] [--window 10] [--bus zmq|mqtt]

A ``robobus hub`` (or a Mosquitto) and a ``robobus memory`` process; this process registers
``--robots`` robots (retained registration and birth, a few KiB of skill specs each, as an
edge sends), waits until the memory agent has added them all to the world, then publishes each
robot's ``RobotState`` at ``--hz`` on one connection, as the fleet simulator does, and reads
the memory agent's CPU time over ``--window`` seconds: CPU per state, without the brain and the
simulator of ``bench.fleet`` beside it. Also the agent's CPU while the robots register (the
world changes then at every commit). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import psutil
import yaml

from bench import scenes
from robobus import testing
from robobus.bus import Bus, BusOptions
from robobus.schemas.codec import decode_as
from robobus.schemas.memory import MemoryQuery, QueryReply
from robobus.schemas.messages import Alive, RobotRegistration, RobotState, SkillSpec
from robobus.schemas.topics import Topics

PLACES = ("officeDesk", "kitchenTable")


def _cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


def _loop_cpu(p: psutil.Process) -> float:
    """CPU of the event loop's thread (the main one) alone; the rest is LMDB's worker
    threads and ZeroMQ's I/O thread."""
    return sum(t.user_time + t.system_time for t in p.threads() if t.id == p.pid)


def _skills() -> list[SkillSpec]:
    schema = {"type": "object", "properties": {f"p{i}": {"type": "string", "description": "x" * 40}
                                               for i in range(6)}}
    return [SkillSpec(name=f"skill_{i}", args_schema=schema, result_schema=schema,
                      preconditions=["at(robot, place)"], effects=["at(robot, target)"])
            for i in range(6)]


async def _robots_in_world(bus: Bus, topics: Topics, names: list[str], limit: float) -> None:
    with anyio.fail_after(limit):
        while True:
            msg = await bus.request(topics.memory_query, MemoryQuery(kind="world"), timeout=30)
            reply = decode_as(msg.payload, QueryReply)
            robots = (reply.result or {}).get("robots", {})
            if all(n in robots for n in names):
                return
            await anyio.sleep(0.5)


async def measure(url: str, memory: psutil.Process, prefix: str, robots: int, hz: float,
                  window: float) -> dict[str, Any]:
    topics = Topics(prefix)
    names = [f"mf_{i:04d}" for i in range(robots)]
    skills = _skills()
    async with Bus.connect(url, name="memory-fleet", options=BusOptions(prefix=prefix)) as bus:
        c0, t0 = _cpu(memory), time.monotonic()
        for i, name in enumerate(names):
            reg = RobotRegistration(robot=name, type="arm", skills=skills,
                                    profile={"start": PLACES[i % 2]})
            await bus.publish(topics.registration(name), reg, retain=True, qos=0)
            await bus.publish(topics.alive(name), Alive(name, True, bd_seq=1), retain=True, qos=0)
            if i % 50 == 49:
                await anyio.sleep(0.01)
        await _robots_in_world(bus, topics, names, 120)
        register_s, register_cpu = time.monotonic() - t0, _cpu(memory) - c0
        await anyio.sleep(1.0)
        period, slices = 1.0 / hz, 10
        step = period / slices
        sent, deadline = 0, anyio.current_time()
        c0, l0, t0 = _cpu(memory), _loop_cpu(memory), time.monotonic()
        end = anyio.current_time() + window
        while anyio.current_time() < end:
            for part in range(slices):
                deadline += step
                await anyio.sleep_until(deadline)
                for name in names[part::slices]:
                    await bus.publish(topics.state(name), RobotState(name, place=PLACES[0]), qos=0)
                    sent += 1
        # the agent has taken what was sent once it answers a query sent after it
        await bus.request(topics.memory_query, MemoryQuery(kind="robot", name=names[-1]),
                          timeout=30)
        cpu, wall = _cpu(memory) - c0, time.monotonic() - t0
        loop = _loop_cpu(memory) - l0
    return {"robots": robots, "hz": hz, "states": sent, "states_per_s": round(sent / wall),
            "memory_cpu_percent": round(100 * cpu / wall, 1),
            "memory_cpu_us_per_state": round(cpu * 1e6 / sent, 1),
            "loop_thread_us_per_state": round(loop * 1e6 / sent, 1),
            "register_s": round(register_s, 2),
            "register_cpu_ms_per_robot": round(register_cpu * 1e3 / robots, 2)}


async def run_one(kind: str, robots: int, hz: float, window: float,
                  extra: tuple[str, ...] = ()) -> dict[str, Any]:
    prefix = f"mf{secrets.token_hex(3)}"
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        url = stack.enter_context(testing.hub() if kind == "zmq" else testing.mosquitto())
        scene = Path(tmp) / "scene.yaml"
        scene.write_text(yaml.safe_dump({"scene": scenes.DEMO_SCENE}))
        cmd = testing.robobus_cmd("memory")
        if os.environ.get("BENCH_MEMORY_PROFILE"):  # the agent under cProfile (bench.profiled)
            cmd = [cmd[0], "-m", "bench.profiled", os.environ["BENCH_MEMORY_PROFILE"], *cmd[2:]]
        args = ("--store", f"{tmp}/store", "--scene", str(scene), "--bus", url, "--prefix", prefix)
        proc = stack.enter_context(testing.spawn((*cmd, *args, *extra), name="memory-fleet-memory",
                                                 env={"ROBOBUS_LOG": "warning"}))
        async with Bus.connect(url, name="probe", options=BusOptions(prefix=prefix)) as bus:
            with anyio.fail_after(60):
                while True:
                    with contextlib.suppress(Exception):
                        await bus.request(Topics(prefix).memory_query,
                                          MemoryQuery(kind="world"), timeout=2)
                        break
                    await anyio.sleep(0.2)
        row = await measure(url, psutil.Process(proc.pid), prefix, robots, hz, window)
    return {"bus": kind, **row}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--robots", type=int, default=1000)
    ap.add_argument("--hz", type=float, default=10.0)
    ap.add_argument("--window", type=float, default=10.0)
    ap.add_argument("--bus", choices=("zmq", "mqtt"), default="zmq")
    ap.add_argument("--memory-args", default="", help="more arguments for robobus memory")
    args = ap.parse_args()
    from robobus.bus.api import run

    row = run(run_one, args.bus, args.robots, args.hz, args.window,
              tuple(args.memory_args.split()))
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
