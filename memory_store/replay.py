"""Replay a recorded log onto a bus with its original timing, and export it to MCAP.

Replay keeps a monotonic deadline schedule: event *i* is due at ``start + (ts_i - ts_0) / speed``,
so sleeping late once never accumulates into drift. Each event is republished with its recorded
retain flag, QoS, request headers, MQTT 5 user properties and payload format, under the
sender :data:`REPLAY_SENDER` (so agents can tell it from the live fleet), on its topic after
the remap rules. Command topics
(:data:`schemas.contract.COMMAND_TOPICS`) are withheld unless ``include_commands``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import msgspec
import structlog

from robobus.bus import Bus, BusError
from robobus.bus.message import REPLAY_SENDER
from robobus.bus.topics import matches, validate_topic
from robobus.memory_store.foxglove import foxglove_payload, foxglove_schema, payload_object
from robobus.memory_store.log import Event
from robobus.memory_store.store import MemoryStore
from robobus.schemas.codec import decode_as
from robobus.schemas.contract import is_command, is_retained_topic, message_type, prefix_of
from robobus.schemas.errors import DecodeError
from robobus.schemas.messages import Alive, BrainStatus
from robobus.schemas.topics import Topics

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
    #: ``(FROM, TO)`` topic prefix rewrites, the first that matches wins (``--remap``)
    remaps: tuple[tuple[str, str], ...] = ()
    #: publish instructions, skill commands, faults and world changes too
    include_commands: bool = False


@dataclass(slots=True)
class ReplayCounts:
    sent: int = 0
    #: command-topic events not published (``include_commands`` off)
    withheld: int = 0


def parse_remap(text: str) -> tuple[str, str]:
    """``FROM:TO`` (``--remap``): two topic prefixes without wildcards."""
    src, sep, dst = text.partition(":")
    src, dst = src.strip("/"), dst.strip("/")
    if not sep or not src or not dst or ":" in dst:
        raise ValueError(f"--remap {text!r}: use FROM:TO, e.g. robobus:sim")
    for part in (src, dst):
        try:
            validate_topic(part)
        except BusError as exc:
            raise ValueError(f"--remap {text!r}: {exc}") from exc
    return src, dst


def remap(topic: str, rules: tuple[tuple[str, str], ...]) -> str:
    """``topic`` with the first rule whose FROM is a whole-level prefix of it applied."""
    for src, dst in rules:
        if topic == src:
            return dst
        if topic.startswith(src) and topic[len(src)] == "/":
            return dst + topic[len(src):]
    return topic


def recorded_prefix(topics: list[str]) -> str | None:
    """The prefix a log was recorded under: that of its contract topics when they agree, else
    the first level every topic shares; None when neither tells."""
    found = {p for p in map(prefix_of, topics) if p is not None}
    if len(found) == 1:
        return found.pop()
    if found:
        return None
    firsts = {t.split("/", 1)[0] for t in topics}
    return firsts.pop() if len(firsts) == 1 else None


async def live_fleet(bus: Bus, prefix: str, wait_s: float = 0.5) -> list[str]:
    """What of a fleet is live on ``prefix``, from its retained brain status and robot presence:
    ``["brain 'b'", "robot 'g1'"]``, empty for none. Waits ``wait_s`` for retained values."""
    t = Topics(prefix)
    live: dict[str, bool] = {}
    async with bus.subscribe(t.brain_status) as brain, bus.subscribe(t.alive()) as alive:
        with anyio.move_on_after(wait_s):
            async with anyio.create_task_group() as tg:
                tg.start_soon(_watch, brain, BrainStatus, live)
                tg.start_soon(_watch, alive, Alive, live)
    return sorted(name for name, on in live.items() if on)


async def _watch(sub: Any, type_: type[Alive] | type[BrainStatus], live: dict[str, bool]) -> None:
    async for msg in sub:
        if msg.replayed or not msg.payload:
            continue
        try:
            value = decode_as(msg.payload, type_, msg.topic, msg.content_type)
        except DecodeError:
            continue
        if isinstance(value, BrainStatus):
            live[f"brain {value.brain!r}"] = value.state != "offline"  # starting, standby or ready
        else:
            live[f"robot {value.robot!r}"] = value.online


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


async def replay(bus: Bus, store: MemoryStore, opts: ReplayOptions,
                 counts: ReplayCounts | None = None) -> int:
    """Republish the selected events with their original spacing divided by ``speed``; return
    how many were sent (``counts`` also gets how many command events were withheld).

    ``bus`` should be named :data:`REPLAY_SENDER`, which marks every message as replayed.
    """
    if opts.speed <= 0:
        raise ValueError(f"--speed must be > 0, got {opts.speed}")
    if bus.name != REPLAY_SENDER:
        log.warning("replay_unmarked", bus=bus.name, expected=REPLAY_SENDER)
    counts = counts if counts is not None else ReplayCounts()
    while True:
        start: float | None = None
        first = 0
        # Reading from the page cache through the mmap takes microseconds: no thread hop.
        for ev in select(store, opts.patterns, opts.t0_ns, opts.t1_ns):
            if opts.skip_inboxes and "/_inbox/" in ev.topic:
                continue
            topic = remap(ev.topic, opts.remaps) if opts.remaps else ev.topic
            if not opts.include_commands and (
                    is_command(ev.topic) or (topic != ev.topic and is_command(topic))):
                counts.withheld += 1
                continue
            if start is None:
                start, first = time.monotonic(), ev.ts_ns
            await sleep_until(start + (ev.ts_ns - first) / 1e9 / opts.speed)
            await _publish(bus, topic, ev, opts.remaps)
            # let the transport and local subscribers run before a blocking fine sleep
            await anyio.lowlevel.checkpoint()
            counts.sent += 1
        if not opts.loop or start is None:
            return counts.sent
        log.info("replay_loop", sent=counts.sent, withheld=counts.withheld)


async def _publish(bus: Bus, topic: str, ev: Event, rules: tuple[tuple[str, str], ...]) -> None:
    """One event with what was recorded of it. A topic the agents always retain is republished
    retained even when the recording could not see the flag (MQTT clears it on live delivery)."""
    retain = ev.retain or is_retained_topic(ev.topic)
    if ev.props is None:
        await bus.publish(topic, ev.payload, retain=retain, qos=min(ev.qos, 2))
        return
    p = ev.props
    response = p.response_topic
    await bus.publish(topic, ev.payload, retain=retain, qos=min(ev.qos, 2),
                      response_topic=remap(response, rules) if response else None,
                      correlation=p.correlation, content_type=p.content_type,
                      user_properties=p.user or (), payload_format=p.payload_format)


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
    """A JSON object for any payload: msgpack maps and JSON objects as they are, text and raw
    bytes wrapped (``{"text": ...}``, ``{"raw_base64": ...}``)."""
    return msgspec.json.encode(payload_object(payload))


#: messages derived from one event, for channels of their own (robobus/foxglove_bridge.py's 3D
#: scene): (topic, schema name, schema encoding, schema data, message encoding, data)
Derive = Callable[[str, bytes, int], Iterable[tuple[str, str, str, bytes, str, bytes]]]


def export_mcap(store: MemoryStore, out: Path, patterns: tuple[str, ...] = ("#",),
                t0: int = 0, t1: int = END, derive: Derive | None = None) -> int:
    """Write the selected events as MCAP with JSON channels and JSON Schemas that Foxglove and
    Lichtblick read (:mod:`robobus.memory_store.foxglove`), and what ``derive`` makes of each
    event on its own channels; return the count of messages written."""
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
                               data=foxglove_payload(ev.payload), sequence=ev.seq & 0xFFFF_FFFF)
            count += 1
            for topic, name, encoding, schema, msg_encoding, data in (
                    derive(ev.topic, ev.payload, ev.ts_ns) if derive else ()):
                if topic not in channels:
                    sid = writer.register_schema(name=name, encoding=encoding, data=schema)
                    channels[topic] = writer.register_channel(topic=topic, schema_id=sid,
                                                              message_encoding=msg_encoding)
                writer.add_message(channel_id=channels[topic], log_time=ev.ts_ns,
                                   publish_time=ev.ts_ns, data=data)
                count += 1
        writer.finish()
    return count


def _channel(writer: Any, schema_ids: dict[str, int], topic: str) -> int:
    type_ = message_type(topic)
    name = f"robobus.{type_.__name__}" if type_ is not None else "robobus.Payload"
    sid = schema_ids.get(name)
    if sid is None:
        sid = schema_ids[name] = writer.register_schema(
            name=name, encoding="jsonschema", data=msgspec.json.encode(foxglove_schema(type_)))
    return writer.register_channel(topic=topic, message_encoding="json", schema_id=sid)
