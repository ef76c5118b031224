"""``robobus topic list|echo|hz|pub``: watch and poke the bus, like ``ros2 topic``.

Every command is bounded by flags (``--count``, ``--duration``) so scripts and tests can run it.
``echo`` and ``hz`` log ``subscribed`` (structlog, on stderr) once their subscription is live.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Annotated, Any

import anyio
import msgspec
import structlog
import typer
import yaml

from robobus.bus.api import Bus, run
from robobus.bus.errors import BusError, DecodeError
from robobus.bus.message import Message
from robobus.cli.common import DEFAULT_BUS, BusOpt

log = structlog.get_logger("robobus.topic")
topic_app = typer.Typer(help="Inspect topics: list, echo, hz, pub.", no_args_is_help=True)

CountOpt = Annotated[int | None, typer.Option("--count", "-n", min=1,
                                              help="Stop after N messages")]
DurationOpt = Annotated[float | None, typer.Option("--duration", "-d", min=0.0,
                                                   help="Stop after S seconds")]


class Format(StrEnum):
    json = "json"
    yaml = "yaml"


# -- payload rendering --------------------------------------------------------------------
def _plain(obj: Any) -> Any:
    """msgpack data -> JSON/YAML-safe data (bytes become hex strings)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, bytes | bytearray | memoryview):
        return bytes(obj).hex()
    if isinstance(obj, msgspec.msgpack.Ext):
        return {"ext": obj.code, "data": bytes(obj.data).hex()}
    return obj


def _text(payload: bytes) -> str | None:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if text.isprintable() or all(c.isprintable() or c in "\r\n\t" for c in text) \
        else None


def decode_payload(payload: bytes) -> tuple[str, Any]:
    """Classify a payload: ("msgpack", data), ("text", str) or ("hex", str).

    Plain ASCII text is also valid msgpack when it is one character long (a fixint), so a
    payload only counts as msgpack when it decodes to a map or array, or is not text at all.
    """
    text = _text(payload)
    try:
        data = msgspec.msgpack.decode(payload)
    except (msgspec.DecodeError, ValueError):
        data = msgspec.UNSET
    if data is not msgspec.UNSET and (isinstance(data, dict | list) or text is None):
        return "msgpack", _plain(data)
    if text is not None:
        return "text", text
    return "hex", payload.hex()


def render(msg: Message, fmt: Format, verbose: bool) -> str:
    """The text ``echo`` prints for ``msg``."""
    kind, value = decode_payload(msg.payload)
    if fmt is Format.yaml:
        body = yaml.safe_dump(value, sort_keys=False, allow_unicode=True).rstrip() \
            if kind == "msgpack" else (value if kind == "text" else f"!!hex {value}")
        head = f"# {msg.topic}\n" if verbose else ""
        return f"{head}{body}\n---"
    if kind == "msgpack":
        body = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    else:
        body = value
    return f"{msg.topic} {body}" if verbose else body


# -- helpers ---------------------------------------------------------------------------------
def _run(main: Callable[[], Awaitable[object]]) -> None:
    try:
        run(main)  # asyncio, on uvloop when installed: the one loop choice of every process
    except (BusError, DecodeError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


async def _stream(bus_url: str, pattern: str, count: int | None, duration: float | None,
                  handle: Callable[[Message], None]) -> int:
    """Feed ``handle`` the messages on ``pattern`` until ``count`` or ``duration``."""
    seen = 0
    async with Bus.connect(bus_url, name="cli-topic") as bus, bus.subscribe(pattern) as sub:
        log.info("subscribed", pattern=pattern, bus=bus_url)
        with anyio.move_on_after(math.inf if duration is None else duration):
            async for msg in sub:
                handle(msg)
                seen += 1
                if count is not None and seen >= count:
                    break
    return seen


# -- commands --------------------------------------------------------------------------------
@topic_app.command("list")
def list_topics(
    bus_url: BusOpt = DEFAULT_BUS,
    pattern: Annotated[str, typer.Argument(help="Topic filter to watch")] = "#",
    duration: Annotated[float, typer.Option("--duration", "-d", min=0.0,
                                            help="How long to listen")] = 2.0,
) -> None:
    """Listen for a while and list the topics seen, with message counts and rates."""
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    retained: set[str] = set()

    def handle(msg: Message) -> None:
        counts[msg.topic] += 1
        sizes[msg.topic] += len(msg.payload)
        if msg.retain:
            retained.add(msg.topic)

    _run(lambda: _stream(bus_url, pattern, None, duration, handle))
    for topic in sorted(counts):
        n = counts[topic]
        rate = n / duration if duration > 0 else 0.0
        flag = " retained" if topic in retained else ""
        typer.echo(f"{topic}  count={n} rate={rate:.1f}/s avg_bytes={sizes[topic] // n}{flag}")


@topic_app.command("echo")
def echo(
    pattern: Annotated[str, typer.Argument(help="Topic filter (+ and # wildcards)")],
    bus_url: BusOpt = DEFAULT_BUS,
    count: CountOpt = None,
    duration: DurationOpt = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="json or yaml")] = Format.json,
    verbose: Annotated[bool, typer.Option("--verbose", "-v",
                                          help="Print the topic too, like mosquitto_sub -v")]
    = False,
) -> None:
    """Print messages: msgpack as JSON (or YAML), UTF-8 text as text, anything else as hex."""

    def handle(msg: Message) -> None:
        typer.echo(render(msg, fmt, verbose))

    _run(lambda: _stream(bus_url, pattern, count, duration, handle))


