"""Peers for ``bench/bus.py``: one echo/sink role and one driver role per transport path.

Every path implements the same two roles, each run as its own process:

* ``echo``: subscribe to ``PING`` and republish each payload on ``PONG`` (round trips), and
  count messages on ``BLAST`` (one-way throughput), reporting to stdout as JSON.
* ``driver``: ping-pong ``n`` round trips, then blast ``m`` messages as fast as it can.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable

import msgspec

PING, BLAST, DONE = "bench/in/ping", "bench/in/blast", "bench/in/done"
PONG = "bench/out/pong"


def payload(seq: int) -> bytes:
    """A 200-byte msgpack map, like a small telemetry message."""
    base = {"seq": seq, "t": time.time_ns(), "robot": "realman_1", "pad": ""}
    size = len(msgspec.msgpack.encode(base))
    base["pad"] = "x" * (200 - size - 1)
    return msgspec.msgpack.encode(base)


def report(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Sink:
    """Counts the blast on the receiving side: one-way throughput from first to last."""

    def __init__(self) -> None:
        self.count, self.first, self.last = 0, 0.0, 0.0

    def hit(self) -> None:
        self.last = time.perf_counter()
        self.first = self.first or self.last
        self.count += 1

    def report(self) -> None:
        report({"received": self.count, "elapsed": self.last - self.first})


# ---------------------------------------------------------------------------------- robobus
def robobus_echo(url: str, qos: int) -> None:

    from robobus.bus import Bus

    async def main() -> None:
        async with Bus.connect(url, name="bench-echo") as bus, bus.subscribe("bench/in/+") as sub:
            report({"ready": True})
            sink = Sink()
            async for msg in sub:
                if msg.topic == PING:
                    await bus.publish(PONG, msg.payload, qos=qos)
                elif msg.topic == BLAST:
                    sink.hit()
                else:
                    break
            sink.report()

    from robobus.bus import run

    run(main)


def robobus_driver(url: str, qos: int, n: int, m: int) -> None:
    import anyio

    from robobus.bus import Bus

    async def main() -> None:
        async with Bus.connect(url, name="bench-driver") as bus, bus.subscribe(PONG) as pongs:
            rtts = []
            for i in range(n + 200):
                t0 = time.perf_counter()
                await bus.publish(PING, payload(i), qos=qos)
                await pongs.get()
                if i >= 200:
                    rtts.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            if qos == 0:
                for i in range(m):
                    await bus.publish(BLAST, payload(i))
            else:
                # QoS 1 publishes wait for their ack: keep many in flight, as raw paho does.
                async def worker(start: int) -> None:
                    for i in range(start, m, 64):
                        await bus.publish(BLAST, payload(i), qos=1)

                async with anyio.create_task_group() as tg:
                    for w in range(64):
                        tg.start_soon(worker, w)
            sent_s = time.perf_counter() - t0
            await anyio.sleep(0.2)
            await bus.publish(DONE, b"", qos=1)
            report({"rtt": rtts, "send_s": sent_s})

    from robobus.bus import run

    run(main)


# ---------------------------------------------------------------------------- raw pyzmq
def zmq_proxy(port: int) -> None:
    import zmq

    xsub, xpub = _sockets(zmq.XSUB, zmq.XPUB)
    xsub.bind(f"tcp://127.0.0.1:{port}")
    xpub.bind(f"tcp://127.0.0.1:{port + 1}")
    report({"ready": True})
    zmq.proxy(xsub, xpub)


def _sockets(*kinds: int) -> list:
    """Sockets with the same explicit high-water marks as the robobus hub (200k)."""
    import zmq

    socks = [zmq.Context.instance().socket(kind) for kind in kinds]
    for sock in socks:
        sock.setsockopt(zmq.SNDHWM, 200_000)
        sock.setsockopt(zmq.RCVHWM, 200_000)
    return socks


def _zmq_pair(port: int, topics: list[str]):  # noqa: ANN202
    import zmq

    pub, sub = _sockets(zmq.PUB, zmq.SUB)
    pub.connect(f"tcp://127.0.0.1:{port}")
    sub.connect(f"tcp://127.0.0.1:{port + 1}")
    for t in topics:
        sub.setsockopt(zmq.SUBSCRIBE, t.encode())
    return pub, sub


def zmq_echo(port: int, peer: bool = False) -> None:
    """``peer``: no proxy, the echo binds (SUB on ``port``, PUB on ``port + 1``) and the driver
    connects to it directly, as two Zenoh peers talk (the like-for-like floor for Zenoh)."""
    if peer:
        import zmq

        pub, sub = _sockets(zmq.PUB, zmq.SUB)
        sub.bind(f"tcp://127.0.0.1:{port}")
        pub.bind(f"tcp://127.0.0.1:{port + 1}")
        sub.setsockopt(zmq.SUBSCRIBE, b"bench/in/")
    else:
        pub, sub = _zmq_pair(port, ["bench/in/"])
    report({"ready": True})
    sink = Sink()
    while True:
        topic, body = sub.recv_multipart()
        if topic == PING.encode():
            pub.send_multipart([PONG.encode(), body])
        elif topic == BLAST.encode():
            sink.hit()
        elif topic == DONE.encode():
            break
    sink.report()


def zmq_driver(port: int, n: int, m: int, peer: bool = False) -> None:
    import zmq

    pub, sub = _zmq_pair(port, [PONG])
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    while True:  # slow-joiner warm-up: ping until the path is live
        pub.send_multipart([PING.encode(), payload(0)])
        if poller.poll(50):
            sub.recv_multipart()
            break
    time.sleep(0.1)
    while poller.poll(0):
        sub.recv_multipart()
    rtts = _pingpong(lambda i: pub.send_multipart([PING.encode(), payload(i)]), sub.recv_multipart, n)
    t0 = time.perf_counter()
    for i in range(m):
        pub.send_multipart([BLAST.encode(), payload(i)])
    sent_s = time.perf_counter() - t0
    time.sleep(0.3)
    for _ in range(20):
        pub.send_multipart([DONE.encode(), b""])
        time.sleep(0.01)
    report({"rtt": rtts, "send_s": sent_s})


# ------------------------------------------- pyzmq on an asyncio (uvloop) loop, no robobus
def _loop_reader(sock, on_frames):  # noqa: ANN001, ANN202
    """Drain ``sock`` from the loop's reader callback: the pattern any asyncio client uses."""
    import zmq

    def drain() -> None:
        while True:
            try:
                on_frames(sock.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                if not sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                    return

    return drain


def aiozmq_echo(port: int) -> None:
    """The raw echo, but woken by the event loop instead of a blocking recv."""
    import asyncio

    import uvloop

    async def main() -> None:
        pub, sub = _zmq_pair(port, ["bench/in/"])
        done = asyncio.Event()
        sink = Sink()

        def on_frames(frames: list[bytes]) -> None:
            if frames[0] == PING.encode():
                pub.send_multipart([PONG.encode(), frames[1]])
            elif frames[0] == BLAST.encode():
                sink.hit()
            else:
                done.set()

        asyncio.get_running_loop().add_reader(sub.FD, _loop_reader(sub, on_frames))
        report({"ready": True})
        await done.wait()
        sink.report()

    uvloop.run(main())


def aiozmq_driver(port: int, n: int, m: int) -> None:
    import asyncio

    import uvloop

    async def main() -> None:
        pub, sub = _zmq_pair(port, [PONG])
        got: list[bytes] = []
        ready = asyncio.Event()

        def on_frames(frames: list[bytes]) -> None:
            got.append(frames[1])
            ready.set()

        asyncio.get_running_loop().add_reader(sub.FD, _loop_reader(sub, on_frames))
        while not got:  # slow-joiner warm-up
            pub.send_multipart([PING.encode(), payload(0)])
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.1)
        rtts = []
        for i in range(n + 200):
            got.clear()
            t0 = time.perf_counter()
            pub.send_multipart([PING.encode(), payload(i)])
            while not got:
                ready.clear()
                await ready.wait()
            if i >= 200:
                rtts.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for i in range(m):
            pub.send_multipart([BLAST.encode(), payload(i)])
        sent_s = time.perf_counter() - t0
        await asyncio.sleep(0.3)
        for _ in range(20):
            pub.send_multipart([DONE.encode(), b""])
            await asyncio.sleep(0.01)
        report({"rtt": rtts, "send_s": sent_s})

    uvloop.run(main())


