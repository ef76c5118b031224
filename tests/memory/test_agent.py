"""The memory agent in-process on memory://: views, world changes, queries on every path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from robobus import memory_store
from robobus.memory_store.store import rebuild_world
from robobus.schemas.memory import MemoryQuery
from robobus.schemas.messages import (
    Alive,
    ErrorReport,
    Pose,
    RobotRegistration,
    RobotState,
    SkillFeedback,
    TaskStatus,
)
from robobus.schemas.world import WorldChange, WorldReply

pytestmark = pytest.mark.anyio

PROFILE = {"type": "unitree_g1", "mobile": True, "hands": 1, "speed": 1.0, "start": "kitchenTable"}


async def _change(run: Any, **fields: Any) -> WorldReply:
    msg = await run.client.request(run.topics.world_change, WorldChange(**fields), timeout=5)
    return msgspec.msgpack.decode(msg.payload, type=WorldReply)


async def _register(run: Any, robot: str, start: str = "kitchenTable") -> None:
    t = run.topics
    reg = RobotRegistration(robot=robot, type="unitree_g1", profile={**PROFILE, "start": start})
    await run.client.publish(t.registration(robot), reg, retain=True, qos=1)
    await run.client.publish(t.alive(robot), Alive(robot=robot, online=True), retain=True, qos=1)


async def _populate(run: Any) -> None:
    """Two robots, a few world changes (one refused), state, feedback and task messages."""
    t = run.topics
    async with run.client.subscribe(t.world_events) as events:
        await _register(run, "g1")
        await _register(run, "g2")
        for _ in range(2):  # add_robot for g1 and g2
            with anyio.fail_after(5):
                await events.get()
    await run.client.publish(t.state("g1"), RobotState(robot="g1", pose=Pose(x=2.0, y=1.0),
                                                       place="kitchenTable", battery=0.8))
    await run.client.publish(t.feedback("g1"), SkillFeedback(command_id="c1", robot="g1",
                                                             skill="pick", status="done"))
    assert (await _change(run, op="pick", robot="g1", object="apple")).ok
    await run.client.publish(t.task("T1"), TaskStatus(task_id="T1", status="accepted",
                                                      text="bring the apple", priority=2))
    await run.client.publish(t.task("T1"), TaskStatus(task_id="T1", status="planned"))
    await run.client.publish(t.task("T1"), TaskStatus(task_id="T1", status="step_done",
                                                      step_id="s1"))
    # statuses follow the task state machine (schemas/tasks.py): a task is accepted first
    await run.client.publish(t.task("T2"), TaskStatus(task_id="T2", status="accepted", text="x"))
    await run.client.publish(t.task("T2"), TaskStatus(task_id="T2", status="done", text="x"))
    assert (await _change(run, op="move", robot="g1", target="officeDesk")).ok
    assert (await _change(run, op="place", robot="g1", object="apple", target="officeDesk")).ok
    await run.client.publish(t.alive("g2"), Alive(robot="g2", online=False), retain=True)


async def test_conflicting_claims_are_refused_with_reason_and_error_report(
        tmp_path: Path, prefix: str, scene_file: Path, start_agent: Any) -> None:
    async with start_agent(tmp_path / "store", prefix, scene_file) as run:
        async with run.client.subscribe(run.topics.world_events) as events:
            await _register(run, "g1")
            await _register(run, "g2")
            for _ in range(2):
                with anyio.fail_after(5):
                    await events.get()
        async with run.client.subscribe(run.topics.errors, ErrorReport) as errors:
            assert (await _change(run, op="pick", robot="g1", object="apple")).ok
            second = await _change(run, op="pick", robot="g2", object="apple")
            assert not second.ok and second.code == "already_held"
            assert second.reason == "'apple' is already held by 'g1'"
            with anyio.fail_after(5):
                report = (await errors.get()).data
            assert report.code == "already_held" and "already held" in report.reason
            away = await _change(run, op="place", robot="g1", object="apple", target="shelf")
            assert not away.ok and away.code == "not_colocated"
            assert "'shelf' is at 'shelf', robot 'g1' is at 'kitchenTable'" in (away.reason or "")
            odd = await _change(run, op="add_robot", robot="g3", data={"hands": "two"})
            assert not odd.ok and odd.code == "invalid" and "two" in (odd.reason or "")
            bad = await run.client.request(run.topics.world_change, b"\x93nonsense", timeout=5)
            reply = msgspec.msgpack.decode(bad.payload, type=WorldReply)
            assert not reply.ok and reply.code == "malformed"


async def test_queries_over_the_bus_and_locally_agree(tmp_path: Path, prefix: str,
                                                      scene_file: Path, start_agent: Any) -> None:
    store = tmp_path / "store"
    async with start_agent(store, prefix, scene_file) as run:
        await _populate(run)
        where = await run.query(kind="where", name="apple")
        assert where.ok and where.result["place"] == "officeDesk"
        assert where.result["location"] == "officeDesk"
        assert (await run.query(kind="where", name="pear")).result["place"] == "kitchenTable"
        assert (await run.query(kind="contents", name="basket")).result == ["pear"]
        assert (await run.query(kind="contents", name="officeDesk")).result == ["apple", "knife"]
        near = await run.query(kind="nearest", of_kind="fruit", to="g2", k=2)
        assert near.result == ["pear", "banana"]  # g2 is at kitchenTable with the basket
        robot = await run.query(kind="robot", name="g1")
        assert robot.result["state"]["battery"] == 0.8
        assert robot.result["feedback"]["status"] == "done"
        assert robot.result["place"] == "officeDesk" and robot.result["holding"] == []
        assert robot.result["alive"] is True
        robots = await run.query(kind="robots")
        assert sorted(robots.result) == ["g1", "g2"] and robots.result["g2"]["alive"] is False
        task = await run.query(kind="task", name="T1")
        assert task.result["text"] == "bring the apple" and task.result["status"] == "step_done"
        assert task.result["steps"] == {"s1": "step_done"}
        active = await run.query(kind="tasks", status="active")
        assert [r["task_id"] for r in active.result] == ["T1"]
        assert len((await run.query(kind="tasks")).result) == 2
        world = await run.query(kind="world")
        assert world.result["objects"]["apple"]["location"] == "officeDesk"
        bus_answers = {k: (await run.query(**q)).result for k, q in _LOCAL_QUERIES.items()}
        live_world = world.result
    with memory_store.open(store, readonly=True) as ro:
        for key, q in _LOCAL_QUERIES.items():
            local = ro.query(MemoryQuery(**q))
            assert local.ok, (key, local.error)
            assert _wire(local.result) == bus_answers[key], key
        assert _wire(ro.world().snapshot()) == live_world


def _wire(value: Any) -> Any:
    """``value`` as a bus client sees it (msgpack round trip)."""
    return msgspec.msgpack.decode(msgspec.msgpack.encode(value))


_LOCAL_QUERIES: dict[str, dict[str, Any]] = {
    "where": {"kind": "where", "name": "apple"},
    "contents": {"kind": "contents", "name": "basket"},
    "nearest": {"kind": "nearest", "of_kind": "fruit", "to": "shelf", "k": 3},
    "robot": {"kind": "robot", "name": "g1"},
    "robots": {"kind": "robots"},
    "task": {"kind": "task", "name": "T1"},
    "tasks": {"kind": "tasks", "status": "all"},
    "world": {"kind": "world"},
}


async def test_events_query_paginates_by_topic_pattern(tmp_path: Path, prefix: str,
                                                       start_agent: Any) -> None:
    async with start_agent(tmp_path / "store", prefix) as run:
        for i in range(25):
            await run.client.publish(f"{prefix}/robots/r{i % 2}/telemetry", b"%d" % i)
        pattern = f"{prefix}/robots/r1/telemetry"
        seen: list[bytes] = []
        cursor = None
        while True:
            page = await run.query(kind="events", pattern=pattern, limit=5, cursor=cursor)
            assert page.ok, page.error
            seen += [ev["payload"] for ev in page.result["events"]]
            assert all(ev["topic"] == pattern for ev in page.result["events"])
            cursor = page.next_cursor
            if cursor is None:
                break
        assert seen == [b"%d" % i for i in range(1, 25, 2)]
        wild = await run.query(kind="events", pattern=f"{prefix}/robots/+/telemetry", limit=100)
        assert len(wild.result["events"]) == 25
        first = wild.result["events"][3]
        window = await run.query(kind="events", pattern=f"{prefix}/robots/#",
                                 t0_ns=first["ts_ns"], t1_ns=first["ts_ns"], limit=10)
        assert first in window.result["events"]


@pytest.mark.parametrize(("payload", "code", "needle"), [
    (b"\xc1\xc1", "malformed", "not msgpack"),
    ({"kind": "teleport"}, "malformed", "$.kind"),
    ({"kind": "where"}, "missing_field", "query 'where' needs 'name'"),
    ({"kind": "where", "name": "unicorn"}, "unknown", "unknown object, place or robot 'unicorn'"),
    ({"kind": "nearest", "of_kind": "fruit", "to": "g9"}, "unknown", "'g9'"),
    ({"kind": "nearest", "of_kind": "fruit", "to": "shelf", "k": 0}, "invalid", "k must be"),
    ({"kind": "events", "limit": 0}, "invalid", "limit must be between 1 and 10000, got 0"),
    ({"kind": "events", "pattern": "a/#/b"}, "bad_pattern", "'#' must be a whole, final level"),
    ({"kind": "events", "cursor": "zz"}, "bad_cursor", "not hex"),
    ({"kind": "events", "t0_ns": 5, "t1_ns": 1}, "invalid", "bad time range"),
    ({"kind": "task", "name": "nope"}, "unknown", "unknown task 'nope'"),
    ({"kind": "robot", "name": "nobody"}, "unknown", "unknown robot 'nobody'"),
])
async def test_malformed_queries_get_precise_errors(tmp_path: Path, prefix: str,
                                                    scene_file: Path, start_agent: Any,
                                                    payload: Any, code: str,
                                                    needle: str) -> None:
    async with start_agent(tmp_path / "store", prefix, scene_file) as run:
        reply = await run.raw_query(payload)
        assert not reply.ok and reply.code == code
        assert needle in (reply.error or ""), reply.error


async def test_replaying_the_log_rebuilds_the_same_spatial_memory(
        tmp_path: Path, prefix: str, scene_file: Path, start_agent: Any) -> None:
    store = tmp_path / "store"
    async with start_agent(store, prefix, scene_file) as run:
        await _populate(run)
        live = (await run.query(kind="world")).result
    from robobus.schemas.topics import Topics
    from robobus.schemas.world import WorldSnapshot

    rebuilt = rebuild_world(store, Topics(prefix))
    assert rebuilt.snapshot() == msgspec.convert(live, WorldSnapshot)
    assert rebuilt.robots["g2"].alive is False and rebuilt.objects["apple"].location == \
        "officeDesk"
    # and a restarted agent carries on from the same memory
    async with start_agent(store, prefix, scene_file) as run:
        assert (await run.query(kind="world")).result == live


async def test_restart_keeps_task_memory_for_a_recovering_brain(
        tmp_path: Path, prefix: str, scene_file: Path, start_agent: Any) -> None:
    store = tmp_path / "store"
    async with start_agent(store, prefix, scene_file) as run:
        await _populate(run)
    async with start_agent(store, prefix, scene_file) as run:
        active = await run.query(kind="tasks", status="active")
        assert [r["task_id"] for r in active.result] == ["T1"]


async def test_agent_records_and_answers_on_every_backend(tmp_path: Path, prefix: str,
                                                          scene_file: Path, start_agent: Any,
                                                          bus_url: str) -> None:
    async with start_agent(tmp_path / "store", prefix, scene_file, url=bus_url) as run:
        await _register(run, "g1")
        for i in range(20):
            await run.client.publish(f"{prefix}/robots/g1/state",
                                     RobotState(robot="g1", battery=i / 20), qos=1)
        robot = await run.query(kind="robot", name="g1")
        assert robot.ok and robot.result["place"] == "kitchenTable"
        assert robot.result["state"]["battery"] == 19 / 20
        page = await run.query(kind="events", pattern=f"{prefix}/robots/g1/state", limit=100)
        batteries = [msgspec.msgpack.decode(ev["payload"], type=RobotState).battery
                     for ev in page.result["events"]]
        assert batteries == [i / 20 for i in range(20)]


READER = """
import sys, memory_store
store = memory_store.open(sys.argv[1], readonly=True)
for line in sys.stdin:
    print(sum(1 for _ in store.scan(pattern=line.strip())), flush=True)
"""


async def test_reader_process_sees_what_the_agent_writes(tmp_path: Path, prefix: str,
                                                         start_agent: Any) -> None:
    import subprocess
    import sys

    store = tmp_path / "store"
    topic = f"{prefix}/robots/g1/telemetry"
    async with start_agent(store, prefix) as run:
        reader = subprocess.Popen([sys.executable, "-c", READER, str(store)], text=True,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            assert reader.stdin is not None and reader.stdout is not None
            for round_ in range(1, 4):
                for i in range(50):
                    await run.client.publish(topic, b"%d" % i)
                # an events query answers once what the agent received before it is committed
                assert (await run.query(kind="events", pattern=topic, limit=1)).ok
                reader.stdin.write(topic + "\n")
                reader.stdin.flush()
                line = await anyio.to_thread.run_sync(reader.stdout.readline)
                assert int(line) == 50 * round_
        finally:
            reader.kill()
            reader.wait(5)
