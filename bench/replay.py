"""Replay timing fidelity: ``robobus replay`` next to a raw pyzmq floor, on this machine.

A log of N events with irregular 1..15 ms gaps (seeded) is replayed at speed 1 for R rounds,
the two sides alternating against long-lived brokers in one process tree:

* robobus: ``robobus replay LOG --speed 1`` (a process) -> ``robobus hub`` -> a robobus ``Bus``
  subscriber in this process;
* floor: a raw pyzmq PUB process sleeping to the same deadline schedule with ``time.sleep`` ->
  a ``zmq.proxy`` XSUB/XPUB process -> a blocking raw SUB in this process.

Both sides are three processes and two hops that sleep between messages, so the floor is what
the machine's wake-up latency alone does to the gaps. Per round: |received gap - original gap|
p50 / p99 / max (p99 is ``sorted[int(0.99 * (n - 1))]``, as in tests/memory/test_replay.py).

    python -m bench.replay [--events 300] [--rounds 5] [--out bench/results]

Prints a table, appends a row to ``replay.json`` and writes ``replay.png``. Each robobus round
also runs :class:`LagProbe` beside it and reports the machine's wake-up lag p90 over the round
(tests/memory/test_replay.py scales its tolerance with the same probe; the 1 ms p99 target is
this bench's figure, not the test's).
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing as mp
import os
import random
import shlex
import subprocess
import sys
import tempfile
import time
from multiprocessing.synchronize import Event as EventT
from pathlib import Path
from typing import Any

import anyio
import zmq

from bench.bus import PEERS
from robobus import memory_store, testing
from robobus.bus import Bus, BusOptions
from robobus.cli.common import setup_logging

RESULTS = Path(__file__).resolve().parent / "results"
T0 = 1_700_000_000 * 10**9
PREFIX = "bench-replay"
TOPIC, WARM = f"{PREFIX}/replay/x", f"{PREFIX}/warm"
TARGET_NS = 1_000_000
SIDES = ("robobus", "floor")
Received = list[tuple[int, bytes]]  # (perf_counter_ns at arrival, payload b"<index>")


def schedule(n: int, seed: int) -> list[int]:
    """Timestamps (ns) of ``n`` events whose gaps vary between 1 and 15 ms."""
    rng = random.Random(seed)
    ts = [T0]
    for _ in range(n - 1):
        ts.append(ts[-1] + rng.randint(1, 15) * 10**6)
    return ts


def gap_errors(received: Received, ts: list[int]) -> list[int]:
    """Sorted |received gap - original gap| (ns) over consecutive events both received."""
    got = [(t, int(p)) for t, p in received]
    return sorted(abs((tb - ta) - (ts[j] - ts[i]))
                  for (ta, i), (tb, j) in zip(got, got[1:], strict=False) if j == i + 1)


def quantile(sorted_ns: list[int], q: float) -> int:
    """``sorted_ns[int(q * (n - 1))]``, the quantile used for every figure here."""
    return sorted_ns[int(q * (len(sorted_ns) - 1))]


#: A sleeper on the same kind of schedule (deadlines 1-15 ms apart, slept with ``time.sleep``,
#: a late wake-up never pushing the later deadlines back), stdlib only. It records how late
#: each wake-up came, until its stdin closes, then prints ``[[perf_counter_ns, late_ns], ...]``.
LAG_PROBE = """
import json, random, select, sys, time
rng, out, t = random.Random(11), [], time.perf_counter_ns()
while not select.select([sys.stdin], [], [], 0)[0]:
    t += rng.randint(1, 15) * 1_000_000
    d = (t - time.perf_counter_ns()) / 1e9
    if d > 0:
        time.sleep(d)
    now = time.perf_counter_ns()
    out.append((now, now - t))
print(json.dumps(out))
"""


class LagProbe:
    """How late this machine wakes a sleeping process right now, measured beside a replay: a
    :data:`LAG_PROBE` process from construction until :meth:`stop`."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen([sys.executable, "-c", LAG_PROBE], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True)

    def stop(self) -> list[tuple[int, int]]:
        """End the probe (blocks up to one of its sleeps); its (time, lateness) samples, ns."""
        out, _ = self._proc.communicate(input="", timeout=10)
        return [(t, late) for t, late in json.loads(out)]


def lag_within(samples: list[tuple[int, int]], t0: int, t1: int) -> list[int]:
    """Sorted lateness (ns) of the probe's wake-ups between ``t0`` and ``t1`` (perf_counter_ns)."""
    return sorted(late for t, late in samples if t0 <= t <= t1)