def _pingpong(send: Callable[[int], object], recv: Callable[[], object], n: int) -> list[float]:
    rtts = []
    for i in range(n + 200):
        t0 = time.perf_counter()
        send(i)
        recv()
        if i >= 200:
            rtts.append(time.perf_counter() - t0)
    return rtts


# ---------------------------------------------------------------------------- raw paho
def _paho(port: int, name: str, topics: list[str], on_message: Callable, qos: int):  # noqa: ANN202
    import socket

    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
    client.max_queued_messages_set(0)
    client.max_inflight_messages_set(1000)
    client.on_socket_open = lambda c, u, s: s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    subscribed = threading.Event()
    client.on_message = on_message
    client.on_subscribe = lambda *a: subscribed.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.subscribe([(t, qos) for t in topics])
    subscribed.wait(5)
    return client


def paho_echo(port: int, qos: int) -> None:
    sink = Sink()
    finished = threading.Event()

    def on_message(client, userdata, msg) -> None:  # noqa: ANN001
        if msg.topic == PING:
            client.publish(PONG, msg.payload, qos=qos)
        elif msg.topic == BLAST:
            sink.hit()
        else:
            finished.set()

    client = _paho(port, "bench-echo", ["bench/in/+"], on_message, qos)
    report({"ready": True})
    finished.wait(120)
    client.loop_stop()
    sink.report()


