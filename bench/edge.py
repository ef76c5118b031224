"""Edge benchmark: skill dispatch latency over ZeroMQ, and telemetry from 100 robots.

    python -m bench.edge [--dispatch-n 2000] [--robots 100] [--hz 10] [--duration 10] [--mqtt]

* **Dispatch latency**: a ``robobus hub`` process; in this process an edge agent (its own bus
  connection) with a ``probe`` skill, and a driver (another connection). Each sample runs from
  just before the driver publishes the ``SkillCommand`` (QoS 1) to the first line of the probe
  skill running in the edge agent, one command at a time (the next is sent 2 ms after the
  previous one's ``done``). Both ends read the same monotonic clock. The same over the
  in-process ``memory://`` bus gives the edge agent's own share; ``--mqtt`` repeats it through
  a private Mosquitto.
* **Telemetry**: a child process runs ``--robots`` edge agents (one shared connection) that
  publish ``RobotState`` at ``--hz`` each; this process subscribes to every robot's state and
  measures lag (receive wall clock - the state's ``ts_ns``) over ``--duration`` seconds, per
  second, with the slope of the lag over time (growth) and the delivered/expected ratio.

Prints a table, writes ``bench/results/edge.json`` and ``bench/results/edge.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import msgspec
import numpy as np
import structlog

from robobus import testing
from robobus.bus import Bus, BusOptions, Overflow
from robobus.edge_agent.agent import EdgeAgent, EdgeConfig, edge_bus_options
from robobus.edge_agent.profile import load_profile, parse_profile
from robobus.schemas.messages import RobotState, SkillCommand, SkillFeedback
from robobus.schemas.topics import Topics
from robobus.skills.context import SkillContext
from robobus.skills.registry import SkillRegistry

OUT = Path(__file__).resolve().parent / "results"
PROBES = SkillRegistry()
_first_line: dict[str, int] = {}
PACE_S = 0.002
TERMINAL = {"done", "failed", "cancelled", "rejected"}


class ProbeArgs(msgspec.Struct):
    n: int = 0


@PROBES.skill("probe", timeout=5.0, resource="none")
async def probe(ctx: SkillContext, args: ProbeArgs) -> None:
    """Record when the skill's first line runs."""
    _first_line[ctx.command.command_id] = time.perf_counter_ns()


def quiet() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))


def stats_us(samples_ns: list[int]) -> dict[str, float]:
    a = np.asarray(samples_ns, dtype=float) / 1e3
    return {"n": int(a.size), "p50_us": float(np.percentile(a, 50)),
            "p90_us": float(np.percentile(a, 90)), "p99_us": float(np.percentile(a, 99)),
            "max_us": float(a.max()), "mean_us": float(a.mean())}


# -- dispatch latency ------------------------------------------------------------------------
async def dispatch(url: str, n: int, warmup: int = 200) -> list[int]:
    """Publish ``n`` probe commands one at a time; return the wire-to-first-line latencies."""
    prefix = f"b{secrets.token_hex(3)}"
    t = Topics(prefix)
    profile = parse_profile({"name": "bench", "type": "bench", "embodiment": {"mobile": False},
                             "skills": {"probe": {}}, "telemetry_hz": 1}, "bench", PROBES)
    # No per-sender command rate limit: the bench sends ~300 commands/s on purpose.
    config = EdgeConfig(profile, registry=PROBES, resume_timeout_s=0.05, time_scale=0,
                        command_rate_limit=None)
    lat: list[int] = []
    dec = msgspec.msgpack.Decoder(SkillFeedback)
    async with Bus.connect(url, name="bench", options=edge_bus_options("bench", prefix)) as ebus, \
            Bus.connect(url, name="driver", options=BusOptions(prefix=prefix)) as dbus, \
            dbus.subscribe(t.feedback("bench")) as feedback, anyio.create_task_group() as tg:
        await tg.start(EdgeAgent(ebus, config).serve)
        topic = t.skill("bench", "probe")
        for i in range(warmup + n):
            cid = f"c{i}"
            cmd = SkillCommand(command_id=cid, skill="probe", args={"n": i})
            t0 = time.perf_counter_ns()
            await dbus.publish(topic, cmd, qos=1)
            with anyio.fail_after(10):
                while (fb := dec.decode((await feedback.get()).payload)).command_id != cid \
                        or fb.status not in TERMINAL:
                    pass
            if fb.status != "done":
                raise RuntimeError(f"probe {cid} ended {fb.status}: {fb.reason}")
            if i >= warmup:
                lat.append(_first_line.pop(cid) - t0)
            await anyio.sleep(PACE_S)  # let the previous command's tail (state publish) finish
        tg.cancel_scope.cancel()
    return lat


