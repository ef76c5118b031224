"""How long a private Mosquitto takes to publish a hung client's will (``SIGSTOP``), and why.

N bare paho clients, each its own process, connect with a will and the edges' keepalive (2 s)
and publish a state every 0.1 s, as an edge's telemetry does. They are stopped with ``SIGSTOP``
one after another, ``--stagger`` seconds apart; a watcher here times each will from its
``SIGSTOP``. Per client: the delay, and the will's arrival relative to the first will.

Why (Mosquitto 2.0.0 to 2.0.20, ``src/keepalive.c``): the broker checks keepalives in one sweep
over all clients, and only when ``last_keepalive_check + 5 < now_s`` (whole seconds), so every
6 s; a client silent for more than ``keepalive * 3 / 2`` whole seconds (2 s -> more than 3 s) is
dropped at the next sweep. A hung client's will therefore comes 3 to about 10 s after its last
packet, whatever the load, and the wills of all hung clients land on the broker's 6 s grid
(arrivals relative to the first are multiples of 6 s).

    python -m bench.hung_edge [--clients 6] [--stagger 1.1] [--keepalive 2] [--out bench/results]

Prints a table and appends a row to ``hung_edge.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from robobus import testing

RESULTS = Path(__file__).resolve().parent / "results"
PREFIX = "bench-hung"
SWEEP_S = 6  # Mosquitto 2.0.x: a keepalive sweep when last_check + 5 < now_s
CLIENT = """
import sys, time
import paho.mqtt.client as mqtt
host, port, name, keepalive = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name)
c.will_set(f"bench-hung/alive/{name}", b"dead", qos=1, retain=False)
c.connect(host, port, keepalive)
c.loop_start()
print("ready", flush=True)
while True:
    c.publish(f"bench-hung/state/{name}", b"x", qos=0)
    time.sleep(0.1)
"""


@contextlib.contextmanager
def clients(host: str, port: int, n: int, keepalive: int) -> Iterator[list[subprocess.Popen[str]]]:
    """``n`` client processes, each connected and publishing once this yields."""
    procs = [subprocess.Popen([sys.executable, "-c", CLIENT, host, str(port), f"c{i}",
                               str(keepalive)], stdout=subprocess.PIPE, text=True)
             for i in range(n)]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        yield procs
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGCONT)
                p.kill()
            p.wait(5)


def measure(host: str, port: int, n: int, stagger: float, keepalive: int,
            timeout: float) -> list[dict[str, Any]]:
    """Stop each client ``stagger`` s after the previous; each will's delay from its SIGSTOP."""
    wills: queue.Queue[tuple[float, str]] = queue.Queue()
    watch = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-hung-watch")
    watch.on_message = lambda _c, _u, m: wills.put((time.monotonic(), m.topic.rsplit("/", 1)[1]))
    watch.connect(host, port, 10)
    watch.subscribe(f"{PREFIX}/alive/#", qos=1)
    watch.loop_start()
    try:
        with clients(host, port, n, keepalive) as procs:
            time.sleep(1.0)  # every client has published for a while
            stopped: dict[str, float] = {}
            for i, p in enumerate(procs):
                os.kill(p.pid, signal.SIGSTOP)
                stopped[f"c{i}"] = time.monotonic()
                time.sleep(stagger)
            arrived: dict[str, float] = {}
            deadline = time.monotonic() + timeout
            while len(arrived) < n and time.monotonic() < deadline:
                with contextlib.suppress(queue.Empty):
                    t, name = wills.get(timeout=0.2)
                    arrived.setdefault(name, t)
    finally:
        watch.loop_stop()
        watch.disconnect()
    first = min(arrived.values(), default=0.0)
    return [{"client": name, "will_after_s": round(arrived[name] - t, 2) if name in arrived
             else None, "after_first_will_s": round(arrived[name] - first, 2)
             if name in arrived else None} for name, t in stopped.items()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--stagger", type=float, default=1.1)
    ap.add_argument("--keepalive", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    version = subprocess.run([testing.mosquitto_binary(), "-h"], capture_output=True,
                             text=True).stdout.splitlines()[0]
    port = testing.free_port()
    with tempfile.TemporaryDirectory(prefix="robobus-bench-hung-") as tmp, \
            testing.spawn([testing.mosquitto_binary(), "-c",
                           str(testing.write_mosquitto_conf(Path(tmp), port))],
                          name="mosquitto"):
        testing.wait_port(port)
        rows = measure(testing.LOOPBACK, port, args.clients, args.stagger, args.keepalive,
                       timeout=3 * SWEEP_S + 2 * args.keepalive)
    print(f"{version}, keepalive {args.keepalive} s, clients stopped {args.stagger} s apart")
    print(f"{'client':>6} {'will after SIGSTOP (s)':>24} {'after the first will (s)':>26}")
    for r in rows:
        print(f"{r['client']:>6} {r['will_after_s']!s:>24} {r['after_first_will_s']!s:>26}")
    delays = [r["will_after_s"] for r in rows if r["will_after_s"] is not None]
    if delays:
        print(f"will after SIGSTOP: {min(delays):.2f}-{max(delays):.2f} s "
              f"({len(delays)} of {len(rows)} wills)")
    row = {"ts": time.time(), "command": shlex.join(sys.orig_argv), "mosquitto": version,
           "keepalive_s": args.keepalive, "stagger_s": args.stagger, "load": os.getloadavg(),
           "clients": rows}
    path = args.out / "hung_edge.json"
    doc = json.loads(path.read_text()) if path.exists() else {"bench": "hung_edge", "runs": []}
    doc["runs"].append(row)
    path.write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
