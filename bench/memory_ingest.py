"""Sustained memory-agent ingest over ZeroMQ (issue 16, item 6): ``python -m bench.memory --ingest``.

For each offered rate, the memory agent records a raw pyzmq load through a ``robobus hub``, on
the plain path (the agent subscribes) and the durable one (``--durable``: the hub's numbered
stream, confirmed after each commit). Reported per run: sent, stored, lost, events/s from the
first publish to the last event stored, and the agent's and hub's CPU per event. With
``--baseline REV`` the same runs use the code of commit REV too (hub and agent from a
``git archive`` of it), interleaved with the working tree's, so before/after are ratios of one
run on one machine.

The load is raw pyzmq (pre-built robobus wire frames with sender, client id and a sequence
number), not a robobus publisher: a Python publisher costs more per message than the agent
and, on two cores, would measure itself.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio

from robobus import memory_store, testing

#: the fleet's replay buffer (robobus/launch/fleet.py REPLAY_BUFFER)
REPLAY_BUFFER = 500_000
TOPICS = 16
PREFIX = "robobus/bench/ingest/"

RAW_PUBLISHER = r"""
import struct, sys, time, zmq
pub_ep, sub_ep, prefix, name = sys.argv[1:5]
duration, rate, topics = float(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7])
ctx = zmq.Context()
pub = ctx.socket(zmq.PUB)
pub.setsockopt(zmq.SNDHWM, 1_000_000)
pub.connect(pub_ep)
sub = ctx.socket(zmq.SUB)
probe = f"$robobus/probe/{name}/ready".encode()
sub.setsockopt(zmq.SUBSCRIBE, probe)
sub.connect(sub_ep)
while not sub.poll(20):  # until the hub forwards what we publish
    pub.send_multipart([probe, b"\x00\x00"])
# the wire header robobus writes (bus/zmq_wire.py Head): {"s": sender, "c": client, "n": seq},
# seq as a fixed-width msgpack uint32 so that one prefix serves every message
head = (b"\x83\xa1s" + bytes([0xa0 + len(name)]) + name.encode() + b"\xa1c"
        + bytes([0xa0 + len(name)]) + name.encode() + b"\xa1n\xce")
size = (len(head) + 4).to_bytes(2, "big")
payload = b"x" * 256
names = [f"{prefix}r{i}".encode() for i in range(topics)]
seq = [0] * topics
send, pack = pub.send_multipart, struct.Struct(">I").pack
sent = 0
start = time.monotonic()
while (now := time.monotonic()) < start + duration:
    ahead = sent - rate * (now - start)
    if ahead > 0:
        time.sleep(ahead / rate)
    for _ in range(64):
        t = sent % topics
        seq[t] += 1
        send([names[t], size + head + pack(seq[t]) + payload])
        sent += 1
