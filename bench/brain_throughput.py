"""Instructions per second one brain sustains (issue 16, item 2): ``python -m bench.brain
--throughput``.

A ``robobus hub`` (or Mosquitto), the memory agent and the brain run as processes on the demo
scene with its robots copied ``--robots`` times over (30: ten of each kind). A robots process
answers every skill command ``done`` at once (feedback posted, a window of acks in flight);
this process offers instructions at a steady rate for ``--step-s`` seconds per rate, rising,
and reads every task status. Per offered rate: first command p50/p99 (instruction published ->
the command read off the robots' socket), ``accepted`` lag p50/p99 (published -> that status
read here), shed (``failed`` with ``overloaded``), failed, unfinished, and how long after the
last instruction the last task ended. A rate is *sustained* when nothing is shed or left
unfinished and the last task ends within a second of the last instruction; the run stops
after two rates in a row that are not. The brain's, memory agent's and robots' CPU per
instruction are reported too: on a shared machine latency stretches with load, CPU much less.
Bounded: at most ``len(rates) * (step + 10 s)``.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import secrets
import tempfile
import time
from collections import deque
from collections.abc import Awaitable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import anyio
import psutil
import yaml

from bench import scenes
from robobus import testing
from robobus.bus import Bus, BusOptions
from robobus.schemas.messages import (
    Alive,
    Instruction,
    SkillCommand,
    SkillFeedback,
    TaskStatus,
)
from robobus.schemas.topics import Topics

RATES = (50, 100, 200, 300, 400, 600, 800, 1000, 1200, 1500, 2000)
TEXT = "Bring the fruit nearest the cup and a fruit knife to the office desk"
DRAIN_S = 10.0  # after a step: how long its tasks may take to end
FEEDBACK_WINDOW = 256


def robot_specs(copies: int) -> list[dict[str, Any]]:
    """The demo robots, ``copies`` of each kind (``realman_1_0``, ``g1_0``, ...)."""
    return [{**spec, "name": f"{spec['name']}_{k}"} for k in range(copies)
            for spec in scenes.DEMO_ROBOTS]


def robots_process(url: str, prefix: str, copies: int, conn: Connection) -> None:
    """The fleet: registers the robots, answers each command ``done``; on request, sends the
    first command's read time (wall ns) of each task seen since the last request."""
    anyio.run(_robots, url, prefix, copies, conn)


async def _robots(url: str, prefix: str, copies: int, conn: Connection) -> None:
    topics = Topics(prefix)
    first: dict[str, int] = {}
    async with Bus.connect(url, name="robots", options=BusOptions(prefix=prefix)) as bus, \
            bus.subscribe(topics.skill(), SkillCommand) as cmds, anyio.create_task_group() as tg:
        for spec in robot_specs(copies):
            reg = scenes.registration(spec)
            await bus.publish(topics.registration(reg.robot), reg, retain=True, qos=1)
            await bus.publish(topics.alive(reg.robot), Alive(reg.robot, True), retain=True, qos=1)

        async def serve() -> None:
            acks: deque[Awaitable[None]] = deque()
            async for msg in cmds:
                cmd: SkillCommand = msg.data
                first.setdefault(cmd.task_id or "", msg.ts_ns)
                robot = topics.robot_of(msg.topic) or ""
                fb = SkillFeedback(cmd.command_id, robot, cmd.skill, "done", task_id=cmd.task_id,
                                   step_id=cmd.step_id)
                acks.append(await bus.post(topics.feedback(robot), fb))
                while len(acks) >= FEEDBACK_WINDOW or (acks and not len(cmds)):
                    await acks.popleft()

        tg.start_soon(serve)
        conn.send("ready")
        while (request := await anyio.to_thread.run_sync(conn.recv)) != "stop":
            del request
            conn.send(dict(first))
            first.clear()
        tg.cancel_scope.cancel()


