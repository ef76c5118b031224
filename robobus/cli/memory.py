"""``robobus memory | record``: the memory agent, and a recorder of the bus into a store."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated
from urllib.parse import urlencode, urlsplit, urlunsplit

import typer

from robobus.bus import BusError, BusOptions
from robobus.bus.topics import validate_filter
from robobus.cli.common import DEFAULT_BUS, BusOpt, PrefixOpt, run_agent
from robobus.memory_store.agent import MemoryConfig, load_scene, memory_presence, run
from robobus.memory_store.commit import CommitOptions
from robobus.memory_store.errors import MemoryStoreError
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
    topics: Annotated[list[str] | None, typer.Option(
        "--topics", "-t", help="Topic filter(s) to record (default: the fleet's, PREFIX/#; "
                               "'#' records the whole broker)")] = None,
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
                          commit=CommitOptions(max_events=batch, window_s=window_ms / 1000),
                          patterns=tuple(topics or ()))
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
    exclude: Annotated[list[str] | None, typer.Option(
        "--exclude", "-x", help="Topic filter not to record (repeatable)")] = None,
) -> None:
    """Record a bus (all topics, or --topics filters, less --exclude filters) into a store."""
    for pattern in exclude or ():
        try:
            validate_filter(pattern)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--exclude") from exc
    config = MemoryConfig(store=out, store_options=_store_options(map_size, segment, None),
                          patterns=tuple(topics or ["#"]), exclude=tuple(exclude or ()),
                          views=False)
    _run_agent(bus_url, prefix, config, "recorder", duration)
    with MemoryStore(out, readonly=True) as store:  # one summary line, like ros2 bag record's
        stats = store.stats()
    typer.echo(f"recorded {stats['events']} events on {len(stats['topics'])} topics into {out} "
               f"({stats['bytes'] / 1e6:.1f} MB)")


def _run_agent(url: str, prefix: str, config: MemoryConfig, name: str,
               duration: float | None) -> None:
    try:
        # the memory agent's last will is its presence's death; a recorder has no presence
        will = memory_presence(prefix) if config.views else None
        run_agent(url, name, BusOptions(prefix=prefix, will=will), run, config, duration=duration)
    except (BusError, MemoryStoreError) as exc:
        typer.echo(f"robobus {name}: {exc}", err=True)
        raise typer.Exit(1) from exc


def register(app: typer.Typer) -> None:
    """Add ``robobus memory`` and ``robobus record`` to the CLI."""
    app.command("memory")(memory)
    app.command("record")(record)
