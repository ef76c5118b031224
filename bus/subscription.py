"""A subscription: an async iterator over a bounded buffer with an explicit overflow policy."""

from __future__ import annotations

import asyncio
import enum
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import structlog

from robobus.bus.errors import DisconnectedError
from robobus.bus.message import Message
from robobus.bus.topics import TOPIC_CACHE_LIMIT

log = structlog.get_logger("bus.subscription")


class Overflow(enum.Enum):
    """What a full subscription buffer does with the next message.

    * ``BLOCK``: the delivering side waits (backpressure into the transport). Commands use it:
      nothing is ever dropped.
    * ``LATEST``: keep only the newest message per topic (like ZeroMQ CONFLATE). State topics.
    * ``DROP_OLDEST``: drop the oldest buffered message and count it. Telemetry.
    """

    BLOCK = "block"
    LATEST = "latest"
    DROP_OLDEST = "drop_oldest"


class Subscription:
    """Buffered stream of :class:`Message` for one topic filter.

    Created by :meth:`bus.Bus.subscribe`; iterate it with ``async for``.
    """

    def __init__(
        self,
        pattern: str,
        *,
        maxsize: int = 10_000,
        overflow: Overflow = Overflow.BLOCK,
        decode: Callable[[Message], Any] | None = None,
        sub_id: int = 0,
        manual_ack: bool = False,
        reports: bool | Callable[[str], bool] = True,
    ) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.pattern = pattern
        self.maxsize = maxsize
        self.overflow = overflow
        # plain bools for the hot path: an Enum member lookup costs ~70 ns per message
        self._block = overflow is Overflow.BLOCK
        self._keep_latest = overflow is Overflow.LATEST
        self.sub_id = sub_id
        self.manual_ack = manual_ack
        #: whether refusals on it are reported (it owns its topics) or not (a passive
        #: observer), or a predicate on the topic
        self.reports = reports
        self.dropped = 0
        self._decode = decode
        self._queue: deque[Message] = deque()
        self._latest: OrderedDict[str, Message] = OrderedDict()
        # asyncio events, cleared in place: on the hot path an anyio.Event per wake-up costs
        # measurable microseconds (robobus runs on asyncio: zmq and paho share its loop).
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._closed: BaseException | None = None
        self._seen_topics: set[str] = set()

    def reports_on(self, topic: str) -> bool:
        """Whether a refused input on ``topic`` is this subscription's to report."""
        reports = self.reports
        return reports if isinstance(reports, bool) else reports(topic)

    def __len__(self) -> int:
        return len(self._latest) if self.overflow is Overflow.LATEST else len(self._queue)

    # -- producer side (called by the Bus dispatcher) -------------------------------------
    def put_nowait(self, msg: Message) -> bool:
        """Deliver without waiting; False only when a BLOCK buffer is full (use :meth:`put`)."""
        if self._closed is not None:
            return True
        if self._block:
            if len(self._queue) >= self.maxsize:
                return False
            self._queue.append(msg)
            self._saw(msg.topic)
            self._readable.set()
            return True
        self._put_lossy(msg)
        return True

    def _put_lossy(self, msg: Message) -> None:
        if self.overflow is Overflow.LATEST:
            self._latest.pop(msg.topic, None)
            self._latest[msg.topic] = msg
            if len(self._latest) > self.maxsize:
                self._latest.popitem(last=False)
                self.dropped += 1
        elif len(self._queue) < self.maxsize:
            self._queue.append(msg)
        else:
            self._queue.popleft()
            self._queue.append(msg)
            self._count_drop()
        self._saw(msg.topic)
        self._readable.set()

    def _saw(self, topic: str) -> None:
        """Note a live message on ``topic``, so a retained value arriving later cannot undo it.

        Snapshots come right after subscribing, so the set only has to remember recent topics:
        it is emptied once it holds TOPIC_CACHE_LIMIT of them (a subscription to ``tasks/+``
        sees a new topic per task; keeping them all grew a memory agent by ~0.7 KB a task)."""
        seen = self._seen_topics
        if len(seen) > TOPIC_CACHE_LIMIT:
            seen.clear()
        seen.add(topic)

    async def put(self, msg: Message) -> None:
        """Deliver ``msg``, applying the overflow policy; a full BLOCK buffer waits for room."""
        while not self.put_nowait(msg):
            self._writable.clear()
            await self._writable.wait()

    def put_snapshot(self, msg: Message) -> None:
        """Deliver a retained value, unless a live message on that topic already arrived."""
        if msg.topic in self._seen_topics or self._closed is not None:
            return
        if self.overflow is Overflow.LATEST:
            self._latest.setdefault(msg.topic, msg)
        else:
            self._queue.append(msg)
        self._readable.set()

    def close(self, exc: BaseException | None = None) -> None:
        """End the stream; with ``exc``, the iterator raises it after the buffer drains."""
        self._closed = exc or StopAsyncIteration()
        self._readable.set()
        self._writable.set()

    def _count_drop(self) -> None:
        self.dropped += 1
        if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
            log.warning("subscription_overflow", pattern=self.pattern, dropped=self.dropped)

    # -- consumer side ---------------------------------------------------------------------
    def _pop(self) -> Message | None:
        if self._keep_latest:
            return self._latest.popitem(last=False)[1] if self._latest else None
        if not self._queue:
            return None
        msg = self._queue.popleft()
        if len(self._queue) == self.maxsize - 1:  # only a full queue has producers waiting
            self._writable.set()
        return msg

    async def get(self) -> Message:
        """Wait for the next message (decoded if the subscription is typed)."""
        while True:
            msg = self._pop()
            if msg is not None:
                if self._decode is not None:
                    msg = self._decode(msg)
                    if msg is None:
                        continue
                return msg
            if self._closed is not None:
                if isinstance(self._closed, StopAsyncIteration):
                    raise self._closed
                raise DisconnectedError(f"subscription {self.pattern!r} closed") from self._closed
            if self._readable.is_set():
                self._readable.clear()
                continue
            await self._readable.wait()

    def get_nowait(self) -> Message | None:
        """The next buffered message, or None (decoding skipped messages as ``get`` does)."""
        while (msg := self._pop()) is not None:
            if self._decode is None:
                return msg
            decoded = self._decode(msg)
            if decoded is not None:
                return decoded
        return None

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        return await self.get()
