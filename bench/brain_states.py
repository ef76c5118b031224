"""The brain's CPU per robot state (issue 16, items 2 and 7): ``python -m bench.brain_states``.

One process, an in-process ``memory://`` bus: a brain's subscriptions are opened
(``Brain.subscribe_all``) and a publisher sends ``--rounds`` rounds of one idle state per robot
(``--robots``); each round is drained before the next, so no state is conflated away. The
process CPU per state is measured with the brain subscribed and, interleaved, with no brain
(the publisher's and the in-process bus's share); the difference is the brain's. Run for a
brain of the whole fleet and for a group's brain leading a quarter of the robots (the others'
states reach it and are dropped). The bus's own cost per delivered message (a socket read on
ZeroMQ or MQTT) is not in it: this isolates what brain_agent/ does with a state.
"""

from __future__ import annotations

import argparse
import gc
import json
import secrets
import statistics
import time
from contextlib import AsyncExitStack
from typing import Any

import anyio
import anyio.lowlevel

from robobus.brain_agent.agent import Brain
from robobus.brain_agent.config import BrainConfig
from robobus.brain_agent.groups import RobotGroup
from robobus.bus import Bus
from robobus.schemas.messages import RobotState
from robobus.schemas.topics import Topics


async def _drain(bus: Bus) -> None:
    """Until every subscription of ``bus`` is empty and its consumers have run."""
    for _ in range(10_000):
        await anyio.lowlevel.checkpoint()
        if not any(len(s) for s in bus._subs.values()):  # noqa: SLF001 - a bench's look inside
            for _ in range(3):
                await anyio.lowlevel.checkpoint()
            return


async def _round_cpu(pub: Bus, sink: Bus, topics: Topics, robots: list[str], rounds: int) -> float:
    """CPU seconds per state for ``rounds`` rounds of one state per robot."""
    payloads = [(topics.state(r), RobotState(r, place="dock")) for r in robots]
    gc.collect()
    start = time.process_time()
    for _ in range(rounds):
        for topic, state in payloads:
            await pub.publish(topic, state)
        await _drain(sink)
    return (time.process_time() - start) / (rounds * len(robots))


async def _measure(robots: int, rounds: int, group: RobotGroup | None, repeats: int) -> dict[str, Any]:
    names = [f"r{i:04d}" for i in range(robots)]
    url = f"memory://states-{secrets.token_hex(3)}"
    prefix = f"s{secrets.token_hex(3)}"
    topics = Topics(prefix)
    with_brain: list[float] = []
    without: list[float] = []
    from robobus.bus import BusOptions

    opts = BusOptions(prefix=prefix)
    async with Bus.connect(url, name="pub", options=opts) as pub:
        for _ in range(repeats):
            async with Bus.connect(url, name="idle", options=opts) as idle:
                without.append(await _round_cpu(pub, idle, topics, names, rounds))
            async with Bus.connect(url, name="brain", options=opts) as bus, \
                    anyio.create_task_group() as tg, AsyncExitStack() as stack:
                brain = Brain(bus, BrainConfig(group=group), tg)
                await brain.subscribe_all(stack)
                await _round_cpu(pub, bus, topics, names, 2)  # warm-up
                with_brain.append(await _round_cpu(pub, bus, topics, names, rounds))
                tg.cancel_scope.cancel()
    brain_us = [(w - o) * 1e6 for w, o in zip(with_brain, without, strict=True)]
    return {"robots": robots, "rounds": rounds, "group": group.patterns if group else None,
            "brain_us_per_state": statistics.median(brain_us), "runs_us": brain_us,
            "bus_only_us_per_state": statistics.median(without) * 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--robots", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    out = []
    for label, group in (("whole fleet", None),
                         ("group, 30% of robots", RobotGroup.parse("q", "r0[0-2]*"))):
        row = anyio.run(_measure, args.robots, args.rounds, group, args.repeats)
        out.append(row | {"brain": label})
        print(f"{label:20s} brain {row['brain_us_per_state']:6.2f} us/state "
              f"(runs {', '.join(f'{v:.2f}' for v in row['runs_us'])}; bus and publisher alone "
              f"{row['bus_only_us_per_state']:.2f} us)", flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
