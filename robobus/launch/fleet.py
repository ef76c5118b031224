"""Start a fleet as separate processes: the hub or broker, memory, brain and one edge per robot.

Shared by ``robobus scenario run`` and ``robobus up``. Readiness is by events: every robot's
registration and ``alive(online)`` stamped after the start, the memory agent answering a
query that lists every robot, and the brain's own ``BrainStatus(ready)`` stamped after the start.
"""

from __future__ import annotations

import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import structlog

from robobus import testing
from robobus.bus.api import Bus, BusOptions
from robobus.bus.errors import BusError
from robobus.edge_agent.claim import says_online
from robobus.edge_agent.errors import ProfileError
from robobus.edge_agent.profile import find_profile, profile_dirs
from robobus.launch.errors import BusUnavailable, NotReady, ProfileNotFound
from robobus.launch.supervisor import Supervisor
from robobus.schemas.codec import decode_as
from robobus.schemas.errors import DecodeError
from robobus.schemas.memory import MemoryQuery, QueryReply
from robobus.schemas.messages import BrainStatus
from robobus.schemas.scenario import RobotSpec
from robobus.schemas.topics import Topics

log = structlog.get_logger("launch.fleet")
TIER_INFRA, TIER_CORE, TIER_EDGE = 0, 1, 2
BRAIN_BOOT_S = 5.0         # symbolic planner: the brain boots in well under a second
BRAIN_BOOT_MODEL_S = 180.0  # other planners may load a language model first


@dataclass
class FleetConfig:
    """What to start. ``time_scale`` multiplies simulated skill durations (1/speed)."""

    robots: list[RobotSpec]
    scene_file: Path
    store_dir: Path
    planner: str = "symbolic"
    time_scale: float = 1.0
    base_dir: Path | None = None  # where the scenario lives, for relative profile paths
    prefix: str = "robobus"


# -- the bus ----------------------------------------------------------------------------
def default_bus_url() -> str:
    """The embedded ZeroMQ default on a free loopback port (never a fixed one)."""
    return f"zmq://{testing.LOOPBACK}:{testing.free_port(span=3)}"


def _tcp_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


def _ipc_open(path: str) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        return s.connect_ex(path) == 0


async def _wait_tcp(host: str, ports: tuple[int, ...], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not all(_tcp_open(host, p) for p in ports):
        if time.monotonic() > deadline:
            raise BusUnavailable(f"{what} did not listen on {host}:{ports} within {timeout:.0f}s")
        await anyio.sleep(0.05)  # a port has no event to wait on


async def ensure_bus(url: str, sup: Supervisor) -> str:
    """Make ``url`` usable: start a hub (zmq) or a private Mosquitto (loopback mqtt) if none runs."""
    parts = urlsplit(url)
    if parts.scheme == "memory":
        raise BusUnavailable("memory:// is in-process only; agents run as separate processes "
                             "(use zmq:// or mqtt://)")
    if parts.scheme in ("zmq", "zmq+tcp"):
        host, port = parts.hostname or testing.LOOPBACK, parts.port or 7650
        ports = (port, port + 1, port + 2)
        if not all(_tcp_open(host, p) for p in ports):
            await sup.start("hub", hub_command(url), tier=TIER_INFRA)
            await _wait_tcp(host, ports, "robobus hub")
    elif parts.scheme == "zmq+ipc":
        ctl = f"{parts.path}.ctl"
        if not _ipc_open(ctl):  # a socket file left by a dead hub refuses connections
            await sup.start("hub", hub_command(url), tier=TIER_INFRA)
            with anyio.fail_after(10):
                while not _ipc_open(ctl):
                    await anyio.sleep(0.05)  # a socket has no event to wait on
    elif parts.scheme == "mqtt":
        await _ensure_mosquitto(parts.hostname or testing.LOOPBACK, parts.port or 1883, sup)
    return url


#: Messages the hub keeps for the memory agent to replay after a restart (--durable).
REPLAY_BUFFER = 500_000


def hub_command(url: str) -> list[str]:
    return testing.robobus_cmd("hub", "--bus", url, "--replay-buffer", str(REPLAY_BUFFER))


def memory_url(url: str, prefix: str) -> str:
    """The memory agent's bus URL: a persistent MQTT session, so a restart loses nothing."""
    if not url.startswith("mqtt"):
        return url
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}session=persistent&client_id={prefix}-memory"


async def _ensure_mosquitto(host: str, port: int, sup: Supervisor) -> None:
    if _tcp_open(host, port):
        return
    if host not in (testing.LOOPBACK, "localhost"):
        raise BusUnavailable(f"no MQTT broker at {host}:{port}")
    directory = Path(tempfile.mkdtemp(prefix="robobus-mosquitto-", dir=sup.log_dir))
    # persistent: a broker restart keeps sessions, queued QoS 1 messages and retained values
    conf = testing.write_mosquitto_conf(directory, port, persistence=True)
    await sup.start("mosquitto", [testing.mosquitto_binary(), "-c", str(conf)], tier=TIER_INFRA)
    await _wait_tcp(testing.LOOPBACK, (port,), "mosquitto")


