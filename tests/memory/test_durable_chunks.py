"""The hub's replay buffer as the memory agent's durable stream sees it (issue 16 item 6): the
capture is numbered and packed into chunks once, each chunk goes out as one ``DATA h ""
packed`` batch, in order and within the window, and a client resumes after what it confirmed:
at a chunk's start, inside a chunk, or at the oldest message left after the buffer rolled on.
In one process, over an inproc capture socket; the agent's side reads the batches with the
unpacking the ZeroMQ backend uses."""

from __future__ import annotations

import secrets
import time

import pytest
import zmq

from robobus.bus import zmq_wire as wire
from robobus.bus.hub_replay import BATCH, LENGTHS, ReplayBuffer


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
