"""The hub's replay buffer: durable recorders lose nothing while they restart.

With ``robobus hub --replay-buffer N`` the proxy copies every data message to a capture socket;
the hub numbers them (``h``) and keeps the last ``N`` in memory. A client that connects with
``?durable=NAME`` receives *all* traffic as a numbered stream over its control socket instead
of its SUB socket, at most :data:`~bus.zmq_wire.DURABLE_WINDOW` messages ahead of what it
acknowledged (``DACK h``, sent after its own commit). When it dies and comes back, the hub
resends everything after its last acknowledgement: the loss window is closed as long as the
restart fits in the buffer. A gap (restart longer than the buffer) is logged and counted.

The stream travels in batches (issue 16): ``DATA h "" packed`` carries up to :data:`BATCH`
consecutive messages ``h, h+1, ...`` in one frame, each as a 6-byte length pair (topic, body)
followed by the topic and the body. The empty topic frame tells a batch from a single message
(``DATA h topic body``, which no topic can be confused with: a topic is never empty). One
ZeroMQ message per batch instead of four frames per message: per message the hub and the
recorder each spent microseconds in ZeroMQ calls, which capped a durable recorder at ~37k/s.

The buffer keeps the batches themselves (:class:`Chunk`), packed once as they are captured:
streaming a chunk to any number of durable clients is one send, with no work per message. A
profile of the hub at 60k events/s (issue 16 item 6) found half its CPU in walking the buffer
message by message to the client's position (an ``islice`` over up to ``N`` items per send)
and most of the rest in ``recv_multipart``.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import structlog
import zmq

from robobus.bus import zmq_wire as wire

log = structlog.get_logger("bus.hub")
_H = struct.Struct(">Q")
#: (topic length, body length) before each message of a batch
LENGTHS = struct.Struct(">HI")
#: messages per DATA batch: ~70 KB of 256-byte events, a fraction of the window
BATCH = 256
#: messages read from the capture socket per call, so control messages are never starved
DRAIN_LIMIT = 50_000
_PROBE = wire.PROBE_PREFIX.encode()


@dataclass(slots=True)
class _Durable:
    ident: bytes | None
    acked: int = 0  # committed by the client up to and including this h
    sent: int = 0  # streamed up to and including this h


@dataclass(slots=True, frozen=True)
class Chunk:
    """Consecutive messages ``first .. first + count - 1``, packed as a batch's frame."""

    first: int
    count: int
    packed: bytes

    @property
    def last(self) -> int:
        return self.first + self.count - 1

    def after(self, h: int) -> bytes:
        """The packed messages after ``h`` (a client that confirmed part of this chunk)."""
        pos = 0
        for _ in range(h + 1 - self.first):
            tlen, blen = LENGTHS.unpack_from(self.packed, pos)
            pos += LENGTHS.size + tlen + blen
        return self.packed[pos:]


