"""Drive a corpus of bad input at a running scenario, and collect what the fleet said back.

:func:`fuzz_scenario` runs a scenario with :func:`robobus.launch.runner.run_scenario` and, while its
task runs, publishes the corpus from an external client at a bounded rate: inputs whose only
rejecter reports through a per-topic rate-limited channel (instructions, world events) go at
``paced_rate``, the rest at ``rate``. Then it floods (instructions and commands beyond the
agents' per-sender limits) and waits for the error reports to settle. The supervisor is wrapped
so that the run holds its processes until the fuzzer is done, and so that any process that died
on its own is recorded before the fleet is stopped.

Shared by tests/fuzz and bench/fuzz.py; loaded by path (tests/fuzz is not a package).
"""

from __future__ import annotations

import functools
import secrets
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import msgspec

from robobus.bus import Bus, BusError, BusOptions
from robobus.edge_agent.profile import load_profile
from robobus.launch import fleet as fleet_mod
from robobus.launch import runner
from robobus.launch.runner import RunOptions, RunResult
from robobus.launch.supervisor import Supervisor
from robobus.schemas.memory import MemoryQuery, QueryReply
from robobus.schemas.messages import ErrorReport, Instruction, TaskStatus
from robobus.schemas.scenario import load_scenario
from robobus.schemas.topics import Topics

TERMINAL = ("done", "failed", "cancelled")


@dataclass
class Hooks:
    """Between the wrapped supervisor and the fuzzer."""

    brain_started: anyio.Event = field(default_factory=anyio.Event)
    drained: anyio.Event = field(default_factory=anyio.Event)
    crashed: dict[str, str] = field(default_factory=dict)   # name -> exit code and log tail
    alive_at_end: list[str] = field(default_factory=list)
    hold_s: float = 60.0


class WatchedSupervisor(Supervisor):
    """A supervisor that tells when the brain starts, and holds the first stop until drained."""

    def __init__(self, log_dir: Path, env: dict[str, str] | None = None, *,
                 hooks: Hooks) -> None:
        super().__init__(log_dir, env)
        self.hooks = hooks
        self._held = False

    async def start(self, name: str, argv: Any, **kwargs: Any) -> Any:
        managed = await super().start(name, argv, **kwargs)
        if name == "brain":
            self.hooks.brain_started.set()
        return managed

    async def stop(self, names: Any, timeout: float = 5.0) -> None:
        if not self._held:
            self._held = True
            with anyio.move_on_after(self.hooks.hold_s):
                await self.hooks.drained.wait()
            self._census()
        await super().stop(names, timeout)

    def _census(self) -> None:
        for name, managed in self.procs.items():
            if managed.returncode is None:
                self.hooks.alive_at_end.append(name)
            elif not managed.expected_exit:
                self.hooks.crashed[name] = f"exit {managed.returncode}: {managed.tail()}"


@dataclass
class FuzzRun:
    """Everything the assertions and the benchmark need."""

    result: RunResult | None = None
    sent: list[Any] = field(default_factory=list)            # FuzzInput, in send order
    reports: list[ErrorReport] = field(default_factory=list)
    statuses: dict[str, list[TaskStatus]] = field(default_factory=lambda: defaultdict(list))
    stored_before: set[tuple[int, int]] = field(default_factory=set)
    fuzz_s: float = 0.0
    flood: Counter[str] = field(default_factory=Counter)
    hooks: Hooks = field(default_factory=Hooks)
    #: a fresh valid instruction sent after the fuzz: did its task end ``done``
    fresh_done: bool = False
    fresh_statuses: list[str] = field(default_factory=list)

    def reports_by_topic(self) -> Counter[str]:
        return Counter(r.topic for r in self.reports)

    def rate(self) -> float:
        return len(self.sent) / self.fuzz_s if self.fuzz_s else 0.0


def fleet_of(scenario: Path, prefix: str, corpus_mod: Any) -> Any:
    """The corpus module's ``Fleet`` for a scenario: its robots' skills and task ids."""
    sc = load_scenario(scenario)
    base = scenario.resolve().parent
    robots = {r.name: tuple(sorted(load_profile(fleet_mod.resolve_profile(r.profile, base)).skills))
              for r in sc.robots}
    tasks = tuple(sc.task_id(i) for i in range(len(sc.instructions)))
    return corpus_mod.Fleet(robots, tasks, prefix)


