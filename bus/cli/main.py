"""``robobus`` entry point. Each area contributes its commands from its own module."""

from __future__ import annotations

import importlib
from typing import Annotated

import typer

import bus
from bus.cli.common import setup_logging

app = typer.Typer(
    name="robobus",
    help="Event-driven message bus for brain-and-cerebellum multi-robot collaboration.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: module -> attribute holding a ``register(app)`` function. One registry for CLI extensions.
COMMAND_MODULES: tuple[str, ...] = (
    "bus.cli.topic",
    "bus.cli.hub",
    "bus.cli.schema",
    "memory_store.cli",
    "edge_agent.cli",
    "brain_agent.cli",
    "bus.launch.cli",
    "bus.cli.secure",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"robobus {bus.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
    log_level: Annotated[str, typer.Option("--log-level", envvar="ROBOBUS_LOG")] = "info",
) -> None:
    setup_logging(log_level)


def build() -> typer.Typer:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(app)
    return app


def main() -> None:
    build()()


if __name__ == "__main__":
    main()