class ReplayBuffer:
    """Numbered capture of the data path, and the durable clients streaming from it."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.chunks: deque[Chunk] = deque()
        #: the chunk starting at each h (what a client that confirmed a whole chunk needs next)
        self.by_first: dict[int, Chunk] = {}
        self.size = 0  # messages in the chunks
        self.last_h = 0
        self.durable: dict[str, _Durable] = {}
        self.lost = 0

    @property
    def oldest(self) -> int:
        """The first h still buffered (``last_h + 1`` when empty)."""
        return self.chunks[0].first if self.chunks else self.last_h + 1

    def capture(self, frames: list[bytes]) -> None:
        """Number one captured message (a data message is two frames; probes are not kept)."""
        if len(frames) == 2 and not frames[0].startswith(_PROBE):
            topic, body = frames
            self._seal([LENGTHS.pack(len(topic), len(body)), topic, body], 1)

    def capture_from(self, sock: zmq.Socket) -> int:
        """Read what the capture socket holds (at most :data:`DRAIN_LIMIT` messages), packed
        into chunks of up to :data:`BATCH`; returns how many messages were read. Frames are
        read without a copy and with their ``more`` flag (one call per frame, where
        ``recv_multipart`` adds a RCVMORE query and enum conversions per message)."""
        recv, pack, nb = sock.recv, LENGTHS.pack, wire.NOBLOCK
        parts: list[bytes] = []
        n = read = 0
        try:
            while read < DRAIN_LIMIT:
                frame = recv(nb, copy=False)
                read += 1
                if not frame.more:
                    continue  # a one-frame message is no data message
                topic = frame.bytes
                frame = recv(nb, copy=False)
                if frame.more:  # more than two frames: not a data message either
                    while frame.more:
                        frame = recv(nb, copy=False)
                    continue
                if topic.startswith(_PROBE):
                    continue
                body = frame.bytes
                parts += (pack(len(topic), len(body)), topic, body)
                n += 1
                if n == BATCH:
                    self._seal(parts, n)
                    parts, n = [], 0
        except zmq.Again:
            pass
        if n:
            self._seal(parts, n)
        return read

    def _seal(self, parts: list[bytes], n: int) -> None:
        chunk = Chunk(self.last_h + 1, n, b"".join(parts))
        self.last_h += n
        self.chunks.append(chunk)
        self.by_first[chunk.first] = chunk
        self.size += n
        chunks = self.chunks
        while self.size - chunks[0].count >= self.capacity:
            old = chunks.popleft()
            del self.by_first[old.first]
            self.size -= old.count

    def attach(self, name: str, ident: bytes) -> None:
        """A durable client said hello: resume after its last acknowledgement."""
        state = self.durable.get(name)
        if state is None:
            # first time: start from the oldest message still buffered
            first = self.oldest - 1
            state = self.durable[name] = _Durable(ident, acked=first, sent=first)
        state.ident, state.sent = ident, state.acked
        oldest = self.oldest
        if state.acked + 1 < oldest:
            gap = oldest - state.acked - 1
            self.lost += gap
            log.warning("durable_replay_gap", client=name, lost=gap, buffer=self.capacity)
            state.acked = state.sent = oldest - 1
        log.info("durable_attached", client=name, resume_after=state.acked, buffered=self.size)

    def detach(self, ident: bytes) -> None:
        for state in self.durable.values():
            if state.ident == ident:
                state.ident = None

    def ack(self, ident: bytes, h: int) -> None:
        for state in self.durable.values():
            if state.ident == ident and h > state.acked:
                state.acked = min(h, state.sent)

    def pump(self, router: zmq.Socket) -> None:
        """Send each attached durable client the chunks its window allows (whole chunks: a
        chunk goes once all of it fits in the window)."""
        for state in self.durable.values():
            if state.ident is None or state.sent >= self.last_h:
                continue
            if state.sent + 1 < self.oldest:
                self._overrun(state)
            limit = state.acked + wire.DURABLE_WINDOW
            chunk = self.by_first.get(state.sent + 1) or self._holding(state.sent + 1)
            if chunk is not None and chunk.first <= state.sent:  # resumes inside a chunk
                if chunk.last > limit:
                    continue
                _send(router, state.ident, state.sent + 1, chunk.after(state.sent))
                state.sent = chunk.last
                chunk = self.by_first.get(state.sent + 1)
            if chunk is not None:
                self._stream(router, state, chunk, limit)

    def _stream(self, router: zmq.Socket, state: _Durable, chunk: Chunk, limit: int) -> None:
        """Send ``chunk`` and the chunks after it that fit in the window, joined into batches
        of up to :data:`BATCH`: chunks are sealed per read of the capture, so a client that
        waited for its window would otherwise get the small ones one message each."""
        assert state.ident is not None
        batch: list[bytes] = []
        first = count = 0
        found: Chunk | None = chunk
        while found is not None and found.last <= limit:
            if batch and count + found.count > BATCH:
                _send(router, state.ident, first, b"".join(batch))
                batch, count = [], 0
            if not batch:
                first = found.first
            batch.append(found.packed)
            count += found.count
            state.sent = found.last
            found = self.by_first.get(state.sent + 1)
        if batch:
            _send(router, state.ident, first, b"".join(batch))

    def _overrun(self, state: _Durable) -> None:
        """An attached client fell a whole buffer behind (it stopped confirming): what it
        was not sent is gone; it resumes at the oldest message still buffered."""
        gap = self.oldest - state.sent - 1
        self.lost += gap
        log.warning("durable_replay_gap", lost=gap, buffer=self.capacity, attached=True)
        state.sent = self.oldest - 1
        state.acked = max(state.acked, state.sent)

    def _holding(self, h: int) -> Chunk | None:
        """The chunk that holds ``h`` (rare: a client confirmed part of a chunk)."""
        for chunk in reversed(self.chunks):
            if chunk.first <= h:
                return chunk if h <= chunk.last else None
        return None


def _send(router: zmq.Socket, ident: bytes, first: int, packed: bytes) -> None:
    wire.send_frames(router, [ident, wire.DATA, _H.pack(first), b"", packed])


def send_batches(router: zmq.Socket, ident: bytes, items: Iterable[tuple[int, bytes, bytes]]
                 ) -> None:
    """Send consecutive ``(h, topic, body)`` items as ``DATA h "" packed`` batches."""
    pack = LENGTHS.pack
    parts: list[bytes] = []
    first = 0
    for h, topic, body in items:
        if not parts:
            first = h
        parts += (pack(len(topic), len(body)), topic, body)
        if len(parts) >= 3 * BATCH:
            router.send_multipart([ident, wire.DATA, _H.pack(first), b"", b"".join(parts)])
            parts = []
    if parts:
        router.send_multipart([ident, wire.DATA, _H.pack(first), b"", b"".join(parts)])
