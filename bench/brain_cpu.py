"""The brain's own CPU per instruction, in one process (issue 16, item 2):
``python -m bench.brain_cpu [--n 400] [--window 1] [--profile OUT.prof]``.

``bench.brain --throughput`` measures the brain process as a whole: its sockets, the hub's
acknowledgements and a loaded machine's scheduling are in it. This isolates what brain_agent/
does: a brain (``Brain``, its scheduler and status publisher) on an in-process ``memory://``
bus, the demo scene and its robots copied ``--robots`` times (30: the throughput bench's fleet)
loaded straight into its fleet view, the instruction of ``bench.brain_throughput`` taken
through the intake (decode, known-task check, plan, dispatch), and every skill command answered
``done`` by calling the scheduler's feedback handler directly. ``--window`` instructions are
kept in flight (1: the cold path, one task at a time). Reported: CPU per instruction (process
time over the run, after a warm-up), the median of ``--repeats`` runs. ``--profile`` writes a
cProfile (CPU time) of one run. ``--plans N`` times the planner alone instead: ``plan_goals``
of that instruction on the idle fleet, N plans per run (1,000 robots of 333 copies:
``--robots 333``; copies tie, issue 16).
"""

from __future__ import annotations

import argparse
import cProfile
import secrets
import statistics
import time
from contextlib import AsyncExitStack
from typing import Any

import anyio
import msgspec

from bench import scenes
from bench.brain_throughput import TEXT, robot_specs
from robobus.brain_agent import intake
from robobus.brain_agent.agent import Brain
from robobus.brain_agent.config import BrainConfig
from robobus.brain_agent.planners.symbolic import SymbolicPlanner
from robobus.brain_agent.search import plan_goals
from robobus.bus import Bus, BusOptions, Message
from robobus.schemas.messages import Instruction, SkillCommand, SkillFeedback
from robobus.schemas.topics import Topics
from robobus.schemas.world import World


class Driver:
    """A brain without sockets: instructions in through its intake, commands answered done."""

    def __init__(self, brain: Brain) -> None:
        self.brain = brain
        self.done = 0
        self._changed = anyio.Event()

    async def answer(self, sub: Any) -> None:
        """Every skill command: ``done`` straight into the scheduler's feedback handler."""
        brain = self.brain
        async for msg in sub:
            cmd: SkillCommand = msg.data
            robot = brain.topics.robot_of(msg.topic) or ""
            fb = SkillFeedback(cmd.command_id, robot, cmd.skill, "done", task_id=cmd.task_id,
                               step_id=cmd.step_id)
            await brain.guard.call("feedback", msg.topic, brain.scheduler.on_feedback, fb)
            self._poke()

    def _poke(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def live(self) -> int:
        return len(self.brain.scheduler.live)

    async def offer(self, n: int, window: int, tag: str) -> None:
        """``n`` instructions, at most ``window`` tasks live at once; returns when all ended."""
        brain, topic = self.brain, self.brain.intake_topic
        for i in range(n):
            while self.live() >= window:
                await self._changed.wait()
            payload = msgspec.msgpack.encode(Instruction(TEXT, task_id=f"{tag}-{i}"))
            msg = Message(topic, payload, content_type="application/msgpack")
            inst = intake.decode(brain.bus, msg)
            assert inst is not None
            await brain.guard.call("instruction", topic, brain._on_instruction, inst, msg)  # noqa: SLF001
        while self.live():
            await self._changed.wait()


async def _run(copies: int, n: int, window: int, repeats: int, profile: str | None
               ) -> list[float]:
    url, prefix = f"memory://cpu-{secrets.token_hex(3)}", f"c{secrets.token_hex(3)}"
    opts = BusOptions(prefix=prefix)
    topics = Topics(prefix)
    specs = robot_specs(copies)
    config = BrainConfig(instruction_rate_limit=None, max_pending=max(64, window + 1),
                         max_backlog=10_000)
    out: list[float] = []
    async with Bus.connect(url, name="brain", options=opts) as bus, \
            Bus.connect(url, name="robots", options=opts) as robots, \
            robots.subscribe(topics.skill(), SkillCommand) as cmds, \
            anyio.create_task_group() as tg, AsyncExitStack() as stack:
        brain = Brain(bus, config, tg)
        tg.start_soon(brain.status.run)
        await brain.subscribe_all(stack)
        brain.fleet.world = World.from_scene(scenes.DEMO_SCENE, [s["name"] for s in specs])
        brain.fleet.world_ready.set()
        brain.known.loaded = True  # memory knows no task yet: no id needs asking
        for spec in specs:
            brain.fleet.on_registration(scenes.registration(spec))
        driver = Driver(brain)
        tg.start_soon(driver.answer, cmds)
        await driver.offer(max(50, n // 4), window, "warm")
        for r in range(repeats):
            prof = cProfile.Profile(time.process_time) if profile and r == 0 else None
            start = time.process_time()
            if prof is not None:
                prof.enable()
            await driver.offer(n, window, f"r{r}")
            if prof is not None:
                prof.disable()
                prof.dump_stats(profile or "")
            out.append((time.process_time() - start) * 1e3 / n)
        tg.cancel_scope.cancel()
    return out


def plans(copies: int, n: int, repeats: int) -> list[float]:
    """CPU ms per ``plan_goals`` of the bench's instruction on the idle demo fleet."""
    specs = robot_specs(copies)
    ctx = scenes.build(scenes.DEMO_SCENE, specs)
    goals = SymbolicPlanner().parse_sync(TEXT, ctx)
    for _ in range(max(5, n // 4)):
        plan_goals(goals, ctx)
    out = []
    for _ in range(repeats):
        start = time.process_time()
        for _ in range(n):
            plan_goals(goals, ctx)
        out.append((time.process_time() - start) * 1e3 / n)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=400, help="instructions per run")
    ap.add_argument("--window", type=int, default=1, help="tasks live at once")
    ap.add_argument("--robots", type=int, default=10, help="copies of each demo robot")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--profile", default=None, help="write a CPU-time cProfile of the first run")
    ap.add_argument("--plans", type=int, default=0, help="time N plans alone per run instead")
    args = ap.parse_args()
    if args.plans:
        runs = plans(args.robots, args.plans, args.repeats)
        print(f"{3 * args.robots} robots: plan_goals {statistics.median(runs):.3f} ms CPU per plan "
              f"(runs {', '.join(f'{v:.3f}' for v in runs)}; {args.plans} plans each)", flush=True)
        return
    runs = anyio.run(_run, args.robots, args.n, args.window, args.repeats, args.profile)
    print(f"window {args.window}: brain CPU {statistics.median(runs):.3f} ms per instruction "
          f"(runs {', '.join(f'{v:.3f}' for v in runs)}; {args.n} instructions each, in process)",
          flush=True)


if __name__ == "__main__":
    main()