# -- telemetry -------------------------------------------------------------------------------
async def fleet(url: str, prefix: str, robots: int, hz: float) -> None:
    """Child process: ``robots`` edge agents on one connection, telemetry at ``hz`` each."""
    quiet()
    base = load_profile("realman_single_arm")
    profile = msgspec.structs.replace(base, telemetry_hz=hz)
    async with Bus.connect(url, name="fleet", options=BusOptions(prefix=prefix)) as bus, \
            anyio.create_task_group() as tg:
        for i in range(robots):
            config = EdgeConfig(profile, name=f"r{i:03d}", resume_timeout_s=0.2)
            tg.start_soon(EdgeAgent(bus, config).serve)
        print("ready", flush=True)
        await anyio.sleep_forever()


async def telemetry(url: str, robots: int, hz: float, duration: float) -> dict[str, Any]:
    prefix = f"b{secrets.token_hex(3)}"
    argv = [sys.executable, __file__, "_fleet", "--bus", url, "--prefix", prefix,
            "--robots", str(robots), "--hz", str(hz)]
    rows: list[tuple[float, float]] = []  # (seconds since start, lag ms)
    dec = msgspec.msgpack.Decoder(RobotState)
    async with Bus.connect(url, name="observer", options=BusOptions(prefix=prefix)) as bus, \
            bus.subscribe(Topics(prefix).state("+"), maxsize=100_000,
                          overflow=Overflow.BLOCK) as sub:
        with testing.spawn(argv, name="fleet"):
            seen: set[str] = set()  # readiness: every robot has published once
            with anyio.fail_after(60):
                while len(seen) < robots:
                    seen.add((await sub.get()).topic)
            t0 = time.time_ns()
            end = t0 + int(duration * 1e9)
            while (now := time.time_ns()) < end:
                msg = await sub.get()
                lag_ns = time.time_ns() - dec.decode(msg.payload).ts_ns
                rows.append(((now - t0) / 1e9, lag_ns / 1e6))
    return summarise(rows, robots, hz, duration)


