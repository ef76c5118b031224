"""``robobus foxglove``: the fleet's bus, live in Foxglove over its WebSocket protocol."""

from __future__ import annotations

from typing import Annotated

import typer

from robobus.bus import BusError, BusOptions
from robobus.cli.common import DEFAULT_BUS, BusOpt, PrefixOpt


def foxglove(
    bus_url: BusOpt = DEFAULT_BUS,
    port: Annotated[int, typer.Option("--port", "-p", min=0, max=65535,
                                      help="WebSocket port (0: any free port, logged)")] = 8765,
    host: Annotated[str, typer.Option("--host", help="Address to listen on")] = "127.0.0.1",
    scene_hz: Annotated[float, typer.Option("--scene-hz", min=0.1, max=100.0,
                                            help="Most 3D scene redraws per second")] = 5.0,
    prefix: PrefixOpt = "robobus",
) -> None:
    """Serve every bus topic as a Foxglove channel (with its JSON Schema) and the fleet as a 3D
    scene; open ws://HOST:PORT in Foxglove (Open connection, Foxglove WebSocket)."""
    from robobus.bus.api import Bus
    from robobus.bus.api import run as bus_run
    from robobus.cli.common import stop_on_signal
    from robobus.foxglove_bridge import BridgeOptions, FoxgloveBridge

    async def main() -> None:
        import anyio

        async with Bus.connect(bus_url, name="foxglove", options=BusOptions(prefix=prefix)) as bus, \
                anyio.create_task_group() as tg:
            tg.start_soon(stop_on_signal, tg.cancel_scope)
            bridge = FoxgloveBridge(bus, BridgeOptions(host=host, port=port, scene_hz=scene_hz))
            await tg.start(bridge.run)

    try:
        bus_run(main)
    except (BusError, RuntimeError) as exc:
        typer.echo(f"robobus foxglove: {exc}", err=True)
        raise typer.Exit(1) from exc


def register(app: typer.Typer) -> None:
    """Add ``robobus foxglove`` to the CLI."""
    app.command("foxglove")(foxglove)
