"""``robobus brain``: run the brain agent (planner, scheduler, replanning, preemption)."""

from __future__ import annotations

from typing import Annotated

import typer

from robobus.brain_agent.agent import run
from robobus.brain_agent.config import BrainConfig
from robobus.brain_agent.groups import GroupError, RobotGroup
from robobus.brain_agent.planners import PLANNERS
from robobus.bus import BusError, BusOptions, RateLimit
from robobus.cli.common import DEFAULT_BUS, BusOpt, PrefixOpt, run_agent

_DEFAULT_LIMIT = BrainConfig().instruction_rate_limit
_DEFAULT_RATE = _DEFAULT_LIMIT.rate if _DEFAULT_LIMIT else 0.0
_DEFAULTS = BrainConfig()


def brain(
    bus_url: BusOpt = DEFAULT_BUS,
    planner: Annotated[str, typer.Option("--planner", help=f"Planner backend: {', '.join(PLANNERS)}")]
    = "symbolic",
    model: Annotated[str | None, typer.Option("--model", help="Model path or name (llm/openai)")]
    = None,
    endpoint: Annotated[str | None, typer.Option("--endpoint", help="OpenAI-compatible base URL")]
    = None,
    max_failures: Annotated[int, typer.Option("--max-failures", min=0,
                                              help="Replans after failures before a task fails")]
    = 3,
    timeout_scale: Annotated[float, typer.Option("--timeout-scale", min=0.0,
                                                 help="Multiply skill timeouts (match --time-scale)")]
    = 1.0,
    no_recover: Annotated[bool, typer.Option("--no-recover", help="Do not resume active tasks")]
    = False,
    instruction_rate: Annotated[float | None, typer.Option(
        "--instruction-rate", min=0.0, show_default=False,
        help="Instructions per second accepted from one sender, in bursts of up to 2.5 s of "
             f"them; 0: no limit (default {_DEFAULT_RATE:g})")] = None,
    deliver_to: Annotated[str | None, typer.Option(
        "--deliver-to", show_default=False,
        help="Where 'me', 'here', '我' deliver when an instruction carries no origin (a place)")]
    = None,
    max_pending: Annotated[int, typer.Option(
        "--max-pending", min=1,
        help="Capacity: tasks not yet final; past it new instructions fail at once with an "
             "'overloaded' reason")] = _DEFAULTS.max_pending,
    max_backlog: Annotated[int, typer.Option(
        "--max-backlog", min=1,
        help="Capacity: instructions waiting in the intake buffer; past it new ones are shed "
             "the same way")] = _DEFAULTS.max_backlog,
    group: Annotated[str | None, typer.Option(
        "--group", show_default=False,
        help="Lead one robot group only: instructions on P/groups/G/instructions, one active "
             "brain per group (P/groups/G/brain/status); needs --robots")] = None,
    robots: Annotated[str | None, typer.Option(
        "--robots", show_default=False,
        help="The group's robots: comma-separated shell patterns over robot names, e.g. "
             "'dock_*,g1'; with --group")] = None,
    prefix: PrefixOpt = "robobus",
) -> None:
    """Run the brain: instructions in, validated multi-robot plans out, closed loop."""
    options = {k: v for k, v in (("model", model), ("endpoint", endpoint)) if v is not None}
    config = BrainConfig(planner=planner, planner_options=options, max_failures=max_failures,
                         timeout_scale=timeout_scale, recover=not no_recover,
                         deliver_to=deliver_to or None, max_pending=max_pending,
                         max_backlog=max_backlog)
    if instruction_rate is not None:
        config.instruction_rate_limit = (RateLimit(instruction_rate, burst=2.5 * instruction_rate)
                                         if instruction_rate else None)
    if (group is None) != (robots is None):
        typer.echo("robobus brain: --group and --robots go together", err=True)
        raise typer.Exit(2)
    if group is not None and robots is not None:
        try:
            config.group = RobotGroup.parse(group, robots)
        except GroupError as exc:
            typer.echo(f"robobus brain: {exc}", err=True)
            raise typer.Exit(2) from exc
        config.name = f"brain-{group}"
    if planner not in PLANNERS:
        typer.echo(f"robobus brain: unknown planner {planner!r}; known: {', '.join(PLANNERS)}",
                   err=True)
        raise typer.Exit(2)
    try:
        run_agent(bus_url, config.name, BusOptions(prefix=prefix), run, config)
    except BusError as exc:
        typer.echo(f"robobus brain: {exc}", err=True)
        raise typer.Exit(1) from exc


def register(app: typer.Typer) -> None:
    """Add ``robobus brain`` to the CLI."""
    app.command("brain")(brain)
