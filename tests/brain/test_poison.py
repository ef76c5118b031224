"""Single hostile messages must not hurt the brain (issue 13).

Each message is sent the way a user would (``mosquitto_pub`` to a real Mosquitto; the brain
and the memory and edge agents are OS processes). The brain must answer it with one report on
``P/errors``, stay alive, come up again after its own restart (retained poison included), and
still complete a fresh valid instruction.

* A retained registration with ``hands: "two"``, ``start: [1, 2]`` or ``speed: "fast"``
  crashed the brain on every start.
* A JSON instruction with an integer beyond 64 bits or a lone surrogate was accepted, and the
  brain died encoding its own ``accepted``.
* A forged active task record with ``replans`` at 2**64-1 killed every brain that resumed it.
* Any handler or background task that raised ended the brain (the guard, in-process).
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import msgspec
import pytest

from bench import scenes
from robobus.brain_agent import scheduler as scheduler_mod
from robobus.brain_agent.agent import run as run_brain
from robobus.brain_agent.config import BrainConfig
from robobus.brain_agent.fleet import query_memory
from robobus.brain_agent.tasks import StatusPublisher, Task
from robobus.bus import Bus, BusOptions, Message
from robobus.schemas.memory import MemoryQuery, QueryReply
from robobus.schemas.messages import (
    Alive,
    BrainStatus,
    ErrorReport,
    Instruction,
    SkillFeedback,
    TaskStatus,
)
from robobus.schemas.topics import Topics
from robobus.schemas.world import World
from tests.brain.test_processes import Fleet

pytestmark = pytest.mark.anyio
APPLE = "bring the apple to the office desk"
ROBOT = scenes.DEMO_ROBOTS[0]  # realman_1: mobile, one hand
FINAL = frozenset({"done", "failed", "cancelled"})


class Rig(Fleet):
    """Agent processes under one topic prefix (test_processes' Fleet, one robot), and what the
    tester saw of them: error reports, task statuses and the brain's status."""

    def __init__(self, tmp: Path, url: str, stack: contextlib.ExitStack) -> None:
        super().__init__(tmp, url, scenes.DEMO_SCENE, [ROBOT], stack)
        self.errors: list[ErrorReport] = []
        self.ready: list[BrainStatus] = []

    def start_edge(self) -> None:  # the rig has one robot: ROBOT
        super().start_edge(ROBOT)

    async def restart_brain(self) -> int:
        """``kill -9`` the brain and start a new one; returns the restart's wall clock."""
        self.kill9("brain")
        restarted = time.time_ns()
        self.start_brain()
        return restarted

    def alive(self, *names: str) -> None:
        for name in names:
            assert self.procs[name].poll() is None, f"{name} died ({self.tmp / 'logs'})"

    # -- watching ----------------------------------------------------------------------------
    async def watch(self, bus: Bus, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        t = self.topics
        async with bus.subscribe(t.errors, ErrorReport) as errors, \
                bus.subscribe(t.task(), TaskStatus) as tasks, \
                bus.subscribe(t.brain_status, BrainStatus) as status, \
                anyio.create_task_group() as tg:
            task_status.started()
            tg.start_soon(self._pump, errors, lambda m: self.errors.append(m.data))
            tg.start_soon(self._pump, status, lambda m: self.ready.append(m.data))
            await self._pump(tasks, lambda m: self.statuses.setdefault(m.data.task_id, []).append(m.data))

    async def until(self, predicate: Any, timeout: float = 30.0) -> Any:
        return await super().until(predicate, timeout)

    async def brain_ready(self, after_ns: int = 0) -> None:
        await self.until(lambda: any(s.ts_ns > after_ns and s.state == "ready" for s in self.ready))

    def reports(self, topic: str, source: str = "brain", code: str | None = None
                ) -> list[ErrorReport]:
        return [r for r in self.errors if r.source == source and r.topic == topic
                and (code is None or r.code == code)]

    def seen(self, task_id: str) -> list[str]:
        return [s.status for s in self.statuses.get(task_id, [])]

    # -- sending ---------------------------------------------------------------------------
    async def pub(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """``mosquitto_pub`` the payload (from stdin), as a user would."""
        url = urlsplit(self.url)
        argv = ["mosquitto_pub", "-h", url.hostname or "127.0.0.1", "-p", str(url.port),
                "-q", "1", "-t", topic, "-s"] + (["-r"] if retain else [])
        await anyio.run_process(argv, input=payload)

    async def instruct(self, bus: Bus, text: str, *, until: frozenset[str] = FINAL,
                       timeout: float = 40.0) -> str:
        """Send a fresh instruction (again until accepted) and wait for one of ``until``."""
        tid = secrets.token_hex(3)
        with anyio.fail_after(timeout):
            while tid not in self.statuses:
                await bus.publish(self.topics.instructions, Instruction(text, task_id=tid), qos=1)
                with anyio.move_on_after(0.5):
                    await self.until(lambda: tid in self.statuses)
            await self.until(lambda: until & set(self.seen(tid)))
        return tid


@contextlib.asynccontextmanager
async def rig(tmp: Path, url: str) -> AsyncIterator[tuple[Rig, Bus]]:
    with contextlib.ExitStack() as stack:
        r = Rig(tmp, url, stack)
        async with Bus.connect(url, name="tester", options=BusOptions(prefix=r.prefix)) as bus, \
                anyio.create_task_group() as tg:
            await tg.start(r.watch, bus)
            yield r, bus
            tg.cancel_scope.cancel()


def registration(robot: str, **profile: Any) -> bytes:
    body = {"mobile": True, "hands": 1, "speed": 1.0, "start": "kitchenTable", **profile}
    return msgspec.msgpack.encode({"robot": robot, "type": "test_bot", "profile": body})


POISON_REGISTRATIONS = {"bad_hands": {"hands": "two"}, "bad_start": {"start": [1, 2]},
                        "bad_speed": {"speed": "fast"}}
POISON_INSTRUCTIONS = {  # raw JSON, as typed on a command line: field -> payload
    "priority": f'{{"text": "{APPLE}", "priority": {10**40}, "task_id": "big"}}',
    "UTF-8": f'{{"text": "{APPLE} \\ud800", "task_id": "surrogate"}}',
    "ts_ns": f'{{"text": "{APPLE}", "ts_ns": {10**30}, "task_id": "late"}}',
}


@pytest.mark.broker
async def test_poison_registrations_instructions_and_statuses(tmp_path: Path,
                                                              mosquitto_url: str) -> None:
    async with rig(tmp_path, mosquitto_url) as (r, bus):
        r.start_memory()
        r.start_edge()
        r.spawn("brain", "brain")
        await r.brain_ready()
        t = r.topics
        for robot, bad in POISON_REGISTRATIONS.items():
            await r.pub(t.registration(robot), registration(robot, **bad), retain=True)
        for payload in POISON_INSTRUCTIONS.values():
            await r.pub(t.instructions, payload.encode())
        forged = {"task_id": "forged", "status": "replanning", "text": APPLE,
                  "replans": 2**64 - 1}
        await r.pub(t.task("forged"), msgspec.msgpack.encode(forged))

        await r.until(lambda: all(r.reports(t.registration(robot)) for robot in POISON_REGISTRATIONS)
                      and len(r.reports(t.instructions)) >= len(POISON_INSTRUCTIONS)
                      and r.reports(t.task("forged"), source="memory"))
        for robot, bad in POISON_REGISTRATIONS.items():
            [report] = r.reports(t.registration(robot))  # one clear report per message
            assert report.code == "decode" and next(iter(bad)) in report.reason, report
        reasons = [rep.reason for rep in r.reports(t.instructions, code="decode")]
        assert len(reasons) == len(POISON_INSTRUCTIONS), reasons
        for field in POISON_INSTRUCTIONS:
            assert any(field in reason for reason in reasons), (field, reasons)
        assert "replans" in r.reports(t.task("forged"), source="memory")[0].reason
        r.alive("brain", "memory", ROBOT["name"])

        restarted = await r.restart_brain()  # the retained registrations come again
        await r.brain_ready(restarted)
        await r.until(lambda: all(len(r.reports(t.registration(robot))) >= 2
                                  for robot in POISON_REGISTRATIONS))
        tid = await r.instruct(bus, APPLE)
        assert r.statuses[tid][-1].status == "done", r.statuses[tid][-1].reason
        assert not {"big", "surrogate", "late"} & set(r.statuses)  # never accepted
        stored = await query_memory(bus, t, MemoryQuery(kind="tasks", status="all"), 5.0)
        assert "forged" not in [rec["task_id"] for rec in stored]  # refused, never resumed
        assert not r.reports(t.memory_query)  # nothing bad came back from task memory
        r.alive("brain", "memory", ROBOT["name"])


# -- a bad record already in task memory ------------------------------------------------------
def bad_records() -> list[dict[str, Any]]:
    """Active records out of bounds, as an older store or a tampered one may hold them."""
    return [{"task_id": "forged", "status": "replanning", "text": APPLE, "replans": 2**64 - 1},
            {"task_id": "forged2", "status": "running", "text": APPLE, "priority": -(2**63)}]


async def fake_memory(bus: Bus, topics: Topics, *,
                      task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
    """Answers ``world`` with the demo scene and ``tasks`` with the bad records."""
    world = msgspec.to_builtins(World.from_scene(scenes.DEMO_SCENE).snapshot())
    async with bus.subscribe(topics.memory_query) as sub:
        task_status.started()
        async for msg in sub:
            await bus.reply(msg, _answer(msg, world))


def _answer(msg: Message, world: Any) -> QueryReply:
    query = msgspec.msgpack.decode(msg.payload, type=MemoryQuery)
    if query.kind == "world":
        return QueryReply(ok=True, result=world)
    if query.kind == "tasks":
        return QueryReply(ok=True, result=bad_records())
    return QueryReply(ok=False, error=f"not answered by this test: {query.kind}")


@pytest.mark.broker
async def test_bad_task_record_is_reported_and_skipped_at_boot(tmp_path: Path,
                                                               mosquitto_url: str) -> None:
    async with rig(tmp_path, mosquitto_url) as (r, bus), anyio.create_task_group() as tg:
        await tg.start(fake_memory, bus, r.topics)
        reg = scenes.registration(ROBOT)
        await bus.publish(r.topics.registration(ROBOT["name"]), reg, retain=True, qos=1)
        await bus.publish(r.topics.alive(ROBOT["name"]), Alive(ROBOT["name"], True), retain=True,
                          qos=1)
        restarted = 0
        for boot in (1, 2):  # the first start, then the brain's own restart
            if boot == 1:
                r.spawn("brain", "brain")
            else:
                restarted = await r.restart_brain()
            await r.brain_ready(restarted)
            await r.until(lambda n=2 * boot: len(r.reports(r.topics.memory_query)) >= n)
            reports = r.reports(r.topics.memory_query)
            assert {rep.code for rep in reports} == {"bad_task_record"}
            assert len(reports) == 2 * boot, [rep.reason for rep in reports]
            assert any("forged'" in rep.reason and "replans" in rep.reason for rep in reports)
            assert any("forged2'" in rep.reason and "priority" in rep.reason for rep in reports)
            tid = await r.instruct(bus, APPLE, until=frozenset({"dispatched"}))
            assert "planned" in r.seen(tid)
            assert not {"forged", "forged2"} & set(r.statuses)  # never resumed
            r.alive("brain")
        tg.cancel_scope.cancel()


# -- the guard (in-process: a handler made to fail) -------------------------------------------
@contextlib.asynccontextmanager
async def brain_on_memory_bus() -> AsyncIterator[tuple[Bus, list[ErrorReport],
                                                       dict[str, list[str]]]]:
    url = f"memory://poison-{secrets.token_hex(4)}"
    config = BrainConfig(recover=False, world_wait_s=0.2)  # no memory agent: tasks fail fast
    reports: list[ErrorReport] = []
    statuses: dict[str, list[str]] = {}

    async def collect(sub: Any) -> None:
        async for msg in sub:
            if isinstance(msg.data, ErrorReport):
                reports.append(msg.data)
            else:
                statuses.setdefault(msg.data.task_id, []).append(msg.data.status)

    async with Bus.connect(url, name="brain") as bbus, Bus.connect(url, name="op") as op, \
            op.subscribe(op.topic("errors"), ErrorReport) as errs, \
            op.subscribe(op.topic("tasks", "+"), TaskStatus) as tasks, \
            anyio.create_task_group() as tg:
        tg.start_soon(collect, errs)
        tg.start_soon(collect, tasks)
        await tg.start(run_brain, bbus, config)
        yield op, reports, statuses
        tg.cancel_scope.cancel()


async def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.01)  # reports arrive on other tasks; nothing else to wait on


async def test_a_failing_handler_or_task_is_reported_and_the_brain_goes_on(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def bad_feedback(self: Any, fb: SkillFeedback) -> None:
        raise RuntimeError(f"cannot take {fb.command_id}")

    async def bad_start(self: Any, task: Task) -> None:
        if task.id == "boom":
            raise RuntimeError("planning blew up")
        await original_start(self, task)

    original_start = scheduler_mod.Scheduler.start_task
    monkeypatch.setattr(scheduler_mod.Scheduler, "on_feedback", bad_feedback)
    monkeypatch.setattr(scheduler_mod.Scheduler, "start_task", bad_start)
    async with brain_on_memory_bus() as (op, reports, statuses):
        feedback = op.topic("robots", "r1", "feedback")
        for i in range(2):  # the second one is still handled: the subscription lives on
            await op.publish(feedback, SkillFeedback(f"c{i}", "r1", "pick", "done"))
        await op.publish(op.topic("instructions"), Instruction(APPLE, task_id="boom"))
        await wait_for(lambda: len([r for r in reports if r.topic == feedback]) == 2
                       and any(r.topic == op.topic("tasks", "boom") for r in reports))
        assert {r.code for r in reports} == {"internal_error"}
        assert "cannot take c1" in reports[1].reason
        assert "planning blew up" in [r for r in reports if r.topic.endswith("boom")][0].reason
        await op.publish(op.topic("instructions"), Instruction(APPLE, task_id="after"))
        await wait_for(lambda: "failed" in statuses.get("after", []))  # no world: fails fast
        assert statuses["after"][0] == "accepted"


async def test_a_status_that_cannot_be_encoded_is_reported_and_later_ones_go_out() -> None:
    url = f"memory://poison-{secrets.token_hex(4)}"
    async with Bus.connect(url, name="brain") as bus, Bus.connect(url, name="op") as op, \
            op.subscribe(op.topic("errors"), ErrorReport) as errs, \
            op.subscribe(op.topic("tasks", "+"), TaskStatus) as tasks, \
            anyio.create_task_group() as tg:
        status = StatusPublisher(bus, Topics())
        tg.start_soon(status.run)
        status.emit(Task("huge", APPLE, replans=2**70), "accepted")  # beyond msgpack's 64 bits
        status.emit(Task("fine", APPLE), "accepted")
        with anyio.fail_after(10):
            report = (await errs.get()).data
            sent = (await tasks.get()).data
        assert (report.topic, report.code) == ("robobus/tasks/huge", "internal_error")
        assert sent.task_id == "fine" and status.failures == 1
        tg.cancel_scope.cancel()
