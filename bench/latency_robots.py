"""The robots of ``bench.brain``'s latency run, in a process of their own, as robots are.

They register the demo robots (retained), subscribe to skill commands only, and answer each
with an instant ``done`` (so the world stays the same). The first command of each task is
stamped where it is read, on this process's clocks, and the stamps go to the bench over a
pipe: ``(task id, perf_counter ns at the handler, command created ns, read off the socket
ns)``. ``perf_counter`` is the system's monotonic clock, so the bench compares it with its
own. Before, the bench's own process played the robots beside its instruction client and
status watcher, and a robot's read shared that process's event loop with them.
"""

from __future__ import annotations

import time
from multiprocessing.connection import Connection

import anyio

from bench import scenes
from robobus.bus import Bus, BusOptions
from robobus.bus import run as run_on_uvloop
from robobus.schemas.messages import Alive, SkillCommand, SkillFeedback
from robobus.schemas.topics import Topics

#: what a stamp carries: task id, handler perf_counter ns, created ns, read ns
Stamp = tuple[str, int, int, int]


def robots_process(url: str, prefix: str, conn: Connection) -> None:
    """Entry point of the robots' process (``multiprocessing``, spawn); runs until killed."""
    run_on_uvloop(_robots, url, prefix, conn)


async def _robots(url: str, prefix: str, conn: Connection) -> None:
    topics = Topics(prefix)
    seen: set[str] = set()
    async with Bus.connect(url, name="bench-robots", options=BusOptions(prefix=prefix)) as bus, \
            bus.subscribe(topics.skill(), SkillCommand) as cmds:
        for spec in scenes.DEMO_ROBOTS:
            reg = scenes.registration(spec)
            await bus.publish(topics.registration(reg.robot), reg, retain=True, qos=1)
            await bus.publish(topics.alive(reg.robot), Alive(reg.robot, True), retain=True, qos=1)
        conn.send("ready")
        async for msg in cmds:
            now = time.perf_counter_ns()
            cmd: SkillCommand = msg.data
            task = cmd.task_id or ""
            if task not in seen:
                seen.add(task)
                conn.send((task, now, cmd.ts_ns, msg.ts_ns))
            robot = topics.robot_of(msg.topic) or ""
            fb = SkillFeedback(cmd.command_id, robot, cmd.skill, "done", task_id=cmd.task_id,
                               step_id=cmd.step_id)
            await bus.publish(topics.feedback(robot), fb, qos=1)


async def stamps(conn: Connection) -> Stamp:
    """The next stamp from the robots' process, read without blocking the event loop."""
    while not conn.poll():
        await anyio.wait_readable(conn)
    stamp: Stamp = conn.recv()
    return stamp
