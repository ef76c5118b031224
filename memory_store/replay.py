"""Replay a recorded log onto a bus with its original timing, and export it to MCAP.

Replay keeps a monotonic deadline schedule: event *i* is due at ``start + (ts_i - ts_0) / speed``,
so sleeping late once never accumulates into drift.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import msgspec
import structlog

from robobus.bus import Bus
from robobus.bus.topics import matches
from robobus.memory_store.log import Event
from robobus.memory_store.store import MemoryStore
from robobus.schemas.contract import message_type

log = structlog.get_logger("memory.replay")

#: asyncio's timers have ~1 ms granularity; the last stretch before a deadline is slept with
#: ``time.sleep`` (nanosleep, ~60 µs precision), which keeps replay gaps within 1 ms p99.
FINE_SLEEP_S = 0.002
END = 2**63 - 1


@dataclass(slots=True)
class ReplayOptions:
    speed: float = 1.0
    t0_ns: int = 0
    t1_ns: int = END
    patterns: tuple[str, ...] = ("#",)
    loop: bool = False
    #: request inboxes of clients that no longer exist are never republished
    skip_inboxes: bool = True


def select(store: MemoryStore, patterns: tuple[str, ...], t0: int = 0,
           t1: int = END) -> Iterator[Event]:
    """Events in ``[t0, t1]`` matching any of ``patterns``, in log order."""
    single = patterns[0] if len(patterns) == 1 else None
    for ev in store.scan(t0, t1, single):
        if single is not None or any(matches(p, ev.topic) for p in patterns):
            yield ev


async def sleep_until(deadline: float) -> None:
    """Sleep until ``time.monotonic()`` reaches ``deadline``, to well under a millisecond."""
    remaining = deadline - time.monotonic()
    if remaining > FINE_SLEEP_S:
        await anyio.sleep(remaining - FINE_SLEEP_S)
        remaining = deadline - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)


async def replay(bus: Bus, store: MemoryStore, opts: ReplayOptions) -> int:
    """Republish the selected events with their original spacing divided by ``speed``."""
    if opts.speed <= 0:
        raise ValueError(f"--speed must be > 0, got {opts.speed}")
    sent = 0
    while True:
        start: float | None = None
        first = 0
        # Reading from the page cache through the mmap takes microseconds: no thread hop.
        for ev in select(store, opts.patterns, opts.t0_ns, opts.t1_ns):
            if opts.skip_inboxes and "/_inbox/" in ev.topic:
                continue
            if start is None:
                start, first = time.monotonic(), ev.ts_ns
            await sleep_until(start + (ev.ts_ns - first) / 1e9 / opts.speed)
            await bus.publish(ev.topic, ev.payload)
            # let the transport and local subscribers run before a blocking fine sleep
            await anyio.lowlevel.checkpoint()
            sent += 1
        if not opts.loop or start is None:
            return sent
        log.info("replay_loop", sent=sent)


def parse_time(text: str | None, base_ns: int, default: int) -> int:
    """``--from/--to``: seconds from the log start (``5``, ``+2.5``), ns since the epoch
    (16+ digits) or an ISO 8601 date-time."""
    if text is None:
        return default
    if text.isdigit() and len(text) >= 16:
        return int(text)
    try:
        return base_ns + int(float(text) * 1e9)
    except ValueError:
        pass
    try:
        return int(datetime.fromisoformat(text).timestamp() * 1e9)
    except ValueError as exc:
        raise ValueError(f"cannot read time {text!r}: use seconds from the log start, "
                         "epoch nanoseconds or ISO 8601") from exc


# -- MCAP export ---------------------------------------------------------------------------
def to_json(payload: bytes) -> bytes:
    """A JSON object for any payload: msgpack maps as they are, text and raw bytes wrapped."""
    try:
        obj = msgspec.msgpack.decode(payload)
        if isinstance(obj, dict):
            return msgspec.json.encode(obj)
    except (msgspec.DecodeError, TypeError, RecursionError):
        pass  # not a msgpack map (or absurdly nested): shown as text or raw bytes below
    try:
        return msgspec.json.encode({"text": payload.decode("utf-8")})
    except UnicodeDecodeError:
        return msgspec.json.encode({"raw_base64": base64.b64encode(payload).decode()})


_GENERIC = {"type": "object", "description": "robobus payload (msgpack map, text or raw bytes)"}


def export_mcap(store: MemoryStore, out: Path, patterns: tuple[str, ...] = ("#",),
                t0: int = 0, t1: int = END) -> int:
    """Write the selected events as MCAP with JSON channels and JSON Schema; return the count."""
    from mcap.writer import Writer

    count = 0
    with out.open("wb") as fh:
        writer = Writer(fh)
        writer.start(profile="", library="robobus")
        schema_ids: dict[str, int] = {}
        channels: dict[str, int] = {}
        for ev in select(store, patterns, t0, t1):
            ch = channels.get(ev.topic)
            if ch is None:
                ch = channels[ev.topic] = _channel(writer, schema_ids, ev.topic)
            writer.add_message(channel_id=ch, log_time=ev.ts_ns, publish_time=ev.ts_ns,
                               data=to_json(ev.payload), sequence=ev.seq & 0xFFFF_FFFF)
            count += 1
        writer.finish()
    return count


def _channel(writer: Any, schema_ids: dict[str, int], topic: str) -> int:
    type_ = message_type(topic)
    name = f"robobus.{type_.__name__}" if type_ is not None else "robobus.Payload"
    sid = schema_ids.get(name)
    if sid is None:
        schema = msgspec.json.schema(type_) if type_ is not None else _GENERIC
        sid = schema_ids[name] = writer.register_schema(
            name=name, encoding="jsonschema", data=msgspec.json.encode(schema))
    return writer.register_channel(topic=topic, message_encoding="json", schema_id=sid)
