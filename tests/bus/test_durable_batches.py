"""The durable stream's batches (``DATA h "" packed``): delivered in order, a damaged entry
skipped, and the batch confirmed (``DACK`` of its last number) only once every message of it
that a manual-ack subscription took is acked. In one process: the hub's packing
(``hub_replay.send_batches``) feeds the client's ``Durable`` directly."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from robobus.bus import Bus
from robobus.bus import zmq_wire as wire
from robobus.bus.backends.zmq_durable import Durable
from robobus.bus.hub_replay import LENGTHS, send_batches

pytestmark = pytest.mark.anyio


class Router:
    """Records what ``send_batches`` sends, as the hub's ROUTER would."""

    def __init__(self) -> None:
        self.sent: list[list[bytes]] = []

    def send_multipart(self, frames: list[bytes]) -> None:
        self.sent.append(frames)


class Transport:
    """What ``Durable`` uses of the ZeroMQ transport."""

    closed = False

    def __init__(self, bus: Bus) -> None:
        self.dispatch = bus.dispatch
        self.loop = asyncio.get_running_loop()
        self.dacks: list[int] = []

    def send_control(self, frames: list[bytes]) -> None:
        assert frames[0] == wire.DACK
        self.dacks.append(int.from_bytes(frames[1], "big"))


def body(i: int) -> bytes:
    return wire.pack_body(b"", str(i).encode())


async def test_batches_in_order_damaged_entry_skipped_acked_when_all_are() -> None:
    topics = [b"t/a", b"t/b", b"t/a", b"t/c"]
    items = [(10 + i, t, body(i)) for i, t in enumerate(topics)]
    router = Router()
    send_batches(router, b"client", items)  # type: ignore[arg-type]
    (frames,) = router.sent
    assert frames[:4] == [b"client", wire.DATA, (10).to_bytes(8, "big"), b""]
    # a fifth entry whose body is shorter than its header length says: skipped, still counted
    damaged = LENGTHS.pack(3, 2) + b"t/a" + b"\x00\x09"
    packed = frames[4] + damaged + LENGTHS.pack(3, len(body(5))) + b"t/d" + body(5)

    async with Bus.connect("memory://durable-batches", name="rec") as bus, \
            bus.subscribe("t/#", manual_ack=True) as sub:
        transport = Transport(bus)
        durable = Durable(transport, "rec")  # type: ignore[arg-type]
        assert durable.on_data([wire.DATA, frames[2], b"", packed]) is None
        got = [await sub.get() for _ in range(5)]
        assert [(m.topic, m.payload) for m in got] == [
            ("t/a", b"0"), ("t/b", b"1"), ("t/a", b"2"), ("t/c", b"3"), ("t/d", b"5")]
        for msg in got[:-1]:
            msg.ack()
        await anyio.sleep(0.01)
        assert transport.dacks == [], "confirmed before its last message was acked"
        got[-1].ack()
        await anyio.sleep(0.01)
        assert transport.dacks == [15]  # h 10..15, the damaged 14 included
        # a lone message (DATA h topic body) still goes one at a time
        durable.on_data([wire.DATA, (16).to_bytes(8, "big"), b"t/e", body(6)])
        lone = await sub.get()
        assert (lone.topic, lone.payload) == ("t/e", b"6")
        lone.ack()
        await anyio.sleep(0.01)
        assert transport.dacks == [15, 16]
