"""A thousand live robots (issue 16 item 7): one simulator process, the brain and memory agent.

    python -m bench.fleet [--robots 1000] [--quiet 10] [--window 20] [--instructions 20]
                          [--skip-mqtt] [--out bench/results]

For each bus (a ``robobus hub`` process, then one Mosquitto) it starts the memory agent, the
brain and ``robobus edge --fleet N`` as separate processes on the demo scene, waits until every
robot is registered and online, then over ``--window`` seconds measures:

* CPU of the hub or broker, the brain, the memory agent and the simulator (% of one core,
  from the processes' CPU times);
* state rate and lag: each ``RobotState`` stamp (the simulator's clock) to its arrival here, for 50
  robots' state topics (this process subscribes to those only, so as not to be the bottleneck);
* an instruction's latency: ``ROBOT, go to PLACE`` published here -> the robot's skill command
  read here, for robots of the fleet, alternately to two places.

The same run with a quiet fleet (``--quiet`` robots) gives the instruction latency to compare
with. Writes ``fleet.json`` and ``fleet.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import psutil
import yaml

from bench import scenes
from robobus import testing
from robobus.bus import Bus, BusOptions
from robobus.schemas.messages import Alive, Instruction, RobotState, SkillCommand
from robobus.schemas.topics import Topics

ROOT = Path(__file__).resolve().parents[1]
LOG_DIR = Path(tempfile.gettempdir()) / "robobus-bench-fleet"
ENV = {"ROBOBUS_LOG": "warning"}
PROFILE = "realman_single_arm"
PLACES = ("officeDesk", "kitchenTable")
SAMPLED = 50


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def _listener(port: int) -> psutil.Process:
    """The process listening on ``port`` (the hub or the broker)."""
    for conn in psutil.net_connections(kind="tcp"):
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
            return psutil.Process(conn.pid)
    raise RuntimeError(f"nothing listens on port {port}")


@contextlib.contextmanager
def _infra(kind: str) -> Iterator[tuple[str, psutil.Process]]:
    cm = testing.hub() if kind == "zmq" else testing.mosquitto()
    with cm as url:
        yield url, _listener(int(url.rsplit(":", 1)[1]))


class Watch:
    """What this process sees: online robots, sampled state lags, skill commands."""

    def __init__(self, topics: Topics, names: list[str]) -> None:
        self.topics, self.names = topics, names
        self.online: set[str] = set()
        #: deaths (``Alive(online=False)``) of fleet robots seen so far: a robot the hub or
        #: broker declared dead, or that said goodbye
        self.deaths = 0
        self.lags_ms: list[float] = []
        #: ms between the stamps of one robot's consecutive states received here: the
        #: profile's period when all arrive; a simulator falling behind stretches every
        #: interval, while states lost on the way leave gaps of two periods or more
        self.intervals_ms: list[float] = []
        self.sampling = False
        self.commands: dict[str, int] = {}  # task id -> arrival (perf_counter_ns)
        self.changed = anyio.Event()

    async def alive(self, bus: Bus) -> None:
        async with bus.subscribe(self.topics.alive("+"), Alive) as sub:
            async for msg in sub:
                (self.online.add if msg.data.online else self.online.discard)(msg.data.robot)
                self.deaths += not msg.data.online
                self._kick()

    async def states(self, bus: Bus, robot: str) -> None:
        async with bus.subscribe(self.topics.state(robot), RobotState) as sub:
            last = 0
            async for msg in sub:
                if self.sampling:
                    self.lags_ms.append((time.time_ns() - msg.data.ts_ns) / 1e6)
                    if last:
                        self.intervals_ms.append((msg.data.ts_ns - last) / 1e6)
                last = msg.data.ts_ns

    async def skills(self, bus: Bus) -> None:
        async with bus.subscribe(self.topics.skill(), SkillCommand) as sub:
            async for msg in sub:
                self.commands.setdefault(msg.data.task_id or "", time.perf_counter_ns())
                self._kick()

    def _kick(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()

    async def until(self, predicate: Any, timeout: float) -> None:
        with anyio.fail_after(timeout):
            while not predicate():
                await self.changed.wait()


def _cmd(label: str, *args: str) -> list[str]:
    """``robobus ARGS``, under cProfile when ``BENCH_FLEET_PROFILE`` names a folder."""
    cmd = testing.robobus_cmd(*args)
    folder = os.environ.get("BENCH_FLEET_PROFILE")
    if not folder:
        return cmd
    Path(folder).mkdir(parents=True, exist_ok=True)
    return [cmd[0], "-m", "bench.profiled", str(Path(folder) / f"{label}.prof"), *cmd[2:]]


def _cpu(procs: dict[str, psutil.Process]) -> dict[str, float]:
    out = {}
    for name, p in procs.items():
        t = p.cpu_times()
        out[name] = t.user + t.system + sum(c.cpu_times().user + c.cpu_times().system
                                            for c in p.children(recursive=True))
    return out


async def run_one(kind: str, robots: int, window: float, n_instr: int) -> dict[str, Any]:
    prefix = f"f{secrets.token_hex(3)}"
    topics = Topics(prefix)
    names = [f"fb_{i:04d}" for i in range(robots)]
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        url, infra = stack.enter_context(_infra(kind))
        scene_file = Path(tmp) / "scene.yaml"
        scene_file.write_text(yaml.safe_dump({"scene": scenes.DEMO_SCENE}))
        procs = {"hub" if kind == "zmq" else "mosquitto": infra}
        for name, args in (("memory", ("memory", "--store", f"{tmp}/store", "--scene", str(scene_file))),
                           ("brain", ("brain", "--no-recover", "--instruction-rate", "0")),
                           ("fleet", ("edge", "--fleet", str(robots), "--profile", PROFILE,
                                      "--name", "fb", "--at", ",".join(PLACES),
                                      "--time-scale", "0.01"))):
            proc = stack.enter_context(testing.spawn(_cmd(
                f"{kind}-{robots}-{name}", *args, "--bus", url, "--prefix", prefix),
                name=f"{kind}-{name}", env=ENV, log_dir=LOG_DIR))
            procs[name] = psutil.Process(proc.pid)
        watch = Watch(topics, names)
        async with Bus.connect(url, name="bench", options=BusOptions(prefix=prefix)) as bus, \
                anyio.create_task_group() as tg:
            tg.start_soon(watch.alive, bus)
            tg.start_soon(watch.skills, bus)
            sampled = names[:: max(1, robots // SAMPLED)][:SAMPLED]
            for robot in sampled:
                tg.start_soon(watch.states, bus, robot)
            t0 = time.monotonic()
            limit = 60 + robots * 0.3  # then measure with the robots online by then
            with anyio.move_on_after(limit):
                await watch.until(lambda: watch.online >= set(names), timeout=limit + 1)
            startup_s = time.monotonic() - t0
            online = len(watch.online & set(names))
            dead_at_startup = watch.deaths
            await anyio.sleep(3.0)  # let the start-up traffic settle
            cpu0, w0 = _cpu(procs), time.monotonic()
            watch.sampling = True
            await anyio.sleep(window)
            watch.sampling = False
            cpu1, w1 = _cpu(procs), time.monotonic()
            latencies = await _instructions(bus, topics, watch, names, n_instr)
            tg.cancel_scope.cancel()
        if os.environ.get("BENCH_FLEET_PROFILE"):  # time to write the profiles (1,000 goodbyes)
            for name in ("fleet", "brain", "memory"):
                procs[name].terminate()
                with contextlib.suppress(psutil.TimeoutExpired):
                    procs[name].wait(60)
    cpu = {k: round(100 * (cpu1[k] - cpu0[k]) / (w1 - w0), 1) for k in cpu0}
    hz = len(watch.lags_ms) / (len(sampled) * window)
    return {"bus": kind, "robots": robots, "startup_s": round(startup_s, 1),
            # fewer than ``robots`` when not all were online within the start-up limit
            "online_after_startup": online,
            "deaths_during_startup": dead_at_startup, "window_s": window,
            "cpu_percent_of_one_core": cpu,
            # CPU per state the fleet published (states/s from the sampled robots' rate)
            "cpu_us_per_state": {k: round(v * 1e4 / (hz * robots), 1) if hz else None
                                 for k, v in cpu.items()},
            "state_lag_p50_ms": pct(watch.lags_ms, 0.5),
            "state_lag_p99_ms": pct(watch.lags_ms, 0.99), "state_samples": len(watch.lags_ms),
            # states received per sampled robot per second: the profile's 10 Hz if all keep up
            "state_hz_per_robot": round(hz, 2),
            "state_interval_p50_ms": pct(watch.intervals_ms, 0.5),
            "state_interval_p99_ms": pct(watch.intervals_ms, 0.99),
            # intervals of 1.5 periods or more: a state missing here (or a stalled ticker)
            "state_gaps": sum(i >= 150 for i in watch.intervals_ms),
            # intervals by whole periods (100 ms): losses on the way leave 2, 3...; a stalled
            # simulator leaves lengths in between
            "state_intervals_by_period": _by_period(watch.intervals_ms),
            "instruction_p50_ms": pct(latencies, 0.5), "instruction_p99_ms": pct(latencies, 0.99),
            "instructions": len(latencies), "instruction_samples_ms": latencies}


def _by_period(intervals_ms: list[float], period_ms: float = 100.0) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in intervals_ms:
        key = f"{i / period_ms:.1f}" if i >= 1.5 * period_ms else "<1.5"
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items()))


async def _instructions(bus: Bus, topics: Topics, watch: Watch, names: list[str],
                        n: int) -> list[float]:
    """Publish ``ROBOT, go to PLACE`` one at a time, always to the place the robot is not at
    (robot i starts at ``PLACES[i % 2]``); ms to the robot's skill command."""
    out = []
    at = {name: PLACES[i % 2] for i, name in enumerate(names)}
    for i in range(n):
        robot = names[(i * 7) % len(names)]
        place = at[robot] = PLACES[1 - PLACES.index(at[robot])]
        text = f"{robot}, go to the {'office desk' if place == 'officeDesk' else 'kitchen table'}"
        tid = f"I{i}-{secrets.token_hex(2)}"
        t0 = time.perf_counter_ns()
        await bus.publish(topics.instructions, Instruction(text, task_id=tid), qos=1)
        with anyio.move_on_after(10):
            await watch.until(lambda t=tid: t in watch.commands, timeout=10)
        if tid in watch.commands:
            out.append((watch.commands[tid] - t0) / 1e6)
        await anyio.sleep(0.2)
    return out


