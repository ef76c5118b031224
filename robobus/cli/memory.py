"""``robobus memory | record | replay | export | log``: the memory agent and log tools."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import anyio
import msgspec
import typer

from robobus.bus import Bus, BusError, BusOptions
from robobus.cli.common import DEFAULT_BUS, BusOpt, PrefixOpt, run_agent, stop_on_signal
from robobus.memory_store.agent import MemoryConfig, load_scene, run
from robobus.memory_store.commit import CommitOptions
from robobus.memory_store.errors import MemoryStoreError
from robobus.memory_store.replay import END, ReplayOptions, export_mcap, parse_time, replay, select, to_json
from robobus.memory_store.store import MemoryStore, StoreOptions

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.I)
_DUR = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$", re.I)
_DUR_NS = {"ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9, "d": 86400 * 10**9}


def parse_size(text: str) -> int:
    """``16GiB``, ``1TB``, ``512M`` or plain bytes (binary units either way)."""
    m = _SIZE.match(text)
    if m is None:
        raise typer.BadParameter(f"cannot read size {text!r}: use e.g. 16GiB or 1TiB")
    unit = (m.group(2) or "b")[0].lower()
    return int(float(m.group(1)) * (1 << (10 * "bkmgt".index(unit))))


def parse_duration_ns(text: str) -> int:
    """``1h``, ``30m``, ``10s``, ``500ms``, ``7d`` or plain seconds, in nanoseconds."""
    m = _DUR.match(text)
    if m is None:
        raise typer.BadParameter(f"cannot read duration {text!r}: use e.g. 1h, 30m or 10s")
    return int(float(m.group(1)) * _DUR_NS[(m.group(2) or "s").lower()])


StoreArg = Annotated[Path, typer.Option("--store", "-s", help="Store directory")]
MapSizeOpt = Annotated[str, typer.Option("--map-size", help="LMDB map size per segment (up to TiB)")]
SegmentOpt = Annotated[str, typer.Option("--segment", help="Time span of one log segment file")]
TopicsOpt = Annotated[list[str] | None, typer.Option("--topics", "-t", help="Topic filter(s)")]
FromOpt = Annotated[str | None, typer.Option("--from", help="Start: s from log start, ns, ISO")]
ToOpt = Annotated[str | None, typer.Option("--to", help="End: s from log start, ns, ISO")]


def _store_options(map_size: str, segment: str, retention: str | None) -> StoreOptions:
    return StoreOptions(map_size=parse_size(map_size), segment_ns=parse_duration_ns(segment),
                        retention_ns=parse_duration_ns(retention) if retention else None)


def with_query(url: str, **params: str) -> str:
    """``url`` with extra query parameters."""
    parts = urlsplit(url)
    query = "&".join(filter(None, [parts.query, urlencode(params)]))
    return urlunsplit(parts._replace(query=query))


def memory(
    store: StoreArg,
    bus_url: BusOpt = DEFAULT_BUS,
    scene: Annotated[Path | None, typer.Option("--scene", help="Scenario or scene YAML")] = None,
    map_size: MapSizeOpt = "16GiB",
    segment: SegmentOpt = "1h",
    retention: Annotated[str | None, typer.Option("--retention", help="Drop older segments")]
    = None,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Commit after N events")] = 20_000,
    window_ms: Annotated[float, typer.Option("--window-ms", min=0.0,
                                             help="Commit at most this long after an event")]
    = 5.0,
    prefix: PrefixOpt = "robobus",
    durable: Annotated[bool, typer.Option(
        "--durable", help="ZeroMQ: take the hub's numbered stream and confirm after each commit, "
                          "so a restart loses nothing (hub needs --replay-buffer)")] = False,
) -> None:
    """Run the memory agent: record the bus, keep world/robot/task memory, answer queries."""
    if durable and bus_url.startswith("zmq"):
        bus_url = with_query(bus_url, durable="memory")
    if scene is not None:
        try:
            load_scene(scene)
        except (OSError, ValueError) as exc:
            raise typer.BadParameter(str(exc), param_hint="--scene") from exc
    config = MemoryConfig(store=store, scene=scene,
                          store_options=_store_options(map_size, segment, retention),
                          commit=CommitOptions(max_events=batch, window_s=window_ms / 1000))
    _run_agent(bus_url, prefix, config, "memory", None)


def record(
    out: Annotated[Path, typer.Argument(help="Store directory to write")],
    topics: TopicsOpt = None,
    duration: Annotated[float | None, typer.Option("--duration", help="Stop after S seconds")]
    = None,
    bus_url: BusOpt = DEFAULT_BUS,
    map_size: MapSizeOpt = "16GiB",
    segment: SegmentOpt = "1h",
    prefix: PrefixOpt = "robobus",
) -> None:
    """Record a bus (all topics, or --topics filters) into a store."""
    config = MemoryConfig(store=out, store_options=_store_options(map_size, segment, None),
                          patterns=tuple(topics or ["#"]), views=False)
    _run_agent(bus_url, prefix, config, "recorder", duration)


def _run_agent(url: str, prefix: str, config: MemoryConfig, name: str,
               duration: float | None) -> None:
    try:
        run_agent(url, name, BusOptions(prefix=prefix), run, config, duration=duration)
    except (BusError, MemoryStoreError) as exc:
        typer.echo(f"robobus {name}: {exc}", err=True)
        raise typer.Exit(1) from exc



def _open(path: Path) -> MemoryStore:
    try:
        return MemoryStore(path, readonly=True)
    except MemoryStoreError as exc:
        raise typer.BadParameter(str(exc), param_hint="LOG") from exc


def _range(store: MemoryStore, t_from: str | None, t_to: str | None) -> tuple[int, int]:
    first = store.stats()["first_ns"] or 0
    try:
        return parse_time(t_from, first, 0), parse_time(t_to, first, END)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def replay_cmd(
    log: Annotated[Path, typer.Argument(help="Store directory to replay")],
    speed: Annotated[float, typer.Option("--speed", min=0.0001, help="Time scale (2 = twice)")]
    = 1.0,
    t_from: FromOpt = None,
    t_to: ToOpt = None,
    topics: TopicsOpt = None,
    loop: Annotated[bool, typer.Option("--loop", help="Start over at the end")] = False,
    bus_url: BusOpt = DEFAULT_BUS,
    prefix: PrefixOpt = "robobus",
) -> None:
    """Republish a recorded log with its original timing, scaled by --speed."""
    with _open(log) as store:
        t0, t1 = _range(store, t_from, t_to)
        opts = ReplayOptions(speed=speed, t0_ns=t0, t1_ns=t1, patterns=tuple(topics or ["#"]),
                             loop=loop)
        try:
            sent = anyio.run(_replay_main, bus_url, prefix, store, opts)
        except BusError as exc:
            typer.echo(f"robobus replay: {exc}", err=True)
            raise typer.Exit(1) from exc
    typer.echo(f"replayed {sent} events")


async def _replay_main(url: str, prefix: str, store: MemoryStore, opts: ReplayOptions) -> int:
    async with Bus.connect(url, name="replay", options=BusOptions(prefix=prefix)) as bus:
        sent = 0
        async with anyio.create_task_group() as tg:
            tg.start_soon(stop_on_signal, tg.cancel_scope)
            sent = await replay(bus, store, opts)
            tg.cancel_scope.cancel()
        return sent


def export(
    log: Annotated[Path, typer.Argument(help="Store directory to export")],
    mcap: Annotated[Path, typer.Option("--mcap", help="MCAP file to write")],
    topics: TopicsOpt = None,
    t_from: FromOpt = None,
    t_to: ToOpt = None,
) -> None:
    """Export a log as MCAP (JSON channels with JSON Schema) for Foxglove."""
    with _open(log) as store:
        t0, t1 = _range(store, t_from, t_to)
        count = export_mcap(store, mcap, tuple(topics or ["#"]), t0, t1)
    typer.echo(f"wrote {count} messages to {mcap}")


log_app = typer.Typer(help="Inspect a recorded log.", no_args_is_help=True)


def _iso(ns: int | None) -> str:
    if ns is None:
        return "-"
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="microseconds")


@log_app.command("info")
def info(
    log: Annotated[Path, typer.Argument(help="Store directory")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Counts per topic, time span, segments and size."""
    with _open(log) as store:
        stats: dict[str, Any] = store.stats()
    if as_json:
        typer.echo(msgspec.json.encode(stats).decode())
        return
    first, last = stats["first_ns"], stats["last_ns"]
    span = (last - first) / 1e9 if first is not None and last is not None else 0.0
    typer.echo(f"log       {log}")
    typer.echo(f"events    {stats['events']}")
    typer.echo(f"span      {_iso(first)} .. {_iso(last)} ({span:.3f} s)")
    typer.echo(f"segments  {stats['segments']}, {stats['bytes'] / 1e6:.1f} MB on disk")
    width = max((len(t) for t in stats["topics"]), default=5)
    for topic, count in stats["topics"].items():
        typer.echo(f"  {topic:<{width}}  {count:>10}")


@log_app.command("cat")
def cat(
    log: Annotated[Path, typer.Argument(help="Store directory")],
    topics: TopicsOpt = None,
    t_from: FromOpt = None,
    t_to: ToOpt = None,
    limit: Annotated[int | None, typer.Option("--limit", "-n", min=1)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line")] = False,
) -> None:
    """Print events: time, sequence, topic and the payload as JSON."""
    with _open(log) as store:
        t0, t1 = _range(store, t_from, t_to)
        for n, ev in enumerate(select(store, tuple(topics or ["#"]), t0, t1)):
            if limit is not None and n >= limit:
                break
            body = to_json(ev.payload).decode()
            if as_json:
                typer.echo(f'{{"ts_ns":{ev.ts_ns},"seq":{ev.seq},'
                           f'"topic":{msgspec.json.encode(ev.topic).decode()},"data":{body}}}')
            else:
                typer.echo(f"{_iso(ev.ts_ns)} {ev.seq:>8} {ev.topic} {body}")


def register(app: typer.Typer) -> None:
    app.command("memory")(memory)
    app.command("record")(record)
    app.command("replay")(replay_cmd)
    app.command("export")(export)
    app.add_typer(log_app, name="log")

