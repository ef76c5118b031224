"""The memory agent's ingest: one ordered stream of messages, recorded and folded into views.

Each message becomes a record for the group committer, an ack entry (its transport ack waits
for its commit) and a dictionary lookup for the views. Over durable ZeroMQ the agent's
subscription is *tapped*: the messages only the agent wants arrive as whole runs in one carrier
message (:data:`BATCH_TOPIC`), recorded and folded by :func:`memory_store.raw.take_run`, and
acknowledged once; :func:`takes_raw` says which topics may come that way. Requests to the
agent stay on the same stream, in order, so a query sees every message that came before it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio

from robobus.bus.backends.zmq_durable import BATCH_TOPIC
from robobus.bus.message import Message
from robobus.bus.subscription import Subscription
from robobus.bus.topics import matches
from robobus.memory_store.headers import head_of
from robobus.memory_store.log import Record
from robobus.memory_store.raw import take_run
from robobus.memory_store.segment import MAX_TOPIC_BYTES
from robobus.memory_store.views import Rejected
from robobus.schemas.world import WorldEvent

if TYPE_CHECKING:
    from robobus.memory_store.agent import MemoryAgent

#: messages taken from the subscription per loop turn before yielding
_DRAIN = 4096
#: a request message and the number of events put before it (what it may need committed)
Request = tuple[Message, int]


class Excluder:
    """``topic in excluded``: does a topic match one of the exclude filters (answers cached)."""

    def __init__(self, filters: tuple[str, ...]) -> None:
        self.filters = filters
        self._seen: dict[str, bool] = {}

    def __call__(self, topic: str) -> bool:
        hit = self._seen.get(topic)
        if hit is None:
            if len(self._seen) >= 65_536:
                self._seen.clear()
            hit = self._seen[topic] = any(matches(f, topic) for f in self.filters)
        return hit


def takes_raw(agent: MemoryAgent, topic: str) -> bool:
    """Whether the durable stream may hand over ``topic``'s messages raw (memory_store.raw):
    not requests, unrecorded or excluded topics, topics too long to key, reply inboxes."""
    return (topic not in agent.requests and topic != agent.unrecorded
            and (agent.excluded is None or not agent.excluded(topic))
            and len(topic.encode()) <= MAX_TOPIC_BYTES and "/_inbox/" not in topic)


def unrecordable(agent: MemoryAgent, msg: Message, put_count: int) -> bool:
    """A topic LMDB cannot key (over 511 bytes): reported and skipped, never retried
    (``put_count``: the events put before it, counting those not yet handed over)."""
    if len(msg.topic) <= MAX_TOPIC_BYTES // 4 or len(msg.topic.encode()) <= MAX_TOPIC_BYTES:
        return False
    agent.bus.report_error_soon(msg.topic[:200], f"topic of {len(msg.topic.encode())} bytes "
                                f"is longer than the {MAX_TOPIC_BYTES} the store can record",
                                "topic_too_long", msg.payload)
    if msg.ack_token is not None:  # acknowledged in order, so the broker stops resending
        agent.unacked.append((put_count, msg))
    return True


async def ingest(agent: MemoryAgent, sub: Subscription) -> None:
    """The hot path: per message a record tuple, an ack entry and a dict lookup for the
    views; the records of a burst go to the committer at once.

    Requests to the agent arrive on this same ordered stream, so a query sees every
    message that reached the agent before it (read-your-writes for a publisher). Queries
    on the views are answered inline (microseconds); log queries and world changes, which
    wait for a commit, go to their own tasks so that they never stall ingest.
    """
    committer = agent.committer
    observe = agent.views.observe if agent.views is not None else None
    requests = agent.requests
    unrecorded = agent.unrecorded
    excluded = agent.excluded
    unacked = agent.unacked.append
    effects: list[WorldEvent | Rejected] = []
    routed: list[tuple[Callable[[Request], Awaitable[None]], Request]] = []
    records: list[Record] = []
    record = records.append
    while True:
        msg: Message | None = await sub.get()
        n = 0
        base = committer.put_count  # nothing else puts while this loop runs
        while msg is not None:
            topic = msg.topic
            if topic is BATCH_TOPIC:  # a run of the durable stream, acked as one
                take_run(msg.data, msg.ts_ns, record, observe, effects)
                unacked((base + len(records), msg))
                n += 1
                msg = sub.get_nowait() if n < _DRAIN else None
                continue
            if len(topic) > MAX_TOPIC_BYTES // 4 and unrecordable(agent, msg, base + len(records)):
                n += 1
                msg = sub.get_nowait() if n < _DRAIN else None
                continue
            if topic != unrecorded and (excluded is None or not excluded(topic)):
                head = head_of(msg)
                record((topic, msg.payload, msg.ts_ns, head) if head else
                       (topic, msg.payload, msg.ts_ns))
            if msg.ack_token is not None:  # in order, once what came before is committed
                unacked((base + len(records), msg))
            if observe is not None:
                found = observe(topic, msg.payload, msg.ts_ns)
                if found:
                    effects.extend(found)
                handler = requests.get(topic)
                if handler is not None:
                    routed.append((handler, (msg, base + len(records))))
            n += 1
            msg = sub.get_nowait() if n < _DRAIN else None
        if records:
            committer.extend(records)
            records.clear()
        if effects:
            await agent.publish_effects(effects)
            effects = []
        for handler, request in routed:
            await handler(request)
        routed.clear()
        if committer.backlog >= committer.opts.max_pending:
            await committer.wait_room()
        else:
            await anyio.lowlevel.checkpoint()


async def record_leftovers(agent: MemoryAgent, subs: list[Subscription]) -> None:
    """On shutdown, record what the subscriptions had already received, then commit it."""
    left = 0
    for sub in subs:
        while (msg := sub.get_nowait()) is not None:
            if msg.topic is BATCH_TOPIC:
                run: list[Record] = []
                take_run(msg.data, msg.ts_ns, run.append, None, [])
                agent.committer.extend(run)
            elif msg.topic != agent.unrecorded and (
                    agent.excluded is None or not agent.excluded(msg.topic)):
                agent.committer.put(msg.topic, msg.payload, msg.ts_ns, head_of(msg))
            if msg.ack_token is not None:
                agent.unacked.append((agent.committer.put_count, msg))
            left += 1
    await agent.committer.commit_now()
    agent.log.info("memory_stopped", recorded_at_shutdown=left, last_seq=agent.committer.last_seq)
