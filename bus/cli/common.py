"""Options and helpers shared by every ``robobus`` subcommand."""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated

import structlog
import typer

from bus.api import DEFAULT_URL

BusOpt = Annotated[
    str,
    typer.Option("--bus", "-b", envvar="ROBOBUS_URL", help="Bus URL: zmq://, zmq+ipc://, mqtt://, mqtts://, memory://"),
]
PrefixOpt = Annotated[
    str, typer.Option("--prefix", envvar="ROBOBUS_PREFIX", help="Topic prefix of the public contract")
]
DEFAULT_BUS = DEFAULT_URL


def setup_logging(level: str | None = None, json: bool | None = None) -> None:
    """Structured logs on stderr: console renderer on a TTY, JSON lines otherwise."""
    level = (level or os.environ.get("ROBOBUS_LOG", "info")).upper()
    use_json = json if json is not None else os.environ.get("ROBOBUS_LOG_JSON") == "1"
    renderer = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
