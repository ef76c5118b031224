"""Memory-store benchmark: ingest, local reads, bus queries, Redis side by side, scale run.

Run from the repository root::

    .venv/bin/python -m bench.memory                     # short run (10 s per bus ingest)
    .venv/bin/python -m bench.memory --duration 60       # the full sustained-ingest run
    .venv/bin/python -m bench.memory --scale --scale-events 100000000 --scale-dir /big/disk
    .venv/bin/python -m bench.memory --tasks 6000        # only: agent RSS per task (issue 13)
    .venv/bin/python -m bench.memory --ingest --baseline REV  # only: sustained ZeroMQ ingest

Prints a table, writes ``bench/results/memory.json`` and PNG plots next to it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import msgspec

from bench import memory_ingest, memory_tasks
from bench import memory_load as load
from bench.machine import quiet_disk
from bench.memory_scale import PAYLOAD, T0, pct, scale_run
from robobus import memory_store, testing
from robobus.bus import Bus, RequestTimeout
from robobus.bus import run as bus_run
from robobus.schemas.memory import MemoryQuery
from robobus.schemas.messages import Alive, RobotRegistration, RobotState

RESULTS = Path(__file__).resolve().parent / "results"


# -- direct API ------------------------------------------------------------------------------
def direct_ingest(root: Path, n: int, batch: int) -> dict[str, Any]:
    """``append_many`` in batches: events/s through the storage API (synced commits)."""
    topics = [f"bench/robots/r{i}/state" for i in range(16)]
    path = root / f"direct-{batch}"
    with memory_store.open(path, map_size=1 << 36) as store:
        t = time.perf_counter()
        for start in range(0, n, batch):
            ts = T0 + start * 1000
            store.append_many([(topics[i & 15], PAYLOAD, ts + i * 1000) for i in range(batch)])
        took = time.perf_counter() - t
    return {"events": n, "batch": batch, "seconds": took, "events_per_s": n / took,
            "path": str(path)}


def local_reads(path: Path, samples: int = 200_000) -> dict[str, Any]:
    """Point get p50/p99 through a snapshot, and time-range scan rates, from a read-only open."""
    with memory_store.open(path, readonly=True) as store:
        keys = [(ts, seq) for ts, seq in _sample_keys(store, samples)]
        random.shuffle(keys)
        lat_event, lat_raw = [], []
        with store.snapshot() as snap:
            clock = time.perf_counter_ns
            for ts, seq in keys:
                a = clock()
                snap.get(ts, seq)
                lat_event.append(clock() - a)
            for ts, seq in keys:
                a = clock()
                snap.get_raw(ts, seq)
                lat_raw.append(clock() - a)
        t = time.perf_counter()
        raw = sum(1 for _ in store.log.scan_raw())
        raw_rate = raw / (time.perf_counter() - t)
        t = time.perf_counter()
        dec = sum(1 for _ in store.scan())
        dec_rate = dec / (time.perf_counter() - t)
        t = time.perf_counter()
        one_topic = sum(1 for _ in store.scan(pattern="bench/robots/r3/state"))
        topic_rate = one_topic / (time.perf_counter() - t)
    return {
        "get_p50_us": pct(lat_event, 0.5) / 1e3, "get_p99_us": pct(lat_event, 0.99) / 1e3,
        "get_raw_p50_us": pct(lat_raw, 0.5) / 1e3, "get_raw_p99_us": pct(lat_raw, 0.99) / 1e3,
        "scan_raw_per_s": raw_rate, "scan_events_per_s": dec_rate,
        "scan_one_topic_per_s": topic_rate, "events": raw,
    }


def _sample_keys(store: memory_store.MemoryStore, samples: int) -> Iterator[tuple[int, int]]:
    stride = max(1, store.stats()["events"] // samples)
    for i, (key, _) in enumerate(store.log.scan_raw()):
        if i % stride == 0:
            value = int.from_bytes(key, "big")
            yield value >> 64, value & 0xFFFF_FFFF_FFFF_FFFF


# -- through the agent ----------------------------------------------------------------------
@contextlib.contextmanager
def broker(kind: str) -> Iterator[str]:
    if kind == "zmq":
        with testing.hub() as url:
            yield url
    else:
        with testing.mosquitto() as url:
            yield url


async def _wait_ready(bus: Bus, timeout: float = 30.0) -> None:
    with anyio.fail_after(timeout):
        while True:
            with contextlib.suppress(RequestTimeout):
                await bus.request("robobus/memory/query", MemoryQuery(kind="robots"), timeout=0.5)
                return


def _stored(store_dir: Path, topic: str) -> int:
    with memory_store.open(store_dir, readonly=True) as ro:
        return int(ro.stats()["topics"].get(topic, 0))


def agent_ingest(kind: str, root: Path, duration: float, mqtt_load: str) -> dict[str, Any]:
    """Sustained publish through the hub/broker into ``robobus memory``; sent vs stored."""
    store = root / f"agent-{kind}"
    with broker(kind) as url:
        agent_url = url
        if kind == "mqtt":
            agent_url = f"{url}?session=persistent&client_id=bench-memory"
        agent = testing.robobus_cmd("memory", "--bus", agent_url, "--store", str(store))
        with testing.spawn(agent, name="memory"):
            anyio.run(_ready_then, url)
            topic = "robobus/bench/ingest"
            t0 = time.monotonic()
            sent, started = load.publish(kind, url, topic, duration, mqtt_load)
            pub_s = time.monotonic() - started
            stored, drained_at = _drain(store, topic, sent)
        result = {"transport": kind, "duration_s": duration, "sent": sent, "stored": stored,
                  "load": "robobus publisher" if kind == "zmq" else mqtt_load,
                  "lost": sent - stored, "publish_per_s": sent / pub_s,
                  # from the first publish to the last event stored (publisher start-up,
                  # a Python interpreter and a connect, is not the agent's time)
                  "ingest_per_s": stored / (drained_at - started),
                  "publisher_startup_s": started - t0,
                  "drain_s": max(0.0, drained_at - started - pub_s)}
        if kind == "mqtt":
            # at most 30 s of backlog: the test broker queues at most 1M messages per session
            # (max_queued_messages), and beyond that Mosquitto drops, by its configuration
            result["backlog"] = _mqtt_backlog(url, agent, store, topic, sent, min(duration, 30),
                                              mqtt_load)
    # Gigabytes of log pages are still dirty: deleting the store drops them instead of leaving
    # the kernel to write them back under the next section's feet.
    shutil.rmtree(store, ignore_errors=True)
    return result


def _mqtt_backlog(url: str, agent: list[str], store: Path, topic: str, before: int,
                  duration: float, mqtt_load: str) -> dict[str, Any]:
    """The agent's own MQTT capacity: publish while it is down (its persistent session
    queues at the broker), then restart it and time the drain. Also proves zero loss across
    an agent restart."""
    sent, _ = load.publish("mqtt", url, topic, duration, mqtt_load)
    t0 = time.monotonic()
    with testing.spawn(agent, name="memory-again"):
        stored, drained_at = _drain(store, topic, before + sent)
    got = stored - before
    return {"sent_while_down": sent, "stored": got, "lost": sent - got,
            "drain_per_s": got / (drained_at - t0), "includes_agent_start": True}


async def _ready_then(url: str) -> None:
    async with Bus.connect(url, name="bench-probe") as bus:
        await _wait_ready(bus)


def _drain(store: Path, topic: str, sent: int, idle_s: float = 5.0) -> tuple[int, float]:
    """Poll the log until every sent event is stored or nothing arrives for ``idle_s``."""
    last, last_change = -1, time.monotonic()
    while True:
        count = _stored(store, topic)
        now = time.monotonic()
        if count != last:
            last, last_change = count, now
        if count >= sent or now - last_change > idle_s:
            return count, last_change
        time.sleep(0.05)


ECHO = r"""
import anyio, sys
from robobus.bus import Bus
async def main():
    async with Bus.connect(sys.argv[1], name="echo") as bus, bus.subscribe("robobus/echo/#") as sub:
        async for msg in sub:
            await bus.reply(msg, b"ok")
