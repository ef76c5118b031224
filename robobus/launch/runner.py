"""``robobus scenario run``: start a fleet, play a scenario, check it, write the report.

Timing: scenario time 0 is the moment the whole fleet is ready. Instruction and fault times are
scenario seconds, divided by ``speed`` on the wall clock; edges run with time scale 1/speed.
The run waits for every expectation until ``timeout_s / speed`` plus a fixed grace for what
does not scale (liveness detection, process scheduling), or stops early once every task has
ended and the expectations still fail.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import structlog

from robobus.bus.api import Bus, BusOptions
from robobus.bus.errors import BusError
from robobus.bus.policy import instructions_topic
from robobus.launch import fleet
from robobus.launch.errors import LaunchError
from robobus.launch.expect import evaluate
from robobus.launch.observe import Observer, marker
from robobus.launch.progress import QuietView, View
from robobus.launch.report import ExpectResult, write_report
from robobus.launch.supervisor import Supervisor
from robobus.schemas.messages import FaultSpec, Instruction, SkillFeedback
from robobus.schemas.scenario import FaultEntry, Scenario, load_scenario
from robobus.schemas.tasks import FINAL
from robobus.schemas.topics import Topics

log = structlog.get_logger("launch.runner")
GRACE_S = 10.0        # wall seconds added to timeout_s / speed
SETTLE_S = 0.5        # after every task ended, how long expectations may still catch up
RESEND_AFTER_S = 2.0  # an instruction nobody acknowledged is sent again (brain still starting)
REPORT_FILES = ("store", "logs", "events.jsonl", "summary.json", "timeline.png")


@dataclass
class RunOptions:
    """How to run: bus URL (None: a fresh embedded ZeroMQ hub), planner, speed, report folder."""

    bus_url: str | None = None
    planner: str = "symbolic"
    speed: float | None = None
    report_dir: Path | None = None
    view: View = field(default_factory=QuietView)
    #: topic prefix for every process of the run (agents read ROBOBUS_PREFIX)
    prefix: str = field(default_factory=lambda: os.environ.get("ROBOBUS_PREFIX", "robobus"))
    #: serve ``robobus dashboard`` on this loopback port for the run (``robobus demo``)
    dashboard: int | None = None
    #: seconds the fleet and dashboard stay up after the verdict (Ctrl-C ends it sooner)
    hold_s: float = 0.0
    #: where to print the dashboard's URL and the hold
    announce: Callable[[str], object] = lambda _: None


@dataclass
class RunResult:
    """The verdict. ``error`` is set when the run could not even start or crashed."""

    passed: bool
    results: list[ExpectResult]
    report_dir: Path
    summary: dict[str, Any]
    error: str | None = None

    def failures(self) -> list[ExpectResult]:
        return [r for r in self.results if not r.ok]


def default_report_dir(name: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return Path("robobus-reports") / f"{name}-{stamp}"


async def run_scenario(path: str | Path, opts: RunOptions | None = None) -> RunResult:
    """Run the scenario file at ``path`` end to end; never leaves a process behind."""
    opts = opts or RunOptions()
    sc = load_scenario(path)
    speed = opts.speed or sc.speed
    folder = (opts.report_dir or default_report_dir(sc.name)).resolve()
    _clean(folder)
    url = opts.bus_url or fleet.default_bus_url()
    observer = Observer(Topics(opts.prefix), [r.name for r in sc.robots])
    results: list[ExpectResult] = []
    error: str | None = None
    started = time.monotonic()
    try:
        results = await _run(Path(path), sc, speed, url, folder, opts, observer)
    except (LaunchError, BusError) as exc:
        error = str(exc)
        log.error("scenario_aborted", scenario=sc.name, error=error)
    events = observer.events
    events.append(marker("end", error=error))
    meta = {"scenario": sc.name, "file": str(path), "bus": url, "prefix": opts.prefix, "speed": speed,
            "planner": opts.planner, "robots": len(sc.robots),
            "fleet": [r.name for r in sc.robots],
            "wall_s": round(time.monotonic() - started, 3), "error": error}
    summary = write_report(folder, events, results, meta, [r.name for r in sc.robots])
    passed = error is None and bool(summary["passed"] or not sc.expect)
    return RunResult(passed, results, folder, summary, error)


def _clean(folder: Path) -> None:
    """Remove an earlier run's outputs: a reused store would answer with the old world."""
    for name in REPORT_FILES:
        target = folder / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


