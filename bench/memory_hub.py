"""The hub alone on the durable stream (issue 16 item 6): ``python -m bench.memory_hub``.

Raw pyzmq publishers (``bench.memory_ingest``'s load) offer ``--rate`` events/s to a
``robobus hub --replay-buffer 500000``; a raw durable client takes the numbered stream and
confirms each batch at once, as if its commits cost nothing. So the hub is measured without the
memory agent: its CPU per event in all, and that of its control thread (the Python thread that
numbers, buffers and streams the capture; the proxy runs in C beside it). With ``--baseline
REV`` (a commit, or a directory holding a source tree) the hub of that code runs too,
interleaved. Writes ``bench/results/memory_hub.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.memory_ingest import PREFIX, RAW_PUBLISHER, REPLAY_BUFFER, TOPICS, code_tree, cpu_s
from robobus import testing

RESULTS = Path(__file__).resolve().parent / "results"

CONSUMER = r"""
import struct, sys, zmq
ctl_ep, expect = sys.argv[1], int(sys.argv[2])
d = zmq.Context().socket(zmq.DEALER)
d.setsockopt(zmq.IDENTITY, b"bench-durable")
d.setsockopt(zmq.RCVHWM, 100000)
d.connect(ctl_ep)
d.send_multipart([b"DURABLE", b"bench"])
lengths = struct.Struct(">HI")
got = 0
while got < expect and d.poll(3000):
    f = d.recv_multipart()
    if f[0] != b"DATA":
        continue
    h, n = int.from_bytes(f[1], "big"), 1
    if not f[2]:
        packed, pos, n = f[3], 0, 0
        while pos < len(packed):
            tlen, blen = lengths.unpack_from(packed, pos)
            pos += lengths.size + tlen + blen
            n += 1
    got += n
    d.send_multipart([b"DACK", (h + n - 1).to_bytes(8, "big")])
print(got, flush=True)
"""


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of ``pid``."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def hub_run(env: dict[str, str] | None, rate: float, duration: float, publishers: int
            ) -> dict[str, Any]:
    port = testing.free_port(span=3)
    url = f"zmq://{testing.LOOPBACK}:{port}"
    argv = testing.robobus_cmd("hub", "--bus", url, "--replay-buffer", str(REPLAY_BUFFER))
    with testing.spawn(argv, name="hub", env=env) as hub:
        for p in (port, port + 1, port + 2):
            testing.wait_port(p)
        expect = int(rate * duration * 0.99)
        consumer = subprocess.Popen([sys.executable, "-c", CONSUMER,
                                     f"tcp://{testing.LOOPBACK}:{port + 2}", str(expect)],
                                    stdout=subprocess.PIPE, text=True)
        time.sleep(0.3)  # the consumer's DURABLE reaches the hub
        cpu0, threads0 = cpu_s(hub.pid), thread_cpu(hub.pid)
        load = [subprocess.Popen([sys.executable, "-c", RAW_PUBLISHER,
                                  f"tcp://{testing.LOOPBACK}:{port}",
                                  f"tcp://{testing.LOOPBACK}:{port + 1}", PREFIX, f"pub{i}",
                                  str(duration), str(rate / publishers), str(TOPICS)],
                                 stdout=subprocess.PIPE, text=True) for i in range(publishers)]
        sent = sum(int(p.communicate(timeout=duration + 120)[0].split()[0]) for p in load)
        got = int(consumer.communicate(timeout=120)[0].split()[0])
        cpu1, threads1 = cpu_s(hub.pid), thread_cpu(hub.pid)
    per = max(got, 1) / 1e6
    return {"offered_per_s": rate, "sent": sent, "streamed": got,
            "hub_cpu_us_per_event": (cpu1 - cpu0) / per,
            # serve() runs the control loop in the process's main thread
            "control_cpu_us_per_event": (threads1[hub.pid] - threads0[hub.pid]) / per}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=50_000)
    ap.add_argument("--duration", type=float, default=6.0)
    ap.add_argument("--publishers", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--baseline", default=None, help="also run the hub of commit REV (or a dir)")
    args = ap.parse_args()
    rows = []
    with code_tree(args.baseline) as base_env:
        trees = [("new", None)] + ([("baseline", base_env)] if args.baseline else [])
        for repeat in range(args.repeats):
            for label, env in trees[::-1] if repeat % 2 else trees:
                row = {"code": label, **hub_run(env, args.rate, args.duration, args.publishers)}
                rows.append(row)
                print(f"{label:<8} offered {row['offered_per_s']:>9,.0f}/s  sent {row['sent']:>9,}"
                      f"  streamed {row['streamed']:>9,}  hub {row['hub_cpu_us_per_event']:5.2f}"
                      f" µs/ev  control thread {row['control_cpu_us_per_event']:5.2f} µs/ev",
                      flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "memory_hub.json").write_text(json.dumps(
        {"rows": rows, "baseline": args.baseline, "host": {"cpus": os.cpu_count(),
                                                           "load": os.getloadavg()}}, indent=2))


if __name__ == "__main__":
    main()