def paho_driver(port: int, qos: int, n: int, m: int) -> None:
    import queue

    import paho.mqtt.client as mqtt

    pongs: queue.SimpleQueue[bytes] = queue.SimpleQueue()
    client = _paho(port, "bench-driver", [PONG], lambda c, u, msg: pongs.put(msg.payload), qos)
    rtts = _pingpong(lambda i: client.publish(PING, payload(i), qos=qos), pongs.get, n)
    t0 = time.perf_counter()
    refused = 0
    for i in range(m):
        while client.publish(BLAST, payload(i), qos=qos).rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            refused += 1  # backpressure: paho returns this code instead of raising
            time.sleep(0.0005)
    sent_s = time.perf_counter() - t0
    time.sleep(0.3)
    client.publish(DONE, b"", qos=1).wait_for_publish(5)
    client.loop_stop()
    report({"rtt": rtts, "send_s": sent_s, "backpressure_waits": refused})


# ---------------------------------------------------------------------------------- redis
def redis_echo(port: int) -> None:
    import redis

    r = redis.Redis(port=port)
    ps = r.pubsub()
    ps.subscribe(PING, BLAST, DONE)
    ps.get_message(timeout=5)
    report({"ready": True})
    sink = Sink()
    for msg in ps.listen():
        if msg["type"] != "message":
            continue
        channel = msg["channel"].decode()
        if channel == PING:
            r.publish(PONG, msg["data"])
        elif channel == BLAST:
            sink.hit()
        else:
            break
    sink.report()