async def fuzz_scenario(scenario: Path, url: str, prefix: str, corpus: Callable[[], list[Any]], *,
                        report_dir: Path, speed: float, rate: float, paced_rate: float,
                        flood: int = 300, fresh: bool = False) -> FuzzRun:
    """Run ``scenario`` on ``url`` with ``corpus()`` thrown at it; see the module doc.

    ``corpus`` is called in a worker thread first: drawing takes seconds, and a corpus still
    being drawn when the scenario's task ends would leave nothing fuzzed.
    """
    run = FuzzRun()
    items = await anyio.to_thread.run_sync(corpus)
    sup = functools.partial(WatchedSupervisor, hooks=run.hooks)
    original = runner.Supervisor
    runner.Supervisor = sup  # type: ignore[misc,assignment]
    try:
        async with anyio.create_task_group() as tg:
            fuzzer = Fuzzer(url, prefix, items, run, rate, paced_rate, flood)
            fuzzer.fresh = fresh
            tg.start_soon(fuzzer.run, load_scenario(scenario).task_id(0))
            opts = RunOptions(bus_url=url, speed=speed, report_dir=report_dir, prefix=prefix)
            run.result = await runner.run_scenario(scenario, opts)
            tg.cancel_scope.cancel()
    finally:
        runner.Supervisor = original  # type: ignore[misc]
        run.hooks.drained.set()
    return run


