"""The raw pyzmq floor under the brain's response latency, over the same hub and hops.

A robobus instruction crosses ``bench PUB -> hub proxy -> brain``, and its first skill command
``brain -> hub control thread (acknowledged publish) -> hub proxy -> robot``. The floor makes
the same trip with no brain and no robobus client code: a raw PUB here, a raw responder process
that answers each instruction at once, and a raw SUB here. It answers in one of two ways:

* ``acked``: an acknowledged ``PUB`` on the hub's control socket, exactly the frames a robobus
  qos 1 command sends (the path robobus commands take);
* ``plain``: a plain publish on the hub's data path, which only the hub's C proxy touches (the
  least any publish through a hub can cost).

What robobus measures above the floor is the brain's own work (decode, parse, plan, validate)
and its client library. Rounds alternate with the robobus ones in one process tree, against the
same ``robobus hub`` process, so machine noise lands on all of them.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from multiprocessing.synchronize import Event as EventT

import zmq

from robobus.bus import zmq_wire as wire

MODES = ("acked", "plain")


def _topic(prefix: str, what: str, mode: str) -> bytes:
    """Outside ``prefix``: the memory agent records the robobus side's traffic, not this."""
    return f"floor-{prefix}/{what}/{mode}".encode()


def responder(url: str, prefix: str, command: bytes, stop: EventT) -> None:
    """Answer every floor instruction at once, the way its topic names; acks are dropped."""
    replies = {_topic(prefix, "instruction", m): _topic(prefix, "command", m) for m in MODES}
    ep = wire.endpoints(url)
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.subscribe(f"floor-{prefix}/instruction/")
    sub.connect(ep.subscribe)
    pub = ctx.socket(zmq.PUB)
    pub.connect(ep.publish)
    ctl = ctx.socket(zmq.DEALER)
    ctl.connect(ep.control)
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    poller.register(ctl, zmq.POLLIN)
    body = wire.pack_body(b"", command)
    seq = 0
    while not stop.is_set():
        for sock, _ in poller.poll(100):
            if sock is not sub:
                ctl.recv_multipart()
                continue
            topic = replies[sub.recv_multipart()[0]]
            if topic.endswith(b"/acked"):
                seq += 1
                ctl.send_multipart([wire.PUB, seq.to_bytes(8, "big"), topic, b"", command])
            else:
                pub.send_multipart([topic, body])
    ctx.destroy(linger=0)


class Floor:
    """The bench side: publish a floor instruction, block until its command arrives."""

    def __init__(self, url: str, prefix: str, instruction: bytes, command: bytes) -> None:
        self.prefix = prefix
        self.body = wire.pack_body(b"", instruction)
        ep = wire.endpoints(url)
        self.ctx = zmq.Context()
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.connect(ep.publish)
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.subscribe(f"floor-{prefix}/command/")
        self.sub.connect(ep.subscribe)
        spawn = mp.get_context("spawn")  # no fork of a process holding zmq and anyio state
        self.stop = spawn.Event()
        self.proc = spawn.Process(target=responder, args=(url, prefix, command, self.stop),
                                  name="floor-responder", daemon=True)
        self.proc.start()

    def warm(self, timeout: float = 20.0) -> None:
        """Until a round trip of each mode succeeds (every subscription has reached the hub)."""
        deadline = time.monotonic() + timeout
        for mode in MODES:
            while self.round_ms(mode, 0.05) is None:
                if time.monotonic() > deadline or not self.proc.is_alive():
                    raise RuntimeError("the floor responder did not answer")
        while self.sub.poll(50):  # late answers to the warm-up rounds
            self.sub.recv_multipart()

    def round_ms(self, mode: str, timeout: float = 1.0) -> float | None:
        """One instruction -> command trip in ms, or None when no command came in ``timeout``."""
        t0 = time.perf_counter_ns()
        self.pub.send_multipart([_topic(self.prefix, "instruction", mode), self.body])
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