def summarise(rows: list[tuple[float, float]], robots: int, hz: float,
              duration: float) -> dict[str, Any]:
    t = np.array([r[0] for r in rows])
    lag = np.array([r[1] for r in rows])
    per_s = []
    for s in range(int(duration)):
        sel = lag[(t >= s) & (t < s + 1)]
        if sel.size:
            per_s.append({"t": s, "n": int(sel.size), "p50_ms": float(np.percentile(sel, 50)),
                          "p99_ms": float(np.percentile(sel, 99))})
    slope = float(np.polyfit(t, lag, 1)[0]) if len(rows) > 2 else 0.0
    tenth = max(1, len(per_s) // 10)
    return {
        "robots": robots, "hz": hz, "duration_s": duration, "received": len(rows),
        "expected": int(robots * hz * duration), "rate_per_s": len(rows) / duration,
        "lag_p50_ms": float(np.percentile(lag, 50)), "lag_p99_ms": float(np.percentile(lag, 99)),
        "lag_max_ms": float(lag.max()), "lag_slope_ms_per_s": slope,
        "first_p50_ms": float(np.mean([p["p50_ms"] for p in per_s[:tenth]])),
        "last_p50_ms": float(np.mean([p["p50_ms"] for p in per_s[-tenth:]])),
        "per_second": per_s,
    }


# -- report ----------------------------------------------------------------------------------
def plot(result: dict[str, Any], dispatch_ns: dict[str, list[int]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for name, samples in dispatch_ns.items():
        xs = np.sort(np.asarray(samples) / 1e3)
        a.plot(xs, np.linspace(0, 1, xs.size), label=name)
    a.axvline(1000, color="grey", ls="--", lw=0.8, label="target p99 1 ms")
    a.set(xscale="log", xlabel="wire -> first skill line (µs)", ylabel="CDF",
          title="Skill dispatch latency")
    a.legend()
    tel = result["telemetry"]
    ps = tel["per_second"]
    b.plot([p["t"] for p in ps], [p["p50_ms"] for p in ps], label="p50")
    b.plot([p["t"] for p in ps], [p["p99_ms"] for p in ps], label="p99")
    b.set(xlabel="time (s)", ylabel="state lag (ms)",
          title=f"Telemetry: {tel['robots']} robots x {tel['hz']:g} Hz, ZeroMQ")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table(result: dict[str, Any]) -> str:
    lines = [f"{'measure':44s} {'p50':>10s} {'p99':>10s} {'max':>10s}"]
    for name, d in result["dispatch"].items():
        lines.append(f"{'dispatch ' + name + ' (µs, n=' + str(d['n']) + ')':44s} "
                     f"{d['p50_us']:10.0f} {d['p99_us']:10.0f} {d['max_us']:10.0f}")
    tel = result["telemetry"]
    lines.append(f"{'telemetry lag (ms)':44s} {tel['lag_p50_ms']:10.2f} {tel['lag_p99_ms']:10.2f} "
                 f"{tel['lag_max_ms']:10.2f}")
    lines.append(f"telemetry: {tel['received']}/{tel['expected']} states "
                 f"({tel['rate_per_s']:.0f}/s), lag slope {tel['lag_slope_ms_per_s']:+.4f} ms/s, "
                 f"p50 first 10% {tel['first_p50_ms']:.2f} ms -> last 10% "
                 f"{tel['last_p50_ms']:.2f} ms")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    quiet()
    result: dict[str, Any] = {"dispatch": {}, "args": vars(args)}
    samples: dict[str, list[int]] = {}
    with contextlib.ExitStack() as stack:
        # In-process bus first: the edge agent's own share, with no network hop.
        samples["memory"] = await dispatch(f"memory://bench-{secrets.token_hex(3)}",
                                           args.dispatch_n)
        hub = stack.enter_context(testing.hub())
        samples["zmq"] = await dispatch(hub, args.dispatch_n)
        if args.mqtt:
            mqtt = stack.enter_context(testing.mosquitto())
            samples["mqtt"] = await dispatch(mqtt, args.dispatch_n)
        result["telemetry"] = await telemetry(hub, args.robots, args.hz, args.duration)
    result["dispatch"] = {k: stats_us(v) for k, v in samples.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    plot(result, samples, args.out / "edge.png")
    (args.out / "edge.json").write_text(json.dumps(result, indent=2, default=str))
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", nargs="?", default="run", choices=["run", "_fleet"])
    p.add_argument("--dispatch-n", type=int, default=2000)
    p.add_argument("--robots", type=int, default=100)
    p.add_argument("--hz", type=float, default=10.0)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--mqtt", action="store_true", help="also measure dispatch over MQTT")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--bus", default="")
    p.add_argument("--prefix", default="robobus")
    args = p.parse_args()
    if args.mode == "_fleet":
        with contextlib.suppress(KeyboardInterrupt):
            anyio.run(fleet, args.bus, args.prefix, args.robots, args.hz)
        return
    result = anyio.run(main_async, args)
    print(table(result))
    print(f"wrote {args.out / 'edge.json'} and {args.out / 'edge.png'}")


if __name__ == "__main__":
    main()
