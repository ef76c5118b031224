"""The durable stream of the ZeroMQ backend (``zmq://...?durable=NAME``), for recorders.

A durable client does not subscribe on the data path. Once its first subscription exists it
sends ``DURABLE name``, and the hub (started with ``--replay-buffer N``) streams every message
to it as ``DATA h topic body`` on the control socket, numbered. The client confirms with
``DACK h`` once the message is processed (for the memory agent: committed), so a restart loses
nothing: the hub resends whatever came after the last confirmation. A hub without a replay
buffer answers ``NODURABLE`` and the client falls back to subscribing normally.

The hub sends the stream in batches, ``DATA h "" packed`` (see :mod:`bus.hub_replay`): one
ZeroMQ message for up to 256 numbered messages, dispatched in order and confirmed together
(the batch's last number) once each of them is processed.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import msgspec
import structlog

from robobus.bus import zmq_wire as wire
from robobus.bus.hub_replay import LENGTHS
from robobus.bus.message import AckToken, Message

if TYPE_CHECKING:
    from robobus.bus.backends.zmq import ZmqTransport

log = structlog.get_logger("bus.zmq.durable")


@dataclass(slots=True)
class Durable:
    """The durable-stream state of one :class:`ZmqTransport`."""

    transport: ZmqTransport
    name: str
    #: False once the hub said it keeps no replay buffer: then the client subscribes normally
    on: bool = True
    started: bool = False
    #: subscription id -> pattern, for the fallback
    filters: dict[int, str] = field(default_factory=dict)
    acked_h: int = 0
    dack_scheduled: bool = False

    async def subscribe(self, pattern: str, sub_id: int) -> None:
        """Every message comes through the hub's numbered stream, which starts only now: a
        message that reached no subscription would be confirmed unseen."""
        self.filters[sub_id] = pattern
        await self.transport.fetch_snapshot(pattern, sub_id)
        if not self.started:
            self.started = True
            self._start()

    def _start(self) -> None:
        self.transport.send_control([wire.DURABLE, self.name.encode()])

    def rejoin(self) -> None:
        """A new hub numbers its stream afresh."""
        if self.started and self.on:
            self.acked_h = 0
            self._start()

    def refused(self) -> None:
        """``NODURABLE``: subscribe normally instead."""
        log.warning("hub_has_no_replay_buffer", url=self.transport.config.url,
                    hint="start the hub with --replay-buffer N; subscribing normally")
        self.on = False
        self.transport.config.task_group.start_soon(self._fallback, name="zmq-durable-fallback")

    async def _fallback(self) -> None:
        t = self.transport
        for sub_id, pattern in list(self.filters.items()):
            t.add_filter(pattern, sub_id)
        await t.sync()

    def on_data(self, frames: list[bytes]):  # noqa: ANN201
        """A message of the stream (``DATA h topic body``) or a batch (``DATA h "" packed``),
        confirmed once processed. Returns an awaitable when a full buffer makes delivery wait
        (the rest of a batch is delivered after it, in order)."""
        h = int.from_bytes(frames[1], "big")
        if frames[2]:
            return self._one(h, frames[2], frames[3])
        # One token for the whole batch, instead of a token and a callback per message: it
        # confirms the batch's last h once every delivery of it to a manual-ack subscription
        # is acked. It starts held (remaining 1) so that early acks cannot complete it before
        # the last message is dispatched; _release lets go of the hold.
        token = AckToken(None, 1, True)
        packed = frames[3]
        pos, end = 0, len(packed)
        while pos < end:
            h, pos, pending = self._step(token, h, packed, pos)
            if pending is not None:
                return self._finish(token, pending, h, packed, pos)
        self._release(token, h - 1)
        return None

    def _step(self, token: AckToken, h: int, packed: bytes, pos: int
              ) -> tuple[int, int, Awaitable[None] | None]:
        """Dispatch the message at ``pos`` of a batch: (next h, next pos, pending)."""
        try:
            tlen, blen = LENGTHS.unpack_from(packed, pos)
        except struct.error:
            log.warning("bad_durable_batch", h=h, at=pos, size=len(packed))
            return h, len(packed), None
        pos += LENGTHS.size
        topic = packed[pos : pos + tlen]
        pos += tlen
        end = pos + blen
        # the body's parts read in place (wire.decode_body would copy the body out first)
        head_end = pos + 2 + int.from_bytes(packed[pos : pos + 2], "big")
        try:
            if head_end > end:
                raise ValueError("data frame shorter than its header")
            msg, _ = wire.decode_frames([topic, memoryview(packed)[pos + 2 : head_end],
                                         packed[head_end:end]])
        except (ValueError, msgspec.DecodeError, RecursionError) as exc:
            log.warning("bad_durable_frame", error=str(exc))
            return h + 1, end, None  # confirmed with its batch
        msg.ack_token = token
        held = token.remaining
        token.remaining = 0  # Bus.dispatch sets it to this message's manual-ack deliveries
        pending = self.transport.dispatch(msg, None)
        token.remaining += held
        return h + 1, end, pending

    async def _finish(self, token: AckToken, pending: Awaitable[None], h: int, packed: bytes,
                      pos: int) -> None:
        await pending
        while pos < len(packed):
            h, pos, more = self._step(token, h, packed, pos)
            if more is not None:
                await more
        self._release(token, h - 1)

    def _release(self, token: AckToken, last_h: int) -> None:
        """Every message of a batch is dispatched: the token may now confirm ``last_h``."""
        token.send = partial(self._ack, last_h)
        token.done()

    def _one(self, h: int, topic: bytes, body: bytes) -> Awaitable[None] | None:
        try:
            msg, _ = wire.decode_body(topic, body)
        except (ValueError, msgspec.DecodeError, RecursionError) as exc:
            log.warning("bad_durable_frame", error=str(exc))
            self._ack(h)
            return None
        msg.ack_token = AckToken(partial(self._ack, h))
        pending = self.transport.dispatch(msg, None)
        if pending is None:
            msg.settle()
            return None
        return _settle_after(pending, msg)

    def _ack(self, h: int) -> None:
        """Coalesce acknowledgements: one DACK per loop iteration, for the highest ``h``."""
        if h <= self.acked_h:
            return
        self.acked_h = h
        if not self.dack_scheduled:
            self.dack_scheduled = True
            self.transport.loop.call_soon(self._send_dack)

    def _send_dack(self) -> None:
        self.dack_scheduled = False
        if not self.transport.closed:
            self.transport.send_control([wire.DACK, self.acked_h.to_bytes(8, "big")])


async def _settle_after(pending: Awaitable[None], msg: Message) -> None:
    await pending
    msg.settle()
