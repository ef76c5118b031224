"""CPU per acknowledged publish through the ZeroMQ hub (issue 16, item 1).

    python -m bench.bus_acked [--n 20000] [--runs 3]

Every robobus skill command and task status is an acknowledged (qos 1) publish: client ->
the hub's control thread (ack back, message injected into the data path) -> its C proxy ->
subscriber. On a loaded machine latency is mostly scheduling noise, while the CPU time each
process spends per message is a property of the code. This runs a ``robobus hub`` process and
two clients in this process (a publisher awaiting each ack, a subscriber) and reports, per
message: wall time, the hub process's CPU and this process's CPU (both clients). Run it on
two commits to compare them; ``--window N`` pipelines N acks with ``Bus.post``; ``--burst N``
posts N in one event-loop turn and awaits them all, as the brain sends a task's statuses
(``--coalesce``: inside ``Bus.coalesce()``, one control message for the N on ZeroMQ).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import time
from collections.abc import Awaitable
from typing import Any

import anyio
import psutil

from robobus import testing
from robobus.bus import Bus

PAYLOAD = b"x" * 120  # about a skill command's size


async def _run(url: str, hub: psutil.Process, n: int, window: int, burst: int = 0,
               coalesce: bool = False) -> dict[str, float]:
    topic = "bench/acked"
    n -= n % burst if burst else 0
    async with Bus.connect(url, name="tx") as tx, Bus.connect(url, name="rx") as rx, \
            rx.subscribe(topic) as sub:
        got = 0
        done = anyio.Event()

        async def count() -> None:
            nonlocal got
            async for _ in sub:
                got += 1
                if got == n:
                    done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(count)
            hub0, me0, t0 = hub.cpu_times(), time.process_time(), time.perf_counter()
            if burst:
                for _ in range(n // burst):
                    # an older tree has no Bus.coalesce: compare it with plain bursts
                    hold = getattr(tx, "coalesce", None) if coalesce else None
                    with hold() if hold is not None else contextlib.nullcontext():
                        acks = [await tx.post(topic, PAYLOAD) for _ in range(burst)]
                    for ack in acks:
                        await ack
            elif window <= 1:
                for _ in range(n):
                    await tx.publish(topic, PAYLOAD, qos=1)
            else:
                acks: collections.deque[Awaitable[None]] = collections.deque()
                for _ in range(n):
                    acks.append(await tx.post(topic, PAYLOAD))
                    if len(acks) >= window:
                        await acks.popleft()
                for ack in acks:
                    await ack
            with anyio.fail_after(60):
                await done.wait()
            wall, me, hub1 = time.perf_counter() - t0, time.process_time() - me0, hub.cpu_times()
            tg.cancel_scope.cancel()
    hub_cpu = (hub1.user + hub1.system) - (hub0.user + hub0.system)
    return {"wall_us": wall / n * 1e6, "hub_cpu_us": hub_cpu / n * 1e6,
            "clients_cpu_us": me / n * 1e6, "per_s": n / wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--window", type=int, default=1, help="acks in flight (Bus.post); 1: publish")
    ap.add_argument("--burst", type=int, default=0, help="posts per loop turn, then await them")
    ap.add_argument("--coalesce", action="store_true", help="--burst inside Bus.coalesce()")
    args = ap.parse_args()
    port = testing.free_port(span=3)
    url = f"zmq://127.0.0.1:{port}"
    rows: list[dict[str, Any]] = []
    with testing.spawn(testing.robobus_cmd("hub", "--bus", url), name="hub",
                       env={"ROBOBUS_LOG": "warning"}) as proc:
        for p in (port, port + 1, port + 2):
            testing.wait_port(p)
        hub = psutil.Process(proc.pid)
        anyio.run(_run, url, hub, 500, args.window, args.burst, args.coalesce)  # warm-up
        for _ in range(args.runs):
            rows.append(anyio.run(_run, url, hub, args.n, args.window, args.burst, args.coalesce))
            print(json.dumps({k: round(v, 2) for k, v in rows[-1].items()}))
    best = {k: min(r[k] for r in rows) for k in ("wall_us", "hub_cpu_us", "clients_cpu_us")}
    print("best of runs: " + json.dumps({k: round(v, 2) for k, v in best.items()}))


if __name__ == "__main__":
    main()
