"""What a Mosquitto ``kill -9`` loses, and what saving on every change costs (issue 13).

Mosquitto acknowledges a QoS 1 publish (PUBACK) before it writes its persistence file; it has
no fsync-before-ack mode. With the generated config's old setting (no ``autosave_*`` line:
Mosquitto's default saves every 1,800 s) a ``kill -9`` loses every queued message since the
last save. ``write_mosquitto_conf`` now sets ``autosave_on_changes true`` with
``autosave_interval 1``: the database is written after every change, in the broker's main
loop, so only what arrived in the loop iteration of the kill can be lost.

Each trial: a persistent-session subscriber (QoS 1) subscribes and leaves, a publisher sends N
QoS 1 messages and waits for every PUBACK, the broker is killed with SIGKILL right after the last
PUBACK, restarted on the same files, and the subscriber comes back to count what it gets::

    .venv/bin/python -m bench.broker_durability --trials 4 --messages 1000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from robobus import testing

RESULTS = Path(__file__).resolve().parent / "results"
TOPIC = "bench/durable"


def _client(port: int, client_id: str, clean: bool) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
    c.max_inflight_messages_set(100)
    c.connect(testing.LOOPBACK, port)
    c.loop_start()
    return c


def _received(port: int, wait_s: float) -> set[bytes]:
    got: set[bytes] = set()
    done = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-durable-sub",
                    clean_session=False)
    c.on_message = lambda _c, _u, msg: got.add(msg.payload)
    c.on_connect = lambda cl, _u, _f, _rc, _p: (cl.subscribe(TOPIC, qos=1), done.set())
    c.connect(testing.LOOPBACK, port)
    c.loop_start()
    done.wait(10)
    last, quiet = -1, time.monotonic()
    while time.monotonic() - quiet < wait_s:  # until nothing new for wait_s
        if len(got) != last:
            last, quiet = len(got), time.monotonic()
        time.sleep(0.05)
    c.disconnect()
    c.loop_stop()
    return got


def trial(conf_kw: dict[str, Any], messages: int) -> dict[str, Any]:
    """One publish-then-kill-9 run; ``conf_kw`` goes to :func:`testing.write_mosquitto_conf`."""
    with tempfile.TemporaryDirectory(prefix="mosq-durable-") as d:
        port = testing.free_port()
        conf = testing.write_mosquitto_conf(Path(d), port, **conf_kw)
        argv = [testing.mosquitto_binary(), "-c", str(conf)]
        with testing.spawn(argv, name="mosquitto") as broker:
            testing.wait_port(port)
            _received(port, 0.2)  # the persistent session and its subscription exist
            pub = _client(port, "bench-durable-pub", clean=True)
            t0 = time.perf_counter()
            infos = [pub.publish(TOPIC, f"m{i}".encode(), qos=1) for i in range(messages)]
            for info in infos:
                info.wait_for_publish(30)
            took = time.perf_counter() - t0
            testing.kill9(broker)
            pub.loop_stop()
        with testing.spawn(argv, name="mosquitto-again"):
            testing.wait_port(port)
            got = _received(port, 1.0)
    acked = sum(info.is_published() for info in infos)
    return {"acked": acked, "delivered_after_restart": len(got), "lost": acked - len(got),
            "acked_per_s": round(acked / took)}


CONFIGS: dict[str, dict[str, Any]] = {
    "generated now": {},
    "save every change": {"autosave": "autosave_on_changes true\nautosave_interval 1\n"},
    "save every 1 s": {"autosave": "autosave_on_changes false\nautosave_interval 1\n"},
    "mosquitto default (every 1800 s)": {"autosave": None},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--messages", type=int, nargs="+", default=[200, 5000])
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    args = ap.parse_args()
    results: dict[str, Any] = {}
    for name in args.configs:
        kw = CONFIGS[name]
        for n in args.messages:
            runs = [trial(kw, n) for _ in range(args.trials)]
            results[f"{name}, {n} queued"] = runs
            lost = [r["lost"] for r in runs]
            rate = sorted(r["acked_per_s"] for r in runs)[len(runs) // 2]
            print(f"{name:34s} {n:6d} queued: lost per trial {lost}, median {rate} acked msgs/s")
    out = RESULTS / "broker_durability.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
