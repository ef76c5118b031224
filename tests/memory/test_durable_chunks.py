"""The hub's replay buffer as the memory agent's durable stream sees it (issue 16 item 6): the
capture is numbered and packed into chunks once, each chunk goes out as one ``DATA h ""
packed`` batch, in order and within the window, and a client resumes after what it confirmed:
at a chunk's start, inside a chunk, or at the oldest message left after the buffer rolled on.
In one process, over an inproc capture socket; the agent's side reads the batches with the
unpacking the ZeroMQ backend uses."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

import anyio
import msgspec
import pytest
import zmq

from robobus import memory_store, testing
from robobus.bus import Bus, BusOptions
from robobus.bus import zmq_wire as wire
from robobus.bus.backends.zmq_durable import BATCH_TOPIC, Durable, RawHead, tap
from robobus.bus.hub_replay import BATCH, LENGTHS, ReplayBuffer
from robobus.bus.message import Message
from robobus.memory_store.agent import MemoryConfig, run
from robobus.memory_store.commit import CommitOptions
from robobus.memory_store.headers import head_of
from robobus.memory_store.raw import stored_head
from robobus.schemas.memory import MemoryQuery, QueryReply
from robobus.schemas.messages import RobotState
from robobus.schemas.topics import Topics


class Router:
    """Collects what the hub sends each client (``wire.send_frames`` on a ROUTER)."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.batches: dict[bytes, list[tuple[int, list[tuple[bytes, bytes]]]]] = {}

    def send(self, frame: bytes, flags: int = 0) -> None:
        self.frames.append(frame)
        if not flags & wire.SNDMORE:
            ident, cmd, h, topic, packed = self.frames
            assert (cmd, topic) == (wire.DATA, b"")
            self.batches.setdefault(ident, []).append((int.from_bytes(h, "big"), unpack(packed)))
            self.frames = []

    def numbers(self, ident: bytes) -> list[int]:
        """Every h the client received, in order."""
        return [first + i for first, items in self.batches.get(ident, []) for i in range(len(items))]


def unpack(packed: bytes) -> list[tuple[bytes, bytes]]:
    out, pos = [], 0
    while pos < len(packed):
        tlen, blen = LENGTHS.unpack_from(packed, pos)
        pos += LENGTHS.size
        out.append((packed[pos : pos + tlen], packed[pos + tlen : pos + tlen + blen]))
        pos += tlen + blen
    return out


def capture(buffer: ReplayBuffer, messages: list[list[bytes]]) -> int:
    """Send ``messages`` through an inproc PUB -> SUB, as the proxy copies them, and read
    them with ``capture_from``."""
    ctx = zmq.Context.instance()
    ep = f"inproc://test-capture-{secrets.token_hex(4)}"
    pub, sub = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
    pub.bind(ep)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(ep)
    try:
        deadline = time.monotonic() + 5
        while not sub.poll(10):  # the inproc subscription reaches the PUB
            assert time.monotonic() < deadline
            pub.send_multipart([wire.PROBE_PREFIX.encode() + b"x", b""])
        while sub.poll(0):  # probes are never numbered
            assert buffer.capture_from(sub) >= 1
        for frames in messages:
            pub.send_multipart(frames)
        read = 0
        while read < len(messages):
            assert sub.poll(5000)
            read += buffer.capture_from(sub)
        return read
    finally:
        pub.close(0)
        sub.close(0)


def data(i: int) -> list[bytes]:
    return [f"robobus/t/r{i % 4}".encode(), wire.pack_body(b"", str(i).encode())]