class Cpu:
    """CPU seconds of the agents' processes: load on a shared machine stretches latency, but
    the CPU an instruction costs the brain stays its own (1 / that is its ceiling)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.start: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        return {name: sum(p.cpu_times()[:2]) for name, p in self.procs.items()}

    def mark(self) -> None:
        self.start = self._now()

    def per(self, n: int) -> dict[str, float]:
        now = self._now()
        return {f"{name}_cpu_ms_per_instruction": (now[name] - self.start[name]) * 1e3 / max(n, 1)
                for name in now}


def pct(values: list[float], q: float) -> float | None:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else None


class Observer:
    """Every task status of the run, read here: accepted arrival, final status and time."""

    def __init__(self) -> None:
        self.accepted: dict[str, int] = {}
        self.created: dict[str, int] = {}  # task -> its accepted status created in the brain
        self.final: dict[str, tuple[str, str, int]] = {}  # task -> (status, reason, read ns)

    async def watch(self, bus: Bus, topics: Topics, *, task_status: Any) -> None:
        async with bus.subscribe(topics.task(), TaskStatus) as sub:
            task_status.started()
            async for msg in sub:
                st: TaskStatus = msg.data
                if st.status == "accepted":
                    self.accepted.setdefault(st.task_id, msg.ts_ns)
                    self.created.setdefault(st.task_id, st.ts_ns)
                elif st.status in ("done", "failed", "cancelled"):
                    self.final[st.task_id] = (st.status, st.reason or "", msg.ts_ns)


async def _offer(bus: Bus, topics: Topics, rate: int, step_s: float, tag: str) -> dict[str, int]:
    """Instructions at ``rate`` per second for ``step_s``; task id -> published (wall ns)."""
    sent: dict[str, int] = {}
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < step_s:
        while len(sent) < int(elapsed * rate) + 1:
            tid = f"{tag}-{len(sent)}"
            sent[tid] = time.time_ns()
            await bus.publish(topics.instructions, Instruction(TEXT, task_id=tid))
        await anyio.sleep(0.002)
    return sent


def _step(rate: int, step_s: float, sent: dict[str, int], first: dict[str, int],
          obs: Observer) -> dict[str, Any]:
    ms = lambda stamps: [(stamps[t] - sent[t]) / 1e6 for t in sent if t in stamps]  # noqa: E731
    finals = [obs.final[t] for t in sent if t in obs.final]
    shed = sum(1 for s, reason, _ in finals if s == "failed" and reason.startswith("overloaded"))
    failed = sum(1 for s, _, _ in finals if s != "done") - shed
    unfinished = len(sent) - len(finals)
    tail_s = (max(ns for _, _, ns in finals) - max(sent.values())) / 1e9 if finals else None
    first_ms, lag_ms, intake_ms = ms(first), ms(obs.accepted), ms(obs.created)
    row = {"offered_per_s": rate, "sent": len(sent), "step_s": step_s, "done": len(finals)
           - shed - failed, "shed": shed, "failed": failed, "unfinished": unfinished,
           "first_command_p50_ms": pct(first_ms, 0.5), "first_command_p99_ms": pct(first_ms, 0.99),
           "accepted_lag_p50_ms": pct(lag_ms, 0.5), "accepted_lag_p99_ms": pct(lag_ms, 0.99),
           # published -> the brain's intake (its accepted status created): time in its backlog
           "intake_p50_ms": pct(intake_ms, 0.5), "intake_p99_ms": pct(intake_ms, 0.99),
           "last_task_after_last_instruction_s": tail_s}
    row["sustained"] = (shed == 0 and unfinished == 0 and tail_s is not None and tail_s <= 1.0)
    return row


async def _run(url: str, copies: int, rates: tuple[int, ...], step_s: float,
               brain_args: list[str], log_dir: Path) -> list[dict[str, Any]]:
    prefix = f"t{secrets.token_hex(3)}"
    topics = Topics(prefix)
    rows: list[dict[str, Any]] = []
    spawn = mp.get_context("spawn")
    mine, theirs = spawn.Pipe()
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        scene_file = Path(tmp) / "scene.yaml"
        scene_file.write_text(yaml.safe_dump({"scene": scenes.DEMO_SCENE}))
        env = {"ROBOBUS_LOG": "warning"}
        robots = spawn.Process(target=robots_process, args=(url, prefix, copies, theirs),
                               name="bench-robots", daemon=True)
        robots.start()
        stack.callback(robots.kill)
        if not mine.poll(30):
            raise RuntimeError("the robots process did not start")
        mine.recv()
        memory = stack.enter_context(testing.spawn(testing.robobus_cmd(
            "memory", "--store", f"{tmp}/store", "--scene", str(scene_file), "--bus", url,
            "--prefix", prefix), name="memory", env=env, log_dir=log_dir))
        brain = stack.enter_context(testing.spawn(_profiled(testing.robobus_cmd(
            "brain", "--bus", url, "--prefix", prefix, "--no-recover", "--instruction-rate", "0",
            *brain_args)), name="brain", env=env, log_dir=log_dir))
        cpu = Cpu({"brain": brain.pid, "memory": memory.pid, "robots": robots.pid})
        obs = Observer()
        async with Bus.connect(url, name="bench", options=BusOptions(prefix=prefix)) as bus, \
                anyio.create_task_group() as tg:
            await tg.start(obs.watch, bus, topics)
            await _until_ready(bus, topics, obs)
            mine.send("report")  # forget the warm-up's commands
            await anyio.to_thread.run_sync(mine.recv)
            misses = 0
            for rate in rates:
                cpu.mark()
                sent = await _offer(bus, topics, rate, step_s, f"r{rate}")
                with anyio.move_on_after(DRAIN_S):
                    while not all(t in obs.final for t in sent):
                        await anyio.sleep(0.05)
                mine.send("report")
                first = await anyio.to_thread.run_sync(mine.recv)
                rows.append(row := _step(rate, step_s, sent, first, obs) | cpu.per(len(sent)))
                # per instruction taken (not shed): a shed one costs little, so past capacity
                # the per-instruction figure above falls while the brain is no cheaper
                taken = row["sent"] - row["shed"]
                row["brain_cpu_ms_per_taken"] = (row["brain_cpu_ms_per_instruction"]
                                                 * row["sent"] / max(taken, 1))
                _print(row)
                misses = 0 if row["sustained"] else misses + 1
                if misses >= 2:
                    break
                await anyio.sleep(0.5)
            mine.send("stop")
            tg.cancel_scope.cancel()
    return rows


def _profiled(argv: list[str]) -> list[str]:
    """The brain under cProfile when ``BENCH_BRAIN_PROFILE`` names the stats file to write."""
    out = os.environ.get("BENCH_BRAIN_PROFILE")
    if not out:
        return argv
    python, _, module, *args = argv  # [python, -m, module, ...]
    return [python, "-m", "bench.profiled", out, module, *args]


async def _until_ready(bus: Bus, topics: Topics, obs: Observer) -> None:
    """Until the brain and memory are up: a warm-up instruction ends ``done``."""
    with anyio.fail_after(60):
        for i in range(1000):
            tid = f"warm-{i}"
            await bus.publish(topics.instructions, Instruction(TEXT, task_id=tid))
            with anyio.move_on_after(1.0):
                while tid not in obs.final:
                    await anyio.sleep(0.01)
            if obs.final.get(tid, ("",))[0] == "done":
                return


def _print(row: dict[str, Any]) -> None:
    f = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    print(f"  {row['offered_per_s']:5d}/s sent {row['sent']:5d}  first cmd p50/p99 "
          f"{f(row['first_command_p50_ms'])}/{f(row['first_command_p99_ms'])} ms  accepted lag "
          f"p50/p99 {f(row['accepted_lag_p50_ms'])}/{f(row['accepted_lag_p99_ms'])} ms  intake p50 "
          f"{f(row['intake_p50_ms'])} ms  "
          f"shed {row['shed']} failed {row['failed']} unfinished {row['unfinished']}  "
          f"tail {f(row['last_task_after_last_instruction_s'])} s  brain CPU "
          f"{row['brain_cpu_ms_per_instruction']:.2f} ms/instruction "
          f"({row['brain_cpu_ms_per_taken']:.2f} per taken)  "
          f"{'sustained' if row['sustained'] else 'NOT sustained'}", flush=True)


def throughput(url: str, copies: int, rates: tuple[int, ...], step_s: float,
               brain_args: list[str], log_dir: Path) -> dict[str, Any]:
    rows = anyio.run(_run, url, copies, rates, step_s, brain_args, log_dir)
    ok = [r["offered_per_s"] for r in rows if r["sustained"]]
    return {"robots": copies * len(scenes.DEMO_ROBOTS), "step_s": step_s,
            "brain_args": brain_args, "max_sustained_per_s": max(ok) if ok else 0,
            "curve": rows}


def plot(out: Path, result: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for bus, res in result.items():
        rows = res["curve"]
        xs = [r["offered_per_s"] for r in rows]
        for key, style, label in (("first_command_p50_ms", "o-", "first command p50"),
                                  ("first_command_p99_ms", "s--", "first command p99"),
                                  ("accepted_lag_p99_ms", "^:", "accepted lag p99")):
            ax.plot(xs, [r[key] or float("nan") for r in rows], style, label=f"{bus}: {label}")
        if res["max_sustained_per_s"]:
            ax.axvline(res["max_sustained_per_s"], color="grey", ls=":", lw=1)
    ax.axhline(5.0, color="red", ls=":", lw=1, label="target p99 5 ms at 80% of max")
    ax.set(xscale="log", yscale="log", xlabel="offered instructions per second",
           ylabel="ms", title="One brain's throughput, demo scene (grey: max sustained)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "brain_throughput.png", dpi=120)
    plt.close(fig)