async def fleet_evidence(url: str, prefix: str, probe_s: float = 1.0) -> list[str]:
    """What shows that a fleet already runs on ``url`` under ``prefix`` (empty: none).

    Nothing is started: with no hub or broker listening there is no fleet. Otherwise a memory
    agent answering a query, or a robot whose retained ``alive`` says ``online``, is one. Only
    ``online`` is read from the alive message, so its other fields may change freely.
    """
    parts = urlsplit(url)
    if parts.scheme in ("zmq", "zmq+tcp"):
        host, port = parts.hostname or testing.LOOPBACK, parts.port or 7650
        if not all(_tcp_open(host, p) for p in (port, port + 1, port + 2)):
            return []
    elif parts.scheme == "zmq+ipc":
        if not _ipc_open(f"{parts.path}.ctl"):
            return []
    elif parts.scheme == "mqtt":
        if not _tcp_open(parts.hostname or testing.LOOPBACK, parts.port or 1883):
            return []
    else:
        return []
    evidence: list[str] = []
    latest: dict[str, bool] = {}  # robot -> its newest alive says online
    async with Bus.connect(url, name="robobus-probe", options=BusOptions(prefix=prefix)) as bus:
        async with bus.subscribe(Topics(prefix).alive()) as sub:
            # retained values come with the subscription; the query's wait lets late ones in
            if await memory_knows(bus, [], timeout=probe_s):
                evidence.append("a memory agent answers queries")
            while (msg := sub.get_nowait()) is not None:
                latest[msg.topic.split("/")[-2]] = says_online(msg.payload)
    online = [robot for robot, up in latest.items() if up]
    if online:
        evidence.append(f"robots online: {', '.join(sorted(online))}")
    return evidence


# -- the agents -------------------------------------------------------------------------
def resolve_profile(profile: str, base_dir: Path | None = None) -> str:
    """A profile name (``unitree_g1``) or path to a YAML file; raise ProfileNotFound.

    Resolved as the edge agent resolves ``--profile`` (:func:`find_profile`, which honours
    ``$ROBOBUS_PROFILES``), with the scenario's folder and the working directory nearest.
    """
    near = [d for d in (base_dir, Path.cwd()) if d is not None]
    try:
        return str(find_profile(profile, near))
    except ProfileError as exc:
        searched = [*map(str, near), *map(str, profile_dirs(near))]
        raise ProfileNotFound(profile, list(dict.fromkeys(searched))) from exc


def agent_commands(url: str, cfg: FleetConfig) -> dict[str, list[str]]:
    """Process name -> argv for memory, brain and each robot's edge agent."""
    cmds = {
        "memory": testing.robobus_cmd("memory", "--bus", memory_url(url, cfg.prefix), "--durable",
                                      "--store", str(cfg.store_dir), "--scene", str(cfg.scene_file)),
        "brain": testing.robobus_cmd("brain", "--bus", url, "--planner", cfg.planner),
    }
    for robot in cfg.robots:
        cmds[f"edge-{robot.name}"] = testing.robobus_cmd(
            "edge", "--profile", resolve_profile(robot.profile, cfg.base_dir), "--name", robot.name,
            "--at", robot.at, "--time-scale", f"{cfg.time_scale:g}", "--bus", url)
    return cmds


async def start_agents(sup: Supervisor, bus: Bus, url: str, cfg: FleetConfig) -> None:
    """Start memory and the edges, then the brain once memory answers (its boot loads the world).

    Every process is critical until the fleet is ready (an edge that cannot start fails the
    run at once, with its log); :func:`edges_may_die` then relaxes the edges.
    """
    cmds = agent_commands(url, cfg)
    brain = cmds.pop("brain")
    for name, argv in cmds.items():
        edge = name.startswith("edge-")
        managed = await sup.start(name, argv, tier=TIER_EDGE if edge else TIER_CORE)
        if edge:  # a restart follows our own edge's death, which the bus may not know yet
            managed.restart_argv = [*argv, "--replace"]
    # the edges start at the same time and share the CPU with it: its budget grows with them
    budget = ready_timeout(len(cmds) - 1)
    deadline = time.monotonic() + budget
    while not await memory_knows(bus, [], timeout=0.25):  # its first queries predate it
        if time.monotonic() > deadline:
            raise NotReady(budget, ["memory agent answering queries"])
        await anyio.sleep(0.05)  # a request that failed fast (not a timeout) must not spin
    await sup.start("brain", brain, tier=TIER_CORE)


def edges_may_die(sup: Supervisor) -> None:
    """From now on an edge exiting is part of the story (a fault), not a crash of the run."""
    for name, managed in sup.procs.items():
        if name.startswith("edge-"):
            managed.critical = False


def restart_on_failure(sup: Supervisor) -> None:
    """From now on a process that exits unexpectedly is started again with backoff (``up``).

    A restarted edge passes ``--replace`` (:func:`start_agents`): its earlier self is known
    dead, even while the hub or broker has not yet declared it offline."""
    for managed in sup.procs.values():
        managed.restart = True