pub.close(linger=-1)
print(sent, start, flush=True)
"""


def raw_publish(url: str, duration: float, rate: float, publishers: int) -> tuple[int, float]:
    """``publishers`` raw pyzmq processes offering ``rate`` events/s in all, for ``duration``
    s; returns (sent, monotonic time of the first publish)."""
    port = int(url.rsplit(":", 1)[1])
    argv = [sys.executable, "-c", RAW_PUBLISHER, f"tcp://127.0.0.1:{port}",
            f"tcp://127.0.0.1:{port + 1}", PREFIX]
    procs = [subprocess.Popen([*argv, f"pub{i}", str(duration), str(rate / publishers),
                               str(TOPICS)], stdout=subprocess.PIPE, text=True)
             for i in range(publishers)]
    sent, start = 0, float("inf")
    for proc in procs:
        out, _ = proc.communicate(timeout=duration + 120)
        count, began = out.split()[-2:]
        sent += int(count)
        start = min(start, float(began))
    return sent, start


def _stored(store: Path) -> int:
    if not (store / "log").is_dir():
        return 0
    with memory_store.open(store, readonly=True) as ro:
        return sum(n for t, n in ro.stats()["topics"].items() if t.startswith(PREFIX))


def commits(store: Path) -> int:
    """About how many group commits wrote the load: the topic index has one entry per topic
    per commit (memory_store/segment.py), and every commit of the load holds all its topics."""
    entries = 0
    with memory_store.open(store, readonly=True) as ro:
        for start in ro.log.starts():
            seg = ro.log.segment(start)
            if seg.ready():
                with seg.env.begin() as txn:
                    entries += txn.stat(seg.index)["entries"]
    return max(1, entries // TOPICS)


def _drain(store: Path, sent: int, idle_s: float = 5.0) -> tuple[int, float]:
    """Poll the log until every sent event is stored or nothing arrives for ``idle_s``."""
    last, last_change = -1, time.monotonic()
    while True:
        count = _stored(store)
        now = time.monotonic()
        if count != last:
            last, last_change = count, now
        if count >= sent or now - last_change > idle_s:
            return count, last_change
        time.sleep(0.05)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def code_tree(rev: str | None) -> Iterator[dict[str, str] | None]:
    """``None`` for the working tree; for a commit, an environment whose PYTHONPATH imports
    ``robobus`` from a ``git archive`` of it (laid out as installed, as tests/typecheck.sh).
    ``rev`` may also be a directory holding such a source tree (a host without git)."""
    if rev is None:
        yield None
        return
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory(prefix="robobus-base-") as tmp:
        src = Path(tmp) / "src"
        if Path(rev).is_dir():
            src = Path(rev).resolve()
        else:
            src.mkdir()
            archive = subprocess.run(["git", "-C", str(root), "archive", rev], check=True,
                                     capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
        pkg = Path(tmp) / "pkg" / "robobus"
        pkg.mkdir(parents=True)
        for entry in (src / "robobus").iterdir():
            (pkg / entry.name).symlink_to(entry)
        for name in ("bus", "schemas", "skills", "brain_agent", "edge_agent", "memory_store"):
            (pkg / name).symlink_to(src / name)
        # PYTHONSAFEPATH: without it ``python -m`` puts the current directory first on the
        # import path, and run from a checkout that imports the checkout's ``robobus`` (whose
        # bus/, memory_store/ ... the editable install then finds): both sides of a
        # --baseline run were the working tree's code.
        yield {"PYTHONPATH": str(pkg.parent), "PYTHONSAFEPATH": "1"}


@contextlib.contextmanager
def _hub(env: dict[str, str] | None, durable: bool) -> Iterator[tuple[str, int]]:
    port = testing.free_port(span=3)
    url = f"zmq://{testing.LOOPBACK}:{port}"
    extra = ["--replay-buffer", str(REPLAY_BUFFER)] if durable else []
    with testing.spawn(testing.robobus_cmd("hub", "--bus", url, *extra), name="hub", env=env) \
            as proc:
        for p in (port, port + 1, port + 2):
            testing.wait_port(p)
        yield url, proc.pid


def ingest_run(env: dict[str, str] | None, durable: bool, rate: float, duration: float,
               publishers: int, root: Path) -> dict[str, Any]:
    """One sustained run: hub, agent (from ``env``'s code), raw load, drain, count."""
    from bench.memory import _ready_then

    store = root / f"ingest-{time.monotonic_ns()}"
    with _hub(env, durable) as (url, hub_pid):
        argv = testing.robobus_cmd("memory", "--bus", url, "--store", str(store))
        with testing.spawn([*argv, "--durable"] if durable else argv, name="memory",
                           env=env) as agent:
            anyio.run(_ready_then, url)
            cpu0, hub0 = cpu_s(agent.pid), cpu_s(hub_pid)
            sent, started = raw_publish(url, duration, rate, publishers)
            stored, drained_at = _drain(store, sent)
            cpu1, hub1 = cpu_s(agent.pid), cpu_s(hub_pid)
    n_commits = commits(store)
    shutil.rmtree(store, ignore_errors=True)  # dirty pages dropped, not written back later
    took = max(drained_at - started, 1e-9)
    return {"path": "durable" if durable else "plain", "offered_per_s": rate,
            "duration_s": duration, "sent": sent, "stored": stored, "lost": sent - stored,
            "ingest_per_s": stored / took, "drain_s": max(0.0, took - duration),
            "agent_cpu_us_per_event": (cpu1 - cpu0) / max(stored, 1) * 1e6,
            "hub_cpu_us_per_event": (hub1 - hub0) / max(stored, 1) * 1e6,
            "events_per_commit": stored / n_commits}


def ingest_bench(rates: list[float], duration: float, paths: list[str], publishers: int,
                 baseline: str | None, repeats: int) -> dict[str, Any]:
    """Every (rate, path) for the working tree and, with ``baseline``, that commit, interleaved."""
    root = Path(tempfile.mkdtemp(prefix="robobus-ingest-"))
    runs: list[dict[str, Any]] = []
    try:
        with code_tree(baseline) as base_env:
            trees = [("new", None)] + ([("baseline", base_env)] if baseline else [])
            for repeat in range(repeats):
                for rate in rates:
                    for path in paths:
                        # alternate which code goes first: no order effect on the ratios
                        for label, env in trees[::-1] if repeat % 2 else trees:
                            print(f"[ingest] {label} {path} {rate:,.0f}/s ...", file=sys.stderr,
                                  flush=True)
                            run = ingest_run(env, path == "durable", rate, duration, publishers,
                                             root)
                            run["code"] = label
                            runs.append(run)
                            print(f"[ingest]   {_line(run)}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"runs": runs, "baseline": baseline, "publishers": publishers,
            "summary": summarise(runs)}


def _line(run: dict[str, Any]) -> str:
    return (f"{run['code']:<8} {run['path']:<7} offered {run['offered_per_s']:>9,.0f}/s  "
            f"stored {run['ingest_per_s']:>9,.0f}/s  lost {run['lost']:>8,}  "
            f"agent {run['agent_cpu_us_per_event']:5.1f} µs/ev  "
            f"hub {run['hub_cpu_us_per_event']:5.1f} µs/ev  "
            f"{run['events_per_commit']:6,.0f} ev/commit")


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per code and path: the best zero-loss rate and the median CPU per event; new/baseline
    ratios where both ran."""
    out: dict[str, Any] = {}
    for run in runs:
        key = f"{run['code']} {run['path']}"
        s = out.setdefault(key, {"max_zero_loss_per_s": 0.0, "cpu": [], "lost_runs": 0})
        if run["lost"] == 0:
            s["max_zero_loss_per_s"] = max(s["max_zero_loss_per_s"], run["ingest_per_s"])
        else:
            s["lost_runs"] += 1
        s["cpu"].append(run["agent_cpu_us_per_event"])
    for s in out.values():
        cpu = sorted(s.pop("cpu"))
        s["agent_cpu_us_per_event_median"] = cpu[len(cpu) // 2]
    for path in ("plain", "durable"):
        new, base = out.get(f"new {path}"), out.get(f"baseline {path}")
        if new and base and base["max_zero_loss_per_s"]:
            out[f"ratio {path}"] = {
                "zero_loss_rate": new["max_zero_loss_per_s"] / base["max_zero_loss_per_s"],
                "agent_cpu_per_event": new["agent_cpu_us_per_event_median"]
                / base["agent_cpu_us_per_event_median"]}
    return out


def table(result: dict[str, Any]) -> str:
    lines = [_line(r) for r in result["runs"]]
    for key, s in result["summary"].items():
        if key.startswith("ratio"):
            lines.append(f"{key}: zero-loss rate x{s['zero_loss_rate']:.2f}, agent CPU per "
                         f"event x{s['agent_cpu_per_event']:.2f}")
        else:
            lines.append(f"{key}: max zero-loss {s['max_zero_loss_per_s']:,.0f} ev/s, agent "
                         f"{s['agent_cpu_us_per_event_median']:.1f} µs/ev, "
                         f"{s['lost_runs']} run(s) with loss")
    return "\n".join(lines)


def plot(result: dict[str, Any], out: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, cx) = plt.subplots(1, 2, figsize=(11, 4))
    series: dict[str, list[dict[str, Any]]] = {}
    for run in result["runs"]:
        series.setdefault(f"{run['code']} {run['path']}", []).append(run)
    for name, runs in sorted(series.items()):
        runs.sort(key=lambda r: r["offered_per_s"])
        x = [r["offered_per_s"] / 1e3 for r in runs]
        line, = ax.plot(x, [r["ingest_per_s"] / 1e3 for r in runs], "o-", label=name)
        lossy = [r for r in runs if r["lost"]]
        ax.plot([r["offered_per_s"] / 1e3 for r in lossy],
                [r["ingest_per_s"] / 1e3 for r in lossy], "x", color="red", markersize=10)
        cx.plot(x, [r["agent_cpu_us_per_event"] for r in runs], "o-", color=line.get_color(),
                label=name)
    top = max(r["offered_per_s"] for r in result["runs"]) / 1e3
    ax.plot([0, top], [0, top], ":", color="grey", label="stored = offered")
    ax.set_xlabel("offered (thousand events/s)")
    ax.set_ylabel("stored (thousand events/s)")
    ax.set_title("memory agent ingest over ZeroMQ (red x: loss)")
    ax.legend(fontsize=8)
    cx.set_xlabel("offered (thousand events/s)")
    cx.set_ylabel("agent CPU per event (µs)")
    cx.set_title("memory agent CPU per stored event")
    fig.tight_layout()
    fig.savefig(out / "memory_ingest_rates.png", dpi=100)
    plt.close(fig)
    return "memory_ingest_rates.png"
