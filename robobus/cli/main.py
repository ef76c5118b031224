"""``robobus`` entry point: the root command and every subcommand, imported plainly.

Each command module keeps its heavy imports (rich, matplotlib, torch, the runner) inside its
commands, so building this app stays cheap for every ``robobus`` process.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from robobus import __version__
from robobus.cli import (
    brain,
    dashboard,
    edge,
    foxglove,
    hub,
    log,
    mcp,
    memory,
    scenario,
    schema,
    secure,
    topic,
)
from robobus.cli.common import setup_logging

app = typer.Typer(
    name="robobus",
    help="Event-driven message bus for brain-and-cerebellum multi-robot collaboration.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # click's plain help: rich's table printed <bool> for every flag (issue 14)
    rich_markup_mode=None,
)

for _module in (topic, hub, schema, memory, log, edge, brain, scenario, secure, dashboard, mcp, foxglove):
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


def hoist_root_options(argv: list[str]) -> list[str]:
    """``argv`` with ``--log-level X`` moved before the subcommand, so that it works where a
    user puts it (``robobus topic echo T --log-level debug``); nothing after ``--`` moves."""
    end = argv.index("--") if "--" in argv else len(argv)
    head: list[str] = []
    rest: list[str] = []
    i = 0
    while i < end:
        arg = argv[i]
        if arg == "--log-level" and i + 1 < end:
            head += argv[i:i + 2]
            i += 2
            continue
        (head if arg.startswith("--log-level=") else rest).append(arg)
        i += 1
    return head + rest + argv[end:]


def main() -> None:
    """Run the ``robobus`` command line."""
    app(args=hoist_root_options(sys.argv[1:]), prog_name="robobus")


if __name__ == "__main__":
    main()
