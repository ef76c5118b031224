"""The memory agent's CPU per event on the durable path, in one process, without sockets.

    python -m bench.memory_ingest_cpu [--events 200000]

A real memory agent (store, views, group commit, acks) on an in-process bus is fed the hub's
durable stream by :class:`bus.backends.zmq_durable.Durable` as fast as it takes it: batches of
256 (``DATA h "" packed``, what the hub sends) or one message per ``DATA`` (what it sent
before), with the agent's GC tuning on or off; ``tap``: batches taken in raw runs by the
agent's tapped subscription (``zmq_durable.tap``, ``memory_store/raw.py``), as over a real
durable ZeroMQ bus now. The buffers run full, as when the agent is the
bottleneck, and nothing else competes for the process, so CPU per event is steadier here than
in ``bench.memory --ingest``'s pipeline on a busy machine. Sockets and the hub are left out.
Writes ``memory_ingest_cpu.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

from robobus.bus import Bus
from robobus.bus import run as bus_run
from robobus.bus import zmq_wire as wire
from robobus.bus.backends.zmq_durable import Durable
from robobus.bus.hub_replay import BATCH, LENGTHS
from robobus.memory_store.agent import MemoryConfig, run

RESULTS = Path(__file__).resolve().parent / "results"
_H = struct.Struct(">Q")


def frames(n: int, batched: bool, batch: int = BATCH) -> list[list[bytes]]:
    """``n`` 256-byte events on 16 topics as the hub streams them (robobus wire headers)."""
    name = b"pub0"
    head = (b"\x83\xa1s\xa4" + name + b"\xa1c\xa4" + name + b"\xa1n\xce")
    size = (len(head) + 4).to_bytes(2, "big")
    topics = [f"robobus/bench/ingest/r{i}".encode() for i in range(16)]
    items = [(i + 1, topics[i % 16], size + head + struct.pack(">I", i) + b"x" * 256)
             for i in range(n)]
    if not batched:
        return [[wire.DATA, _H.pack(h), t, b] for h, t, b in items]
    return [[wire.DATA, _H.pack(chunk[0][0]), b"",
             b"".join(LENGTHS.pack(len(t), len(b)) + t + b for _, t, b in chunk)]
            for chunk in (items[s : s + batch] for s in range(0, n, batch))]


class _Transport:
    """What :class:`Durable` uses of a ZmqTransport: dispatch, the loop, the control send."""

    closed = False

    def __init__(self, bus: Bus) -> None:
        self.dispatch = bus.dispatch
        self.loop = asyncio.get_running_loop()
        self.acked = 0

    def send_control(self, frames: list[bytes]) -> None:
        self.acked = int.from_bytes(frames[1], "big")


async def measure(n: int, batched: bool, gc_threshold: int | None, tapped: bool = False,
                  batch: int = BATCH) -> dict[str, float]:
    stream = frames(n, batched, batch)
    with tempfile.TemporaryDirectory() as tmp:
        async with Bus.connect("memory://bench-cpu", name="memory") as bus, \
                anyio.create_task_group() as tg:
            transport = _Transport(bus)
            durable = Durable(transport, "memory")  # type: ignore[arg-type]
            if tapped:  # the agent finds the stream where a ZeroMQ bus keeps it
                bus._transport.durable = durable  # type: ignore[attr-defined]
            await tg.start(run, bus, MemoryConfig(store=Path(tmp) / "s",
                                                  gc_threshold=gc_threshold))
            # the subscriptions a ZeroMQ transport would have told the stream about
            durable.filters = {i: s.pattern for i, s in bus._subs.items()}
            cpu, wall, loop = time.process_time(), time.monotonic(), time.thread_time()
            for i, f in enumerate(stream):
                pending = durable.on_data(f)
                if pending is not None:
                    await pending
                if i % 16 == 0:
                    await asyncio.sleep(0)
            while transport.acked < n:  # every event committed and confirmed
                await asyncio.sleep(0.005)
            loop = time.thread_time() - loop
            cpu, wall = time.process_time() - cpu, time.monotonic() - wall
            tg.cancel_scope.cancel()
    # the event loop's thread alone: what one core must fit (the writer runs beside it)
    return {"cpu_us_per_event": cpu / n * 1e6, "loop_cpu_us_per_event": loop / n * 1e6,
            "events_per_s_wall": n / wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # child: tap|batch|single gc|nogc
    ap.add_argument("--batch", type=int, default=BATCH,
                    help="messages per DATA batch (the hub sends up to 256; fewer when quiet)")
    ap.add_argument("--modes", nargs="+", default=["tap", "batch", "single"],
                    choices=["tap", "batch", "single"])
    args = ap.parse_args()
    if args.one:
        mode, gc = args.one
        result = bus_run(measure, args.events, mode != "single", 10_000 if gc == "gc" else None,
                         mode == "tap", args.batch)
        print(json.dumps(result))
        return
    rows = []
    for _ in range(args.repeats):  # each variant in a fresh process, interleaved
        for mode in args.modes:
            for gc in ("gc", "nogc"):
                out = subprocess.run([sys.executable, "-m", "bench.memory_ingest_cpu", "--events",
                                      str(args.events), "--batch", str(args.batch), "--one", mode,
                                      gc], check=True,
                                     capture_output=True, text=True).stdout
                row = {"stream": mode, "gc_tuned": gc == "gc", "batch": args.batch,
                       **json.loads(out.splitlines()[-1])}
                rows.append(row)
                print(f"{mode:<6} {'gc tuned' if gc == 'gc' else 'gc default':<10} "
                      f"{row['cpu_us_per_event']:6.2f} µs CPU/event "
                      f"({row['loop_cpu_us_per_event']:5.2f} on the loop)  "
                      f"{row['events_per_s_wall']:>9,.0f} ev/s", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "memory_ingest_cpu.json").write_text(json.dumps({"events": args.events,
                                                                "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
