"""The raw pyzmq floor under the brain's response latency, over the same hub and hops.

A robobus instruction crosses ``bench PUB -> hub proxy -> brain``, and its first skill command
``brain -> hub control thread (acknowledged publish) -> hub proxy -> robot``. The floor makes
the same trip with no brain and no robobus client code: a raw PUB here, a raw responder process
that answers each instruction at once with an acknowledged ``PUB`` on the hub's control socket
(exactly the frames a robobus qos 1 publish sends), and a raw SUB here. What robobus measures
above the floor is the brain's own work (decode, parse, plan, validate) and its client library.

Rounds alternate with the robobus ones in one process tree, against the same ``robobus hub``
process, so machine noise lands on both.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from multiprocessing.synchronize import Event as EventT

import zmq

from bus import zmq_wire as wire


def _topics(prefix: str) -> tuple[bytes, bytes]:
    """Outside ``prefix``: the memory agent records the robobus side's traffic, not this."""
    return f"floor-{prefix}/instruction".encode(), f"floor-{prefix}/command".encode()


def responder(url: str, prefix: str, command: bytes, stop: EventT) -> None:
    """Answer every floor instruction with one acknowledged publish; acks are read and dropped."""
    inst_topic, cmd_topic = _topics(prefix)
    ep = wire.endpoints(url)
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.subscribe(inst_topic)
    sub.connect(ep.subscribe)
    ctl = ctx.socket(zmq.DEALER)
    ctl.connect(ep.control)
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    poller.register(ctl, zmq.POLLIN)
    seq = 0
    while not stop.is_set():
        for sock, _ in poller.poll(100):
            if sock is sub:
                sub.recv_multipart()
                seq += 1
                ctl.send_multipart([wire.PUB, seq.to_bytes(8, "big"), cmd_topic, b"", command])
            else:
                ctl.recv_multipart()
    ctx.destroy(linger=0)


class Floor:
    """The bench side: publish a floor instruction, block until its command arrives."""

    def __init__(self, url: str, prefix: str, instruction: bytes, command: bytes) -> None:
        self.inst_topic, cmd_topic = _topics(prefix)
        self.body = wire.pack_body(b"", instruction)
        ep = wire.endpoints(url)
        self.ctx = zmq.Context()
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.connect(ep.publish)
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.subscribe(cmd_topic)
        self.sub.connect(ep.subscribe)
        spawn = mp.get_context("spawn")  # no fork of a process holding zmq and anyio state
        self.stop = spawn.Event()
        self.proc = spawn.Process(target=responder, args=(url, prefix, command, self.stop),
                                  name="floor-responder", daemon=True)
        self.proc.start()

    def warm(self, timeout: float = 20.0) -> None:
        """Until one round trip succeeds (both subscriptions have reached the hub)."""
        deadline = time.monotonic() + timeout
        while self.round_ms(0.05) is None:
            if time.monotonic() > deadline or not self.proc.is_alive():
                raise RuntimeError("the floor responder did not answer")
        while self.sub.poll(50):  # late answers to the warm-up rounds
            self.sub.recv_multipart()

    def round_ms(self, timeout: float = 1.0) -> float | None:
        """One instruction -> command trip in ms, or None when no command came in ``timeout``."""
        t0 = time.perf_counter_ns()
        self.pub.send_multipart([self.inst_topic, self.body])
        if not self.sub.poll(int(timeout * 1000)):
            return None
        self.sub.recv_multipart()
        return (time.perf_counter_ns() - t0) / 1e6

    def close(self) -> None:
        self.stop.set()
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        self.ctx.destroy(linger=0)