def figures(errors: list[int], n: int, received: int) -> dict[str, Any]:
    if not errors:
        raise RuntimeError(f"no consecutive events received ({received} of {n})")
    at = lambda q: errors[int(q * (len(errors) - 1))] / 1e3  # noqa: E731
    return {"p50_us": at(0.5), "p99_us": at(0.99), "max_us": errors[-1] / 1e3,
            "lost": n - received, "errors_ns": errors}


# -- robobus: the CLI replays into the hub, a Bus subscriber here times arrivals ---------------
async def replay_round(log: Path, hub: str, n: int, timeout: float,
                       prefix: str = PREFIX) -> Received:
    """``robobus replay LOG --speed 1`` into ``hub``; arrivals of ``PREFIX/replay/#`` here
    (also tests/memory/test_replay.py's robobus side)."""
    received: Received = []
    async with Bus.connect(hub, name="bench-replay-watch", options=BusOptions(prefix=prefix)) \
            as bus, bus.subscribe(f"{prefix}/replay/#") as sub:
        argv = testing.robobus_cmd("replay", str(log), "--bus", hub, "--prefix", prefix,
                                   "--speed", "1")
        with testing.spawn(argv, name="replay") as proc:
            with anyio.move_on_after(timeout):
                async for msg in sub:
                    received.append((time.perf_counter_ns(), msg.payload))
                    if len(received) == n:
                        break
            rc = await anyio.to_thread.run_sync(proc.wait, 10)
    if rc != 0:
        raise RuntimeError(f"robobus replay exited with {rc}")
    return received


def robobus_round(log: Path, hub: str, n: int, timeout: float) -> Received:
    return anyio.run(replay_round, log, hub, n, timeout)


# -- floor: raw PUB -> zmq.proxy -> raw SUB, the same schedule slept with time.sleep -----------
def floor_publisher(port: int, ts: list[int], go: EventT) -> None:
    """Warm up until the subscriber has heard us (slow joiner), then publish on schedule."""
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.connect(f"tcp://127.0.0.1:{port}")
    while not go.wait(0.01):
        pub.send_multipart([WARM.encode(), b""])
    start = time.monotonic()
    for i, t in enumerate(ts):
        delay = start + (t - ts[0]) / 1e9 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        pub.send_multipart([TOPIC.encode(), b"%d" % i])
    pub.close(linger=2000)
    ctx.term()


def floor_round(port: int, ts: list[int], timeout: float) -> Received:
    spawn = mp.get_context("spawn")  # no fork of a process holding zmq and anyio state
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.RCVTIMEO, int(timeout * 1000))
    sub.subscribe(f"{PREFIX}/")
    sub.connect(f"tcp://127.0.0.1:{port + 1}")
    go = spawn.Event()
    proc = spawn.Process(target=floor_publisher, args=(port, ts, go), name="floor-pub",
                         daemon=True)
    proc.start()
    received: Received = []
    deadline = time.monotonic() + timeout
    try:
        while len(received) < len(ts) and time.monotonic() < deadline:
            try:
                topic, body = sub.recv_multipart()
            except zmq.Again:
                break
            now = time.perf_counter_ns()
            if topic == WARM.encode():
                go.set()
            else:
                received.append((now, body))
        proc.join(10)
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(5)
        sub.close(linger=0)
    return received


