"""``robobus topic list|echo|hz|pub``: watch and poke the bus, like ``ros2 topic``.

Every command is bounded by flags (``--count``, ``--duration``) so scripts and tests can run it.
``echo`` and ``hz`` log ``subscribed`` (structlog, on stderr) once their subscription is live.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import anyio
import msgspec
import structlog
import typer
from typer.core import TyperCommand

from robobus.bus.api import Bus, BusOptions, run
from robobus.bus.errors import BusError, DecodeError
from robobus.bus.message import Message
from robobus.bus.policy import own_instructions
from robobus.cli.common import DEFAULT_BUS, BusOpt
from robobus.cli.payloads import Format, decode_payload, encoding, render, sent_ns
from robobus.schemas.contract import is_retained_topic, message_type

__all__ = ["Format", "decode_payload", "encode_data", "render", "topic_app"]

log = structlog.get_logger("robobus.topic")
topic_app = typer.Typer(help="Inspect topics: list, info, echo, hz, pub.", no_args_is_help=True)

CountOpt = Annotated[int | None, typer.Option("--count", "-n", min=1,
                                              help="Stop after N messages")]
DurationOpt = Annotated[float | None, typer.Option("--duration", "-d", min=0.0,
                                                   help="Stop after S seconds")]
#: MQTT's largest payload: a watcher receives (and shows, truncated) what agents refuse
WATCH_MAX_PAYLOAD = 268_435_455


def watch_options() -> BusOptions:
    """Options of a watching CLI (echo, hz, list, info): it takes any size and never reports an
    input on ``errors`` (issue 14: a passive observer reported every oversized message)."""
    return BusOptions(max_payload=WATCH_MAX_PAYLOAD, report_errors=False)


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
                  handle: Callable[[Message], bool | None]) -> int:
    """Feed ``handle`` the messages on ``pattern`` until ``count`` of them (those ``handle`` did
    not turn down with False) or ``duration``."""
    seen = 0
    async with Bus.connect(bus_url, name="cli-topic", options=watch_options()) as bus, \
            bus.subscribe(pattern) as sub:
        log.info("subscribed", pattern=pattern, bus=bus_url)
        with anyio.move_on_after(math.inf if duration is None else duration):
            async for msg in sub:
                if handle(msg) is False:
                    continue
                seen += 1
                if count is not None and seen >= count:
                    break
    return seen


def type_name(topic: str) -> str:
    """The contract's message type on ``topic`` (under any prefix), or ``-``."""
    found = message_type(topic)
    return found.__name__ if found is not None else "-"


# -- commands --------------------------------------------------------------------------------
@topic_app.command("list")
def list_topics(
    bus_url: BusOpt = DEFAULT_BUS,
    pattern: Annotated[str, typer.Argument(help="Topic filter to watch")] = "#",
    duration: Annotated[float, typer.Option("--duration", "-d", min=0.0,
                                            help="How long to listen")] = 2.0,
) -> None:
    """Listen for a while and list the topics seen: counts, rates, message type, encoding."""
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    retained: set[str] = set()
    encodings: dict[str, set[str]] = {}

    def handle(msg: Message) -> None:
        counts[msg.topic] += 1
        sizes[msg.topic] += len(msg.payload)
        encodings.setdefault(msg.topic, set()).add(encoding(msg))
        if msg.retain:
            retained.add(msg.topic)

    _run(lambda: _stream(bus_url, pattern, None, duration, handle))
    for topic in sorted(counts):
        n = counts[topic]
        rate = n / duration if duration > 0 else 0.0
        flag = " retained" if topic in retained else ""
        typer.echo(f"{topic}  count={n} rate={rate:.1f}/s avg_bytes={sizes[topic] // n} "
                   f"type={type_name(topic)} encoding={','.join(sorted(encodings[topic]))}{flag}")


@topic_app.command("info")
def info(
    topic: Annotated[str, typer.Argument(help="Topic name")],
    bus_url: BusOpt = DEFAULT_BUS,
    duration: Annotated[float, typer.Option("--duration", "-d", min=0.0,
                                            help="How long to listen")] = 1.0,
) -> None:
    """A topic's message type, whether it is retained, and its last publisher, like
    ``ros2 topic info``: from the contract and from what arrives within --duration."""
    seen: list[Message] = []
    _run(lambda: _stream(bus_url, topic, None, duration, lambda m: seen.append(m)))
    held = [m for m in seen if m.retain]
    typer.echo(f"topic      {topic}")
    typer.echo(f"type       {type_name(topic)}")
    typer.echo(f"retained   {'yes' if held else 'no'} (the contract "
               f"{'retains' if is_retained_topic(topic) else 'does not retain'} it)")
    typer.echo(f"messages   {len(seen)} in {duration:g} s ({len(held)} retained)")
    if seen:
        last = seen[-1]
        typer.echo(f"last       from {last.sender or '?'}, {len(last.payload)} bytes, "
                   f"{encoding(last)}, qos {last.qos}"
                   + (f", response topic {last.response_topic}" if last.response_topic else ""))


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
    no_retained: Annotated[bool, typer.Option(
        "--no-retained", "-R", help="Skip retained values (like mosquitto_sub -R)")] = False,
    path: Annotated[str | None, typer.Option(
        "--field", help="Print only this field (dotted: pose.x, steps.0.robot)")] = None,
) -> None:
    """Print messages: msgpack as JSON (or YAML), JSON as it came, UTF-8 text as text, anything
    else as hex. A message over 1 MiB is shown cut short. Never reports a message on errors."""

    def handle(msg: Message) -> bool:
        if no_retained and msg.retain:
            return False
        text = render(msg, fmt, verbose, path)
        if text is None:  # no such field in this message
            return False
        typer.echo(text)
        return True

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
        sent = sent_ns(msg.payload)
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