anyio.run(main)
"""


def bus_queries(samples: int) -> dict[str, Any]:
    """p50/p99 of "where is X" and "latest state of robot R" over ZeroMQ through the hub."""
    with tempfile.TemporaryDirectory() as tmp, testing.hub() as url:
        scene = Path(tmp) / "scene.yaml"
        scene.write_text("places: {table: {position: [1, 2]}}\n"
                         "objects: {apple: {kind: fruit, at: table}}\n")
        argv = testing.robobus_cmd("memory", "--bus", url, "--store", f"{tmp}/s",
                                   "--scene", str(scene))
        with testing.spawn(argv, name="memory"), \
                testing.spawn([sys.executable, "-c", ECHO, url], name="echo"):
            return bus_run(_query_latencies, url, samples)  # uvloop, as every robobus process


async def _query_latencies(url: str, samples: int) -> dict[str, Any]:
    async with Bus.connect(url, name="bench-query") as bus:
        await _wait_ready(bus)
        reg = RobotRegistration(robot="g1", type="g1", profile={"start": "table"})
        await bus.publish("robobus/robots/g1/registration", reg, retain=True, qos=1)
        await bus.publish("robobus/robots/g1/alive", Alive(robot="g1", online=True), qos=1)
        await bus.publish("robobus/robots/g1/state", RobotState(robot="g1", battery=0.5), qos=1)
        with anyio.fail_after(30):  # the echo process is up once it answers
            while True:
                with contextlib.suppress(RequestTimeout):
                    await bus.request("robobus/echo/hub", b"", timeout=0.5)
                    break
        out: dict[str, Any] = {}
        for name, topic, q in (
                ("where", "robobus/memory/query", MemoryQuery(kind="where", name="apple")),
                ("robot", "robobus/memory/query", MemoryQuery(kind="robot", name="g1")),
                ("echo, through the hub (bus floor)", "robobus/echo/hub", b"")):
            for _ in range(200):  # warm-up, unmeasured
                await bus.request(topic, q, timeout=5)
            lat = []
            for _ in range(samples):
                a = time.perf_counter_ns()
                reply = await bus.request(topic, q, timeout=5)
                lat.append((time.perf_counter_ns() - a) / 1e3)
            assert topic.startswith("robobus/echo/") or msgspec.msgpack.decode(reply.payload)["ok"]
            out[name] = {"p50_us": pct(lat, 0.5), "p99_us": pct(lat, 0.99), "samples": lat}
        return out


# -- Redis side by side ----------------------------------------------------------------------
@contextlib.contextmanager
def redis_server() -> Iterator[Any]:
    import redis

    port = testing.free_port()
    with tempfile.TemporaryDirectory() as tmp, testing.spawn(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", tmp], name="redis"):
        testing.wait_port(port)
        client = redis.Redis(host="127.0.0.1", port=port)
        yield client
        client.close()


def redis_side_by_side(n: int, samples: int) -> dict[str, Any]:
    """The same ingest (pipelined SET of 16-byte keys, 256-byte values) and point GETs."""
    with redis_server() as r:
        t = time.perf_counter()
        for start in range(0, n, 10_000):
            pipe = r.pipeline(transaction=False)
            for i in range(start, min(n, start + 10_000)):
                pipe.set(((T0 + i) << 64 | i).to_bytes(16, "big"), PAYLOAD)
            pipe.execute()
        ingest = n / (time.perf_counter() - t)
        keys = [((T0 + i) << 64 | i).to_bytes(16, "big") for i in random.sample(range(n), samples)]
        lat = []
        for key in keys:
            a = time.perf_counter_ns()
            r.get(key)
            lat.append((time.perf_counter_ns() - a) / 1e3)
        r.hset("robot:g1", mapping={"state": PAYLOAD})
        hlat = []
        for _ in range(samples):
            a = time.perf_counter_ns()
            r.hget("robot:g1", "state")
            hlat.append((time.perf_counter_ns() - a) / 1e3)
        mem = r.info("memory")["used_memory"]
    return {"events": n, "ingest_per_s": ingest, "get_p50_us": pct(lat, 0.5),
            "get_p99_us": pct(lat, 0.99), "hget_p50_us": pct(hlat, 0.5),
            "hget_p99_us": pct(hlat, 0.99), "used_memory_bytes": mem,
            "persistence": "none (RoboOS default: volatile, flushed on master start)"}


# -- report ----------------------------------------------------------------------------------
def table(results: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str]] = []
    add = rows.append
    for d in results.get("direct", []):
        add((f"direct API ingest, {d['batch']}/txn", f"{d['events_per_s']:,.0f} ev/s",
             ">= 500k/s" if d["batch"] >= 10_000 else ""))
    if "reads" in results:
        r = results["reads"]
        add(("local point get (Event) p50/p99", f"{r['get_p50_us']:.2f} / {r['get_p99_us']:.2f} µs",
             "p50 <= 2 µs"))
        add(("local point get (raw view) p50/p99",
             f"{r['get_raw_p50_us']:.2f} / {r['get_raw_p99_us']:.2f} µs", ""))
        add(("time-range scan, raw", f"{r['scan_raw_per_s']:,.0f} ev/s", ">= 2M/s"))
        add(("time-range scan, decoded Events", f"{r['scan_events_per_s']:,.0f} ev/s", ""))
        add(("one-topic scan (index)", f"{r['scan_one_topic_per_s']:,.0f} ev/s", ""))
    for a in results.get("agent", []):
        target = ">= 80k/s" if a["transport"] == "zmq" else ">= 15k/s"
        add((f"agent ingest over {a['transport']} ({a['duration_s']:.0f} s)",
             f"{a['ingest_per_s']:,.0f} ev/s, sent {a['sent']:,}, lost {a['lost']}", target))
        if "backlog" in a:
            b = a["backlog"]
            add(("agent drain of MQTT backlog (restart)",
                 f"{b['drain_per_s']:,.0f} ev/s, {b['stored']:,} of {b['sent_while_down']:,}",
                 target))
    if "queries" in results:
        for name, q in results["queries"].items():
            add((f"bus query '{name}' (zmq) p50/p99",
                 f"{q['p50_us']:.0f} / {q['p99_us']:.0f} µs",
                 "" if name.startswith("echo") else "p99 <= 1 ms"))
    if "redis" in results:
        r = results["redis"]
        add(("Redis ingest (pipelined SET)", f"{r['ingest_per_s']:,.0f} ev/s", ""))
        add(("Redis GET p50/p99 (loopback)", f"{r['get_p50_us']:.0f} / {r['get_p99_us']:.0f} µs",
             ""))
        add(("Redis memory", f"{r['used_memory_bytes'] / 1e6:,.1f} MB for {r['events']:,} ev",
             ""))
    if "scale" in results:
        s = results["scale"]
        add((f"scale: {s['events']:,} events build", f"{s['build_s']:.1f} s, "
             f"{s['bytes'] / 1e9:.2f} GB, {s['segments']} segments", ""))
        add(("scale: cold random get p50/p99",
             f"{s['cold_get_p50_us']:.0f} / {s['cold_get_p99_us']:.0f} µs", ""))
        add(("scale: cold time-range seek p50/p99",
             f"{s['cold_seek_p50_us']:.0f} / {s['cold_seek_p99_us']:.0f} µs", ""))
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    return "\n".join(f"{a:<{width}}  {b:<{vwidth}}  {c}" for a, b, c in rows)


def plots(results: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    bars = [(f"direct {d['batch']}/txn", d["events_per_s"]) for d in results.get("direct", [])]
    bars += [(f"agent {a['transport']}", a["ingest_per_s"]) for a in results.get("agent", [])]
    if "redis" in results:
        bars.append(("redis SET", results["redis"]["ingest_per_s"]))
    if bars:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.barh([b[0] for b in bars], [b[1] / 1e3 for b in bars])
        ax.set_xlabel("thousand events / s")
        ax.set_title("memory store ingest")
        fig.tight_layout()
        fig.savefig(out / "memory_ingest.png", dpi=100)
        plt.close(fig)
        written.append("memory_ingest.png")
    if "queries" in results:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        for name, q in results["queries"].items():
            lat = sorted(q["samples"])
            ax.plot(lat, [i / len(lat) for i in range(len(lat))], label=name)
        ax.axvline(1000, color="grey", linestyle="--", label="1 ms target")
        ax.set_xscale("log")
        ax.set_xlabel("request/reply latency over ZeroMQ (µs)")
        ax.set_ylabel("CDF")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "memory_queries.png", dpi=100)
        plt.close(fig)
        written.append("memory_queries.png")
    return written


def section(name: str, fn: Callable[[], Any], results: dict[str, Any]) -> None:
    t = time.monotonic()
    print(f"[bench] {name} ...", file=sys.stderr, flush=True)
    results[name] = fn()
    print(f"[bench] {name} done in {time.monotonic() - t:.1f} s", file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=10.0, help="bus ingest seconds per run")
    ap.add_argument("--events", type=int, default=1_000_000, help="direct-ingest event count")
    ap.add_argument("--queries", type=int, default=2000, help="samples per bus query kind")
    ap.add_argument("--skip", nargs="*", default=[],
                    choices=["direct", "reads", "zmq", "mqtt", "queries", "redis"])
    ap.add_argument("--scale", action="store_true", help="also build and read a large log")
    ap.add_argument("--scale-events", type=int, default=5_000_000)
    ap.add_argument("--scale-dir", type=Path, default=None, help="where to build it (big disk)")
    ap.add_argument("--out", type=Path, default=RESULTS / "memory.json")
    ap.add_argument("--mqtt-load", choices=load.MQTT_LOADS, default=load.MQTT_LOADS[0],
                    help="MQTT load generator for the agent ingest runs")
    ap.add_argument("--tasks", type=int, default=0,
                    help="only measure the agent's RSS per task over this many tasks")
    ap.add_argument("--ingest", action="store_true",
                    help="only: sustained agent ingest over ZeroMQ at --rates (issue 16)")
    ap.add_argument("--rates", type=float, nargs="+", default=[80_000, 120_000, 150_000])
    ap.add_argument("--paths", nargs="+", choices=["plain", "durable"],
                    default=["plain", "durable"])
    ap.add_argument("--publishers", type=int, default=1, help="raw load processes (--ingest)")
    ap.add_argument("--baseline", default=None,
                    help="--ingest: also run commit REV's hub and agent (or those of a source "
                         "tree in directory REV), interleaved")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    if args.tasks:
        _tasks_only(args.tasks)
        return
    if args.ingest:
        _ingest_only(args)
        return
    root = Path(tempfile.mkdtemp(prefix="robobus-bench-"))
    results: dict[str, Any] = {"host": {"cpus": os.cpu_count(), "load": os.getloadavg()}}
    try:
        if "direct" not in args.skip:
            section("direct", lambda: [direct_ingest(root, args.events, 10_000),
                                       direct_ingest(root, min(args.events, 200_000), 100)],
                    results)
            if "reads" not in args.skip:
                section("reads", lambda: local_reads(Path(results["direct"][0]["path"])),
                        results)
        agents = [k for k in ("zmq", "mqtt") if k not in args.skip]
        if agents:
            section("agent", lambda: [agent_ingest(k, root, args.duration, args.mqtt_load)
                                              for k in agents],
                    results)
        if "queries" not in args.skip:
            results["quiet_disk_s"] = quiet_disk()
            section("queries", lambda: bus_queries(args.queries), results)
        if "redis" not in args.skip:
            section("redis", lambda: redis_side_by_side(args.events, 20_000), results)
        if args.scale:
            scale_root = args.scale_dir or root
            scale_root.mkdir(parents=True, exist_ok=True)
            section("scale", lambda: scale_run(scale_root, args.scale_events), results)
            shutil.rmtree(scale_root / "scale", ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(table(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    results["plots"] = plots(results, args.out.parent)
    for q in results.get("queries", {}).values():
        q.pop("samples", None)
    for d in [*results.get("direct", []), results.get("scale", {})]:
        d.pop("path", None)  # temporary directories, deleted by now
    args.out.write_text(json.dumps(results, indent=2, default=str))
    print(f"wrote {args.out}", file=sys.stderr)


def _ingest_only(args: argparse.Namespace) -> None:
    result = memory_ingest.ingest_bench(args.rates, args.duration, args.paths, args.publishers,
                                        args.baseline, args.repeats)
    result["host"] = {"cpus": os.cpu_count(), "load": os.getloadavg()}
    print(memory_ingest.table(result))
    out = args.out.parent / "memory_ingest.json" if args.out == RESULTS / "memory.json" \
        else args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    result["plot"] = memory_ingest.plot(result, out.parent)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out} and {out.parent / result['plot']}", file=sys.stderr)


def _tasks_only(tasks: int) -> None:
    result = memory_tasks.rss_per_task(tasks)
    print(f"memory agent after {tasks} tasks: heap (RssAnon) {result['anon_start_mib']} -> "
          f"{result['anon_end_mib']} MiB, {result['anon_bytes_per_task_after_1000']} B/task; "
          f"VmRSS {result['rss_start_mib']} -> {result['rss_end_mib']} MiB, "
          f"{result['rss_bytes_per_task_after_1000']} B/task (after the first 1,000 tasks)")
    out = RESULTS / "memory_tasks.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