async def _run(path: Path, sc: Scenario, speed: float, url: str, folder: Path, opts: RunOptions,
               observer: Observer) -> list[ExpectResult]:
    robots = [r.name for r in sc.robots]
    cfg = fleet.FleetConfig(sc.robots, path.resolve(), folder / "store", opts.planner, 1.0 / speed,
                            base_dir=path.resolve().parent, prefix=opts.prefix)
    fleet.agent_commands(url, cfg)  # resolve every profile before starting anything
    async with Supervisor(folder / "logs", env={"ROBOBUS_PREFIX": opts.prefix}) as sup:
        await fleet.ensure_bus(url, sup)
        async with Bus.connect(url, name="scenario", options=BusOptions(prefix=opts.prefix)) as bus:
            await fleet.clear_retained(bus, robots)
            page = await _dashboard(sup, url, opts)
            script = Script(bus, sc, observer, sup, speed, opts.view, opts.planner)
            opts.view.attach(observer, f"{sc.name} on {url} at speed {speed:g}")
            try:
                async with anyio.create_task_group() as tg:
                    await tg.start(_record, bus, observer, script.ready)
                    tg.start_soon(_refresh, opts.view, name="view-refresh")
                    await fleet.start_agents(sup, bus, url, cfg)
                    results = await script.run()
                    tg.cancel_scope.cancel()
            finally:
                opts.view.close()
            if page:
                await _hold(page, opts)
            await fleet.stop_agents(sup)
            await fleet.clear_retained(bus, robots)  # nobody left to mistake the empties
    return results


async def _dashboard(sup: Supervisor, url: str, opts: RunOptions) -> str | None:
    """Before the agents start (so the page shows them arrive); its URL is announced."""
    if opts.dashboard is None:
        return None
    from robobus.launch.up import start_dashboard

    page = await start_dashboard(sup, url, opts.prefix, opts.dashboard)
    opts.announce(f"dashboard: {page}")
    return page


async def _hold(page: str, opts: RunOptions) -> None:
    """Keep the fleet and its dashboard up ``hold_s`` more seconds; Ctrl-C ends the wait,
    not the run, so the report is still written."""
    if opts.hold_s <= 0:
        return
    opts.announce(f"dashboard stays up {opts.hold_s:g} s more at {page} (Ctrl-C ends it)")
    with anyio.move_on_after(opts.hold_s), anyio.open_signal_receiver(signal.SIGINT) as signals:
        async for _ in signals:
            break


