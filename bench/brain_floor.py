"""The raw pyzmq floor under the brain's response latency, over the same hub and hops.

A robobus instruction crosses ``bench PUB -> hub proxy -> brain``, and its first skill command
``brain -> hub control thread (acknowledged publish) -> hub proxy -> robot``. The floor makes
the same trip with no brain and no robobus client code: a raw PUB here, a raw responder process
that answers each instruction at once, and a raw SUB here. It answers in one of two ways:

* ``acked``: an acknowledged ``PUB`` on the hub's control socket, exactly the frames a robobus
  qos 1 command sends (the path robobus commands take);
* ``plain``: a plain publish on the hub's data path, which only the hub's C proxy touches (the
  least any publish through a hub can cost).

Over MQTT (:class:`MqttFloor`) the same trip runs with raw paho through the same Mosquitto:
a paho client here publishes the instruction (qos 0, as robobus instructions go), a paho
responder process answers with the command at qos 1 (``acked``, as robobus commands go) or
qos 0 (``plain``), and this client reads it on a qos 1 subscription. Both paho clients run
their network loop in the calling thread (no paho thread hop), which is paho at its fastest.

What robobus measures above the floor is the brain's own work (decode, parse, plan, validate)
and its client library. Rounds alternate with the robobus ones in one process tree, against the
same ``robobus hub`` or Mosquitto process, so machine noise lands on all of them.
"""

from __future__ import annotations

import multiprocessing as mp
import socket
import time
from multiprocessing.synchronize import Event as EventT
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as paho
import zmq

from robobus.bus import zmq_wire as wire

MODES = ("acked", "plain")


def _topic(prefix: str, what: str, mode: str) -> bytes:
    """Outside ``prefix``: the memory agent records the robobus side's traffic, not this."""
    return f"floor-{prefix}/{what}/{mode}".encode()


def raw_client(url: str, subscribe: str) -> tuple[zmq.Context[Any], zmq.Socket[Any], zmq.Socket[Any],
                                                  zmq.Socket[Any]]:
    """Raw pyzmq on a hub's three endpoints: (context, SUB on the ``subscribe`` prefix, PUB,
    control DEALER); the floor's responders and the hop bench's echoes."""
    ep = wire.endpoints(url)
    ctx: zmq.Context[Any] = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.subscribe(subscribe)
    sub.connect(ep.subscribe)
    pub = ctx.socket(zmq.PUB)
    pub.connect(ep.publish)
    ctl = ctx.socket(zmq.DEALER)
    ctl.connect(ep.control)
    return ctx, sub, pub, ctl


def responder(url: str, prefix: str, command: bytes, stop: EventT) -> None:
    """Answer every floor instruction at once, the way its topic names; acks are dropped."""
    replies = {_topic(prefix, "instruction", m): _topic(prefix, "command", m) for m in MODES}
    ctx, sub, pub, ctl = raw_client(url, f"floor-{prefix}/instruction/")
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


class _Rounds:
    """What both floors share: warming up until every hop answers."""

    proc: Any

    def round_ms(self, mode: str, timeout: float = 1.0) -> float | None:
        raise NotImplementedError

    def _discard_late(self) -> None:
        raise NotImplementedError

    def warm(self, timeout: float = 20.0) -> None:
        """Until a round trip of each mode succeeds (every subscription has reached the hub)."""
        deadline = time.monotonic() + timeout
        for mode in MODES:
            while self.round_ms(mode, 0.05) is None:
                if time.monotonic() > deadline or not self.proc.is_alive():
                    raise RuntimeError("the floor responder did not answer")
        self._discard_late()


def _spawn(target: Any, *args: Any) -> tuple[Any, EventT]:
    spawn = mp.get_context("spawn")  # no fork of a process holding zmq and anyio state
    stop = spawn.Event()
    proc = spawn.Process(target=target, args=(*args, stop), name="floor-responder", daemon=True)
    proc.start()
    return proc, stop


def _stop(proc: Any, stop: EventT) -> None:
    stop.set()
    proc.join(5)
    if proc.is_alive():
        proc.kill()
        proc.join(5)


class Floor(_Rounds):
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
        self.proc, self.stop = _spawn(responder, url, prefix, command)

    def _discard_late(self) -> None:
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
        _stop(self.proc, self.stop)
        self.ctx.destroy(linger=0)


def _paho(url: str, name: str) -> paho.Client:
    parts = urlsplit(url)
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=name,
                         protocol=paho.MQTTv5)  # as robobus connects
    client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
    sock = client.socket()
    if isinstance(sock, socket.socket):  # paho leaves Nagle on: it held a reply ~20-40 ms
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client


def mqtt_responder(url: str, prefix: str, command: bytes, stop: EventT) -> None:
    """The raw paho responder: each floor instruction answered at once from its callback."""
    replies = {_topic(prefix, "instruction", m).decode(): _topic(prefix, "command", m).decode()
               for m in MODES}
    client = _paho(url, f"floor-responder-{prefix}")

    def on_message(c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        topic = replies.get(msg.topic)
        if topic is not None:
            c.publish(topic, command, qos=1 if topic.endswith("/acked") else 0)

    client.on_message = on_message
    client.subscribe(f"floor-{prefix}/instruction/+", qos=1)
    while not stop.is_set():
        client.loop(0.1)
    client.disconnect()


class MqttFloor(_Rounds):
    """:class:`Floor` over MQTT: raw paho through the same Mosquitto (see module docstring)."""

    def __init__(self, url: str, prefix: str, instruction: bytes, command: bytes) -> None:
        self.prefix, self.instruction = prefix, instruction
        self.client = _paho(url, f"floor-bench-{prefix}")
        self.got = 0
        self.client.on_message = self._on_message
        self.client.subscribe(f"floor-{prefix}/command/+", qos=1)
        self.proc, self.stop = _spawn(mqtt_responder, url, prefix, command)

    def _on_message(self, _c: paho.Client, _u: object, _msg: paho.MQTTMessage) -> None:
        self.got += 1

    def round_ms(self, mode: str, timeout: float = 1.0) -> float | None:
        seen = self.got
        t0 = time.perf_counter_ns()
        deadline = t0 + int(timeout * 1e9)
        self.client.publish(_topic(self.prefix, "instruction", mode).decode(), self.instruction)
        while self.got == seen:
            left = (deadline - time.perf_counter_ns()) / 1e9
            if left <= 0:
                return None
            self.client.loop(left)  # select on the socket, read, ack: in this thread
        return (time.perf_counter_ns() - t0) / 1e6

    def _discard_late(self) -> None:
        end = time.monotonic() + 0.05
        while time.monotonic() < end:
            self.client.loop(0.01)

    def close(self) -> None:
        _stop(self.proc, self.stop)
        self.client.disconnect()


def floor_for(url: str, prefix: str, instruction: bytes, command: bytes) -> Floor | MqttFloor:
    """The raw floor of ``url``'s transport: pyzmq through the hub, or paho through Mosquitto."""
    cls = MqttFloor if url.startswith("mqtt") else Floor
    return cls(url, prefix, instruction, command)
