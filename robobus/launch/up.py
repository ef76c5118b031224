"""``robobus up``: a fleet that stays up for people to talk to, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import anyio
import anyio.abc
import yaml

from robobus import testing
from robobus.bus.api import Bus, BusOptions
from robobus.launch import fleet
from robobus.launch.errors import FleetRunning, LaunchError, NotReady
from robobus.launch.observe import decode
from robobus.launch.supervisor import Supervisor
from robobus.schemas.scenario import RobotSpec, load_scenario
from robobus.schemas.topics import Topics

HINT = """\
fleet up on {url}: {robots}
  logs and store: {folder}
  send an instruction:  {send}
  watch the tasks:      robobus topic echo '{prefix}/tasks/#' --bus {url}
  Ctrl-C stops everything.
"""


def robots_from_profiles(names: list[str], places: set[str], base: Path) -> list[RobotSpec]:
    """One robot per profile: its name and start place from the profile, de-duplicated."""
    robots: list[RobotSpec] = []
    for ref in names:
        path = fleet.resolve_profile(ref, base)
        data = yaml.safe_load(Path(path).read_text()) or {}
        name, start = str(data.get("name") or Path(path).stem), data.get("start")
        if start not in places:
            raise LaunchError(f"profile {ref!r} starts at {start!r}, which the scene lacks "
                              f"(places: {', '.join(sorted(places))})")
        taken = {r.name for r in robots}
        unique = name if name not in taken else f"{name}_{sum(r.name.startswith(name) for r in robots) + 1}"
        robots.append(RobotSpec(unique, path, str(start)))
    return robots


def _send_hint(url: str, prefix: str) -> str:
    text = '"bring the apple to the office desk"'
    if url.startswith("mqtt"):
        port = url.rsplit(":", 1)[-1].strip("/")
        return f"mosquitto_pub -p {port} -t {prefix}/instructions -m {text}"
    return f"robobus topic pub {prefix}/instructions {text} --bus {url}"


async def run_up(url: str, profiles: list[str], scene_file: Path, planner: str, speed: float,
                 folder: Path | None, announce: Callable[[str], object] = lambda _: None,
                 prefix: str = "robobus", join: bool = False, dashboard: int | None = None
                 ) -> None:
    """Start everything, print how to use it, and wait for SIGINT, SIGTERM or SIGHUP.

    A fleet already running on ``url`` (under ``prefix``) is refused before anything starts;
    with ``join`` only this fleet's edges start, served by the running memory and brain.
    After the fleet is ready, a process that exits unexpectedly is restarted with backoff.
    """
    sc = load_scenario(scene_file)
    robots = robots_from_profiles(profiles, set(sc.scene.places), scene_file.parent) \
        if profiles else sc.robots
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    folder = (folder or Path("robobus-reports") / f"up-{stamp}").resolve()
    cfg = fleet.FleetConfig(robots, scene_file.resolve(), folder / "store", planner, 1.0 / speed,
                            base_dir=scene_file.resolve().parent)
    fleet.agent_commands(url, cfg)
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        evidence = await fleet.fleet_evidence(url, prefix)
        if evidence and not join:
            raise FleetRunning(f"a fleet is already running on {url} (prefix {prefix!r}): "
                               f"{'; '.join(evidence)}. Stop it first, use another --bus or "
                               "--prefix, or pass --join to add these robots to it")
        if join and not evidence:
            raise LaunchError(f"--join: no fleet is running on {url} (prefix {prefix!r})")
        async with Supervisor(folder / "logs", env={"ROBOBUS_PREFIX": prefix}) as sup:
            if not join:
                await fleet.ensure_bus(url, sup)
            async with Bus.connect(url, name="robobus-up", options=BusOptions(prefix=prefix)) as bus:
                await (_join if join else _start)(bus, sup, url, cfg)
                page = await start_dashboard(sup, url, prefix, dashboard) \
                    if dashboard is not None else None
                fleet.restart_on_failure(sup)
                announce(HINT.format(url=url, robots=", ".join(r.name for r in robots),
                                     folder=folder, send=_send_hint(url, prefix), prefix=prefix)
                         + (f"  dashboard:            {page}\n" if page else ""))
                async for _ in signals:
                    break
                # the agents' clean stops leave their own retained ``offline`` (robots, memory,
                # brain): nothing is cleared, so a client opened later reads "no fleet", not ""
                await fleet.stop_agents(sup)


async def start_dashboard(sup: Supervisor, url: str, prefix: str, port: int) -> str:
    """``robobus dashboard`` on ``port`` under the supervisor (restarted like the agents, and
    its exit does not stop the fleet); its URL once it answers."""
    argv = testing.robobus_cmd("dashboard", "--bus", url, "--prefix", prefix, "--port", str(port))
    managed = await sup.start("dashboard", argv, tier=fleet.TIER_EDGE, critical=False)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and managed.returncode is None:
        try:
            await (await anyio.connect_tcp("127.0.0.1", port)).aclose()
            return f"http://127.0.0.1:{port}/"
        except OSError:
            await anyio.sleep(0.1)
    raise LaunchError(f"the dashboard did not answer on port {port}:\n{managed.tail()}")


async def _watch_robots(bus: Bus, ready: fleet.Readiness, *,
                        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    topics = Topics(bus.options.prefix)
    async with bus.subscribe(bus.topic("#")) as sub:
        task_status.started()
        async for msg in sub:
            if msg.payload:
                ready.saw(*decode(topics, msg.topic, msg.payload))


async def _start(bus: Bus, sup: Supervisor, url: str, cfg: fleet.FleetConfig) -> None:
    names = [r.name for r in cfg.robots]
    await fleet.clear_retained(bus, names)
    ready = fleet.Readiness(names, time.time_ns())
    async with anyio.create_task_group() as tg:
        await tg.start(_watch_robots, bus, ready)
        await fleet.start_agents(sup, bus, url, cfg)
        await fleet.wait_ready(bus, ready, fleet.ready_timeout(len(names)),
                               fleet.brain_boot_s(cfg.planner))
        fleet.edges_may_die(sup)
        tg.cancel_scope.cancel()


async def _join(bus: Bus, sup: Supervisor, url: str, cfg: fleet.FleetConfig) -> None:
    """Start only the edges, on a running fleet: its memory must come to know every robot."""
    names = [r.name for r in cfg.robots]
    ready = fleet.Readiness(names, time.time_ns())
    async with anyio.create_task_group() as tg:
        await tg.start(_watch_robots, bus, ready)
        for name, argv in fleet.agent_commands(url, cfg).items():
            if name.startswith("edge-"):
                managed = await sup.start(name, argv, tier=fleet.TIER_EDGE)
                managed.restart_argv = [*argv, "--replace"]
        timeout = fleet.ready_timeout(len(names))
        deadline = time.monotonic() + timeout
        while not ready.robots_ready() or not await fleet.memory_knows(bus, names):
            if time.monotonic() > deadline:
                raise NotReady(timeout, ready.missing())
            await ready.next_change(0.2)
        fleet.edges_may_die(sup)
        tg.cancel_scope.cancel()
