"""Options and helpers shared by every ``robobus`` subcommand."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import anyio
import structlog
import typer

from robobus.bus.api import DEFAULT_URL, Bus, BusOptions
from robobus.bus.api import run as bus_run

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


AgentRun = Callable[..., Coroutine[Any, Any, None]]


def run_agent(url: str, name: str, options: BusOptions, agent: AgentRun, config: Any,
              *, duration: float | None = None) -> None:
    """Run one agent process: connect, start ``agent(bus, config)``, stop cleanly on SIGTERM or
    SIGINT (or after ``duration`` seconds). Every ``robobus`` agent command starts this way."""
    bus_run(_serve_agent, url, name, options, agent, config, duration)


async def _serve_agent(url: str, name: str, options: BusOptions, agent: AgentRun, config: Any,
                       duration: float | None) -> None:
    async with Bus.connect(url, name=name, options=options) as bus, \
            anyio.create_task_group() as tg:
        tg.start_soon(stop_on_signal, tg.cancel_scope, name=f"{name}:signals")
        await tg.start(agent, bus, config)
        if duration is not None:
            await anyio.sleep(duration)
            tg.cancel_scope.cancel()


async def stop_on_signal(scope: anyio.CancelScope) -> None:
    """Cancel ``scope`` on the first SIGTERM or SIGINT."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            scope.cancel()
            return
