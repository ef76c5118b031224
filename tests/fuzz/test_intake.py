"""Regression tests for what the fuzz found, and the intake limits it relies on (in-process).

* Deeply nested input (a few KiB of ``[[[[...]]]]`` in msgpack or JSON) raised RecursionError
  out of every decoder: it killed the brain (instruction intake), the edge (command loop), the
  memory agent (views and queries) and the scenario runner's observer.
* An instruction's ``task_id`` with topic syntax in it, or a replayed one, was dropped silently.
* A robot topic whose payload names another robot let one robot speak for another.
* The brain's instruction intake and the edges' command intake had no per-sender rate limit.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import msgspec
import pytest

from bench import scenes
from robobus.brain_agent.agent import run as run_brain
from robobus.brain_agent.config import BrainConfig
from robobus.bus import Bus, DecodeError, RateLimit
from robobus.edge_agent.agent import EdgeAgent, EdgeConfig
from robobus.edge_agent.profile import parse_profile
from robobus.launch.observe import decode as observe_decode
from robobus.memory_store.errors import QueryError
from robobus.memory_store.query import parse as parse_query
from robobus.memory_store.views import Views
from robobus.schemas.codec import decode_as, decode_object, parse_instruction
from robobus.schemas.memory import TaskRecord
from robobus.schemas.messages import (
    Alive,
    ErrorReport,
    Instruction,
    RobotRegistration,
    SkillFeedback,
    TaskStatus,
)
from robobus.schemas.topics import Topics
from robobus.schemas.world import WorldEvent

DEEP_MSGPACK = b"\x91" * 100_000 + b"\x01"
DEEP_JSON = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
DEEP_FIELD = b"\x82\xa4kind\xa5world\xa1z" + DEEP_MSGPACK  # nesting inside an ignored field


@pytest.mark.parametrize("type_", [Alive, SkillFeedback, RobotRegistration, WorldEvent, dict])
def test_deep_msgpack_is_a_decode_error(type_: type) -> None:
    with pytest.raises(DecodeError, match="nest"):
        decode_as(b"\x81\xa1z" + DEEP_MSGPACK, type_, "t")  # skipped unknown field


@pytest.mark.parametrize("payload", [DEEP_JSON, b"\x81\xa4text" + DEEP_MSGPACK])
def test_deep_instruction_is_a_decode_error(payload: bytes) -> None:
    with pytest.raises(DecodeError):
        parse_instruction(payload)


@pytest.mark.parametrize("payload", [DEEP_JSON, DEEP_MSGPACK])
def test_deep_command_is_a_decode_error(payload: bytes) -> None:
    with pytest.raises(DecodeError, match="nested too deep"):
        decode_object(payload, "robobus/robots/g1/skills/pick")


def test_deep_query_is_refused_and_observer_survives() -> None:
    with pytest.raises(QueryError, match="nested too deep"):
        parse_query(DEEP_FIELD)
    assert observe_decode(Topics(), "robobus/other", DEEP_MSGPACK)[0] == "Raw"


def test_views_refuse_a_payload_naming_another_robot() -> None:
    views = Views()
    payload = msgspec.msgpack.encode(Alive(robot="g1", online=False))
    [rejected] = views.observe("robobus/robots/r2/alive", payload, 1)
    assert rejected.code == "robot_mismatch"  # type: ignore[union-attr]
    assert views.observe("robobus/robots/g1/alive", payload, 2) == []


# -- agents on an in-memory bus --------------------------------------------------------------
@asynccontextmanager
async def errors_of(bus: Bus) -> AsyncIterator[list[ErrorReport]]:
    reports: list[ErrorReport] = []

    async def collect(*, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        async with bus.subscribe(bus.topic("errors"), ErrorReport) as sub:
            task_status.started()
            async for msg in sub:
                reports.append(msg.data)

    async with anyio.create_task_group() as tg:
        await tg.start(collect)
        yield reports
        tg.cancel_scope.cancel()


async def until(reports: list[ErrorReport], code: str, n: int = 1, timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while sum(r.code == code for r in reports) < n:
            await anyio.sleep(0.01)  # reports arrive on another task; nothing else to wait on


@pytest.mark.anyio
async def test_brain_refuses_bad_and_replayed_task_ids_and_floods() -> None:
    url = f"memory://fz-{secrets.token_hex(4)}"
    config = BrainConfig(recover=False, world_wait_s=0.2,  # no memory agent: tasks fail fast
                         instruction_rate_limit=RateLimit(rate=5, burst=10))
    async with Bus.connect(url, name="brain") as bbus, Bus.connect(url, name="op") as op, \
            errors_of(op) as reports, anyio.create_task_group() as tg:
        await tg.start(run_brain, bbus, config)
        inst = op.topic("instructions")
        for tid in ("a/b", "+", "x" * 200):
            await op.publish(inst, Instruction("zq", task_id=tid))
        await until(reports, "bad_task_id", 3)
        await op.publish(inst, Instruction("zq", task_id="once"))
        await op.publish(inst, Instruction("zq again", task_id="once"))
        await until(reports, "duplicate_task")
        wrong = msgspec.msgpack.encode(Alive(robot="g1", online=False))
        await op.publish(op.topic("robots", "r2", "alive"), wrong)
        await until(reports, "robot_mismatch")
        for i in range(30):
            await op.publish(inst, f"zqflood {i}")
        await until(reports, "rate_limited")
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_edge_refuses_command_floods(tmp_path: Any) -> None:
    profile = parse_profile({"name": "bot", "type": "t", "embodiment": {"mobile": False, "arms": 1},
                             "start": "kitchenTable", "telemetry_hz": 5,
                             "skills": {"detect": {"duration_s": 0.2}}}, "test")
    config = EdgeConfig(profile, resume_timeout_s=0.05, command_rate_limit=RateLimit(5, burst=10))
    url = f"memory://fz-{secrets.token_hex(4)}"
    async with Bus.connect(url, name="bot") as ebus, Bus.connect(url, name="brain") as op, \
            errors_of(op) as reports, anyio.create_task_group() as tg:
        await tg.start(EdgeAgent(ebus, config).serve)
        await op.publish(op.topic("robots", "bot", "skills", "fly"), DEEP_JSON)
        await until(reports, "decode")
        for i in range(40):
            await op.publish(op.topic("robots", "bot", "skills", "fly"), {"command_id": f"c{i}"})
        await until(reports, "rate_limited")
        await until(reports, "unknown_skill", 9)
        tg.cancel_scope.cancel()


# -- issue 13: values an agent could not encode back, or cannot use ----------------------------
BIG = str(10**40).encode()


@pytest.mark.parametrize(("payload", "field"), [
    (b'{"text": "bring the apple", "priority": ' + BIG + b"}", "priority"),
    (b'{"text": "x", "ts_ns": ' + BIG + b"}", "ts_ns"),
    (b'{"text": "bring the apple \\ud800"}', "text is not valid UTF-8"),
    (b'{"text": "x", "task_id": "\\udfff"}', "task_id is not valid UTF-8"),
    (msgspec.msgpack.encode({"text": "x", "priority": 2**64 - 1}), "priority"),
])
def test_instruction_values_that_cannot_be_encoded_back_are_refused(payload: bytes,
                                                                    field: str) -> None:
    with pytest.raises(DecodeError, match=field):
        parse_instruction(payload, "robobus/instructions")


@pytest.mark.parametrize("profile", [
    {"hands": "two"}, {"start": [1, 2]}, {"speed": "fast"}, {"speed": float("nan")},
    {"speed": 1e9}, {"hands": -1}, {"position": [0.0, float("inf")]},
    {"durations": {"pick": float("inf")}}, {"start": "x" * 200},
])
def test_registration_profile_outside_its_domain_is_refused(profile: dict[str, Any]) -> None:
    payload = msgspec.msgpack.encode({"robot": "r1", "type": "t", "profile": profile})
    with pytest.raises(DecodeError, match=r"invalid profile: .*\$\.profile\."):
        decode_as(payload, RobotRegistration, "robobus/robots/r1/registration")


@pytest.mark.parametrize("reg", [
    {"robot": "x" * 200, "type": "t"}, {"robot": "", "type": "t"},
    {"robot": "r1", "type": "t", "skills": [{"name": "pick", "timeout_s": float("nan")}]},
    {"robot": "r1", "type": "t", "ts_ns": 2**64 - 1},
])
def test_registration_names_timeouts_and_times_are_bounded(reg: dict[str, Any]) -> None:
    with pytest.raises(DecodeError, match="schema violation"):
        decode_as(msgspec.msgpack.encode(reg), RobotRegistration, "t")


def test_edge_style_registrations_still_decode() -> None:
    for spec in scenes.DEMO_ROBOTS + scenes.REASSIGN_ROBOTS:
        reg = scenes.registration(spec)
        assert decode_as(msgspec.msgpack.encode(reg), RobotRegistration, "t") == reg


@pytest.mark.parametrize("field", ["replans", "priority"])
def test_task_counters_are_bounded(field: str) -> None:
    bad = {"task_id": "t1", "status": "replanning", field: 2**64 - 1}
    for type_ in (TaskStatus, TaskRecord):
        with pytest.raises(DecodeError, match=field):
            decode_as(msgspec.msgpack.encode(bad), type_, "robobus/tasks/t1")