class RateStats:
    """Sliding-window rate, interval and latency statistics for ``hz``."""

    def __init__(self, window: int) -> None:
        self.arrivals: deque[float] = deque(maxlen=window + 1)
        self.latencies: deque[float] = deque(maxlen=window)
        self.total = 0

    def add(self, msg: Message) -> None:
        self.total += 1
        self.arrivals.append(time.monotonic())
        sent = _ts_ns(msg.payload)
        if sent is not None:
            self.latencies.append((time.time_ns() - sent) / 1e6)

    def summary(self) -> str | None:
        if len(self.arrivals) < 2:
            return None
        gaps = [b - a for a, b in zip(self.arrivals, list(self.arrivals)[1:], strict=False)]
        mean = statistics.fmean(gaps)
        line = (f"average rate: {1 / mean if mean > 0 else math.inf:.3f}/s  "
                f"min: {min(gaps):.4f}s max: {max(gaps):.4f}s "
                f"std dev: {statistics.pstdev(gaps):.5f}s window: {len(gaps)} total: {self.total}")
        if self.latencies:
            lat = sorted(self.latencies)
            p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]  # noqa: E731
            line += f"  latency p50: {p(0.5):.3f}ms p99: {p(0.99):.3f}ms max: {lat[-1]:.3f}ms"
        return line


def _ts_ns(payload: bytes) -> int | None:
    try:
        data = msgspec.msgpack.decode(payload)
    except (msgspec.DecodeError, ValueError):
        return None
    ts = data.get("ts_ns") if isinstance(data, dict) else None
    return ts if isinstance(ts, int) else None


@topic_app.command("hz")
def hz(
    pattern: Annotated[str, typer.Argument(help="Topic filter")],
    bus_url: BusOpt = DEFAULT_BUS,
    window: Annotated[int, typer.Option("--window", "-w", min=1,
                                        help="Messages in the sliding window")] = 100,
    count: CountOpt = None,
    duration: DurationOpt = None,
) -> None:
    """Show the message rate, and latency from the ts_ns field of robobus messages."""
    stats = RateStats(window)
    last = [time.monotonic()]

    def handle(msg: Message) -> None:
        stats.add(msg)
        if time.monotonic() - last[0] >= 1.0:
            last[0] = time.monotonic()
            line = stats.summary()
            if line:
                typer.echo(line)

    _run(lambda: _stream(bus_url, pattern, count, duration, handle))
    typer.echo(stats.summary() or f"no rate: {stats.total} message(s) received")


def encode_data(data: str, raw: bool) -> bytes:
    """``pub``'s payload: JSON becomes msgpack unless ``raw``; other text is sent as UTF-8."""
    if raw:
        return data.encode()
    try:
        value = json.loads(data)
    except ValueError:
        return data.encode()
    return msgspec.msgpack.encode(value)


@topic_app.command("pub")
def pub(
    topic: Annotated[str, typer.Argument(help="Topic name")],
    data: Annotated[str, typer.Argument(help="JSON (sent as msgpack) or text; '' clears a "
                                             "retained value")],
    bus_url: BusOpt = DEFAULT_BUS,
    raw: Annotated[bool, typer.Option("--raw", help="Send DATA as-is, no JSON->msgpack")] = False,
    retain: Annotated[bool, typer.Option("--retain", "-r")] = False,
    qos: Annotated[int, typer.Option("--qos", "-q", min=0, max=1)] = 0,
    repeat: Annotated[int, typer.Option("--repeat", min=1, help="Publish N times")] = 1,
    rate: Annotated[float, typer.Option("--rate", min=0.001, help="Repeat rate in Hz")] = 1.0,
) -> None:
    """Publish DATA on TOPIC (JSON converted to msgpack, or text), optionally repeatedly."""
    payload = encode_data(data, raw)

    async def main() -> None:
        async with Bus.connect(bus_url, name="cli-pub") as bus:
            start = anyio.current_time()
            for i in range(repeat):
                if i:  # drift-free schedule on the monotonic clock
                    await anyio.sleep_until(start + i / rate)
                await bus.publish(topic, payload, retain=retain, qos=qos)
            log.info("published", topic=topic, count=repeat, bytes=len(payload))

    _run(main)


def register(app: typer.Typer) -> None:
    """Add the ``topic`` sub-app to the ``robobus`` CLI."""
    app.add_typer(topic_app, name="topic")