async def _record(bus: Bus, observer: Observer, ready: fleet.Readiness, *,
                  task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """Record every message under the prefix (except request inboxes)."""
    inbox = bus.topic("_inbox")
    async with bus.subscribe(bus.topic("#"), maxsize=100_000) as sub:
        task_status.started()
        async for msg in sub:
            if msg.topic.startswith(inbox) or not msg.payload:
                continue
            ev = observer.ingest(msg.topic, msg.payload, msg.retain)
            ready.saw(ev.type, ev.data)


async def _refresh(view: View) -> None:
    while True:  # a display refresh rate, not a readiness poll
        view.refresh()
        await anyio.sleep(0.25)


class Script:
    """Plays the scenario's instructions and faults against a ready fleet, then judges it."""

    def __init__(self, bus: Bus, sc: Scenario, observer: Observer, sup: Supervisor, speed: float,
                 view: View, planner: str = "symbolic") -> None:
        self.bus, self.sc, self.observer, self.sup = bus, sc, observer, sup
        self.speed, self.view, self.planner = speed, view, planner
        self.ready = fleet.Readiness([r.name for r in sc.robots], time.time_ns())
        self.pending = len(sc.instructions) + sum(f.at is not None for f in sc.faults)
        self._tg: anyio.abc.TaskGroup | None = None

    async def run(self) -> list[ExpectResult]:
        await fleet.wait_ready(self.bus, self.ready, fleet.ready_timeout(len(self.sc.robots)),
                               fleet.brain_boot_s(self.planner))
        fleet.edges_may_die(self.sup)
        self.observer.add(marker("ready"))
        self.t0 = anyio.current_time()
        async with anyio.create_task_group() as tg:
            self._tg = tg
            for i in range(len(self.sc.instructions)):
                tg.start_soon(self._instruction, i, name=f"instruction:{i}")
            for fault in self.sc.faults:
                if fault.at is not None:
                    tg.start_soon(self._timed_fault, fault, name="fault")
                else:
                    self._arm_trigger(fault)
            results = await self._judge()
            tg.cancel_scope.cancel()
        return results

    async def _at(self, scenario_t: float) -> None:
        await anyio.sleep_until(self.t0 + scenario_t / self.speed)

    async def _instruction(self, index: int) -> None:
        spec = self.sc.instructions[index]
        await self._at(spec.at)
        tid = self.sc.task_id(index)
        inst = Instruction(spec.text, priority=spec.priority, task_id=tid, source="scenario",
                           origin=spec.origin)
        self.observer.task(tid).text = spec.text
        self.observer.add(marker("instruction", task_id=tid, text=spec.text,
                                 priority=spec.priority, ts_ns=inst.ts_ns))
        self.pending -= 1
        for attempt in range(3):
            await self.bus.publish(instructions_topic(self.bus.url, self.bus.options.prefix),
                                   inst, qos=1)  # a secured bus: its account's own topic
            with anyio.move_on_after(RESEND_AFTER_S):
                while self.observer.tasks[tid].status == "sent":
                    await self.observer.wait_change(RESEND_AFTER_S)
                return
            log.warning("instruction_unacknowledged", task=tid, attempt=attempt + 1)

    async def _timed_fault(self, fault: FaultEntry) -> None:
        await self._at(fault.at or 0.0)
        await self._fire(fault)
        self.pending -= 1

    def _arm_trigger(self, fault: FaultEntry) -> None:
        on, seen = fault.when, [0]
        assert on is not None

        def listener(fb: SkillFeedback) -> None:
            if fb.robot != on.robot or fb.status != on.status or (on.skill and fb.skill != on.skill):
                return
            seen[0] += 1
            if seen[0] == on.count and self._tg is not None:
                self._tg.start_soon(self._fire, fault, name="triggered-fault")

        self.observer.listeners.append(listener)

    async def _fire(self, fault: FaultEntry) -> None:
        if fault.kill is not None:
            self.sup.kill(f"edge-{fault.kill}")
            label = "kill -9"
        elif fault.restart is not None:
            label = await self._restart(fault.restart.process, fault.restart.down_s)
        else:
            fs = fault.fail_skill
            assert fs is not None
            spec = FaultSpec(fs.skill, times=fs.times, object=fs.object,
                             probability=fs.probability, seed=fs.seed)
            await self.bus.publish(self.bus.topic("robots", fs.robot, "faults"), spec, qos=1)
            label = f"fail {fs.skill}{' ' + fs.object if fs.object else ''} x{fs.times}"
        kind = "kill" if fault.kill else "restart" if fault.restart else "fail_skill"
        self.observer.add(marker("fault", fault=kind,
                                 robot=fault.robot, label=label))
        self.view.note(f"fault: {fault.robot} {label}")

    async def _restart(self, process: str, down_s: float) -> str:
        """kill -9 a component, then start it again with the same command."""
        name = {"broker": "mosquitto"}.get(process, process)
        if name not in self.sup.procs:
            name = f"edge-{process}"
        if name not in self.sup.procs:
            raise LaunchError(f"cannot restart {process!r}: the runner did not start it "
                                "(an external hub or broker cannot be restarted)")
        self.sup.kill(name)
        self.view.note(f"fault: kill -9 {process}, restart in {down_s:g}s")
        await anyio.sleep(down_s / self.speed)
        await self.sup.restart(name)
        return f"restart after {down_s:g}s"

    def _settled(self) -> bool:
        tasks = [self.observer.tasks.get(self.sc.task_id(i)) for i in range(len(self.sc.instructions))]
        return self.pending == 0 and all(t is not None and t.status in FINAL for t in tasks)

    async def _judge(self) -> list[ExpectResult]:
        """Watch the bus until every task has ended (or the deadline), then ask memory; while
        memory catches up with the last events, ask again for up to SETTLE_S."""
        deadline = self.t0 + self.sc.timeout_s / self.speed + GRACE_S
        settled_at: float | None = None
        while True:
            while not self._settled() and anyio.current_time() < deadline:
                await self.observer.wait_change(0.5)
            results = await evaluate(self.bus, self.sc, self.observer)
            now = anyio.current_time()
            if all(r.ok for r in results):
                return results
            if now >= deadline:
                return [r if r.ok else ExpectResult(r.expect, False, f"timeout: {r.reason}")
                        for r in results]
            settled_at = settled_at or now
            if now - settled_at > SETTLE_S:
                return results
            await anyio.sleep(0.1)