@topic_app.command("hz")
def hz(
    pattern: Annotated[str, typer.Argument(help="Topic filter")],
    bus_url: BusOpt = DEFAULT_BUS,
    window: Annotated[int, typer.Option("--window", "-w", min=1,
                                        help="Messages in the sliding window")] = 100,
    count: CountOpt = None,
    duration: DurationOpt = None,
) -> None:
    """Show the message rate, and latency from the ts_ns field of robobus messages; one line
    per topic for a filter with wildcards. Retained values (old by nature) are not counted."""
    stats: dict[str, RateStats] = {}
    per_topic = "+" in pattern or "#" in pattern
    last = [time.monotonic()]
    held = [0]

    def handle(msg: Message) -> bool:
        if msg.retain:
            held[0] += 1
            return False
        stats.setdefault(msg.topic if per_topic else pattern, RateStats(window)).add(msg)
        if time.monotonic() - last[0] >= 1.0:
            last[0] = time.monotonic()
            _print_rates(stats, per_topic)
        return True

    _run(lambda: _stream(bus_url, pattern, count, duration, handle))
    if not _print_rates(stats, per_topic):
        total = sum(s.total for s in stats.values())
        typer.echo(f"no rate: {total} message(s) received")
    if held[0]:
        typer.echo(f"({held[0]} retained value(s) not counted)")


def _print_rates(stats: dict[str, RateStats], per_topic: bool) -> bool:
    printed = False
    for topic in sorted(stats):
        line = stats[topic].summary()
        if line:
            typer.echo(f"{topic}  {line}" if per_topic else line)
            printed = True
    return printed


def encode_data(data: str, raw: bool) -> bytes:
    """JSON converted to msgpack (``pub --msgpack``) unless ``raw``; other text as UTF-8."""
    if raw:
        return data.encode()
    try:
        value = json.loads(data)
    except ValueError:
        return data.encode()
    return msgspec.msgpack.encode(value)


def _payloads(data: str | None, file: Path | None, stdin: bool, lines: bool) -> list[bytes]:
    """The messages ``pub`` sends, from exactly one of DATA, --file, --stdin and --line."""
    given = [data is not None, file is not None, stdin, lines]
    if sum(given) != 1:
        raise typer.BadParameter("give exactly one of DATA, -f FILE, -s (stdin) or -l (lines)")
    if file is not None:
        return [sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()]
    if stdin:
        return [sys.stdin.buffer.read()]
    if lines:
        return [line.rstrip(b"\r\n") for line in sys.stdin.buffer if line.strip()]
    assert data is not None
    return [data.encode()]


def _structured(payload: bytes, to_msgpack: bool) -> bytes | dict[str, Any] | list[Any]:
    """A JSON object or array as data (the bus encodes and labels it with its codec), anything
    else as the bytes given; with ``to_msgpack`` the payload must be JSON."""
    value: Any = None
    if payload.lstrip()[:1] in (b"{", b"["):
        try:
            value = json.loads(payload)
        except ValueError:
            value = None
    if isinstance(value, dict | list):
        return value
    if to_msgpack:
        raise typer.BadParameter(f"--msgpack: the payload is not a JSON object or array: "
                                 f"{payload[:40]!r}")
    return payload


#: ``-D`` properties (mosquitto_pub's names) and how many words follow each
PROPERTY_WORDS = {"user-property": 2, "payload-format-indicator": 1, "response-topic": 1,
                  "correlation-data": 1}


