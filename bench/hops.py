"""The two bus hops of instruction -> first command, robobus against raw, split into stamps.

    python -m bench.hops [--n 300] [--transport zmq|mqtt|both] [--out bench/results]

A ping-pong between this process and an echo process, through a ``robobus hub`` process (or a
private Mosquitto), shaped like the brain's trip: a plain (qos 0) ``ping`` out, as a bench
publishes an instruction, and the echo's answer ``pong`` back acknowledged (qos 1, ``post``, as
the brain posts a skill command) or plain. Each round stamps, with the machine-wide monotonic
clock (``perf_counter_ns``, one clock for every process on Linux):

* ``t0``: just before ``publish`` here;
* ``t1``: the echo's handler has the message (after the subscription's iterator);
* ``t2``: just before the echo's ``post``;
* ``t3``: this process's handler has the pong.

``in`` = t1 - t0 (the hop to the brain's intake), ``out`` = t3 - t2 (the hop to the robot).
The raw rounds make the same trip with raw pyzmq through the same hub (the acked pong is the
exact ``PUB`` control message robobus sends) or raw paho through the same Mosquitto, with the
same stamps; on ZeroMQ a third echo (``aio``) is raw pyzmq read on an asyncio loop the way
robobus reads (``add_reader`` on the socket's FD): the floor of any asyncio client, which the
blocking raw echo does not pay. Rounds alternate robobus / aio / raw so machine noise lands on
all of them. It also reports
this process's and the echo's CPU time per round (``process_time``), the figure that holds up
when other work shares the cores.

Writes ``hops.json`` (per transport and mode: p50/p90/p99 of ``in``, ``out`` and the round,
raw beside robobus).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import secrets
import struct
import tempfile
import time
from multiprocessing.synchronize import Event as EventT
from pathlib import Path
from typing import Any

import anyio
import paho.mqtt.client as paho
import zmq

from bench.brain_floor import _paho, raw_client
from robobus import testing
from robobus.bus import Bus, run
from robobus.bus import zmq_wire as wire

MODES = ("acked", "plain")
_STAMPS = struct.Struct(">qqq")  # t0 (echoed back), t1, t2
_now = time.perf_counter_ns


# -- the echo processes ------------------------------------------------------------------------
def _run(func: Any, *args: Any) -> Any:
    """On uvloop, as every robobus process starts (``robobus.bus.run``), unless
    ``HOPS_LOOP=asyncio`` (inherited by the echo processes)."""
    if os.environ.get("HOPS_LOOP") == "asyncio":
        return anyio.run(func, *args)
    return run(func, *args)


def robobus_echo(url: str, prefix: str, stages: str, cpu: Any, stop: EventT) -> None:
    """A robobus client answering each ping at once: ``pong/acked`` posted (qos 1). With a
    ``stages`` file (ZeroMQ), it also stamps each ping as the transport reads it and as it has
    handed it to the subscription, and writes those stamps there at the end."""
    seen: list[list[int]] = []
    if stages:
        _stamp_transport()
    _run(_robobus_echo, url, prefix, cpu, stop, seen)
    if stages:
        Path(stages).write_text(json.dumps(seen))


#: the last ping's (read by the transport, handed to its subscription), see _stamp_transport
_READ = [0, 0]


def _stamp_transport() -> None:
    from robobus.bus.backends.zmq import ZmqTransport

    on_data = ZmqTransport._on_data

    def stamped(self: ZmqTransport, frames: list[bytes]) -> Any:
        _READ[0] = _now()
        out = on_data(self, frames)
        _READ[1] = _now()
        return out

    ZmqTransport._on_data = stamped  # type: ignore[method-assign]


async def _robobus_echo(url: str, prefix: str, cpu: Any, stop: EventT,
                        seen: list[list[int]]) -> None:
    async with Bus.connect(url, name="hops-echo") as bus, \
            bus.subscribe(f"{prefix}/ping/+") as sub:
        pongs = {f"{prefix}/ping/{m}": f"{prefix}/pong/{m}" for m in MODES}
        async with anyio.create_task_group() as tg:
            tg.start_soon(_watch_stop, stop, tg.cancel_scope)
            async for msg in sub:
                t1 = _now()
                topic = pongs[msg.topic]
                cpu.value = time.process_time()
                t0 = _STAMPS.unpack(msg.payload)[0]
                seen.append([t0, *_READ, t1])
                t2 = _now()
                body = _STAMPS.pack(t0, t1, t2)
                if topic.endswith("acked"):
                    await (await bus.post(topic, body, qos=1))
                else:
                    await bus.publish(topic, body)


async def _watch_stop(stop: EventT, scope: anyio.CancelScope) -> None:
    while not stop.is_set():
        await anyio.sleep(0.1)
    scope.cancel()


def zmq_echo(url: str, prefix: str, cpu: Any, stop: EventT) -> None:
    """Raw pyzmq through the same hub: the acked pong is the ``PUB`` control message."""
    ctx, sub, pub, ctl = raw_client(url, f"raw-{prefix}/ping/")
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    poller.register(ctl, zmq.POLLIN)
    seq = 0
    while not stop.is_set():
        for sock, _ in poller.poll(100):
            if sock is not sub:
                ctl.recv_multipart()  # the ACK
                continue
            topic, body = sub.recv_multipart()
            t1 = _now()
            cpu.value = time.process_time()
            pong = topic.replace(b"/ping/", b"/pong/")
            t2 = _now()
            payload = _STAMPS.pack(_STAMPS.unpack(body[-24:])[0], t1, t2)
            if pong.endswith(b"/acked"):
                seq += 1
                ctl.send_multipart([wire.PUB, seq.to_bytes(8, "big"), pong, b"", payload])
            else:
                pub.send_multipart([pong, wire.pack_body(b"", payload)])
    ctx.destroy(linger=0)


def zmq_aio_echo(url: str, prefix: str, cpu: Any, stop: EventT) -> None:
    """Raw pyzmq read on an asyncio loop (``add_reader`` on the socket's FD, as robobus reads):
    the floor of an asyncio client, which the blocking raw echo does not pay."""
    _run(_zmq_aio_echo, url, prefix, cpu, stop)


async def _zmq_aio_echo(url: str, prefix: str, cpu: Any, stop: EventT) -> None:
    ctx, sub, pub, ctl = raw_client(url, f"aio-{prefix}/ping/")
    loop = asyncio.get_running_loop()
    seq = [0]

    def drain_ctl() -> None:
        while wire.readable(ctl):
            ctl.recv_multipart(wire.NOBLOCK)  # the ACK

    def drain() -> None:
        while wire.readable(sub):
            topic, body = sub.recv_multipart(wire.NOBLOCK)
            t1 = _now()
            cpu.value = time.process_time()
            pong = topic.replace(b"/ping/", b"/pong/")
            t2 = _now()
            payload = _STAMPS.pack(_STAMPS.unpack(body[-24:])[0], t1, t2)
            if pong.endswith(b"/acked"):
                seq[0] += 1
                wire.send_frames(ctl, [wire.PUB, wire.pack_id(seq[0]), pong, b"", payload])
                loop.call_soon(drain_ctl)  # the send may have taken the FD's edge
            else:
                wire.send_frames(pub, [pong, wire.pack_body(b"", payload)])

    loop.add_reader(sub.FD, drain)
    loop.add_reader(ctl.FD, drain_ctl)
    while not stop.is_set():
        await asyncio.sleep(0.1)
    ctx.destroy(linger=0)


def paho_echo(url: str, prefix: str, cpu: Any, stop: EventT) -> None:
    """Raw paho through the same Mosquitto, its network loop in this thread."""
    client = _paho(url, f"hops-raw-echo-{prefix}")

    def on_message(c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        t1 = _now()
        cpu.value = time.process_time()
        pong = msg.topic.replace("/ping/", "/pong/")
        t2 = _now()
        payload = _STAMPS.pack(_STAMPS.unpack(msg.payload)[0], t1, t2)
        c.publish(pong, payload, qos=1 if pong.endswith("/acked") else 0)

    client.on_message = on_message
    client.subscribe(f"raw-{prefix}/ping/+", qos=1)
    while not stop.is_set():
        client.loop(0.1)
    client.disconnect()


def _spawn(target: Any, *args: Any) -> tuple[Any, EventT, Any]:
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    cpu = ctx.Value("d", 0.0, lock=False)
    proc = ctx.Process(target=target, args=(*args, cpu, stop), daemon=True)
    proc.start()
    return proc, stop, cpu


def _end(proc: Any, stop: EventT) -> None:
    stop.set()
    proc.join(5)
    if proc.is_alive():
        proc.kill()
        proc.join(5)


# -- this side ----------------------------------------------------------------------------------
class RawZmq:
    def __init__(self, url: str, prefix: str) -> None:
        ep = wire.endpoints(url)
        self.prefix = prefix  # "raw-PREFIX" or "aio-PREFIX"
        self.ctx = zmq.Context()
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.connect(ep.publish)
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.subscribe(f"{prefix}/pong/")
        self.sub.connect(ep.subscribe)

    def round(self, mode: str, timeout: float) -> tuple[int, int, int, int] | None:
        t0 = _now()
        self.pub.send_multipart([f"{self.prefix}/ping/{mode}".encode(),
                                 wire.pack_body(b"", _STAMPS.pack(t0, 0, 0))])
        if not self.sub.poll(int(timeout * 1000)):
            return None
        body = self.sub.recv_multipart()[1]
        t3 = _now()
        _t0, t1, t2 = _STAMPS.unpack(body[-24:])
        return t0, t1, t2, t3

    def drain(self) -> None:
        while self.sub.poll(50):
            self.sub.recv_multipart()

    def close(self) -> None:
        self.ctx.destroy(linger=0)


class RawPaho:
    def __init__(self, url: str, prefix: str) -> None:
        self.prefix = prefix
        self.client = _paho(url, f"hops-raw-{prefix}")
        self.got: list[tuple[bytes, int]] = []
        self.client.on_message = lambda _c, _u, m: self.got.append((m.payload, _now()))
        self.client.subscribe(f"raw-{prefix}/pong/+", qos=1)

    def round(self, mode: str, timeout: float) -> tuple[int, int, int, int] | None:
        self.got.clear()
        t0 = _now()
        deadline = t0 + int(timeout * 1e9)
        self.client.publish(f"raw-{self.prefix}/ping/{mode}", _STAMPS.pack(t0, 0, 0))
        while not self.got:
            left = (deadline - _now()) / 1e9
            if left <= 0:
                return None
            self.client.loop(left)
        body, t3 = self.got[0]
        _t0, t1, t2 = _STAMPS.unpack(body)
        return t0, t1, t2, t3

    def drain(self) -> None:
        self.client.loop(0.05)

    def close(self) -> None:
        self.client.disconnect()


async def _robobus_round(bus: Bus, sub: Any, prefix: str, mode: str, timeout: float
                         ) -> tuple[int, int, int, int] | None:
    t0 = _now()
    await bus.publish(f"{prefix}/ping/{mode}", _STAMPS.pack(t0, 0, 0))
    with anyio.move_on_after(timeout):
        while True:
            msg = await sub.get()
            t3 = _now()
            s0, t1, t2 = _STAMPS.unpack(msg.payload)
            if s0 == t0:
                return t0, t1, t2, t3
    return None


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(q * len(xs)))], 4)


def _summary(rows: list[tuple[int, int, int, int]], cpu_here: float, cpu_echo: float
             ) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(rows)}
    for name, f in (("in_ms", lambda r: r[1] - r[0]), ("out_ms", lambda r: r[3] - r[2]),
                    ("echo_ms", lambda r: r[2] - r[1]), ("round_ms", lambda r: r[3] - r[0])):
        xs = [f(r) / 1e6 for r in rows]
        out[name] = {"p50": _pct(xs, 0.5), "p90": _pct(xs, 0.9), "p99": _pct(xs, 0.99)}
    out["cpu_us_per_round_here"] = round(cpu_here / max(1, len(rows)) * 1e6, 1)
    out["cpu_us_per_round_echo"] = round(cpu_echo / max(1, len(rows)) * 1e6, 1)
    return out


async def run_transport(url: str, n: int, stages: bool = False) -> dict[str, Any]:
    prefix = f"hops{secrets.token_hex(3)}"
    mqtt = url.startswith("mqtt")
    stages_file = ""
    if stages and not mqtt:
        stages_file = str(Path(tempfile.mkdtemp(prefix="hops-")) / "stages.json")
    echo, stop, echo_cpu = _spawn(robobus_echo, url, prefix, stages_file)
    raw_echo, raw_stop, raw_cpu = _spawn(paho_echo if mqtt else zmq_echo, url, prefix)
    kinds = ("robobus", "raw") if mqtt else ("robobus", "raw", "aio")
    raws: dict[str, Any] = {"raw": RawPaho(url, prefix) if mqtt else RawZmq(url, f"raw-{prefix}")}
    echoes = {"robobus": (echo, stop, echo_cpu), "raw": (raw_echo, raw_stop, raw_cpu)}
    if not mqtt:
        raws["aio"] = RawZmq(url, f"aio-{prefix}")
        echoes["aio"] = _spawn(zmq_aio_echo, url, prefix)
    rows: dict[str, list[Any]] = {f"{k}_{m}": [] for k in kinds for m in MODES}
    cpu = dict.fromkeys(rows, 0.0)
    ecpu = dict.fromkeys(rows, 0.0)
    try:
        async with Bus.connect(url, name="hops-bench") as bus, \
                bus.subscribe(f"{prefix}/pong/+") as sub:
            deadline = time.monotonic() + 30
            for mode in MODES:  # warm up: until every hop answers
                while await _robobus_round(bus, sub, prefix, mode, 0.2) is None or \
                        any(r.round(mode, 0.2) is None for r in raws.values()):
                    if time.monotonic() > deadline:
                        raise RuntimeError("the echo processes did not answer")
            for _ in range(20):
                for mode in MODES:
                    await _robobus_round(bus, sub, prefix, mode, 1.0)
                    for r in raws.values():
                        r.round(mode, 1.0)
            for r in raws.values():
                r.drain()
            while sub.get_nowait() is not None:
                pass
            for _ in range(n):
                for mode in MODES:
                    for kind in kinds:
                        key = f"{kind}_{mode}"
                        e = echoes[kind][2]
                        e0, c0 = e.value, time.process_time()
                        if kind == "robobus":
                            row = await _robobus_round(bus, sub, prefix, mode, 1.0)
                        else:
                            row = raws[kind].round(mode, 1.0)
                        cpu[key] += time.process_time() - c0
                        if row is not None:
                            rows[key].append(row)
                        await anyio.sleep(0.002)  # the echo's CPU stamp of this round
                        ecpu[key] += e.value - e0
    finally:
        for r in raws.values():
            r.close()
        for proc, ended, _cpu in echoes.values():
            _end(proc, ended)
    result = {key: _summary(r, cpu[key], ecpu[key]) for key, r in rows.items()}
    for mode in MODES:
        rb = result[f"robobus_{mode}"]
        for kind in kinds[1:]:
            rw = result[f"{kind}_{mode}"]
            result[f"ratio_{kind}_{mode}"] = {
                k: round(rb[k]["p50"] / rw[k]["p50"], 2) for k in ("in_ms", "out_ms", "round_ms")}
    if stages_file:
        result["robobus_in_stages_ms"] = _stages(json.loads(Path(stages_file).read_text()))
    return result


def _stages(seen: list[list[int]]) -> dict[str, float]:
    """p50 of the in-hop's parts: publish -> the transport reads it -> handed to the
    subscription -> the handler has it (the subscriber task's wake-up)."""
    seen = [s for s in seen if s[1] > s[0]][-400:]  # measured rounds, not the warm-up
    parts = {"to_read": (0, 1), "read_to_handed": (1, 2), "handed_to_handler": (2, 3)}
    return {name: _pct([(s[b] - s[a]) / 1e6 for s in seen], 0.5)
            for name, (a, b) in parts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--transport", choices=("zmq", "mqtt", "both"), default="both")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop",
                        help="the event loop of every asyncio process here (robobus: uvloop)")
    parser.add_argument("--stages", action="store_true",
                        help="ZeroMQ: split robobus's in-hop where the transport reads and hands over")
    args = parser.parse_args()
    os.environ["HOPS_LOOP"] = args.loop
    out: dict[str, Any] = {}
    if args.transport in ("zmq", "both"):
        with testing.hub() as url:
            out["zmq"] = _run(run_transport, url, args.n, args.stages)
    if args.transport in ("mqtt", "both"):
        with testing.mosquitto() as url:
            out["mqtt"] = _run(run_transport, url, args.n)
    for transport, res in out.items():
        for key in ("robobus_acked", "aio_acked", "raw_acked", "robobus_plain", "aio_plain",
                    "raw_plain"):
            r = res.get(key)
            if r is None:
                continue
            print(f"{transport:4} {key:14} in {r['in_ms']['p50']:.3f} out {r['out_ms']['p50']:.3f}"
                  f" echo {r['echo_ms']['p50']:.3f} round {r['round_ms']['p50']:.3f} ms p50"
                  f" (p99 {r['round_ms']['p99']:.3f}); cpu us/round here"
                  f" {r['cpu_us_per_round_here']} echo {r['cpu_us_per_round_echo']}")
        if "robobus_in_stages_ms" in res:
            print(f"{transport:4} robobus in-hop p50 ms: {res['robobus_in_stages_ms']}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "hops.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
