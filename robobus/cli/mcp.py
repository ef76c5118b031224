"""``robobus mcp``: the fleet as an MCP server, over stdio (default) or streamable HTTP."""

from __future__ import annotations

from typing import Annotated

import typer

from robobus.bus import BusError, BusOptions
from robobus.cli.common import DEFAULT_BUS, BusOpt, PrefixOpt


def mcp(
    bus_url: BusOpt = DEFAULT_BUS,
    http: Annotated[int | None, typer.Option(
        "--http", min=1, max=65535, help="Serve streamable HTTP on this port (loopback, path /mcp) "
                                         "instead of stdio")] = None,
    host: Annotated[str, typer.Option("--host", help="Address for --http")] = "127.0.0.1",
    answer_timeout: Annotated[float, typer.Option(
        "--answer-timeout", min=0.1, help="Seconds to wait for the brain's first reply and for "
                                          "memory's answers")] = 10.0,
    prefix: PrefixOpt = "robobus",
) -> None:
    """Serve the fleet as an MCP server: tools to instruct it, follow tasks, list robots and
    find objects; resources for the scene and the AsyncAPI contract."""
    from robobus.bus.api import Bus
    from robobus.bus.api import run as bus_run
    from robobus.mcp_server import McpOptions, serve

    async def main() -> None:
        async with Bus.connect(bus_url, name="mcp", options=BusOptions(prefix=prefix)) as bus:
            await serve(bus, http_port=http, host=host,
                        options=McpOptions(answer_timeout, answer_timeout))

    try:
        bus_run(main)
    except BusError as exc:
        typer.echo(f"robobus mcp: {exc}", err=True)
        raise typer.Exit(1) from exc


def register(app: typer.Typer) -> None:
    """Add ``robobus mcp`` to the CLI."""
    app.command("mcp")(mcp)