def expand_properties(args: list[str]) -> list[str]:
    """mosquitto_pub's ``-D [publish] NAME VALUE...`` (several words after one flag, which
    click cannot take repeatedly) as ``-D NAME -D VALUE...``."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return out + args[i:]
        if arg in ("-D", "--property"):
            i += 1
            if args[i : i + 1] == ["publish"]:  # mosquitto_pub names the packet first
                i += 1
            words = args[i : i + 1 + PROPERTY_WORDS.get(args[i] if i < len(args) else "", 2)]
            for word in words:
                out += [arg, word]
            if not words:
                out.append(arg)  # click then says the option needs a value
            i += len(words)
            continue
        out.append(arg)
        i += 1
    return out


class _PubCommand(TyperCommand):
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, expand_properties(args))


def pub_properties(words: list[str]) -> dict[str, Any]:
    """``-D`` words (after :func:`expand_properties`) as ``Bus.publish`` keyword arguments."""
    out: dict[str, Any] = {"user_properties": []}
    i = 0
    while i < len(words):
        name = words[i]
        n = PROPERTY_WORDS.get(name)
        values = words[i + 1 : i + 1 + (n or 0)]
        if n is None or len(values) < n:
            raise typer.BadParameter(
                f"{name!r}: give -D user-property KEY VALUE, payload-format-indicator 0|1, "
                f"response-topic TOPIC or correlation-data TEXT", param_hint="-D")
        if name == "user-property":
            out["user_properties"].append((values[0], values[1]))
        elif name == "payload-format-indicator":
            if values[0] not in ("0", "1"):
                raise typer.BadParameter("payload-format-indicator is 0 or 1", param_hint="-D")
            out["payload_format"] = int(values[0])
        elif name == "response-topic":
            out["response_topic"] = values[0]
        else:
            out["correlation"] = values[0].encode()
        i += 1 + n
    return out


@topic_app.command("pub", cls=_PubCommand)
def pub(
    topic: Annotated[str, typer.Argument(help="Topic name")],
    data: Annotated[str | None, typer.Argument(
        help="The payload, sent as written (JSON stays JSON); '' clears a retained value")]
    = None,
    bus_url: BusOpt = DEFAULT_BUS,
    file: Annotated[Path | None, typer.Option(
        "--file", "-f", help="Send this file's bytes as the message ('-': stdin)")] = None,
    stdin: Annotated[bool, typer.Option(
        "--stdin", "-s", help="Send all of stdin as one message (like mosquitto_pub -s)")] = False,
    lines: Annotated[bool, typer.Option(
        "--line", "-l", help="Send each line of stdin as a message (like mosquitto_pub -l)")]
    = False,
    to_msgpack: Annotated[bool, typer.Option(
        "--msgpack", help="Convert a JSON object or array to msgpack before sending")] = False,
    raw: Annotated[bool, typer.Option("--raw", hidden=True,
                                      help="Send DATA as written (now the default)")] = False,
    retain: Annotated[bool, typer.Option("--retain", "-r")] = False,
    qos: Annotated[int, typer.Option("--qos", "-q", min=0, max=2,
                                     help="0; 1 to wait for the broker's or hub's ack; 2: MQTT "
                                          "exactly once (ZeroMQ: like 1)")] = 0,
    response_topic: Annotated[str | None, typer.Option(
        "--response-topic", "-e", help="MQTT 5 Response Topic (ZeroMQ: a reply inbox)")] = None,
    correlation: Annotated[str | None, typer.Option(
        "--correlation", help="MQTT 5 Correlation Data (UTF-8)")] = None,
    properties: Annotated[list[str] | None, typer.Option(
        "--property", "-D", metavar="NAME VALUE...",
        help="MQTT 5 property, as mosquitto_pub's -D: user-property KEY VALUE (repeatable), "
             "payload-format-indicator 0|1, response-topic T, correlation-data TEXT")]
    = None,
    repeat: Annotated[int, typer.Option("--repeat", min=1, help="Publish N times")] = 1,
    rate: Annotated[float, typer.Option("--rate", min=0.001, help="Repeat rate in Hz")] = 1.0,
) -> None:
    """Publish on TOPIC what is given, optionally repeatedly; from DATA, a file, stdin, or stdin
    line by line. A JSON object or array goes as JSON labelled application/json (MQTT 5
    Content Type; --msgpack: as msgpack, labelled so); other payloads go as the bytes given.
    On a secured bus, P/instructions goes to the account's own P/instructions/ACCOUNT."""
    payloads = [p if raw else _structured(p, to_msgpack)
                for p in _payloads(data, file, stdin, lines)]
    options = BusOptions(codec="msgpack" if to_msgpack else "json")
    rounds = repeat if len(payloads) == 1 else 1
    corr = correlation.encode() if correlation is not None else None
    props = pub_properties(properties or [])
    props.setdefault("response_topic", response_topic)
    props.setdefault("correlation", corr)

    # on a secured bus an account instructs on its own topic only (issue 13)
    topic = own_instructions(topic, bus_url)

    async def main() -> None:
        async with Bus.connect(bus_url, name="cli-pub", options=options) as bus:
            start = anyio.current_time()
            for i in range(rounds):
                if i:  # drift-free schedule on the monotonic clock
                    await anyio.sleep_until(start + i / rate)
                for payload in payloads:
                    await bus.publish(topic, payload, retain=retain, qos=qos, **props)
            log.info("published", topic=topic, count=rounds * len(payloads))

    _run(main)


def register(app: typer.Typer) -> None:
    """Add the ``topic`` sub-app to the ``robobus`` CLI."""
    app.add_typer(topic_app, name="topic")
