"""Brain benchmark: instruction response latency, planning cost at scale, plan quality.

    python -m bench.brain [--latency-n 300] [--out bench/results] [--skip-mqtt]

* **Response latency**: a ``robobus hub`` (or Mosquitto), the memory agent and the brain run as
  separate processes on the demo scene; a process of its own plays the robots
  (``bench/latency_robots.py``: retained registrations, skill commands only, instant ``done``
  feedback, so the world stays the same), and each instruction is timed from just before its
  publish here to the first skill command of its task read there. Each is split at
  the brain's intake (its ``accepted`` status is stamped there) and at the command's creation.
  Each instruction alternates with a raw round over the same hops (``bench/brain_floor.py``):
  pyzmq through the same hub, or paho through the same Mosquitto: the machine's floor,
  measured side by side, and robobus's ratio to it.
* **Planning cost**: parse + search + validation with the symbolic planner on generated
  scenes of 3 to 10,000 robots and 10/100/1000 objects (in-process), and at 1,000 objects the
  same plan with every robot costed for every want (``prune=False``, the search before issue
  16's fleet index). ``--planning-only`` runs just this and writes
  ``brain_planning_cost.json`` and its plot, leaving ``brain.json`` alone.
* **Plan quality**: plan makespan against a naive "first capable robot" assignment, for every
  instruction of the shipped scenarios.

* **Throughput** (``--throughput``, alone): instructions per second one brain sustains, with
  the latency curve (``bench/brain_throughput.py``); writes ``brain_throughput.json`` and
  ``brain_throughput.png``, leaving ``brain.json`` alone.

Writes ``brain.json``, ``brain_latency.png``, ``brain_planning_cost.png`` and
``brain_makespan.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import logging
import multiprocessing as mp
import os
import secrets
import statistics
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import anyio
import msgspec
import structlog
import yaml

from bench import brain_throughput, latency_robots, scenes
from bench.brain_floor import MODES as FLOOR_MODES
from bench.brain_floor import floor_for
from robobus import testing
from robobus.brain_agent.errors import BrainError
from robobus.brain_agent.planners import plan_goals
from robobus.brain_agent.planners.symbolic import SymbolicPlanner
from robobus.bus import Bus, BusOptions
from robobus.bus import run as run_on_uvloop
from robobus.schemas.messages import (
    Instruction,
    SkillCommand,
    TaskStatus,
)
from robobus.schemas.topics import Topics

ROOT = Path(__file__).resolve().parents[1]
LOG_LEVEL = "warning"
#: idle time between instructions: response latency, not throughput under a backlog
GAP_S = 0.02
#: instructions without a task id (the brain picks it; no task-memory check), --brain-task-ids
BRAIN_IDS = False
LOG_DIR = Path(tempfile.gettempdir()) / "robobus-bench-brain"
LATENCY_TEXT = "Bring the fruit nearest the cup and a fruit knife to the office desk"


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


# -- response latency over a real bus ----------------------------------------------------------
class FakeFleet:
    """What the bench learns of the robots: the first command of each task, stamped in the
    robots' own process (bench/latency_robots.py), and each task's end, watched here."""

    def __init__(self, watch: Bus, topics: Topics) -> None:
        self.watch, self.topics = watch, topics
        self.first: dict[str, int] = {}
        # task -> (command created in the brain, read off the socket), wall-clock ns
        self.wire: dict[str, tuple[int, int]] = {}
        self.done: dict[str, anyio.Event] = {}
        self.accepted: dict[str, int] = {}  # task -> its "accepted" status created, wall-clock ns
        self.order: list[str] = []  # task ids in the order their first command came

    async def finished(self, task_id: str | None, seen: int) -> str:
        """Until ``task_id`` ends; None: the first task whose command came after the first
        ``seen`` (one instruction in flight, its id chosen by the brain)."""
        while task_id is None:
            if len(self.order) > seen:
                task_id = self.order[seen]
            else:
                await anyio.sleep(0.0005)
        await self.done.setdefault(task_id, anyio.Event()).wait()
        return task_id

    async def serve(self, conn: Connection, *, task_status: Any = anyio.TASK_STATUS_IGNORED
                    ) -> None:
        async with self.watch.subscribe(self.topics.task(), TaskStatus) as tasks, \
                anyio.create_task_group() as tg:
            task_status.started()
            tg.start_soon(self._tasks, tasks)
            while True:
                task, read, created, on_wire = await latency_robots.stamps(conn)
                self.first[task] = read
                self.wire[task] = (created, on_wire)
                self.order.append(task)

    async def _tasks(self, sub: Any) -> None:
        async for msg in sub:
            st: TaskStatus = msg.data
            if st.status == "accepted":
                self.accepted[st.task_id] = st.ts_ns
            if st.status in ("done", "failed"):
                self.done.setdefault(st.task_id, anyio.Event()).set()


async def _latency_run(url: str, n: int, warmup: int, with_floor: bool) -> dict[str, Any]:
    prefix = f"b{secrets.token_hex(3)}"
    topics = Topics(prefix)
    # per instruction, wall-clock ns: published, brain intake ("accepted" created), first
    # command created in the brain, that command read off our socket
    stamps: list[tuple[int, int, int, int]] = []
    samples: list[float] = []  # publish -> the command seen by this consumer (perf counter)
    floor_ms: dict[str, list[float]] = {mode: [] for mode in FLOOR_MODES}
    failed = 0
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        scene_file = Path(tmp) / "scene.yaml"
        scene_file.write_text(yaml.safe_dump({"scene": scenes.DEMO_SCENE}))
        env = {"ROBOBUS_LOG": LOG_LEVEL}
        spawn = mp.get_context("spawn")
        mine, theirs = spawn.Pipe()
        robots = spawn.Process(target=latency_robots.robots_process, args=(url, prefix, theirs),
                               name="bench-robots", daemon=True)
        robots.start()
        stack.callback(robots.kill)
        if not mine.poll(60):
            raise RuntimeError("the robots process did not start")
        mine.recv()
        async with Bus.connect(url, name="bench", options=BusOptions(prefix=prefix)) as bus, \
                anyio.create_task_group() as tg:
            fleet = FakeFleet(bus, topics)
            stack.enter_context(testing.spawn(testing.robobus_cmd(
                "memory", "--store", f"{tmp}/store", "--scene", str(scene_file), "--bus", url,
                "--prefix", prefix), name="memory", env=env, log_dir=LOG_DIR))
            stack.enter_context(testing.spawn(testing.robobus_cmd(
                "brain", "--bus", url, "--prefix", prefix, "--no-recover",
                # one sender at ~40 instructions/s: above the default per-sender limit
                "--instruction-rate", "0"), name="brain", env=env, log_dir=LOG_DIR))
            floor = None
            if with_floor:
                floor = floor_for(url, prefix, msgspec.msgpack.encode(Instruction(LATENCY_TEXT)),
                                  msgspec.msgpack.encode(_floor_command()))
                stack.callback(floor.close)
                floor.warm()
            await tg.start(fleet.serve, mine)
            for i in range(n + warmup):
                # a client's own id is checked against task memory first (a query round trip
                # to the memory agent before planning); the brain's own needs no check
                tid: str | None = None if BRAIN_IDS else f"L{i}"
                inst = Instruction(LATENCY_TEXT, task_id=tid)
                got: str | None = None
                with anyio.move_on_after(30 if i == 0 else 5):
                    while got is None:  # the first ones wait for the brain and memory to come up
                        seen = len(fleet.order)
                        t0, w0 = time.perf_counter_ns(), time.time_ns()
                        await bus.publish(topics.instructions, inst)
                        with anyio.move_on_after(1.0 if i == 0 else 5):
                            got = await fleet.finished(tid, seen)
                if got is None or got not in fleet.first:
                    failed += 1
                    continue
                tid = got
                await anyio.sleep(GAP_S)  # let the previous task's status traffic settle
                for mode in FLOOR_MODES if floor is not None else ():
                    # alternating rounds, so all see the same machine; each blocks the loop for
                    # one trip, while nothing of robobus's is in flight
                    trip = floor.round_ms(mode)
                    await anyio.sleep(GAP_S)
                    if i >= warmup and trip is not None:
                        floor_ms[mode].append(trip)
                if i >= warmup:
                    samples.append((fleet.first[tid] - t0) / 1e6)
                    created, read = fleet.wire[tid]
                    stamps.append((w0, fleet.accepted.get(tid, created), created, read))
            tg.cancel_scope.cancel()
    return _latency_figures(samples, stamps, floor_ms, failed)


def _floor_command() -> SkillCommand:
    """A command of the size the brain sends first on the demo scene."""
    return SkillCommand("L0.s1.0", "navigate", {"target": "kitchen_table"}, task_id="L0",
                        step_id="s1", timeout_s=60.0)


def _latency_figures(samples: list[float], stamps: list[tuple[int, int, int, int]],
                     floor_ms: dict[str, list[float]], failed: int) -> dict[str, Any]:
    ms = lambda a, b: [(s[b] - s[a]) / 1e6 for s in stamps]  # noqa: E731
    on_wire, stages = ms(0, 3), {"to_intake": ms(0, 1), "in_brain": ms(1, 2), "to_robot": ms(2, 3)}
    out: dict[str, Any] = {
        "n": len(samples), "lost": failed, "p50_ms": pct(samples, 0.5),
        "p90_ms": pct(samples, 0.9), "p99_ms": pct(samples, 0.99),
        "mean_ms": statistics.fmean(samples), "max_ms": max(samples),
        # the "first skill command on the wire": stamped by the transport as it reads
        # the frames, before this process's own task hop
        "on_wire_p50_ms": pct(on_wire, 0.5), "on_wire_p99_ms": pct(on_wire, 0.99),
        "to_command_created_p50_ms": pct(ms(0, 2), 0.5),
        "to_command_created_p99_ms": pct(ms(0, 2), 0.99),
        "stages_p50_ms": {k: pct(v, 0.5) for k, v in stages.items()},
        "stages_p99_ms": {k: pct(v, 0.99) for k, v in stages.items()},
        "samples_ms": on_wire}
    for mode, trips in floor_ms.items():
        if trips:
            out[f"floor_{mode}"] = {"n": len(trips), "p50_ms": pct(trips, 0.5),
                                    "p90_ms": pct(trips, 0.9), "p99_ms": pct(trips, 0.99),
                                    "samples_ms": trips}
    if floor_ms["acked"]:  # the measure: robobus over the floor of the same hops
        out["vs_floor"] = {q: out[f"on_wire_{q}_ms"] / out["floor_acked"][f"{q}_ms"]
                           for q in ("p50", "p99")}
    return out


def latency(n: int, skip_mqtt: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # on uvloop, as every robobus process runs (bus.run); the raw floor shares the loop
    with testing.hub() as url:
        out["zmq"] = run_on_uvloop(_latency_run, url, n, 20, True)
    if not skip_mqtt:
        with testing.mosquitto() as url:
            out["mqtt"] = run_on_uvloop(_latency_run, url, n, 20, True)
    return out


# -- planning cost ------------------------------------------------------------------------------
PLAN_ROBOTS = (3, 30, 300, 1000, 3000, 10000)
PLAN_OBJECTS = (10, 100, 1000)
PLAN_TEXT = "bring the fruit nearest the bolt1 and a tool to station2"


def _timed(fn: Any, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def planning_cost(repeats: int) -> list[dict[str, Any]]:
    rows = []
    for n_robots in PLAN_ROBOTS:
        for n_objects in PLAN_OBJECTS:
            rows.append(row := _cost_row(n_robots, n_objects, repeats))
            extra = (f"  every robot costed: p50 {row['exhaustive_p50_ms']:.2f} ms"
                     if "exhaustive_p50_ms" in row else "")
            print(f"  plan {n_robots:5d} robots {n_objects:5d} objects: "
                  f"p50 {row['p50_ms']:.2f} ms  p99 {row['p99_ms']:.2f} ms{extra}")
    return rows


def _cost_row(n_robots: int, n_objects: int, repeats: int) -> dict[str, Any]:
    scene, robots = scenes.generate(n_robots, n_objects, seed=7)
    ctx = scenes.build(scene, robots)
    planner = SymbolicPlanner()
    plan = planner.plan_sync(PLAN_TEXT, ctx)  # builds the vocabulary once, as the brain does
    times = _timed(lambda: planner.plan_sync(PLAN_TEXT, ctx), repeats)
    row = {"robots": n_robots, "objects": n_objects, "p50_ms": pct(times, 0.5),
           "p99_ms": pct(times, 0.99), "n": repeats, "makespan_s": plan.makespan_s}
    if n_objects == PLAN_OBJECTS[-1]:
        def exhaustive() -> Any:
            return plan_goals(planner.parse_sync(PLAN_TEXT, ctx), ctx, prune=False)

        slow = _timed(exhaustive, max(3, repeats // 6) if n_robots >= 1000 else repeats)
        row |= {"exhaustive_p50_ms": pct(slow, 0.5), "exhaustive_makespan_s": exhaustive().makespan_s}
    return row


# -- plan quality -------------------------------------------------------------------------------
def plan_quality() -> list[dict[str, Any]]:
    rows = []
    planner = SymbolicPlanner()
    for path in sorted(glob.glob(str(ROOT / "scenarios" / "*.yaml"))):
        scene, robots, instructions = scenes.from_scenario(path)
        for inst in instructions:
            ctx = scenes.build(scene, robots)
            ctx.origin = inst.get("origin")  # where "me" is (issue 15)
            try:
                goals = planner.parse_sync(inst["text"], ctx)
            except BrainError:  # a scenario's instruction meant to be refused: no plan to rate
                continue
            best = plan_goals(goals, ctx)
            naive = plan_goals(goals, ctx, naive=True)
            rows.append({"scenario": Path(path).stem, "text": inst["text"], "steps": len(best.steps),
                         "robots": len({s.robot for s in best.steps}),
                         "makespan_s": best.makespan_s, "naive_makespan_s": naive.makespan_s,
                         "speedup": round(naive.makespan_s / best.makespan_s, 3)
                         if best.makespan_s else 1.0})
    return rows


def print_latency(rows: dict[str, dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="instruction -> first skill command read off the robot's socket (ms)")
    for col in ("bus", "n", "p50", "p99", "to intake p50", "in brain p50", "to robot p50",
                "raw floor p50 / p99: acked", "plain", "robobus / acked floor p50 / p99"):
        table.add_column(col, justify="right")
    for name, row in rows.items():
        st = row["stages_p50_ms"]
        floors = [row.get(f"floor_{mode}") for mode in FLOOR_MODES]
        table.add_row(name, str(row["n"]), f"{row['on_wire_p50_ms']:.2f}",
                      f"{row['on_wire_p99_ms']:.2f}", f"{st['to_intake']:.2f}",
                      f"{st['in_brain']:.2f}", f"{st['to_robot']:.2f}",
                      *(f"{f['p50_ms']:.2f} / {f['p99_ms']:.2f}" if f else "-" for f in floors),
                      (f"{row['vs_floor']['p50']:.2f}x / {row['vs_floor']['p99']:.2f}x"
                       if "vs_floor" in row else "-"))
    Console().print(table)


def latency_plot(out: Path, rows: dict[str, dict[str, Any]]) -> None:
    """CDF of each bus's samples and of the raw floor; the samples then leave the JSON."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, row in rows.items():
        lines = [(f"robobus over {name}", row.pop("samples_ms"), "-")]
        raw = "paho, same Mosquitto" if name == "mqtt" else "pyzmq, same hub"
        lines += [(f"raw {raw}, {mode} reply",
                   row.get(f"floor_{mode}", {}).pop("samples_ms", None), style)
                  for mode, style in zip(FLOOR_MODES, ("--", ":"), strict=True)]
        for label, samples, style in lines:
            if samples:
                xs = sorted(samples)
                ax.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))], style, label=label)
    ax.axvline(1.0, color="red", ls=":", lw=1, label="target p50 1 ms")
    ax.axvline(2.0, color="darkred", ls=":", lw=1, label="target p99 2 ms")
    ax.set(xscale="log", xlabel="instruction published -> first command read by the robot (ms)",
           ylabel="fraction", title="Brain response latency, demo scene, symbolic planner")
    ax.set_xticks([0.5, 1, 2, 3, 5, 10, 20], ["0.5", "1", "2", "3", "5", "10", "20"])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "brain_latency.png", dpi=120)
    plt.close(fig)