class Fuzzer:
    """The external client: waits for the scenario's task, fuzzes, floods, drains."""

    def __init__(self, url: str, prefix: str, corpus: list[Any], run: FuzzRun,
                 rate: float,
                 paced_rate: float, flood: int) -> None:
        self.url, self.corpus, self.run_, self.flood_n = url, corpus, run, flood
        self.rate, self.paced_rate = rate, paced_rate
        self.t = Topics(prefix)
        self.opts = BusOptions(prefix=prefix, max_payload=4 << 20, report_errors=False)
        self.changed = anyio.Event()
        self.done = anyio.Event()
        self.fresh = False

    async def run(self, task0: str) -> None:
        try:
            corpus = self.corpus
            await self.run_.hooks.brain_started.wait()
            async with Bus.connect(self.url, name="fuzzer", options=self.opts) as bus, \
                    anyio.create_task_group() as tg:
                await tg.start(self._collect, bus, self.t.errors, ErrorReport)
                await tg.start(self._collect, bus, self.t.task("+"), TaskStatus)
                await self._wait_task(task0, ("accepted", "planned", *TERMINAL))
                self.run_.stored_before = await stored_events(bus)
                started = time.monotonic()
                async with anyio.create_task_group() as senders:
                    paced = [i for i in corpus if _paced(self.t, i.topic)]
                    rest = [i for i in corpus if not _paced(self.t, i.topic)]
                    senders.start_soon(self._send, bus, paced, self.paced_rate, task0, 1)
                    senders.start_soon(self._send, bus, rest, self.rate, task0, 1000)
                self.run_.fuzz_s = time.monotonic() - started
                await self._flood()
                await self._drain()
                if self.fresh:
                    await self._fresh_instruction()
                tg.cancel_scope.cancel()
        finally:
            self.run_.hooks.drained.set()

    async def _collect(self, bus: Bus, pattern: str, type_: type, *,
                       task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with bus.subscribe(pattern, type_, maxsize=100_000) as sub:
            task_status.started()
            async for msg in sub:
                if isinstance(msg.data, ErrorReport):
                    self.run_.reports.append(msg.data)
                else:
                    self.run_.statuses[msg.data.task_id].append(msg.data)
                self.changed.set()
                self.changed = anyio.Event()

    async def _wait_task(self, task: str, states: tuple[str, ...], timeout: float = 60.0) -> None:
        with anyio.fail_after(timeout):
            while not any(s.status in states for s in self.run_.statuses.get(task, [])):
                await self.changed.wait()

    def _task_over(self, task: str) -> bool:
        return any(s.status in TERMINAL for s in self.run_.statuses.get(task, []))

    async def _send(self, bus: Bus, items: list[Any], rate: float, task0: str,
                    rounds: int) -> None:
        """Publish ``items`` at ``rate``/s on a fixed schedule, up to ``rounds`` times over
        (their verdicts do not depend on history), until the scenario's task ends."""
        period, deadline = 1.0 / rate, anyio.current_time()
        for _ in range(rounds):
            for item in items:
                if self._task_over(task0):
                    return
                await bus.publish(item.topic, item.payload, qos=1)
                self.run_.sent.append(item)
                deadline += period
                await anyio.sleep_until(deadline)

    async def _flood(self) -> None:
        """Instructions and commands far beyond the per-sender limits, from a second sender."""
        if not self.flood_n:
            return
        robot = "g1"
        async with Bus.connect(self.url, name="flooder", options=self.opts) as bus:
            for i in range(self.flood_n):
                await bus.publish(self.t.instructions, f"zqflood {i}", qos=1)
                await bus.publish(self.t.skill(robot, "fly"), msgspec.msgpack.encode(
                    {"command_id": f"flood{i}", "skill": "fly"}), qos=1)
        self.run_.flood.update(instructions=self.flood_n, commands=self.flood_n)

    async def _fresh_instruction(self, timeout: float = 60.0) -> None:
        """After the fuzz, a new valid instruction from a new sender must complete."""
        tid = f"fresh-{secrets.token_hex(3)}"
        async with Bus.connect(self.url, name="fresh", options=self.opts) as bus:
            await bus.publish(self.t.instructions, Instruction(
                text="Bring the banana to the office desk", task_id=tid), qos=1)
        with anyio.move_on_after(timeout):
            await self._wait_task(tid, TERMINAL, timeout)
        got = self.run_.statuses.get(tid, [])
        self.run_.fresh_statuses = [f"{s.status}: {s.reason}" if s.reason else s.status
                                    for s in got]
        self.run_.fresh_done = any(s.status == "done" for s in got)

    async def _drain(self, quiet_s: float = 1.0, limit_s: float = 15.0) -> None:
        """Wait until no report nor status arrived for ``quiet_s`` (at most ``limit_s``)."""
        with anyio.move_on_after(limit_s):
            while True:
                with anyio.move_on_after(quiet_s) as scope:
                    await self.changed.wait()
                if scope.cancelled_caught:
                    return


def _paced(t: Topics, topic: str) -> bool:
    return topic in (t.instructions, t.world_events)


async def stored_events(bus: Bus) -> set[tuple[int, int]]:
    """(ts_ns, seq) of every event the memory agent has stored so far (paged query)."""
    keys: set[tuple[int, int]] = set()
    cursor: str | None = None
    while True:
        q = MemoryQuery(kind="events", limit=5000, cursor=cursor)
        try:
            msg = await bus.request(bus.topic("memory", "query"), q, timeout=10.0)
        except BusError as exc:
            raise AssertionError(f"memory agent did not list its events: {exc}") from exc
        reply = msgspec.msgpack.decode(msg.payload, type=QueryReply)
        assert reply.ok, reply.error
        keys.update((e["ts_ns"], e["seq"]) for e in reply.result["events"])
        cursor = reply.next_cursor
        if not cursor:
            return keys


def topic_kind(t: Topics, topic: str) -> str:
    """``robots/+/state``-style name of a topic, for per-topic counts."""
    parts = topic[len(t.prefix) + 1:].split("/")
    if parts[0] == "robots" and len(parts) >= 3:
        return "robots/+/" + ("skills/+" if parts[2] == "skills" else parts[2])
    if parts[0] == "tasks":
        return "tasks/+"
    return "/".join(parts)


def summary(run: FuzzRun, prefix: str) -> dict[str, Any]:
    """Figures for the report: inputs per topic and category, verdicts, reports, rate."""
    t = Topics(prefix)
    return {
        "bus": run.result.summary.get("bus") if run.result else None,
        "inputs": len(run.sent),
        "distinct_inputs": len({id(i) for i in run.sent}),
        "per_topic": dict(Counter(topic_kind(t, i.topic) for i in run.sent).most_common()),
        "per_category": dict(Counter(i.category for i in run.sent).most_common()),
        "verdicts": dict(Counter(i.verdict for i in run.sent)),
        "reports": len(run.reports),
        "unreported_rejects": unreported(run),
        "report_codes": dict(Counter(r.code for r in run.reports).most_common()),
        "fuzz_s": round(run.fuzz_s, 2),
        "msgs_per_s": round(run.rate(), 1),
        "flood": dict(run.flood),
        "crashed": dict(run.hooks.crashed),
        "alive_at_end": sorted(run.hooks.alive_at_end),
        "scenario_passed": bool(run.result and run.result.passed),
        "scenario_wall_s": run.result.summary.get("wall_s") if run.result else None,
    }


def unreported(run: FuzzRun) -> int:
    """Inputs that had to be refused, beyond the reports seen on their topic (target 0)."""
    must = Counter(i.topic for i in run.sent if i.verdict == "reject")
    got = run.reports_by_topic()
    return sum(max(0, n - got[t]) for t, n in must.items())
