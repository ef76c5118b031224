"""``robobus dashboard``: the live web view of the fleet (issue 17); prints its URL once it answers."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from robobus.cli.common import DEFAULT_BUS, BusOpt, PrefixOpt


def dashboard(
    bus_url: BusOpt = DEFAULT_BUS,
    port: Annotated[int, typer.Option("--port", "-p", min=0, max=65535,
                                      help="HTTP port (0: any free one; the URL is printed)")] = 8770,
    host: Annotated[str, typer.Option("--host", help="Address to bind; loopback unless you "
                                                     "mean to show the fleet to the network")]
    = "127.0.0.1",
    read_only: Annotated[bool, typer.Option("--read-only", help="Never send instructions")] = False,
    policy: Annotated[str | None, typer.Option(
        "--policy", envvar="ROBOBUS_POLICY", show_default=False,
        help="policy.json of `robobus secure init`: whether this account may instruct "
             "(default: the one beside $ROBOBUS_ZMQ_KEYS)")] = None,
    prefix: PrefixOpt = "robobus",
) -> None:
    """Serve a live map, task list, skill Gantt, event stream and instruction box."""
    try:
        from robobus.dashboard import DashboardSettings
    except ImportError as exc:
        typer.echo(f"robobus dashboard needs the 'dashboard' extra (pip install "
                   f"'robobus[dashboard]'): {exc}", err=True)
        raise typer.Exit(1) from exc
    from robobus.bus import BusError
    from robobus.bus.api import run

    settings = DashboardSettings(bus=bus_url, prefix=prefix, host=host, port=port,
                                 read_only=read_only, policy=policy)
    try:
        run(_main, settings)
    except BusError as exc:
        typer.echo(f"robobus dashboard: {exc}", err=True)
        raise typer.Exit(1) from exc
    except OSError as exc:  # the port is taken, the address is not ours
        typer.echo(f"robobus dashboard: cannot listen on {host}:{port}: {exc}", err=True)
        raise typer.Exit(1) from exc


async def _main(settings: object) -> None:
    import anyio

    from robobus.dashboard import serve

    async with anyio.create_task_group() as tg:
        url = await tg.start(serve, settings)
        typer.echo(f"robobus dashboard: {url}")
        sys.stdout.flush()


def register(app: typer.Typer) -> None:
    """Add ``robobus dashboard`` to the CLI."""
    app.command("dashboard")(dashboard)
