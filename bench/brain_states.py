"""The brain's CPU per robot state (issue 16, items 2 and 7): ``python -m bench.brain_states``.

One process: a brain's subscriptions are opened (``Brain.subscribe_all`` on a ``memory://``
bus) and ``--rounds`` rounds of one idle state per robot (``--robots``, msgpack as on the
wire) are put straight into its state subscription, as the bus delivers them; each round is
drained by the brain before the next, so no state is conflated away. The process CPU per state
is the subscription's buffer and everything the brain does with the state; the bus's own cost
per delivered message (a socket read on ZeroMQ or MQTT) is not in it. Run for a brain of the
whole fleet and for a group's brain leading 30% of the robots (the others' states reach it
and are dropped).
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
import msgspec

from robobus.brain_agent.agent import Brain
from robobus.brain_agent.config import BrainConfig
from robobus.brain_agent.groups import RobotGroup
from robobus.bus import Bus, BusOptions, Message
from robobus.schemas.messages import RobotState
from robobus.schemas.topics import Topics

_ENCODE = msgspec.msgpack.Encoder().encode


def _state_sub(bus: Bus, pattern: str) -> Any:
    """The brain's subscription to ``pattern`` (a bench's look inside the bus)."""
    return next(s for s in bus._subs.values() if s.pattern == pattern)  # noqa: SLF001


async def _round_cpu(sub: Any, msgs: list[Message], rounds: int) -> float:
    """CPU seconds per state: ``rounds`` rounds of one state per robot put straight into the
    brain's subscription (as the bus delivers them), each drained by the brain before the next."""
    gc.collect()
    start = time.process_time()
    for _ in range(rounds):
        for msg in msgs:
            sub.put_nowait(msg)
        while len(sub):
            await anyio.lowlevel.checkpoint()
        await anyio.lowlevel.checkpoint()
    return (time.process_time() - start) / (rounds * len(msgs))


async def _measure(robots: int, rounds: int, group: RobotGroup | None, repeats: int
                   ) -> dict[str, Any]:
    url = f"memory://states-{secrets.token_hex(3)}"
    prefix = f"s{secrets.token_hex(3)}"
    topics = Topics(prefix)
    msgs = [Message(topics.state(r), _ENCODE(RobotState(r, place="dock")))
            for r in (f"r{i:04d}" for i in range(robots))]
    runs: list[float] = []
    async with Bus.connect(url, name="brain", options=BusOptions(prefix=prefix)) as bus, \
            anyio.create_task_group() as tg, AsyncExitStack() as stack:
        brain = Brain(bus, BrainConfig(group=group), tg)
        await brain.subscribe_all(stack)
        sub = _state_sub(bus, topics.state())
        await _round_cpu(sub, msgs, 2)  # warm-up
        for _ in range(repeats):
            runs.append(await _round_cpu(sub, msgs, rounds) * 1e6)
        tg.cancel_scope.cancel()
    return {"robots": robots, "rounds": rounds, "group": group.patterns if group else None,
            "brain_us_per_state": statistics.median(runs), "runs_us": runs}


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
              f"(runs {', '.join(f'{v:.2f}' for v in row['runs_us'])})", flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
