"""``robobus replay | export | log``: tools for a recorded log (a memory agent's store)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import anyio
import msgspec
import typer

from robobus.bus import Bus, BusError, BusOptions, TopicError
from robobus.bus.message import REPLAY_SENDER
from robobus.bus.topics import validate_topic
from robobus.cli.common import DEFAULT_BUS, BusOpt, stop_on_signal
from robobus.cli.memory import FromOpt, ToOpt, TopicsOpt
from robobus.cli.payloads import sniff
from robobus.cli.topic import type_name
from robobus.memory_store.errors import MemoryStoreError
from robobus.memory_store.replay import (
    END,
    ReplayCounts,
    ReplayOptions,
    export_mcap,
    live_fleet,
    parse_remap,
    parse_time,
    recorded_prefix,
    remap,
    replay,
    select,
    to_json,
)
from robobus.memory_store.store import MemoryStore


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


RemapOpt = Annotated[list[str] | None, typer.Option(
    "--remap", help="FROM:TO: topics under prefix FROM go under TO (repeatable; first match wins)")]
NewPrefixOpt = Annotated[str | None, typer.Option(
    "--prefix", help="Rename the prefix the log was recorded under to this one")]


class LiveFleet(Exception):
    """``--include-commands`` onto a prefix where a fleet is live, without ``--onto-live-fleet``."""


def replay_cmd(
    log: Annotated[Path, typer.Argument(help="Store directory to replay")],
    speed: Annotated[float, typer.Option("--speed", min=0.0001, help="Time scale (2 = twice)")]
    = 1.0,
    t_from: FromOpt = None,
    t_to: ToOpt = None,
    topics: TopicsOpt = None,
    loop: Annotated[bool, typer.Option("--loop", help="Start over at the end")] = False,
    bus_url: BusOpt = DEFAULT_BUS,
    prefix: NewPrefixOpt = None,
    remaps: RemapOpt = None,
    include_commands: Annotated[bool, typer.Option(
        "--include-commands", help="Also publish instructions, skill commands, faults and world "
                                   "changes (withheld by default: they would drive a fleet)")]
    = False,
    onto_live_fleet: Annotated[bool, typer.Option(
        "--onto-live-fleet", help="With --include-commands: go on although a brain or robots "
                                  "are live on the target prefix")] = False,
) -> None:
    """Republish a recorded log with its original timing (scaled by --speed), retain flags and
    QoS, renamed by --remap/--prefix. Commands are withheld unless --include-commands."""
    with _open(log) as store:
        t0, t1 = _range(store, t_from, t_to)
        rules, target = _rules(store, remaps or [], prefix)
        opts = ReplayOptions(speed=speed, t0_ns=t0, t1_ns=t1, patterns=tuple(topics or ["#"]),
                             loop=loop, remaps=rules, include_commands=include_commands)
        counts = ReplayCounts()
        try:
            anyio.run(_replay_main, bus_url, target, store, opts, counts,
                      include_commands and not onto_live_fleet)
        except (BusError, LiveFleet) as exc:
            typer.echo(f"robobus replay: {exc}", err=True)
            raise typer.Exit(1) from exc
    withheld = (f"; {counts.withheld} command events withheld (--include-commands publishes "
                "them)" if counts.withheld else "")
    typer.echo(f"replayed {counts.sent} events{withheld}")


def _rules(store: MemoryStore, remaps: list[str], prefix: str | None
           ) -> tuple[tuple[tuple[str, str], ...], str]:
    """The remap rules (``--remap`` in order, then ``--prefix``) and the target prefix."""
    try:
        rules = [parse_remap(text) for text in remaps]
        if prefix is not None:
            validate_topic(prefix)
    except (ValueError, TopicError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    recorded = recorded_prefix(list(store.stats()["topics"]))
    if prefix is not None:
        if recorded is None:
            raise typer.BadParameter("cannot tell which prefix the log was recorded under; "
                                     "use --remap FROM:TO", param_hint="--prefix")
        if prefix != recorded:
            rules.append((recorded, prefix))
    target = remap(recorded, tuple(rules)) if recorded is not None else "robobus"
    return tuple(rules), target


async def _replay_main(url: str, prefix: str, store: MemoryStore, opts: ReplayOptions,
                       counts: ReplayCounts, check_live: bool) -> int:
    async with Bus.connect(url, name=REPLAY_SENDER, options=BusOptions(prefix=prefix)) as bus:
        if check_live:
            live = await live_fleet(bus, prefix)
            if live:
                raise LiveFleet(
                    f"a fleet is live on prefix {prefix!r} ({', '.join(live)}); "
                    "--include-commands would drive it. Add --onto-live-fleet to do that anyway, "
                    "or replay under another prefix (--prefix NEW, --remap FROM:TO)")
        async with anyio.create_task_group() as tg:
            tg.start_soon(stop_on_signal, tg.cancel_scope)
            await replay(bus, store, opts, counts)
            tg.cancel_scope.cancel()
        return counts.sent


def export(
    log: Annotated[Path, typer.Argument(help="Store directory to export")],
    mcap: Annotated[Path, typer.Option("--mcap", help="MCAP file to write")],
    topics: TopicsOpt = None,
    t_from: FromOpt = None,
    t_to: ToOpt = None,
    scene: Annotated[bool, typer.Option(
        "--scene", help="Also the 3D scene and robot transforms robobus foxglove draws "
                        "(P/foxglove/scene, P/foxglove/tf; needs the ui extra)")] = False,
) -> None:
    """Export a log as MCAP (JSON channels with JSON Schema) for Foxglove."""
    derive: Any = None
    if scene:
        try:
            from robobus.foxglove_bridge import RecordedScene
        except ImportError as exc:
            raise typer.BadParameter(f"needs the ui extra (foxglove-sdk): {exc}",
                                     param_hint="--scene") from exc
        derive = RecordedScene()
    with _open(log) as store:
        t0, t1 = _range(store, t_from, t_to)
        count = export_mcap(store, mcap, tuple(topics or ["#"]), t0, t1, derive)
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
    """Counts per topic with each topic's message type and payload encodings, time span,
    segments and size."""
    with _open(log) as store:
        stats: dict[str, Any] = store.stats()
        kinds = _encodings(store)
    types = {topic: type_name(topic) for topic in stats["topics"]}
    if as_json:
        typer.echo(msgspec.json.encode({**stats, "types": types, "encodings": kinds}).decode())
        return
    first, last = stats["first_ns"], stats["last_ns"]
    span = (last - first) / 1e9 if first is not None and last is not None else 0.0
    typer.echo(f"log       {log}")
    typer.echo(f"events    {stats['events']}")
    typer.echo(f"span      {_iso(first)} .. {_iso(last)} ({span:.3f} s)")
    typer.echo(f"segments  {stats['segments']}, {stats['bytes'] / 1e6:.1f} MB on disk")
    width = max((len(t) for t in stats["topics"]), default=5)
    for topic, count in stats["topics"].items():
        enc = " ".join(f"{k}:{n}" for k, n in sorted(kinds.get(topic, {}).items()))
        typer.echo(f"  {topic:<{width}}  {count:>10}  {types[topic]:<18} {enc}")


def _encodings(store: MemoryStore) -> dict[str, dict[str, int]]:
    """Topic -> payload encoding (msgpack, json, text, bytes, empty) -> count."""
    kinds: dict[str, Counter[str]] = {}
    for ev in select(store, ("#",)):
        kinds.setdefault(ev.topic, Counter())[sniff(ev.payload)] += 1
    return {topic: dict(c) for topic, c in kinds.items()}


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
    """Add ``robobus replay``, ``robobus export`` and ``robobus log`` to the CLI."""
    app.command("replay")(replay_cmd)
    app.command("export")(export)
    app.add_typer(log_app, name="log")
