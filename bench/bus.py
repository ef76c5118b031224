"""Bus benchmark: robobus over ZeroMQ and MQTT against raw pyzmq, raw paho, Redis and Zenoh.

All paths run side by side in one process tree (interleaved, several runs each), so machine
noise hits them alike. Each path has an echo process and a driver process; 200-byte msgpack
payloads; round trips measured by the driver, one-way throughput by the receiving process.

    python -m bench.bus [--runs 3] [--rtt 3000] [--out bench/results]

Prints a table, writes ``bus.json`` and ``bus_latency_cdf.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robobus import testing

HERE = Path(__file__).resolve().parent
PEERS = [sys.executable, str(HERE / "bus_peers.py")]


@dataclass
class Path_:
    name: str
    baseline: str | None
    echo: tuple[str, dict]
    driver: tuple[str, dict]
    blast: int
    rtts: list[list[float]] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)


def _peer(role: str, args: dict) -> subprocess.Popen[str]:
    return subprocess.Popen([*PEERS, role, json.dumps(args)], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)


def _line(proc: subprocess.Popen[str], timeout: float = 60) -> dict:
    line = proc.stdout.readline() if proc.stdout else ""
    if not line:
        raise RuntimeError(f"peer {proc.args[2]} exited with {proc.wait(timeout)}")
    return json.loads(line)


def run_once(path: Path_, n: int) -> None:
    echo = _peer(*path.echo)
    try:
        _line(echo)
        role, args = path.driver
        driver = _peer(role, {**args, "n": n, "m": path.blast})
        try:
            result = _line(driver)
            sink = _line(echo)
        finally:
            testing.stop(driver)
    finally:
        testing.stop(echo)
    path.rtts.append(result["rtt"])
    path.rates.append(sink["received"] / sink["elapsed"] if sink["elapsed"] > 0 else 0.0)
    path.lost.append(path.blast - sink["received"])


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1e6, q))


def summarise(paths: list[Path_]) -> list[dict]:
    rows = []
    for p in paths:
        rows.append({
            "path": p.name,
            "baseline": p.baseline,
            "rtt_p50_us": statistics.median(pct(r, 50) for r in p.rtts),
            "rtt_p99_us": statistics.median(pct(r, 99) for r in p.rtts),
            "rtt_p999_us": statistics.median(pct(r, 99.9) for r in p.rtts),
            "throughput_msg_s": statistics.median(p.rates),
            "lost": max(p.lost),
            "runs": len(p.rtts),
        })
    by_name = {r["path"]: r for r in rows}
    for r in rows:
        base = by_name.get(r["baseline"] or "")
        if base:
            r["p50_ratio"] = r["rtt_p50_us"] / base["rtt_p50_us"]
            r["throughput_ratio"] = r["throughput_msg_s"] / base["throughput_msg_s"]
            if r["path"].startswith("robobus"):
                r["meets_target"] = r["p50_ratio"] <= 1.3 and r["throughput_ratio"] >= 0.7
    return rows


def print_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="robobus bus benchmark (200-byte msgpack, loopback, separate processes)")
    for col in ("path", "p50 µs", "p99 µs", "p99.9 µs", "msg/s", "lost", "vs raw p50", "vs raw tput"):
        table.add_column(col, justify="right" if col != "path" else "left")
    for r in rows:
        table.add_row(
            r["path"], f"{r['rtt_p50_us']:.0f}", f"{r['rtt_p99_us']:.0f}", f"{r['rtt_p999_us']:.0f}",
            f"{r['throughput_msg_s']:,.0f}", str(r["lost"]),
            f"{r['p50_ratio']:.2f}x" if "p50_ratio" in r else "",
            f"{r['throughput_ratio']:.0%}" if "throughput_ratio" in r else "",
        )
    Console().print(table)


def plot(paths: list[Path_], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    for p in paths:
        data = np.sort(np.concatenate([np.asarray(r) for r in p.rtts]) * 1e6)
        style = "-" if p.name.startswith("robobus") else "--"
        ax.plot(data, np.linspace(0, 1, len(data)), style, label=p.name)
    ax.set_xscale("log")
    ax.set_xlabel("round-trip latency (µs, log scale)")
    ax.set_ylabel("fraction of round trips")
    ax.set_title("Round-trip latency CDF, 200-byte messages, loopback (solid: robobus)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def build_paths(hub: str, mqtt_port: int, mqtt_url: str, redis_port: int, zport: int,
                zenoh_port: int) -> list[Path_]:
    return [
        Path_("raw pyzmq via zmq.proxy", None, ("zmq_echo", {"port": zport}),
              ("zmq_driver", {"port": zport}), 50_000),
        Path_("pyzmq on uvloop via zmq.proxy", "raw pyzmq via zmq.proxy",
              ("aiozmq_echo", {"port": zport}), ("aiozmq_driver", {"port": zport}), 50_000),
        Path_("robobus zmq (hub)", "raw pyzmq via zmq.proxy", ("robobus_echo", {"url": hub, "qos": 0}),
              ("robobus_driver", {"url": hub, "qos": 0}), 50_000),
        Path_("raw paho qos0", None, ("paho_echo", {"port": mqtt_port, "qos": 0}),
              ("paho_driver", {"port": mqtt_port, "qos": 0}), 20_000),
        Path_("robobus mqtt qos0", "raw paho qos0", ("robobus_echo", {"url": mqtt_url, "qos": 0}),
              ("robobus_driver", {"url": mqtt_url, "qos": 0}), 20_000),
        Path_("raw paho qos1", None, ("paho_echo", {"port": mqtt_port, "qos": 1}),
              ("paho_driver", {"port": mqtt_port, "qos": 1}), 10_000),
        Path_("robobus mqtt qos1", "raw paho qos1", ("robobus_echo", {"url": mqtt_url, "qos": 1}),
              ("robobus_driver", {"url": mqtt_url, "qos": 1}), 10_000),
        Path_("redis pub/sub (redis-py)", None, ("redis_echo", {"port": redis_port}),
              ("redis_driver", {"port": redis_port}), 10_000),
        # Zenoh peer to peer on loopback, no router: the echo listens, the driver connects.
        # Its like-for-like floor is pyzmq without a proxy (one hop each way, not two).
        Path_("raw pyzmq peer (no proxy)", None, ("zmq_echo", {"port": zenoh_port, "peer": True}),
              ("zmq_driver", {"port": zenoh_port, "peer": True}), 50_000),
        Path_("raw zenoh peer pub/sub", "raw pyzmq peer (no proxy)",
              ("zenoh_echo", {"port": zenoh_port + 2}), ("zenoh_driver", {"port": zenoh_port + 2}),
              50_000),
    ]


@contextlib.contextmanager
def redis_server() -> int:
    port = testing.free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no"]
    with testing.spawn(argv, name="redis", log_dir=None):
        testing.wait_port(port)
        yield port


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rtt", type=int, default=3000, help="round trips per run")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--only", nargs="*", help="substring filter on path names")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    zport = testing.free_port(span=2)
    with testing.hub() as hub, testing.mosquitto() as mqtt_url, redis_server() as rport, \
            testing.spawn([*PEERS, "zmq_proxy", json.dumps({"port": zport})], name="proxy"):
        testing.wait_port(zport)
        mport = int(mqtt_url.rsplit(":", 1)[1])
        paths = build_paths(hub, mport, mqtt_url, rport, zport, testing.free_port(span=3))
        if args.only:
            paths = [p for p in paths if any(s in p.name for s in args.only)]
        for run in range(args.runs):
            for p in paths:
                print(f"run {run + 1}/{args.runs}: {p.name}", file=sys.stderr, flush=True)
                run_once(p, args.rtt)
    rows = summarise(paths)
    print_table(rows)
    plot(paths, args.out / "bus_latency_cdf.png")
    doc = {"bench": "bus", "ts": time.time(), "runs": args.runs, "rtt_per_run": args.rtt,
           "payload_bytes": 200, "elapsed_s": time.monotonic() - started, "rows": rows}
    (args.out / "bus.json").write_text(json.dumps(doc, indent=2))
    print(f"wrote {args.out / 'bus.json'} and {args.out / 'bus_latency_cdf.png'} "
          f"in {doc['elapsed_s']:.0f}s")


if __name__ == "__main__":
    main()
