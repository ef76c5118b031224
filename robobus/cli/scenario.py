"""``robobus scenario run|validate|report``, ``robobus demo`` and ``robobus up``.

Every ``robobus`` process imports this module to build the CLI, so heavy imports (rich,
matplotlib, the runner) happen inside the commands.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import anyio
import anyio.abc
import typer

if TYPE_CHECKING:
    from robobus.launch.runner import RunResult

scenario_app = typer.Typer(help="Run and check scenario files (docs/scenarios.md).",
                           no_args_is_help=True)

BusUrl = Annotated[str | None, typer.Option(
    "--bus", "-b", envvar="ROBOBUS_URL",
    help="Bus URL (zmq://, zmq+ipc://, mqtt://). Default: a fresh ZeroMQ hub on a free port.")]
Planner = Annotated[str, typer.Option("--planner", help="Brain planner: symbolic, llm, openai")]
Speed = Annotated[float | None, typer.Option(
    "--speed", min=0.01, help="Time scale: 10 runs simulated skills 10x faster (default: the file's)")]
ReportDir = Annotated[Path | None, typer.Option(
    "--report", help="Report folder (default: robobus-reports/NAME-TIMESTAMP)")]
Prefix = Annotated[str, typer.Option("--prefix", envvar="ROBOBUS_PREFIX",
                                     help="Topic prefix for every process of the run")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No live progress, only the verdict")]

DEMO = "fruit_and_knife.yaml"
HINTS = """\
What to try next:
  * the same over MQTT (starts a private Mosquitto if none listens on 1883):
      robobus scenario run {demo} --bus mqtt://127.0.0.1:1883
  * a fleet that stays up, and your own instruction from any MQTT client:
      robobus up --bus mqtt://127.0.0.1:1883
      mosquitto_pub -t robobus/instructions -m "bring the apple to the office desk"
      robobus topic echo 'robobus/tasks/#' --bus mqtt://127.0.0.1:1883
  * replay the recorded log (the memory agent's store) and watch it:
      robobus hub &  robobus topic echo 'robobus/#' &
      robobus replay {store} --speed 2
      robobus log info {store}
  * other scenarios: ls {scenarios}
"""


def _terminate_as_interrupt() -> None:
    """SIGTERM and SIGHUP (a closed terminal, an ssh drop) unwind like Ctrl-C, so the
    supervisor stops every process group."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGHUP, signal.default_int_handler)


async def _until_signal(run: Callable[..., Awaitable[RunResult]], *args: object) -> RunResult:
    """``run(*args)``, cancelled by the first SIGINT, SIGTERM or SIGHUP (a closed terminal),
    which then raises KeyboardInterrupt: the cancellation unwinds the supervisor, which stops
    every process group. (A KeyboardInterrupt raised by the signal handler itself could land
    anywhere in the event loop, and was sometimes lost: the run went on to its end.)"""
    signals_seen: list[int] = []
    result: list[RunResult] = []

    async def watch(scope: anyio.CancelScope, *,
                    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as sigs:
            task_status.started()
            async for sig in sigs:
                signals_seen.append(sig)
                scope.cancel()
                return

    failure: list[Exception] = []
    async with anyio.create_task_group() as tg:
        await tg.start(watch, tg.cancel_scope)
        try:
            result.append(await run(*args))
        except Exception as exc:  # noqa: BLE001 - raised as it is below, not in a group
            failure.append(exc)
        tg.cancel_scope.cancel()
    if failure:
        raise failure[0]
    if signals_seen or not result:
        raise KeyboardInterrupt
    return result[0]


def _view(quiet: bool) -> object:
    from robobus.launch.progress import QuietView, default_view

    return QuietView() if quiet else default_view()


def _print_result(result: RunResult) -> None:
    verdict = "PASS" if result.passed else "FAIL"
    s = result.summary
    typer.echo(f"{verdict} {s.get('scenario')}: makespan {s.get('makespan_s')} s, "
               f"wall {s.get('wall_s')} s, replans {s.get('replans')}, "
               f"preemptions {s.get('preemptions')}")
    if result.error:
        typer.echo(f"  error: {result.error}")
    for r in result.results:
        typer.echo(f"  {'ok  ' if r.ok else 'FAIL'} {r.expect}: {r.reason}")
    typer.echo(f"report: {result.report_dir} (timeline.png, summary.json, events.jsonl, logs/)")


def _run(file: Path, bus: str | None, planner: str, speed: float | None, report: Path | None,
         quiet: bool, prefix: str = "robobus", dashboard: int | None = None,
         hold: float = 0.0) -> RunResult:
    import anyio

    from robobus.launch.runner import RunOptions, run_scenario
    from robobus.schemas.scenario import ScenarioError

    opts = RunOptions(bus_url=bus, planner=planner, speed=speed, report_dir=report,
                      view=_view(quiet), prefix=prefix,  # type: ignore[arg-type]
                      dashboard=dashboard, hold_s=hold, announce=typer.echo)
    try:
        return anyio.run(_until_signal, run_scenario, file, opts)
    except ScenarioError as exc:
        typer.echo(f"invalid scenario: {exc}", err=True)
        raise typer.Exit(2) from exc
    except KeyboardInterrupt:
        typer.echo("interrupted: every process stopped", err=True)
        raise typer.Exit(130) from None


@scenario_app.command("run")
def run(
    file: Annotated[Path, typer.Argument(help="Scenario YAML file")],
    bus: BusUrl = None,
    planner: Planner = "symbolic",
    speed: Speed = None,
    report: ReportDir = None,
    quiet: Quiet = False,
    prefix: Prefix = "robobus",
) -> None:
    """Start hub, memory, brain and edges; play the scenario; exit 0 if every expectation holds."""
    result = _run(file, bus, planner, speed, report, quiet, prefix)
    _print_result(result)
    raise typer.Exit(0 if result.passed else 1)


@scenario_app.command("validate")
def validate(files: Annotated[list[Path], typer.Argument(help="Scenario YAML files")]) -> None:
    """Check scenario files (format, names, robot profiles) without running them."""
    from robobus.launch.errors import ProfileNotFound
    from robobus.launch.fleet import resolve_profile
    from robobus.schemas.scenario import ScenarioError, load_scenario

    bad = 0
    for file in files:
        try:
            sc = load_scenario(file)
            for i, robot in enumerate(sc.robots):
                try:
                    resolve_profile(robot.profile, file.resolve().parent)
                except ProfileNotFound as exc:
                    raise ScenarioError(f"robots[{i}].profile", str(exc), str(file)) from exc
        except ScenarioError as exc:
            bad += 1
            typer.echo(f"invalid: {exc}", err=True)
            continue
        typer.echo(f"ok: {file} ({sc.name}: {len(sc.robots)} robots, "
                   f"{len(sc.instructions)} instructions, {len(sc.expect)} expectations)")
    raise typer.Exit(1 if bad else 0)


@scenario_app.command("report")
def report_cmd(folder: Annotated[Path, typer.Argument(help="A report folder")]) -> None:
    """Rebuild timeline.png and summary.json from a report folder's events.jsonl."""
    from robobus.launch.report import rebuild

    summary = rebuild(folder)
    typer.echo(f"rebuilt {folder / 'timeline.png'} (makespan {summary['makespan_s']} s)")


def scenarios_dir() -> Path:
    """The shipped scenarios: the checkout's, else the installed data files."""
    here = Path(__file__).resolve().parents[2] / "scenarios"
    return here if here.is_dir() else Path(sys.prefix) / "share" / "robobus" / "scenarios"


def demo(
    bus: BusUrl = None,
    speed: Speed = None,
    report: ReportDir = None,
    quiet: Quiet = False,
    dashboard: Annotated[int | None, typer.Option(
        "--dashboard", min=1, max=65535, show_default=False,
        help="Also serve robobus dashboard on this loopback port while the demo runs "
             "(needs the dashboard extra); its URL is printed")] = None,
    hold: Annotated[float, typer.Option(
        "--hold", min=0, help="With --dashboard: keep the fleet and the page up this many "
                              "seconds after the verdict (Ctrl-C ends it sooner)")] = 0.0,
) -> None:
    """The RoboOS fruit-and-knife delivery demo, every agent its own process, with a timeline."""
    file = scenarios_dir() / DEMO
    typer.echo(f"robobus demo: {file}")
    result = _run(file, bus, "symbolic", speed, report, quiet, dashboard=dashboard, hold=hold)
    _print_result(result)
    typer.echo(f"\ntimeline: {result.report_dir / 'timeline.png'}\n")
    typer.echo(HINTS.format(demo=file, store=result.report_dir / "store", scenarios=file.parent))
    raise typer.Exit(0 if result.passed else 1)


def up(
    bus: Annotated[str, typer.Option("--bus", "-b", envvar="ROBOBUS_URL",
                                     help="Bus URL; a hub or private Mosquitto starts if none runs")
                   ] = "zmq://127.0.0.1:7650",
    profiles: Annotated[list[str] | None, typer.Option(
        "--profiles", "-p", help="Robot profiles to start (repeat or comma-separate); "
        "default: the demo fleet")] = None,
    scene: Annotated[Path | None, typer.Option(
        "--scene", help="Scenario or scene YAML seeding memory (default: the demo's)")] = None,
    planner: Planner = "symbolic",
    speed: Annotated[float, typer.Option("--speed", min=0.01, help="Simulation speed-up")] = 1.0,
    folder: ReportDir = None,
    prefix: Prefix = "robobus",
    join: Annotated[bool, typer.Option(
        "--join", help="Add these robots' edges to a fleet already running on the bus "
        "(otherwise a running fleet is refused)")] = False,
    dashboard: Annotated[int | None, typer.Option(
        "--dashboard", min=1, max=65535, show_default=False,
        help="Also serve robobus dashboard on this loopback port (needs the dashboard extra)")]
    = None,
) -> None:
    """Start a fleet (hub, memory, brain, edges) and keep it running until Ctrl-C.

    Crashed processes restart with backoff; every process ends with this one, however it ends."""
    import anyio

    from robobus.launch.errors import LaunchError
    from robobus.launch.up import run_up

    _terminate_as_interrupt()
    names = [p.strip() for item in profiles or [] for p in item.split(",") if p.strip()]
    try:
        anyio.run(run_up, bus, names, scene or scenarios_dir() / DEMO, planner, speed, folder,
                  typer.echo, prefix, join, dashboard)
    except LaunchError as exc:
        typer.echo(f"robobus up failed: {exc}", err=True)
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:
        pass
    with contextlib.suppress(OSError):  # the terminal may be gone (SIGHUP)
        typer.echo("fleet stopped")


def register(app: typer.Typer) -> None:
    app.add_typer(scenario_app, name="scenario")
    app.command("demo")(demo)
    app.command("up")(up)
