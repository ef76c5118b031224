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

A recorder may :func:`tap` its subscription (issue 16 item 6): the messages of a batch that
only it wants then reach it as whole runs, one carrier message (topic :data:`BATCH_TOPIC`,
``data`` a list of ``(topic, payload, head)``) per run instead of a :class:`Message`, a
dispatch and a buffer slot each. Messages other subscriptions want too (or the recorder
leaves to its normal path) are dispatched one by one as before, in the stream's order.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import msgspec
import structlog

from robobus.bus import zmq_wire as wire
from robobus.bus.hub_replay import LENGTHS
from robobus.bus.message import AckToken, Message
from robobus.bus.subscription import Subscription
from robobus.bus.topics import matches

if TYPE_CHECKING:
    from robobus.bus.api import Bus
    from robobus.bus.backends.zmq import ZmqTransport

log = structlog.get_logger("bus.zmq.durable")
#: the topic of the carrier messages a tapped subscription receives (see :func:`tap`)
BATCH_TOPIC = "$robobus/durable/batch"


class RawHead(msgspec.Struct, omit_defaults=True, gc=False):
    """:class:`bus.zmq_wire.Head` as a run carries it: the same fields and checks, kept out
    of the garbage collector's young generation (a run holds one per message; see
    ``memory_store.agent.tune_gc``)."""

    r: bool = False
    rt: str | None = None
    cd: bytes | None = None
    s: str | None = None
    c: str | None = None
    n: int | None = None


#: one message of a carrier's run: its topic, payload and wire header
Raw = tuple[str, bytes, RawHead]
_head = msgspec.msgpack.Decoder(RawHead).decode
_NO_HEAD = RawHead()
#: topics classified per tap (cleared when full)
_ROUTES_LIMIT = 65_536


@dataclass(slots=True)
class Tap:
    """A subscription that takes the stream's messages in runs (see :func:`tap`)."""

    sub: Subscription
    #: topics the subscriber takes raw (it leaves the others to its normal path)
    takes: Callable[[str], bool]
    max_payload: int


def tap(bus: Bus, sub: Subscription, takes: Callable[[str], bool]) -> bool:
    """Let ``sub`` (manual ack, ``Overflow.BLOCK``) take the durable stream's messages in runs.

    A message goes into a carrier for ``sub`` when ``sub`` is the only subscription of the bus
    that matches its topic, ``takes(topic)`` and its payload is within the bus's limit; the
    carrier is acknowledged once, for the whole run. Returns False (nothing changes) unless
    ``bus`` is a ZeroMQ bus on the hub's durable stream.
    """
    durable = getattr(bus._transport, "durable", None)  # noqa: SLF001 (same package)
    if not isinstance(durable, Durable) or not durable.on or not sub.manual_ack:
        return False
    durable.tapped = Tap(sub, takes, bus.options.max_payload)
    durable.routes.clear()
    return True


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
    tapped: Tap | None = None
    #: messages handed to the tap in runs (the rest were dispatched one by one)
    raw: int = 0
    #: topic -> (name, whether the tap takes it raw)
    routes: dict[bytes, tuple[str, bool]] = field(default_factory=dict)

    async def subscribe(self, pattern: str, sub_id: int) -> None:
        """Every message comes through the hub's numbered stream, which starts only now: a
        message that reached no subscription would be confirmed unseen."""
        self.filters[sub_id] = pattern
        self.routes.clear()
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
        if self.tapped is not None:
            return self._runs(token, h, packed, self.tapped)
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

    def _runs(self, token: AckToken, h: int, packed: bytes, tapped: Tap
              ) -> Awaitable[None] | None:
        """A batch for a tapped subscription: runs of raw messages, each in one carrier, and
        the other messages one by one, in order."""
        items = self._split(h, packed, tapped)
        for i, item in enumerate(items):
            pending = self._deliver(token, item, tapped.sub)
            if pending is not None:
                return self._finish_runs(token, pending, items[i + 1 :], tapped.sub,
                                         h + _count(items) - 1)
        self._release(token, h + _count(items) - 1)
        return None

    def _split(self, h: int, packed: bytes, tapped: Tap) -> list[list[Raw] | Message | int]:
        """Parse a batch: raw runs, messages, and ints (damaged entries, counted only)."""
        items: list[list[Raw] | Message | int] = []
        run: list[Raw]
        routes, unpack, view = self.routes, LENGTHS.unpack_from, memoryview(packed)
        limit, size = tapped.max_payload, LENGTHS.size
        add = None
        pos, end = 0, len(packed)
        while pos < end:
            try:
                tlen, blen = unpack(packed, pos)
            except struct.error:
                log.warning("bad_durable_batch", at=pos, size=len(packed))
                break
            body = pos + size + tlen  # the body: header length, header, payload
            topic = packed[pos + size : body]
            pos = stop = body + blen
            route = routes.get(topic) or self._route(topic, tapped)
            try:
                if stop > end or blen < 2:
                    raise ValueError("data frame shorter than its header")
                head_end = body + 2 + (packed[body] << 8 | packed[body + 1])
                if head_end > stop:
                    raise ValueError("data frame shorter than its header")
                if route[1] and stop - head_end <= limit:
                    head = _head(view[body + 2 : head_end]) if head_end > body + 2 else _NO_HEAD
                    if add is None:
                        run = []
                        items.append(run)
                        add = run.append
                    add((route[0], packed[head_end:stop], head))
                    continue
                msg, _ = wire.decode_frames([topic, view[body + 2 : head_end],
                                             packed[head_end:stop]])
            except (ValueError, msgspec.DecodeError, RecursionError) as exc:
                log.warning("bad_durable_frame", error=str(exc))
                items.append(1)
                add = None
                continue
            items.append(msg)
            add = None
        return items

    def _route(self, topic: bytes, tapped: Tap) -> tuple[str, bool]:
        name = topic.decode(errors="replace")
        only = [i for i, p in self.filters.items() if matches(p, name)] == [tapped.sub.sub_id]
        if len(self.routes) >= _ROUTES_LIMIT:
            self.routes.clear()
        route = self.routes[topic] = (name, only and tapped.takes(name))
        return route

    def _deliver(self, token: AckToken, item: list[Raw] | Message | int, sub: Subscription
                 ) -> Awaitable[None] | None:
        if isinstance(item, int):
            return None
        if isinstance(item, list):
            carrier = Message(BATCH_TOPIC, b"", ts_ns=time.time_ns(), data=item,
                              ack_token=token)
            token.remaining += 1
            self.raw += len(item)
            return None if sub.put_nowait(carrier) else sub.put(carrier)
        item.ack_token = token
        held = token.remaining
        token.remaining = 0  # Bus.dispatch sets it to this message's manual-ack deliveries
        pending = self.transport.dispatch(item, None)
        token.remaining += held
        return pending

    async def _finish_runs(self, token: AckToken, pending: Awaitable[None],
                           items: list[list[Raw] | Message | int], sub: Subscription,
                           last_h: int) -> None:
        await pending
        for item in items:
            more = self._deliver(token, item, sub)
            if more is not None:
                await more
        self._release(token, last_h)

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


def _count(items: list[list[Raw] | Message | int]) -> int:
    """How many stream messages (numbers) a split batch holds."""
    return sum(len(i) if isinstance(i, list) else 1 for i in items)


async def _settle_after(pending: Awaitable[None], msg: Message) -> None:
    await pending
    msg.settle()
