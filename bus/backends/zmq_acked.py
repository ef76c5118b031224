"""Acknowledged (qos 1 and retained) publishes of the ZeroMQ client, through the hub's control
socket: coalesced per event-loop turn, resent until acknowledged.

The first post of a loop turn leaves at once, so a lone message (a skill command) waits no
longer than it would alone. Posts made later in the same turn (a task's statuses) join a batch
that leaves as one ``PUBS`` control message when the turn ends, and the hub answers it with one
``ACKS`` (see :mod:`bus.zmq_wire`). Ack ids are consecutive per client, so a batch is a range;
messages leave in call order.

Bookkeeping per message is one dict entry and one future: no timer and no done-callback each.
One sweep a second resends what the hub has not acknowledged for :data:`ACK_RESEND_S` and fails
what waited :data:`ACK_TIMEOUT_S`; an entry whose future its owner cancelled is dropped there.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator

from robobus.bus import zmq_wire as wire
from robobus.bus.errors import DisconnectedError, PublishError

ACK_RESEND_S = 1.0
ACK_TIMEOUT_S = 10.0
MAX_IN_FLIGHT = 10_000
#: the most publishes one PUBS carries, and the payload bytes after which a batch leaves early
MAX_BATCH = 256
MAX_BATCH_BYTES = 1 << 20

#: an acknowledged publish in flight: its future, the entry to resend, when it was first sent
_InFlight = tuple[asyncio.Future[None], wire.Entry, float]


class AckedSender:
    """Sends acknowledged publishes through ``send`` (the client's control socket) and settles
    their futures from the hub's ``ACK``/``ACKS``/``DENY`` answers."""

    def __init__(self, loop: asyncio.AbstractEventLoop, send: Callable[[list[bytes]], None]) -> None:
        self.loop = loop
        self._send = send
        self._next_id = 1
        self._in_flight: dict[int, _InFlight] = {}
        self._batch: list[wire.Entry] = []
        self._batch_first = 0
        self._batch_bytes = 0
        self._turn = False  # a post left in this loop turn: later ones join the batch
        self._held = 0  # inside coalesce(): every post joins the batch
        self._sweeping = False
        self._room = asyncio.Event()  # set while fewer than MAX_IN_FLIGHT await their ack
        self._room.set()
        self.closed = False
        #: the hub takes ``PUBS`` batches (its HELLO said so); False: one ``PUB`` each
        self.batches = True
        #: control messages sent for acknowledged publishes (batches and resends), for tests
        self.sends = 0

    @property
    def full(self) -> bool:
        return len(self._in_flight) >= MAX_IN_FLIGHT

    async def room(self) -> None:
        """Wait while :data:`MAX_IN_FLIGHT` publishes await their acknowledgement."""
        while len(self._in_flight) >= MAX_IN_FLIGHT:
            self._room.clear()
            await self._room.wait()

    def post(self, topic: bytes, header: bytes, payload: bytes) -> asyncio.Future[None]:
        """Send one publish (now, or with this turn's batch); the future completes at its ack."""
        if self.closed:
            raise DisconnectedError("transport closed")
        ack_id = self._next_id
        self._next_id = ack_id + 1
        fut = self.loop.create_future()
        entry = (topic, header, payload)
        self._in_flight[ack_id] = (fut, entry, self.loop.time())
        if not self._sweeping:
            self._sweeping = True
            self.loop.call_later(ACK_RESEND_S, self._sweep)
        if not self._turn:
            self._turn = True
            self.loop.call_soon(self._end_turn)  # for a batch held over a yield, too
            if not self._held:
                self._send_run(ack_id, [entry])
                return fut
        if not self._batch:
            self._batch_first = ack_id
        self._batch.append(entry)
        self._batch_bytes += len(payload)
        if len(self._batch) >= MAX_BATCH or self._batch_bytes >= MAX_BATCH_BYTES:
            self.flush()
        return fut

    @contextlib.contextmanager
    def coalesce(self) -> Iterator[None]:
        """Posts made inside leave as one batch when it exits, the first one too (a burst
        of statuses: one control message, not two). Should it be held over a yield, the
        batch still leaves at the end of the loop turn."""
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1
            if not self._held:
                self.flush()
                self._turn = False  # a post after this one leaves at once again

    def flush(self) -> None:
        """Send the batch gathered so far (at the end of the turn, or before a goodbye)."""
        if self._batch:
            batch, self._batch, self._batch_bytes = self._batch, [], 0
            if not self.closed:
                self._send_run(self._batch_first, batch)

    def _end_turn(self) -> None:
        self._turn = False
        self.flush()

    def _send_run(self, first: int, entries: list[wire.Entry]) -> None:
        if not self.batches:  # a hub older than PUBS
            for ack_id, (topic, header, payload) in enumerate(entries, first):
                self.sends += 1
                self._send([wire.PUB, wire.pack_id(ack_id), topic, header, payload])
            return
        self.sends += 1
        self._send([wire.PUBS, wire.pack_id(first), wire.encode_batch(entries)])

    # -- the hub's answers ------------------------------------------------------------
    def acked(self, first: int, count: int) -> None:
        """``ACKS first count`` (``ACK id``: count 1)."""
        pop = self._in_flight.pop
        for ack_id in range(first, first + min(count, MAX_IN_FLIGHT)):
            item = pop(ack_id, None)
            if item is not None and not item[0].done():
                item[0].set_result(None)
        if not self._room.is_set() and len(self._in_flight) < MAX_IN_FLIGHT:
            self._room.set()

    def denied(self, ack_id: int, topic: str) -> None:
        """The hub's policy refused one publish (alone or inside a batch)."""
        item = self._in_flight.pop(ack_id, None)
        if item is not None and not item[0].done():
            item[0].set_exception(PublishError(topic, "not authorized by the hub's policy"))

    # -- resends ----------------------------------------------------------------------
    def _sweep(self) -> None:
        """Resend what waited :data:`ACK_RESEND_S` for its ack, as runs of consecutive ids."""
        self._sweeping = False
        if self.closed:
            return
        now = self.loop.time()
        runs: list[tuple[int, list[wire.Entry]]] = []
        gone: list[int] = []
        for ack_id, (fut, entry, sent) in self._in_flight.items():
            if now - sent < ACK_RESEND_S:
                break  # ids grow with time: the rest are younger
            if fut.done():  # its owner cancelled it
                gone.append(ack_id)
            elif now - sent > ACK_TIMEOUT_S:
                gone.append(ack_id)
                fut.set_exception(PublishError(entry[0].decode(errors="replace"),
                                               f"hub did not acknowledge in {ACK_TIMEOUT_S}s"))
            elif runs and runs[-1][0] + len(runs[-1][1]) == ack_id and len(runs[-1][1]) < MAX_BATCH:
                runs[-1][1].append(entry)
            else:
                runs.append((ack_id, [entry]))
        for ack_id in gone:
            del self._in_flight[ack_id]
        for first, entries in runs:
            self._send_run(first, entries)
        if gone and not self._room.is_set():
            self._room.set()
        if self._in_flight:
            self._sweeping = True
            self.loop.call_later(ACK_RESEND_S, self._sweep)

    def close(self) -> None:
        """Fail every publish still waiting for its ack."""
        self.closed = True
        for fut, _entry, _sent in self._in_flight.values():
            if not fut.done():
                fut.set_exception(DisconnectedError("transport closed"))
                # an ack its owner no longer awaits (it is closing) is no error worth a "never
                # retrieved" traceback; one who awaits it still gets the exception
                fut.exception()
        self._in_flight.clear()
        self._room.set()
