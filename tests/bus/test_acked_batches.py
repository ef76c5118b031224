"""Acknowledged publishes coalesced per event-loop turn (``PUBS``/``ACKS``, issue 16).

The first post of a turn leaves alone and at once, the rest of the turn as one batch; under a
policy the hub checks every publish of a batch on its own; an unacknowledged one is resent by
the sweep (here across a hub restart); the hub still answers the old single ``PUB``.

The hubs run in this process (what ``?embed=1`` starts), on real sockets: one restarts in
milliseconds, where a ``robobus hub`` process takes seconds to start on a loaded machine.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import msgspec
import pytest
import zmq

from robobus import testing
from robobus.bus import Bus, PublishError
from robobus.bus import policy as policies
from robobus.bus import zmq_wire as wire
from robobus.bus.hub import Hub
from robobus.bus.hub_guard import HubGuard
from robobus.bus.security import zmq_hub_accounts, zmq_hub_keys
from robobus.bus.topics import TOPIC_CACHE_LIMIT
from robobus.secure import SecureConfig, default_policy, make_curve

pytestmark = pytest.mark.anyio
P = "robobus"


def _outbox(bus: Bus):  # noqa: ANN202 - the ZeroMQ transport's AckedSender
    return bus._transport.outbox  # type: ignore[attr-defined]


async def _start(url: str, keys: Path | None = None) -> Hub:
    """A hub in this process with its own context; with ``keys``, CURVE and the policy."""
    for _ in range(50):  # the old hub's listening sockets close asynchronously
        ctx = zmq.Context()
        if keys is None:
            hub = Hub(url, context=ctx)
        else:
            secret, public = zmq_hub_keys(keys)
            guard = HubGuard(policies.load(keys.parent / "policy.json"), zmq_hub_accounts(keys))
            hub = Hub(url, context=ctx, curve_secret=secret, authorized_keys=public, guard=guard)
        try:
            hub.start()
            return hub
        except zmq.ZMQError:
            ctx.destroy(0)
            await anyio.sleep(0.05)
    raise TimeoutError(f"could not bind {url}")


async def _stop(hub: Hub) -> None:
    await anyio.to_thread.run_sync(hub.stop)
    hub.ctx.destroy(0)


@contextlib.asynccontextmanager
async def _as(monkeypatch: pytest.MonkeyPatch, keys: Path, url: str, account: str
              ) -> AsyncIterator[Bus]:
    monkeypatch.setenv("ROBOBUS_ZMQ_KEYS", str(keys))
    monkeypatch.setenv("ROBOBUS_ZMQ_CLIENT", account)
    async with Bus.connect(url, name=account) as bus:
        yield bus


async def test_a_batch_under_the_policy_and_a_resend_across_a_hub_restart(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = SecureConfig(tmp_path, robots=["r1", "r2"])
    make_curve(cfg)  # no TLS: ZeroMQ only
    (tmp_path / "policy.json").write_bytes(policies.dump(default_policy(cfg)))
    keys = tmp_path / "zmq"
    url = f"zmq://{testing.LOOPBACK}:{testing.free_port(span=3)}"
    hub = await _start(url, keys)
    try:
        async with _as(monkeypatch, keys, url, "memory") as watcher, \
                watcher.subscribe(f"{P}/robots/#") as seen, \
                _as(monkeypatch, keys, url, "r1") as r1:
            before = _outbox(r1).sends
            # one loop turn: the first leaves alone and at once, the other four as one PUBS
            acks = [await r1.post(f"{P}/robots/r1/state", b"s1"),
                    await r1.post(f"{P}/robots/r1/state", b"s2"),
                    await r1.post(f"{P}/robots/r2/skills/pick", b"evil"),
                    await r1.post(f"{P}/robots/r1/registration", b"reg", retain=True),
                    await r1.post(f"{P}/robots/r1/state", b"s3")]
            assert _outbox(r1).sends - before == 1
            with anyio.fail_after(10):
                for i, ack in enumerate(acks):
                    if i == 2:  # refused alone; the rest of its batch goes through
                        with pytest.raises(PublishError, match="not authorized"):
                            await ack
                    else:
                        await ack
                got = [(await seen.get()) for _ in range(4)]
            assert _outbox(r1).sends - before == 2
            assert [m.payload for m in got] == [b"s1", b"s2", b"reg", b"s3"]
            assert {m.sender for m in got} == {"r1"}  # stamped with the key's account
            assert seen.get_nowait() is None
            # coalesce(): the first one waits for the others, one control message in all
            before = _outbox(r1).sends
            with r1.coalesce():
                acks = [await r1.post(f"{P}/robots/r1/state", f"c{i}".encode()) for i in range(3)]
                assert _outbox(r1).sends == before
            assert _outbox(r1).sends == before + 1
            with anyio.fail_after(10):
                for ack in acks:
                    await ack
                assert [(await seen.get()).payload for _ in range(3)] == [b"c0", b"c1", b"c2"]
            # The hub restarts: the new one answers a publish from a client it has not heard
            # hello from with WHO, not an ack; the sweep resends it after the rejoin.
            await _stop(hub)
            before = _outbox(r1).sends
            lost = await r1.post(f"{P}/robots/r1/state", b"resent")
            hub = await _start(url, keys)
            with anyio.fail_after(15):
                await lost
            assert _outbox(r1)._in_flight == {}
            # sent, refused with WHO, resent by the sweep (and the retained 'reg' restored)
            assert _outbox(r1).sends - before >= 3
            assert hub.stats["hellos"] >= 1
    finally:
        await _stop(hub)


def _ask(ctl: zmq.Socket, frames: list[bytes], answers: int = 1) -> list[list[bytes]]:
    ctl.send_multipart(frames)
    got = []
    for _ in range(answers):
        assert ctl.poll(5000), f"the hub did not answer {frames[0]!r}"
        got.append(ctl.recv_multipart())
    return got


async def test_raw_pub_and_pubs_frames() -> None:
    port = testing.free_port(span=3)
    url = f"zmq://{testing.LOOPBACK}:{port}"
    hub = await _start(url)
    ctl = zmq.Context.instance().socket(zmq.DEALER)
    ctl.setsockopt(zmq.LINGER, 0)
    ctl.connect(f"tcp://{testing.LOOPBACK}:{port + 2}")
    try:
        async with Bus.connect(url, name="rx") as rx, rx.subscribe("x/#") as sub:
            _ask(ctl, [wire.HELLO, msgspec.msgpack.encode({"keepalive": 5.0})])
            # the old single PUB is still answered ACK id
            assert _ask(ctl, [wire.PUB, wire.pack_id(1), b"x/1", b"", b"pub"]) == [
                [wire.ACK, wire.pack_id(1)]]
            # a batch with a malformed header: DENY for it, then ACKS for the range
            batch = wire.encode_batch([(b"x/1", b"", b"a"), (b"x/1", b"\xc1", b"bad"),
                                       (b"x/1", b"", b"b")])
            assert _ask(ctl, [wire.PUBS, wire.pack_id(7), batch], answers=2) == [
                [wire.DENY, wire.pack_id(8), b"x/1"],
                [wire.ACKS, wire.pack_id(7), (3).to_bytes(4, "big")]]
            ctl.send_multipart([wire.PUBS, wire.pack_id(9), b"\xc1"])  # no batch at all: ignored
            assert _ask(ctl, [wire.PUBS, wire.pack_id(10), wire.encode_batch(
                [(b"x/1", b"", b"c")])]) == [[wire.ACKS, wire.pack_id(10), (1).to_bytes(4, "big")]]
            with anyio.fail_after(10):
                got = [(await sub.get()).payload for _ in range(4)]
            assert got == [b"pub", b"a", b"b", b"c"]
            # A topic per message (the brain's statuses: a topic per task): the per-topic
            # sequence numbers stay bounded, and emptying them counts no message as lost.
            async with Bus.connect(url, name="tx") as tx:
                n = TOPIC_CACHE_LIMIT + 50
                for i in range(n):
                    await tx.publish(f"x/t/{i}", b"")
                with anyio.fail_after(20):
                    for _ in range(n):
                        await sub.get()
                assert len(tx._transport._seq_out) <= TOPIC_CACHE_LIMIT + 1  # type: ignore[attr-defined]
            assert len(rx._transport._seq_in) <= TOPIC_CACHE_LIMIT + 1  # type: ignore[attr-defined]
            assert rx._transport.dropped == 0  # type: ignore[attr-defined]
    finally:
        ctl.close(0)
        await _stop(hub)