# -- report ------------------------------------------------------------------------------------
def summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    p99 = sorted(r["p99_us"] for r in rounds)
    return {"p99_median_us": p99[len(p99) // 2], "p99_best_us": p99[0], "p99_worst_us": p99[-1],
            "max_us": max(r["max_us"] for r in rounds), "lost": sum(r["lost"] for r in rounds),
            "rounds_p99_within_1ms": sum(v <= TARGET_NS / 1e3 for v in p99) / len(p99)}


def print_table(rounds: dict[str, list[dict[str, Any]]], sums: dict[str, dict[str, Any]],
                n: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"replay gap error, {n} events (p50 / p99 / max µs)")
    table.add_column("round", justify="right")
    for side in SIDES:
        table.add_column(side, justify="right")
    table.add_column("wake-up lag p90 (µs)", justify="right")
    fmt = lambda r: f"{r['p50_us']:.0f} / {r['p99_us']:.0f} / {r['max_us']:.0f}"  # noqa: E731
    for i, pair in enumerate(zip(*(rounds[s] for s in SIDES), strict=True), 1):
        lag = pair[0].get("lag_p90_us")
        table.add_row(str(i), *(fmt(r) for r in pair), "-" if lag is None else f"{lag:.0f}")
    table.add_row("p99 ≤ 1 ms", *(f"{sums[s]['rounds_p99_within_1ms']:.0%} of rounds"
                                  for s in SIDES), "")
    Console().print(table)


def plot(rounds: dict[str, list[dict[str, Any]]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for side, color in zip(SIDES, ("tab:blue", "tab:grey"), strict=True):
        for i, r in enumerate(rounds[side]):
            errs = [max(e / 1e3, 1.0) for e in r["errors_ns"]]
            ax.plot(errs, [k / len(errs) for k in range(1, len(errs) + 1)], color=color,
                    alpha=0.7, linestyle="-" if side == "robobus" else "--",
                    label=side if i == 0 else None)
    ax.axvline(TARGET_NS / 1e3, color="red", linestyle=":", label="1 ms target")
    ax.set_xscale("log")
    ax.set_xlabel("|received gap - original gap| (µs, log scale)")
    ax.set_ylabel("fraction of gaps")
    ax.set_title("Replay gap error CDF, one line per round (dashed: raw pyzmq floor)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def host() -> dict[str, Any]:
    params = Path("/sys/module/haltpoll/parameters/guest_halt_poll_ns")
    steal = int(Path("/proc/stat").read_text().split()[8])  # jiffies the hypervisor ran others
    return {"cpus": os.cpu_count(), "load": os.getloadavg(), "steal_jiffies": steal,
            "guest_halt_poll_ns": params.read_text().strip() if params.exists() else None}


def append_row(path: Path, row: dict[str, Any]) -> None:
    doc = json.loads(path.read_text()) if path.exists() else {"bench": "replay", "runs": []}
    doc["runs"].append(row)
    path.write_text(json.dumps(doc, indent=2))


# -- main ------------------------------------------------------------------------------------
def run_rounds(log: Path, ts: list[int], rounds: int) -> dict[str, list[dict[str, Any]]]:
    timeout = (ts[-1] - ts[0]) / 1e9 + 15  # the schedule plus an interpreter start-up
    zport = testing.free_port(span=2)
    out: dict[str, list[dict[str, Any]]] = {s: [] for s in SIDES}
    with testing.hub() as hub, \
            testing.spawn([*PEERS, "zmq_proxy", json.dumps({"port": zport})], name="proxy"):
        testing.wait_port(zport)
        testing.wait_port(zport + 1)
        for r in range(rounds):
            order = SIDES if r % 2 == 0 else SIDES[::-1]  # neither side always goes first
            for side in order:
                print(f"round {r + 1}/{rounds}: {side}", file=sys.stderr, flush=True)
                gc.collect()
                if side == "robobus":
                    probe = LagProbe()
                    try:
                        got = robobus_round(log, hub, len(ts), timeout)
                    finally:
                        lag = probe.stop()
                else:
                    got = floor_round(zport, ts, timeout)
                out[side].append(figures(gap_errors(got, ts), len(ts), len(got)))
                if side == "robobus" and got:
                    during = lag_within(lag, got[0][0], got[-1][0])
                    out[side][-1]["lag_p90_us"] = quantile(during, 0.9) / 1e3 if during else None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    setup_logging("warning")
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    before = host()
    ts = schedule(args.events, args.seed)
    with tempfile.TemporaryDirectory(prefix="robobus-bench-replay-") as tmp:
        log = Path(tmp) / "log"
        with memory_store.open(log) as store:
            store.append_many([(TOPIC, b"%d" % i, t) for i, t in enumerate(ts)])
        rounds = run_rounds(log, ts, args.rounds)
    sums = {s: summary(rounds[s]) for s in SIDES}
    print_table(rounds, sums, args.events)
    plot(rounds, args.out / "replay.png")
    for side in SIDES:
        for r in rounds[side]:
            r.pop("errors_ns")
    row = {"ts": time.time(), "command": shlex.join(sys.orig_argv), "events": args.events,
           "rounds": args.rounds, "seed": args.seed, "host_before": before, "host_after": host(),
           "elapsed_s": time.monotonic() - started, "summary": sums, "per_round": rounds}
    append_row(args.out / "replay.json", row)
    print(f"wrote {args.out / 'replay.json'} and {args.out / 'replay.png'} "
          f"in {row['elapsed_s']:.0f}s")


if __name__ == "__main__":
    main()
