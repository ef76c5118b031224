"""The memory agent's fast path for the durable ZeroMQ stream (issue 16 item 6).

The agent taps its subscription (:func:`bus.backends.zmq_durable.tap`): the messages only it
wants arrive as runs of ``(topic, payload, wire header)`` in one carrier message, and each is
recorded and folded into the views here without a :class:`~bus.message.Message`, a dispatch,
a buffer slot and an acknowledgement of its own (the carrier is acknowledged once its last
record is committed). Requests, excluded topics, topics too long to key and reply inboxes
are left to the normal path (:func:`memory_store.ingest.takes_raw`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from robobus.bus.backends.zmq_durable import Raw, RawHead
from robobus.memory_store.headers import Properties, pack
from robobus.memory_store.log import Record

#: stored headers of plain messages, by (retained, sender)
_heads: dict[tuple[bool, str | None], bytes] = {}
_HEADS_LIMIT = 4096


def stored_head(head: RawHead) -> bytes:
    """What :func:`memory_store.headers.head_of` stores for the message of this wire header
    (over ZeroMQ: QoS 0, no content type, user properties or payload format)."""
    if head.rt is None and head.cd is None:
        key = (head.r, head.s)
        found = _heads.get(key)
        if found is None:
            if len(_heads) >= _HEADS_LIMIT:
                _heads.clear()
            found = _heads[key] = pack(head.r, 0, Properties(sender=head.s) if head.s else None)
        return found
    return pack(head.r, 0, Properties(head.rt, head.cd, head.s))


def take_run(run: list[Raw], ts_ns: int, record: Callable[[Record], None],
             observe: Callable[[str, bytes, int], list[Any] | None] | None,
             effects: list[Any]) -> None:
    """Record each message of a run (received at ``ts_ns``) and fold it into the views."""
    heads = _heads
    for topic, payload, head in run:
        stored = heads.get((head.r, head.s)) if head.rt is None and head.cd is None else None
        if stored is None:
            stored = stored_head(head)
        record((topic, payload, ts_ns, stored) if stored else (topic, payload, ts_ns))
        if observe is not None:
            found = observe(topic, payload, ts_ns)
            if found:
                effects.extend(found)