def test_chunks_stream_in_order_within_the_window_and_resume_where_confirmed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = ReplayBuffer(capacity=2 * BATCH)
    # 600 data messages, with a one-frame and a three-frame message (not data) among them
    messages = [data(i) for i in range(300)] + [[b"lone"], [b"a", b"b", b"c"]] + \
        [data(i) for i in range(300, 600)]
    assert capture(buffer, messages) == len(messages)
    assert buffer.last_h == 600
    assert all(c.count <= BATCH for c in buffer.chunks)
    # the oldest chunks fell out: between capacity and capacity + BATCH messages kept
    assert 2 * BATCH <= buffer.size < 3 * BATCH
    assert buffer.oldest == 600 - buffer.size + 1

    monkeypatch.setattr(wire, "DURABLE_WINDOW", BATCH + 10)
    router = Router()
    buffer.attach("memory", b"m1")
    buffer.pump(router)  # type: ignore[arg-type]
    got = router.numbers(b"m1")
    assert got == list(range(buffer.oldest, buffer.oldest + len(got)))
    assert 0 < len(got) <= BATCH + 10, "more than the window in flight"
    first_payloads = [b for _, items in router.batches[b"m1"] for _, b in items]
    assert wire.decode_body(b"t", first_payloads[0])[0].payload == str(buffer.oldest - 1).encode()

    # confirmed inside a chunk, then gone: the new connection resumes right after it
    resume = got[len(got) // 2]
    buffer.ack(b"m1", resume)
    buffer.detach(b"m1")
    buffer.attach("memory", b"m2")
    buffer.pump(router)  # type: ignore[arg-type]
    while router.numbers(b"m2") and router.numbers(b"m2")[-1] < buffer.last_h:
        buffer.ack(b"m2", router.numbers(b"m2")[-1])
        buffer.pump(router)  # type: ignore[arg-type]
    assert router.numbers(b"m2") == list(range(resume + 1, 601)), "not exactly once after resume"
    assert buffer.lost == 0

    # the buffer rolls past a client that confirmed nothing new: the gap is counted, and it
    # goes on from the oldest message left
    assert capture(buffer, [data(i) for i in range(600, 600 + 4 * BATCH)]) == 4 * BATCH
    oldest = buffer.oldest
    assert oldest > 601
    buffer.pump(router)  # type: ignore[arg-type]
    assert buffer.lost == oldest - 601
    after = [h for h in router.numbers(b"m2") if h > 600]
    assert after[0] == oldest and after == list(range(oldest, oldest + len(after)))

    # chunks sealed one message each (a quiet bus) still go out joined, up to BATCH a batch
    quiet = ReplayBuffer(capacity=1000)
    for i in range(300):
        quiet.capture(data(i))
    quiet.attach("memory", b"q")
    quiet.pump(router)  # type: ignore[arg-type]
    quiet.ack(b"q", BATCH + 10)  # the window (BATCH + 10) was full
    quiet.pump(router)  # type: ignore[arg-type]
    assert [len(items) for _, items in router.batches[b"q"]] == [BATCH, 10, 300 - BATCH - 10]
    assert router.numbers(b"q") == list(range(1, 301))


@pytest.mark.anyio
async def test_a_durable_agent_takes_runs_and_records_views_queries_and_headers_as_before(
        tmp_path: Path, prefix: str) -> None:
    """Over a hub process with a replay buffer, the agent's tapped subscription takes the
    stream in runs: every event is stored once, in order, with its retain flag and sender;
    the views fold the runs' state messages; a query (left to the normal path) sees every
    message published before it."""
    opts = BusOptions(prefix=prefix)
    config = MemoryConfig(store=tmp_path / "store", commit=CommitOptions(window_s=0.001))
    topics = Topics(prefix)
    with testing.hub(extra=["--replay-buffer", "10000"]) as url:
        async with Bus.connect(f"{url}?durable=memory", name="memory", options=opts) as abus, \
                Bus.connect(url, name="client", options=opts) as client, \
                anyio.create_task_group() as tg:
            await tg.start(run, abus, config)
            durable = abus._transport.durable  # type: ignore[attr-defined]
            assert durable.tapped is not None, "the agent did not tap the durable stream"
            await client.publish(f"{prefix}/robots/g1/state",
                                 RobotState(robot="g1", battery=0.5), retain=True, qos=1)
            for i in range(600):
                await client.publish(f"{prefix}/load/r{i % 3}", b"%d" % i)
            with anyio.fail_after(10):
                page = await client.request(topics.memory_query, MemoryQuery(
                    kind="events", pattern=f"{prefix}/load/#", limit=1000), timeout=10)
            events = msgspec.msgpack.decode(page.payload, type=QueryReply).result["events"]
            assert [e["payload"] for e in events] == [b"%d" % i for i in range(600)]
            robot = msgspec.msgpack.decode((await client.request(topics.memory_query, MemoryQuery(
                kind="robot", name="g1"), timeout=10)).payload, type=QueryReply)
            assert robot.result["state"]["battery"] == 0.5
            assert durable.raw >= 601, "the load did not come in runs"
            tg.cancel_scope.cancel()
    with memory_store.open(tmp_path / "store", readonly=True) as store:
        # a live copy of a retained publish is not flagged retained (the hub strips it)
        (state,) = list(store.scan(pattern=f"{prefix}/robots/g1/state"))
        assert state.props is not None and state.props.sender == "client"
        load = list(store.scan(pattern=f"{prefix}/load/#"))
        assert len(load) == 600 and not load[0].retain and load[0].props.sender == "client"


@pytest.mark.parametrize("head", [RawHead(), RawHead(r=True, s="a"), RawHead(s="b", n=3),
                                  RawHead(rt="x/_inbox/1", cd=b"\x01", s="c")])
def test_a_run_stores_the_header_a_message_would(head: RawHead) -> None:
    msg = Message("t/a", b"p", head.r, 0, head.rt, head.cd, head.s)
    assert stored_head(head) == head_of(msg)


class Transport:
    """What ``Durable`` uses of the ZeroMQ transport: dispatch, the loop, control sends."""

    closed = False

    def __init__(self, bus: Bus, dacks: list[int]) -> None:
        self.dispatch = bus.dispatch
        self.loop = asyncio.get_running_loop()
        self.dacks = dacks

    def send_control(self, frames: list[bytes]) -> None:
        assert frames[0] == wire.DACK
        self.dacks.append(int.from_bytes(frames[1], "big"))


@pytest.mark.anyio
async def test_a_tapped_batch_skips_a_damaged_entry_and_keeps_other_subscribers_in_order() -> None:
    """A run stops at a message another subscription wants too (dispatched as a Message, in
    order) and skips a damaged entry; the batch is confirmed once both carriers are acked."""
    good = [(b"t/a", wire.pack_body(b"", b"0")), (b"t/a", wire.pack_body(b"", b"1")),
            (b"t/shared", wire.pack_body(b"", b"2")), (b"t/a", b"\x00\x09"),  # damaged
            (b"t/b", wire.pack_body(b"", b"4"))]
    packed = b"".join(LENGTHS.pack(len(t), len(b)) + t + b for t, b in good)
    dacks: list[int] = []
    async with Bus.connect("memory://tapped-batch", name="rec") as bus, \
            bus.subscribe("t/#", manual_ack=True) as sub, bus.subscribe("t/shared") as other:
        durable = Durable(Transport(bus, dacks), "rec")  # type: ignore[arg-type]
        bus._transport.durable = durable  # type: ignore[attr-defined]
        durable.filters = {sub.sub_id: "t/#", other.sub_id: "t/shared"}
        assert tap(bus, sub, lambda topic: True)
        assert durable.on_data([wire.DATA, (20).to_bytes(8, "big"), b"", packed]) is None
        got = [sub.get_nowait() for _ in range(3)]
        assert [m.topic for m in got] == [BATCH_TOPIC, "t/shared", BATCH_TOPIC]  # type: ignore[union-attr]
        assert [p for _, p, _ in got[0].data] == [b"0", b"1"]  # type: ignore[union-attr]
        assert [p for _, p, _ in got[2].data] == [b"4"]  # type: ignore[union-attr]
        assert (await other.get()).payload == b"2"
        for msg in got[:2]:
            msg.ack()  # type: ignore[union-attr]
        await anyio.sleep(0.01)
        assert dacks == []
        got[2].ack()  # type: ignore[union-attr]
        await anyio.sleep(0.01)
        assert dacks == [24]