async def stop_agents(sup: Supervisor) -> None:
    """Stop edges, then brain and memory, leaving the hub or broker up (retained cleanup)."""
    for tier in (TIER_EDGE, TIER_CORE):
        await sup.stop([n for n, m in sup.procs.items() if m.tier == tier])


async def clear_retained(bus: Bus, robots: list[str]) -> None:
    """Forget robots' retained registration/alive/state and the brain's status from an earlier
    run on the same broker."""
    for robot in robots:
        for sub in ("registration", "alive", "state"):
            await bus.publish(bus.topic("robots", robot, sub), b"", retain=True, qos=1)
    await bus.publish(Topics(bus.options.prefix).brain_status, b"", retain=True, qos=1)


# -- readiness --------------------------------------------------------------------------
class Readiness:
    """Tracks what the fleet still owes before scenario time 0."""

    def __init__(self, robots: list[str], since_ns: int) -> None:
        self.robots = robots
        self.since_ns = since_ns
        self.registered: set[str] = set()
        self.online: set[str] = set()
        self.memory_ok = False
        self.brain_ready = False
        self.changed = anyio.Event()

    def saw(self, type_: str, data: object) -> None:
        """Feed an observed message; stale retained values (older than the start) do not count."""
        if not isinstance(data, dict) or data.get("ts_ns", self.since_ns) < self.since_ns:
            return
        if type_ == "RobotRegistration":
            self.registered.add(data["robot"])
        elif type_ == "Alive":
            (self.online.add if data["online"] else self.online.discard)(data["robot"])
        else:
            return
        self.changed.set()
        self.changed = anyio.Event()

    def robots_ready(self) -> bool:
        return all(r in self.registered and r in self.online for r in self.robots)

    def missing(self) -> list[str]:
        out = [f"registration of {r}" for r in self.robots if r not in self.registered]
        out += [f"alive of {r}" for r in self.robots if r not in self.online]
        if not self.memory_ok:
            out.append("memory agent answering with every robot")
        elif not self.brain_ready:
            out.append("the brain's ready status")
        return out[:8] + ([f"... {len(out) - 8} more"] if len(out) > 8 else [])

    async def next_change(self, timeout: float) -> None:
        event = self.changed
        with anyio.move_on_after(timeout):
            await event.wait()


async def memory_knows(bus: Bus, robots: list[str], timeout: float = 1.0) -> bool:
    """True once the memory agent answers a ``robots`` query listing every robot."""
    try:
        msg = await bus.request(bus.topic("memory", "query"), MemoryQuery(kind="robots"),
                                timeout=timeout)
        reply = decode_as(msg.payload, QueryReply, msg.topic, msg.content_type)
    except (BusError, DecodeError) as exc:
        log.debug("memory_not_ready", error=str(exc))
        return False
    known = reply.result if reply.ok and isinstance(reply.result, dict) else {}
    return all(r in known for r in robots)


def brain_boot_s(planner: str) -> float:
    """How long to wait for the brain's boot before scenario time 0."""
    return BRAIN_BOOT_S if planner == "symbolic" else BRAIN_BOOT_MODEL_S


async def wait_ready(bus: Bus, ready: Readiness, timeout: float,
                     brain_boot: float = BRAIN_BOOT_S) -> None:
    """Wait for every robot's registration and liveness, then for the memory agent, then for
    the brain's ready status (``brain_boot`` more seconds at least: it boots once memory
    answers). Raise :class:`NotReady` with what is missing."""
    deadline = time.monotonic() + timeout
    while not ready.robots_ready():
        left = deadline - time.monotonic()
        if left <= 0:
            raise NotReady(timeout, ready.missing())
        await ready.next_change(left)
    while not await memory_knows(bus, ready.robots):
        if time.monotonic() > deadline:
            raise NotReady(timeout, ready.missing())
        await ready.next_change(0.2)  # memory applies registrations asynchronously
    ready.memory_ok = True
    with anyio.move_on_after(max(deadline - time.monotonic(), brain_boot)):
        await brain_ready(bus, ready.since_ns)
        ready.brain_ready = True
    if not ready.brain_ready:
        raise NotReady(time.monotonic() - deadline + timeout, ready.missing())


async def brain_ready(bus: Bus, since_ns: int) -> BrainStatus:
    """The brain's ``ready`` status stamped at or after ``since_ns`` (older values are a previous
    brain's). The status is retained, so it arrives even when the brain said it first."""
    async with bus.subscribe(Topics(bus.options.prefix).brain_status, BrainStatus) as sub:
        async for msg in sub:
            if msg.data.state == "ready" and msg.data.ts_ns >= since_ns:
                return msg.data
    raise BusError("the bus closed before the brain said it was ready")


def ready_timeout(n_robots: int) -> float:
    """Startup budget: process start is CPU-bound (~0.3 s each on a small machine)."""
    return 20.0 + 0.6 * n_robots

