"""``robobus edge``: run one robot's edge agent from its profile."""

from __future__ import annotations

from typing import Annotated

import anyio
import typer

from robobus.bus import BusError
from robobus.bus.api import run as bus_run
from robobus.cli.common import DEFAULT_BUS, BusOpt, PrefixOpt, run_agent, stop_on_signal
from robobus.edge_agent.agent import EdgeConfig, edge_bus_options, run
from robobus.edge_agent.claim import RobotNameTaken, ensure_name_free
from robobus.edge_agent.errors import EdgeError, ProfileError
from robobus.edge_agent.fleet_sim import FleetSimConfig, run_fleet
from robobus.edge_agent.profile import load_profile, robot_types


def edge(
    profile: Annotated[str, typer.Option("--profile", "-p",
                                         help="Profile YAML path, or a robot type name")],
    name: Annotated[str | None, typer.Option("--name", "-n", help="Robot name on the bus")] = None,
    at: Annotated[str | None, typer.Option("--at", help="Start place (overrides the profile)")]
    = None,
    time_scale: Annotated[float | None, typer.Option(
        "--time-scale", min=0.0, help="Real seconds per simulated second (0.1 = 10x faster)")]
    = None,
    bus_url: BusOpt = DEFAULT_BUS,
    prefix: PrefixOpt = "robobus",
    replace: Annotated[bool, typer.Option(
        "--replace", help="Start even if this robot name is online (its other edge is gone "
        "or must be replaced); by default a live duplicate is refused with exit status 3")]
    = False,
    fleet: Annotated[int | None, typer.Option(
        "--fleet", min=1, help="Run N simulated robots of this profile in this one process, "
        "named NAME_0000... (NAME: --name or the profile's), each with its own connection and "
        "presence; --at may list start places, comma-separated, taken in turn")] = None,
) -> None:
    """Start an edge agent: register the robot, then execute skill commands until SIGTERM."""
    try:
        prof = load_profile(profile)
    except ProfileError as exc:
        typer.echo(f"invalid robot profile: {exc}", err=True)
        raise typer.Exit(2) from exc
    if fleet is not None:
        places = [p.strip() for p in (at or "").split(",") if p.strip()]
        _run_fleet(bus_url, FleetSimConfig(prof, fleet, stem=name, places=places,
                                           time_scale=time_scale, prefix=prefix))
        return
    config = EdgeConfig(prof, name=name, start=at, time_scale=time_scale)
    try:
        if not replace:
            bus_run(ensure_name_free, bus_url, config.robot, prefix)
    except RobotNameTaken as exc:
        typer.echo(f"robobus edge: {exc}", err=True)
        raise typer.Exit(3) from exc
    except BusError as exc:
        typer.echo(f"robobus edge: {exc}", err=True)
        raise typer.Exit(1) from exc
    try:
        run_agent(bus_url, config.robot, edge_bus_options(config.robot, prefix), run, config)
    except (BusError, EdgeError) as exc:  # EdgeError: e.g. an MCP server of the profile is unusable
        typer.echo(f"robobus edge: {exc}", err=True)
        raise typer.Exit(1) from exc


def _run_fleet(url: str, config: FleetSimConfig) -> None:
    """Run the simulated fleet until SIGTERM or SIGINT. No duplicate-name check: asking for
    1,000 retained alives first would double the start-up."""
    if url.startswith("zmq"):
        import zmq

        # three sockets per robot's connection, on the process's shared context (default 1,023)
        zmq.Context.instance().set(zmq.MAX_SOCKETS, 4 * config.count + 256)

    async def serve() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(stop_on_signal, tg.cancel_scope, name="fleet:signals")
            await tg.start(run_fleet, url, config)

    try:
        bus_run(serve)
    except BusError as exc:
        typer.echo(f"robobus edge --fleet: {exc}", err=True)
        raise typer.Exit(1) from exc


def profiles(
    files: Annotated[list[str] | None, typer.Argument(
        help="Profiles to validate (paths or type names); none lists the robot types")] = None,
) -> None:
    """List the known robot types, or validate profiles (exit status 2 if one is invalid)."""
    if not files:
        for rtype, path in sorted(robot_types().items()):
            typer.echo(f"{rtype:24s} {path}")
        return
    bad = 0
    for ref in files:
        try:
            prof = load_profile(ref)
        except ProfileError as exc:
            typer.echo(f"invalid  {exc}", err=True)
            bad += 1
            continue
        typer.echo(f"ok       {ref}: {prof.type}, skills {', '.join(sorted(prof.skills))}")
    if bad:
        raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    app.command("edge")(edge)
    app.command("profiles")(profiles)
