"""Load generators for ``bench/memory.py``'s ingest runs (publishers in their own processes).

The count each returns is what was sent; ``bench/memory.py`` compares it with what was stored.
"""

from __future__ import annotations

import subprocess
import sys
import time

PUBLISHER = r"""
import sys, time, anyio
from robobus.bus import Bus
url, topic = sys.argv[1], sys.argv[2]
duration, qos, conc = float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
rate = float(sys.argv[6]) / conc  # per worker; 0: as fast as possible
payload = b"x" * 256
async def main():
    sent = 0
    async with Bus.connect(url, name="benchpub") as bus:
        start = time.monotonic()
        deadline = start + duration
        async def worker():
            nonlocal sent
            mine = 0
            while time.monotonic() < deadline:
                for _ in range(100):
                    await bus.publish(topic, payload, qos=qos)
                sent += 100
                mine += 100
                if rate:
                    await anyio.sleep(max(0.0, start + mine / rate - time.monotonic()))
                else:
                    await anyio.sleep(0)
        async with anyio.create_task_group() as tg:
            for _ in range(conc):
                tg.start_soon(worker)
    print(sent, start, flush=True)  # start: CLOCK_MONOTONIC, shared by every process
anyio.run(main)
"""


#: offered rate over ZeroMQ (events/s); the target is 80k/s sustained with zero loss
ZMQ_RATE = 85_000
#: MQTT load generators: "mosquitto_pub" (C, two processes; the default) or "robobus" (Python
#: publishers, which on 2 cores become the limit before the agent does)
MQTT_LOADS = ("mosquitto_pub", "robobus")
#: offered rate of the mosquitto_pub load (events/s); the target is 15k/s with zero loss
MQTT_RATE = 18_000


def _c_publish(url: str, topic: str, duration: float, procs: int = 2) -> tuple[int, float]:
    """MQTT load from ``procs`` ``mosquitto_pub -l -q 1`` (C, libmosquitto) fed 256-byte lines
    at ``MQTT_RATE`` for ``duration`` s: measures the agent's ingest, not a Python publisher's
    speed. Paced, because ``mosquitto_pub -l`` queues without bound (a line per message, read
    as fast as the pipe delivers). Returns the lines written; each becomes one QoS 1 message
    (the store count shows any loss), and when the first line went out."""
    host, port = url.removeprefix("mqtt://").rsplit(":", 1)
    line = b"x" * 255 + b"\n"
    chunk = line * 64
    pubs = [subprocess.Popen(["mosquitto_pub", "-h", host, "-p", port, "-q", "1", "-t", topic,
                              "-l", "-i", f"bench-c{i}"], stdin=subprocess.PIPE)
            for i in range(procs)]
    sent = 0
    start = time.monotonic()
    while (now := time.monotonic()) < start + duration:
        ahead = sent - MQTT_RATE * (now - start)
        if ahead > 0:
            time.sleep(ahead / MQTT_RATE)
        for proc in pubs:
            assert proc.stdin is not None
            proc.stdin.write(chunk)
            proc.stdin.flush()
            sent += 64
    for proc in pubs:
        assert proc.stdin is not None
        proc.stdin.close()
    for proc in pubs:
        proc.wait(timeout=120)
    return sent, start


def _publish(kind: str, url: str, topic: str, duration: float, procs: int = 2
             ) -> tuple[int, float]:
    """Publish 256-byte payloads for ``duration`` s; returns the count the publishers sent
    and when the first of them started (after its interpreter start and connect).

    ZeroMQ: one robobus publisher process at QoS 0. MQTT: ``procs`` robobus publisher
    processes with 16 concurrent QoS 1 publishes each (one paho client is near the target
    rate by itself).
    """
    qos, conc, procs = (0, 1, 1) if kind == "zmq" else (1, 16, procs)
    rate = ZMQ_RATE if kind == "zmq" else 0
    argv = [sys.executable, "-c", PUBLISHER, url, topic, str(duration), str(qos), str(conc),
            str(rate)]
    pubs = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) for _ in range(procs)]
    sent, start = 0, float("inf")
    for proc in pubs:
        out, _ = proc.communicate(timeout=duration + 120)
        count, began = out.split()[-2:]
        sent += int(count)
        start = min(start, float(began))
    return sent, start


def publish(kind: str, url: str, topic: str, duration: float, mqtt_load: str
            ) -> tuple[int, float]:
    """Run the load for ``kind`` (zmq or mqtt); returns (sent, monotonic start)."""
    if kind == "mqtt" and mqtt_load == "mosquitto_pub":
        return _c_publish(url, topic, duration)
    return _publish(kind, url, topic, duration)
