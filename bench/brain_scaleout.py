"""Brains scale out (issue 16, item 4): instructions per second with 1, 2 and 4 group brains.

    python -m bench.brain_scaleout [--brains 1,2,4] [--robots 16] [--window 48] [--seconds 5]
                                   [--bus zmq|mqtt] [--out bench/results]

For each count N: one ``robobus hub`` (or Mosquitto), the memory agent and N brains run as
separate processes, brain i leading group ``g{i}`` (``--group g{i} --robots 'g{i}_*'``, rate
limit off, no recovery) of ``--robots`` robots of its own on the demo scene. One driver process
per group plays that group's robots (retained registrations; every skill command answered
``done`` at once, so the world stays the same) and keeps ``--window`` instructions in flight on
``P/groups/g{i}/instructions`` (closed loop, below the brain's default ``--max-pending`` of 64):
"bring the apple to the office desk", a 4-step plan on one of the group's robots. It counts the
tasks that end ``done`` in ``--seconds`` after a one-second warm-up. Every run is bounded: the
processes stop after warm-up + seconds + 5 s whatever happens.

Writes ``brain_scaleout.json`` (per N: instructions/s, per-group split, send -> done p50/p99,
failed and shed, CPU cores used by each brain, the hub and memory over the measured seconds, and each
brain's CPU milliseconds per task over the whole run) and ``brain_scaleout.png``.
On the 2-core VM the brains share two cores with the hub, memory and drivers, so the figures
show the mechanism; the scaling is measured on the 16-core machine.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import multiprocessing
import os
import secrets
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import msgspec
import psutil
import yaml

from bench import scenes
from robobus import testing
from robobus.bus import Bus, BusOptions
from robobus.schemas.messages import (
    Alive,
    BrainStatus,
    Instruction,
    SkillCommand,
    SkillFeedback,
    TaskStatus,
)
from robobus.schemas.topics import Topics

ROOT = Path(__file__).resolve().parents[1]
LOG_DIR = Path(tempfile.gettempdir()) / "robobus-bench-scaleout"
TEXT = "bring the apple to the office desk"
WARMUP_S = 1.0
FINAL = frozenset({"done", "failed", "cancelled"})
START_PLACES = ("kitchenTable", "customTable", "officeDesk")


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def robots_of(group: str, n: int) -> list[dict[str, Any]]:
    return [{"name": f"{group}_{j}", "type": "bench_bot", "mobile": True, "hands": 1,
             "speed": 1.0, "start": START_PLACES[j % len(START_PLACES)]} for j in range(n)]


# -- one driver process per group --------------------------------------------------------------
class Driver:
    """One group's robots (instant ``done``) and a closed loop of instructions to its brain."""

    def __init__(self, bus: Bus, topics: Topics, group: str, robots: list[str], window: int) -> None:
        self.bus, self.topics, self.group, self.robots = bus, topics, group, robots
        self.slots = anyio.Semaphore(window)
        self.sent: dict[str, float] = {}
        self.ended: list[tuple[float, float, str]] = []  # (sent, ended, status)
        self.shed = 0

    async def serve(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        async with contextlib.AsyncExitStack() as stack, anyio.create_task_group() as tg:
            for robot in self.robots:  # one subscription per robot: no other group's traffic
                sub = await stack.enter_async_context(
                    self.bus.subscribe(self.topics.skill(robot), SkillCommand))
                tg.start_soon(self._answer, sub, robot)
            tasks = await stack.enter_async_context(self.bus.subscribe(self.topics.task()))
            tg.start_soon(self._follow, tasks)
            task_status.started()

    async def _answer(self, sub: Any, robot: str) -> None:
        async for msg in sub:
            cmd: SkillCommand = msg.data
            fb = SkillFeedback(cmd.command_id, robot, cmd.skill,
                               "done" if cmd.action == "run" else "cancelled",
                               task_id=cmd.task_id, step_id=cmd.step_id)
            await self.bus.publish(self.topics.feedback(robot), fb, qos=1)

    async def _follow(self, sub: Any) -> None:
        mine = f"{self.topics.task(self.group)}."
        async for msg in sub:  # untyped: other groups' statuses cost a string compare only
            if not msg.topic.startswith(mine):
                continue
            st = msgspec.msgpack.decode(msg.payload, type=TaskStatus)
            sent = self.sent.pop(st.task_id, None) if st.status in FINAL else None
            if sent is not None:
                self.ended.append((sent, time.monotonic(), st.status))
                self.shed += "overloaded" in (st.reason or "")
                self.slots.release()

    async def offer(self, until: float) -> None:
        n = 0
        topic = self.topics.group_instructions(self.group)
        while time.monotonic() < until:
            await self.slots.acquire()
            tid = f"{self.group}.{n}"
            n += 1
            self.sent[tid] = time.monotonic()
            await self.bus.publish(topic, Instruction(TEXT, task_id=tid), qos=1)


async def _drive(url: str, prefix: str, group: str, n_robots: int, window: int,
                 seconds: float) -> dict[str, Any]:
    topics = Topics(prefix)
    robots = [r["name"] for r in robots_of(group, n_robots)]
    async with Bus.connect(url, name=f"bench-{group}", options=BusOptions(prefix=prefix)) as bus, \
            anyio.create_task_group() as tg:
        drv = Driver(bus, topics, group, robots, window)
        await tg.start(drv.serve)
        start, wall0 = time.monotonic(), time.time()
        t0, t1 = start + WARMUP_S, start + WARMUP_S + seconds
        with anyio.move_on_after(WARMUP_S + seconds + 5):
            await drv.offer(t1)
            while drv.sent and time.monotonic() < t1 + 2:  # let the window drain, bounded
                await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    inside = [(s, e, st) for s, e, st in drv.ended if t0 <= e <= t1]
    done = [(e - s) * 1000 for s, e, st in inside if st == "done"]
    return {"group": group, "done": len(done), "per_s": len(done) / seconds,
            "ended_in_run": len(drv.ended),
            "window_wall": (wall0 + WARMUP_S, wall0 + WARMUP_S + seconds),
            "failed": sum(st != "done" for _, _, st in inside), "shed": drv.shed,
            "p50_ms": pct(done, 0.5), "p99_ms": pct(done, 0.99)}


def drive(url: str, prefix: str, group: str, n_robots: int, window: int,
          seconds: float) -> dict[str, Any]:
    """Process entry point (multiprocessing spawn)."""
    return anyio.run(_drive, url, prefix, group, n_robots, window, seconds)


# -- one configuration: N brains ---------------------------------------------------------------
async def _setup(url: str, prefix: str, groups: list[str], n_robots: int) -> None:
    """Register every group's robots (retained), then wait for every group's brain ``ready``."""
    topics = Topics(prefix)
    async with Bus.connect(url, name="bench-setup", options=BusOptions(prefix=prefix)) as bus:
        for group in groups:
            for spec in robots_of(group, n_robots):
                reg = scenes.registration(spec)
                await bus.publish(topics.registration(reg.robot), reg, retain=True, qos=1)
                await bus.publish(topics.alive(reg.robot), Alive(reg.robot, True), retain=True,
                                  qos=1)
        async with bus.subscribe(topics.group_brain_status(), BrainStatus) as sub:
            ready: set[str] = set()
            with anyio.fail_after(60):
                while not set(groups) <= ready:
                    msg = await sub.get()
                    if msg.data.state == "ready":
                        ready.add(msg.topic.split("/")[-3])


class CpuSampler:
    """CPU seconds of the fleet's processes, sampled every 0.2 s on a thread, so that the
    cores they used can be read over the drivers' measured window afterwards."""

    def __init__(self, procs: dict[str, psutil.Process]) -> None:
        self.procs, self.samples = procs, [(time.time(), _cpu(procs))]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.samples.append((time.time(), _cpu(self.procs)))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def cores(self, t0: float, t1: float) -> dict[str, float]:
        """Cores each process used between the samples nearest ``t0`` and ``t1``."""
        a = min(self.samples, key=lambda s: abs(s[0] - t0))
        b = min(self.samples, key=lambda s: abs(s[0] - t1))
        span = max(1e-9, b[0] - a[0])
        return {k: round((b[1][k] - a[1][k]) / span, 3) for k in b[1] if k in a[1]}


def _cpu(procs: dict[str, psutil.Process]) -> dict[str, float]:
    out = {}
    for name, p in procs.items():
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            out[name] = t.user + t.system
    return out


def run_brains(url: str, n: int, n_robots: int, window: int, seconds: float,
               infra: psutil.Process | None) -> dict[str, Any]:
    prefix = f"so{secrets.token_hex(3)}"
    groups = [f"g{i}" for i in range(n)]
    env = {"ROBOBUS_LOG": "warning"}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        scene_file = Path(tmp) / "scene.yaml"
        scene_file.write_text(yaml.safe_dump({"scene": scenes.DEMO_SCENE}))
        procs = {"memory": stack.enter_context(testing.spawn(testing.robobus_cmd(
            "memory", "--store", f"{tmp}/store", "--scene", str(scene_file), "--bus", url,
            "--prefix", prefix), name="memory", env=env, log_dir=LOG_DIR))}
        for g in groups:
            procs[f"brain-{g}"] = stack.enter_context(testing.spawn(testing.robobus_cmd(
                "brain", "--bus", url, "--prefix", prefix, "--group", g, "--robots", f"{g}_*",
                "--no-recover", "--instruction-rate", "0"), name=f"brain-{g}", env=env,
                log_dir=LOG_DIR))
        anyio.run(_setup, url, prefix, groups, n_robots)
        watched = {k: psutil.Process(p.pid) for k, p in procs.items()}
        if infra is not None:
            watched["hub" if url.startswith("zmq") else "broker"] = infra
        before, sampler = _cpu(watched), CpuSampler(watched)
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(n, mp_context=ctx) as pool:
            rows = list(pool.map(drive, *zip(*[(url, prefix, g, n_robots, window, seconds)
                                               for g in groups], strict=True)))
        sampler.stop()
        after = _cpu(watched)
    t0 = min(r["window_wall"][0] for r in rows)
    cpu = sampler.cores(t0, max(r["window_wall"][1] for r in rows))
    for r in rows:  # the brain's CPU per task over the whole run (warm-up and drain too)
        spent = after.get(f"brain-{r['group']}", 0.0) - before.get(f"brain-{r['group']}", 0.0)
        r["brain_cpu_ms_per_task"] = round(1000 * spent / max(1, r["ended_in_run"]), 3)
    done = rows
    return {"brains": n, "robots_per_group": n_robots, "window": window, "seconds": seconds,
            "per_s": sum(r["per_s"] for r in done), "groups": done,
            "failed": sum(r["failed"] for r in done), "shed": sum(r["shed"] for r in done),
            "p50_ms": max(r["p50_ms"] for r in done), "p99_ms": max(r["p99_ms"] for r in done),
            "cpu_cores": cpu, "loadavg": list(os.getloadavg())}


def plot(out: Path, rows: list[dict[str, Any]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [r["brains"] for r in rows]
    ax.plot(xs, [r["per_s"] for r in rows], "o-", label="tasks done / s (all groups)")
    ax.plot(xs, [rows[0]["per_s"] * x / xs[0] for x in xs], ":", color="grey",
            label="linear from the first")
    ax.set(xlabel="brains (one robot group each)", ylabel="instructions / s",
           title=title, xticks=xs)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "brain_scaleout.png", dpi=120)
    plt.close(fig)


def _infra(url: str) -> psutil.Process | None:
    """The hub or broker process listening on ``url``'s port (for its CPU), if found."""
    port = int(url.rsplit(":", 1)[1].split("/")[0].split("?")[0])
    with contextlib.suppress(psutil.Error):
        for c in psutil.net_connections("tcp"):
            if c.laddr and c.laddr.port == port and c.status == "LISTEN" and c.pid:
                return psutil.Process(c.pid)
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--brains", default="1,2,4", help="brain counts to run, comma-separated")
    ap.add_argument("--robots", type=int, default=16, help="robots per group")
    ap.add_argument("--window", type=int, default=48,
                    help="instructions in flight per group (below the brain's max-pending 64)")
    ap.add_argument("--seconds", type=float, default=5.0, help="measured seconds per count")
    ap.add_argument("--bus", choices=("zmq", "mqtt"), default="zmq")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    counts = [int(x) for x in args.brains.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"bench": "brain_scaleout", "ts": time.time(), "bus": args.bus,
                              "cpus": os.cpu_count(), "loadavg_at_start": list(os.getloadavg()),
                              "text": TEXT, "rows": []}
    with (testing.hub() if args.bus == "zmq" else testing.mosquitto()) as url:
        infra = _infra(url)
        for n in counts:
            row = run_brains(url, n, args.robots, args.window, args.seconds, infra)
            result["rows"].append(row)
            split = ", ".join(f"{g['per_s']:.0f} ({g['brain_cpu_ms_per_task']:.1f} ms cpu/task)"
                              for g in row["groups"])
            print(f"{n} brain(s): {row['per_s']:7.1f} instructions/s  (per group "
                  f"{split}; send -> done p50 "
                  f"{row['p50_ms']:.0f} ms, p99 {row['p99_ms']:.0f} ms; failed {row['failed']}, "
                  f"shed {row['shed']}; cpu {row['cpu_cores']})", flush=True)
    result["loadavg_at_end"] = list(os.getloadavg())
    name = "brain_scaleout" if args.bus == "zmq" else "brain_scaleout_mqtt"
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2))
    if args.bus == "zmq":
        plot(args.out, result["rows"], f"Brains scale out ({os.cpu_count()} CPUs, ZeroMQ hub)")
    print(f"wrote {args.out / (name + '.json')}")


if __name__ == "__main__":
    main()
