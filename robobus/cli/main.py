"""``robobus`` entry point: the root command and every subcommand, imported plainly.

Each command module keeps its heavy imports (rich, matplotlib, torch, the runner) inside its
commands, so building this app stays cheap for every ``robobus`` process.
"""

from __future__ import annotations

from typing import Annotated

import typer

from robobus import __version__
from robobus.cli import brain, edge, hub, log, memory, scenario, schema, secure, topic
from robobus.cli.common import setup_logging

app = typer.Typer(
    name="robobus",
    help="Event-driven message bus for brain-and-cerebellum multi-robot collaboration.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _module in (topic, hub, schema, memory, log, edge, brain, scenario, secure):
    _module.register(app)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"robobus {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
    log_level: Annotated[str, typer.Option("--log-level", envvar="ROBOBUS_LOG")] = "info",
) -> None:
    setup_logging(log_level)


def main() -> None:
    """Run the ``robobus`` command line."""
    app()


if __name__ == "__main__":
    main()