def plot(out: Path, rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for row in rows:
        xs = sorted(row.pop("instruction_samples_ms"))
        label = f"{row['bus']}, {row['robots']} robots"
        a.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))], "-", label=label)
    a.set(xscale="log", xlabel="instruction -> skill command at the robot (ms)", ylabel="fraction",
          title="Instruction latency, live fleet vs quiet fleet")
    a.legend(fontsize=8)
    big = [r for r in rows if r["robots"] == max(x["robots"] for x in rows)]
    names = sorted({k for r in big for k in r["cpu_percent_of_one_core"]})
    for j, row in enumerate(big):
        b.bar([i + 0.4 * j for i in range(len(names))],
              [row["cpu_percent_of_one_core"].get(n, 0) for n in names], 0.4, label=row["bus"])
    b.set_xticks([i + 0.2 for i in range(len(names))], names)
    b.set(ylabel="CPU (% of one core)", title=f"{big[0]['robots']} robots at 10 Hz, per process")
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "fleet.png", dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--robots", type=int, default=1000)
    ap.add_argument("--quiet", type=int, default=10, help="robots in the quiet-fleet baseline (0: none)")
    ap.add_argument("--window", type=float, default=20.0, help="seconds of CPU and lag sampling")
    ap.add_argument("--instructions", type=int, default=20)
    ap.add_argument("--skip-mqtt", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for kind in ("zmq",) + (() if args.skip_mqtt else ("mqtt",)):
        for n in ((args.quiet,) if args.quiet else ()) + (args.robots,):
            row = testing_run(kind, n, args.window, args.instructions)
            _against_quiet(row, rows)
            rows.append(row)
            print(f"  {kind:4s} {n:5d} robots: start {row['startup_s']} s "
                  f"({row['online_after_startup']} online, {row['deaths_during_startup']} deaths), "
                  f"CPU {row['cpu_percent_of_one_core']}, us/state {row['cpu_us_per_state']}, "
                  f"{row['state_hz_per_robot']} Hz (interval p50/p99 "
                  f"{row['state_interval_p50_ms']:.0f}/{row['state_interval_p99_ms']:.0f} ms, "
                  f"{row['state_gaps']} gaps), "
                  f"state lag p50/p99 {row['state_lag_p50_ms']:.1f}/{row['state_lag_p99_ms']:.1f} ms, "
                  f"instruction p50/p99 {row['instruction_p50_ms']:.2f}/{row['instruction_p99_ms']:.2f} ms",
                  flush=True)
    result = {"bench": "fleet", "ts": time.time(), "cpus": os.cpu_count(),
              "loadavg_at_end": list(os.getloadavg()), "runs": rows}
    plot(args.out, rows)
    (args.out / "fleet.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out / 'fleet.json'}")


def _against_quiet(row: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """The instruction latency as a multiple of the quiet fleet's on the same bus."""
    quiet = [r for r in rows if r["bus"] == row["bus"] and r["robots"] < row["robots"]]
    if quiet:
        for q in ("p50", "p99"):
            base = quiet[0][f"instruction_{q}_ms"]
            row[f"instruction_{q}_vs_quiet"] = round(row[f"instruction_{q}_ms"] / base, 2) \
                if base else None
        # CPU per state beyond the quiet fleet's (each agent's timers and heartbeats cost
        # about a tenth of a core however few robots there are)
        states = {r["robots"]: r["state_hz_per_robot"] * r["robots"] for r in (row, quiet[0])}
        extra = states[row["robots"]] - states[quiet[0]["robots"]]
        row["cpu_us_per_extra_state"] = {
            k: round((v - quiet[0]["cpu_percent_of_one_core"].get(k, 0)) * 1e4 / extra, 1)
            for k, v in row["cpu_percent_of_one_core"].items()} if extra > 0 else None


def testing_run(kind: str, robots: int, window: float, n_instr: int) -> dict[str, Any]:
    from robobus.bus.api import run

    return run(run_one, kind, robots, window, n_instr)


if __name__ == "__main__":
    main()