def redis_driver(port: int, n: int, m: int) -> None:
    import redis

    r = redis.Redis(port=port)
    ps = r.pubsub(ignore_subscribe_messages=True)
    ps.subscribe(PONG)

    def recv() -> None:
        while ps.get_message(timeout=5) is None:
            pass

    rtts = _pingpong(lambda i: r.publish(PING, payload(i)), recv, n)
    t0 = time.perf_counter()
    for i in range(m):
        r.publish(BLAST, payload(i))
    sent_s = time.perf_counter() - t0
    time.sleep(0.3)
    r.publish(DONE, b"")
    report({"rtt": rtts, "send_s": sent_s})


# ---------------------------------------------------------------------------------- zenoh
def _zenoh(listen: int | None, connect: int | None):  # noqa: ANN202
    """A Zenoh session in peer mode on loopback: no router, no multicast scouting; the echo
    listens and the driver connects to it (the two peers talk directly)."""
    import zenoh

    conf = zenoh.Config()
    conf.insert_json5("mode", '"peer"')
    conf.insert_json5("scouting/multicast/enabled", "false")
    conf.insert_json5("listen/endpoints",
                      json.dumps([f"tcp/127.0.0.1:{listen}"] if listen else []))
    conf.insert_json5("connect/endpoints",
                      json.dumps([f"tcp/127.0.0.1:{connect}"] if connect else []))
    return zenoh.open(conf)


def _zenoh_pub(session, key: str):  # noqa: ANN001, ANN202
    """Reliable and blocking when the queue is full (the default drops): 0 lost, like the
    other paths, which all push back instead of dropping."""
    import zenoh

    return session.declare_publisher(key, congestion_control=zenoh.CongestionControl.BLOCK)


def zenoh_echo(port: int) -> None:
    session = _zenoh(port, None)
    pong = _zenoh_pub(session, PONG)
    sink = Sink()
    finished = threading.Event()

    def on_sample(sample) -> None:  # noqa: ANN001  (Zenoh's callback thread)
        key = str(sample.key_expr)
        if key == PING:
            pong.put(sample.payload.to_bytes())
        elif key == BLAST:
            sink.hit()
        else:
            finished.set()

    sub = session.declare_subscriber("bench/in/*", on_sample)
    report({"ready": True})
    finished.wait(120)
    sub.undeclare()
    sink.report()
    session.close()


def zenoh_driver(port: int, n: int, m: int) -> None:
    import queue

    session = _zenoh(None, port)
    pongs: queue.SimpleQueue[bytes] = queue.SimpleQueue()
    session.declare_subscriber(PONG, lambda sample: pongs.put(sample.payload.to_bytes()))
    ping, blast, done = (_zenoh_pub(session, k) for k in (PING, BLAST, DONE))
    while True:  # until the peers have met and the echo's subscription reached us
        ping.put(payload(0))
        try:
            pongs.get(timeout=0.05)
            break
        except queue.Empty:
            continue
    time.sleep(0.1)
    while not pongs.empty():
        pongs.get()
    rtts = _pingpong(lambda i: ping.put(payload(i)), pongs.get, n)
    t0 = time.perf_counter()
    for i in range(m):
        blast.put(payload(i))
    sent_s = time.perf_counter() - t0
    time.sleep(0.3)
    for _ in range(20):
        done.put(b"")
        time.sleep(0.01)
    report({"rtt": rtts, "send_s": sent_s})
    session.close()


ROLES = {
    "robobus_echo": robobus_echo, "robobus_driver": robobus_driver, "zmq_proxy": zmq_proxy,
    "zmq_echo": zmq_echo, "zmq_driver": zmq_driver, "aiozmq_echo": aiozmq_echo,
    "aiozmq_driver": aiozmq_driver, "paho_echo": paho_echo,
    "paho_driver": paho_driver, "redis_echo": redis_echo, "redis_driver": redis_driver,
    "zenoh_echo": zenoh_echo, "zenoh_driver": zenoh_driver,
}

if __name__ == "__main__":
    from robobus.cli.common import setup_logging

    setup_logging("warning")
    role, args = sys.argv[1], json.loads(sys.argv[2])
    ROLES[role](**args)
