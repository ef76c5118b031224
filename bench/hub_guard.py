"""What the hub's policy costs on its data path: CURVE hub with and without ``policy.json``.

    python -m bench.hub_guard [--n 100000] [--size 64]

An in-process hub (its own threads) with CURVE keys from ``secure init`` in a temporary
directory; one publisher (a robot's key, PUB) sends ``--n`` best-effort messages on its own
state topic as fast as it can and one subscriber (the memory agent's key, SUB) counts them.
Without a policy the data path is libzmq's proxy in C; with one it is the guarded Python proxy
(sender check, header stamp per message). Prints messages per second through the hub for
both, and how many arrived (the high-water marks drop the rest, counted).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import zmq

from robobus import testing
from robobus.bus import zmq_wire as wire
from robobus.bus.hub import Hub
from robobus.bus.hub_guard import HubGuard
from robobus.bus.message import Message
from robobus.bus.security import zmq_hub_accounts, zmq_hub_keys
from robobus.secure import SecureConfig, default_policy, make_curve


def _client(ctx: zmq.Context, kind: int, keys: Path, name: str, endpoint: str) -> zmq.Socket:
    import zmq.auth

    public, secret = zmq.auth.load_certificate(keys / f"{name}.key_secret")
    server, _ = zmq.auth.load_certificate(keys / "hub.key")
    sock = ctx.socket(kind)
    sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = public, secret, server
    sock.setsockopt(zmq.SNDHWM, wire.DATA_HWM)
    sock.setsockopt(zmq.RCVHWM, wire.DATA_HWM)
    sock.connect(endpoint)
    return sock


def run(directory: Path, guarded: bool, n: int, size: int) -> tuple[float, int]:
    cfg = SecureConfig(directory, robots=["r1"])
    keys = directory / "zmq"
    secret, clients = zmq_hub_keys(keys)
    guard = HubGuard(default_policy(cfg), zmq_hub_accounts(keys)) if guarded else None
    url = f"zmq://127.0.0.1:{testing.free_port(span=3)}"
    hub = Hub(url, context=zmq.Context(), curve_secret=secret, authorized_keys=clients, guard=guard)
    hub.start()
    ctx = zmq.Context()
    pub = _client(ctx, zmq.PUB, keys, "r1", hub.endpoints.publish)
    sub = _client(ctx, zmq.SUB, keys, "memory", hub.endpoints.subscribe)
    topic = b"robobus/robots/r1/state"
    sub.setsockopt(zmq.SUBSCRIBE, topic)
    body = wire.pack_body(wire.encode_header(Message(topic.decode(), b""), "r1-0", 1), b"x" * size)
    while not sub.poll(20):  # until the subscription and both handshakes are through
        pub.send_multipart([topic, body])
    while sub.poll(200):
        sub.recv_multipart()
    got, start = 0, time.perf_counter()
    for _ in range(n):
        pub.send_multipart([topic, body])
        while sub.poll(0):
            sub.recv_multipart()
            got += 1
    while sub.poll(500):
        sub.recv_multipart()
        got += 1
    elapsed = time.perf_counter() - start - 0.5
    hub.stop()
    ctx.destroy(0)
    return got / elapsed, got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        make_curve(SecureConfig(directory, robots=["r1"]))
        for guarded in (False, True):
            rate, got = run(directory, guarded, args.n, args.size)
            label = "policy (guarded Python proxy)" if guarded else "no policy (C proxy)"
            print(f"{label:32s} {rate:>10,.0f} msg/s   delivered {got}/{args.n}")


if __name__ == "__main__":
    main()