def planning_plot(out: Path, cost: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for n_objects in PLAN_OBJECTS:
        rows = [r for r in cost if r["objects"] == n_objects]
        ax.plot([r["robots"] for r in rows], [r["p50_ms"] for r in rows], "o-",
                label=f"{n_objects} objects (p50)")
    rows = [r for r in cost if "exhaustive_p50_ms" in r]
    ax.plot([r["robots"] for r in rows], [r["exhaustive_p50_ms"] for r in rows], "s--", color="grey",
            label=f"{PLAN_OBJECTS[-1]} objects, every robot costed")
    ax.plot([1000, 10000], [10, 50], "rx", ms=10, mew=2, label="targets: 10 ms, 50 ms (issue 16)")
    ax.set(xscale="log", yscale="log", xlabel="robots", ylabel="plan time (ms)",
           title="Symbolic planning cost (parse + search + validate)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "brain_planning_cost.png", dpi=120)
    plt.close(fig)


def plots(out: Path, cost: list[dict[str, Any]], quality: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    planning_plot(out, cost)

    fig, ax = plt.subplots(figsize=(8, 4))
    labels = [f"{r['scenario']}\n{r['text'][:28]}" for r in quality]
    xs = range(len(quality))
    ax.bar([x - 0.2 for x in xs], [r["naive_makespan_s"] for r in quality], 0.4, label="first capable robot")
    ax.bar([x + 0.2 for x in xs], [r["makespan_s"] for r in quality], 0.4, label="robobus planner")
    ax.set_xticks(list(xs), labels, rotation=60, ha="right", fontsize=6)
    ax.set(ylabel="makespan (s)", title="Plan quality on the shipped scenarios")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "brain_makespan.png", dpi=120)
    plt.close(fig)


def _throughput(args: argparse.Namespace, result: dict[str, Any]) -> None:
    rates = tuple(int(r) for r in args.rates.split(","))
    extra = args.brain_args.split()
    runs = {}
    with testing.hub() as url:
        print("ZeroMQ hub:")
        runs["zmq"] = brain_throughput.throughput(url, args.robots, rates, args.step_s, extra,
                                                  LOG_DIR)
    if not args.skip_mqtt:
        with testing.mosquitto() as url:
            print("Mosquitto:")
            runs["mqtt"] = brain_throughput.throughput(url, args.robots, rates, args.step_s,
                                                       extra, LOG_DIR)
    for bus, run in runs.items():
        print(f"{bus}: max sustained {run['max_sustained_per_s']} instructions/s")
    result |= {"throughput": runs, "loadavg_at_end": list(os.getloadavg()),
               "max_sustained_per_s": {bus: run["max_sustained_per_s"] for bus, run in runs.items()}}
    (args.out / "brain_throughput.json").write_text(json.dumps(result, indent=2))
    brain_throughput.plot(args.out, runs)
    print(f"wrote {args.out / 'brain_throughput.json'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency-n", type=int, default=300)
    ap.add_argument("--plan-repeats", type=int, default=30)
    ap.add_argument("--skip-mqtt", action="store_true")
    ap.add_argument("--planning-only", action="store_true",
                    help="only the planning cost: brain_planning_cost.json and its plot")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--latency-only", action="store_true", help="print latency, write nothing")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--gap-ms", type=float, default=20.0, help="idle time between instructions")
    ap.add_argument("--throughput", action="store_true",
                    help="only the throughput curve: brain_throughput.json and its plot")
    ap.add_argument("--robots", type=int, default=10, help="--throughput: copies of each demo robot")
    ap.add_argument("--rates", default=",".join(map(str, brain_throughput.RATES)),
                    help="--throughput: offered instructions/s, rising, comma-separated")
    ap.add_argument("--step-s", type=float, default=3.0, help="--throughput: seconds per rate")
    ap.add_argument("--brain-args", default="", help="--throughput: extra `robobus brain` flags")
    ap.add_argument("--brain-task-ids", action="store_true",
                    help="latency: instructions without a task id (no task-memory check)")
    args = ap.parse_args()
    global GAP_S, BRAIN_IDS
    GAP_S = args.gap_ms / 1000
    BRAIN_IDS = args.brain_task_ids
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    args.out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"bench": "brain", "ts": time.time(), "gap_ms": args.gap_ms,
                              "brain_task_ids": BRAIN_IDS,
                              "loadavg_at_start": list(os.getloadavg()),
                              "cpus": os.cpu_count()}
    if args.throughput:
        _throughput(args, result)
        return
    if args.planning_only:
        result["planning_cost"] = planning_cost(args.plan_repeats)
        result["loadavg_at_end"] = list(os.getloadavg())
        (args.out / "brain_planning_cost.json").write_text(json.dumps(result, indent=2))
        planning_plot(args.out, result["planning_cost"])
        print(f"wrote {args.out / 'brain_planning_cost.json'}")
        return
    if not args.skip_latency:
        result["latency"] = latency(args.latency_n, args.skip_mqtt)
        print_latency(result["latency"])
    if args.latency_only:
        return
    if "latency" in result:
        latency_plot(args.out, result["latency"])
    result["planning_cost"] = planning_cost(args.plan_repeats)
    result["plan_quality"] = plan_quality()
    for r in result["plan_quality"]:
        print(f"  {r['scenario']:26s} makespan {r['makespan_s']:7.2f} s vs naive "
              f"{r['naive_makespan_s']:7.2f} s  ({r['speedup']:.2f}x)  {r['text'][:50]}")
    result["loadavg_at_end"] = list(os.getloadavg())
    (args.out / "brain.json").write_text(json.dumps(result, indent=2))
    plots(args.out, result["planning_cost"], result["plan_quality"])
    print(f"wrote {args.out / 'brain.json'}")


if __name__ == "__main__":
    main()
