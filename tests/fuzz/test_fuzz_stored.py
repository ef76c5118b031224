"""The contract fuzz over stored data (issue 13 item 6): records of the memory agent's views
(views.mdb) replaced by mutations of themselves, and the log's stored events mutated. The memory
agent, restarted on bad records, reports each one, skips it and answers; scans and queries never
break on a bad event.

Bounded for CI; ``ROBOBUS_FUZZ_SCALE=20`` multiplies every budget for a long run.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import lmdb
import msgspec
import pytest
from hypothesis import strategies as st

from bench.machine import load_file
from robobus import testing
from robobus.bus import RequestTimeout
from robobus.memory_store.headers import Properties, pack
from robobus.memory_store.query import answer
from robobus.memory_store.store import open_store
from robobus.schemas.memory import MemoryQuery
from robobus.schemas.messages import ErrorReport, TaskStatus

HERE = Path(__file__).resolve().parent


def load(name: str) -> ModuleType:
    return load_file(HERE / f"{name}.py", f"robobus_fuzz_{name}")


contract, corpus_mod = load("contract"), load("corpus")
SCALE = contract.SCALE
_roundtrip, _views = contract.roundtrip, contract.seeded_views


# -- stored records -------------------------------------------------------------------------------
@st.composite
def _bad_record(draw: st.DrawFn, raw: bytes) -> bytes:
    try:
        value = msgspec.msgpack.decode(raw)
    except (msgspec.DecodeError, RecursionError):  # already mutated by an earlier round
        value = None
    how = draw(st.sampled_from(["truncate", "swap", "bytes", "deep", "huge"]))
    if how == "truncate" or not isinstance(value, dict) or not value:
        return raw[: draw(st.integers(0, max(0, len(raw) - 1)))]
    key = draw(st.sampled_from(sorted(value, key=str)))
    if how == "swap":
        value[key] = draw(st.one_of(st.text(max_size=3), st.floats(allow_nan=True),
                                    st.lists(st.integers(), max_size=2), st.just(2**64 - 1)))
        return msgspec.msgpack.encode(value)
    if how == "deep":
        return contract.encode({**value, key: contract.Deep(5000)}, "msgpack")
    if how == "huge":
        value[key] = 2**64 - 1
        return msgspec.msgpack.encode(value)
    return draw(st.binary(min_size=1, max_size=40))


@pytest.mark.slow
@pytest.mark.anyio
async def test_memory_agent_reports_and_skips_mutated_stored_records(tmp_path: Path) -> None:
    poison = load_file(HERE.parents[1] / "tests" / "memory" / "test_poison.py", "robobus_poison")
    with testing.hub() as url:
        async with poison.memory_agent(url, tmp_path, f"sr{secrets.token_hex(3)}") as (mem, stack):
            t = mem.topics
            for i in range(6):  # records in every table: tasks, robots, the world, the scene
                await mem.client.publish(t.task(f"T{i}"), TaskStatus(task_id=f"T{i}",
                                                                     status="accepted"), qos=1)
            assert (await mem.change(op="add_object", object="fig", target="shelf")).ok
            await mem.client.publish(t.alive("g1"), msgspec.msgpack.encode(
                {"robot": "g1", "online": True}), qos=1)
            with anyio.fail_after(10):
                while not (await mem.query(kind="task", name="T5")).ok:
                    await anyio.sleep(0.05)
            mutated = 0
            for round_ in range(2 * SCALE):
                bad = await anyio.to_thread.run_sync(_corrupt, mem, stack, round_)
                await _restart_and_check(poison, mem, stack, bad)
                mutated += bad
    print("STORED_FUZZ rounds", 2 * SCALE, "records mutated", mutated)


def _corrupt(mem: Any, stack: Any, round_: int) -> int:
    """Stop the agent, replace some records of every table by mutations; how many changed."""
    stack.close()
    env = lmdb.open(str(mem.store / "views.mdb"), subdir=False, max_dbs=4)
    changed = 0
    try:
        with env.begin(write=True) as txn:
            for name in (b"tasks", b"robots", b"meta"):
                db = env.open_db(name, txn=txn)
                items = [(bytes(k), bytes(v)) for k, v in txn.cursor(db)]
                picks = [kv for kv in items if kv[0] != b"log_position"][: 2 + round_]
                news = corpus_mod.draw_examples(st.tuples(*[_bad_record(v) for _, v in picks]),
                                                1, 9000 + round_)[0] if picks else ()
                for (key, old), new in zip(picks, news, strict=True):
                    if new != old:
                        txn.put(key, new, db=db)
                        changed += 1
    finally:
        env.close()
    return changed


async def _restart_and_check(poison: Any, mem: Any, stack: Any, bad: int) -> None:
    stack.enter_context(poison._process(mem))
    await mem.ready()
    reported = 0
    with anyio.move_on_after(5 if bad else 0.5):
        while reported < 1:
            report: ErrorReport = (await mem.errors.get()).data
            reported += report.code == "bad_record"
    assert mem.alive(), "the memory agent died on its own stored records"
    assert reported or not bad, "mutated stored records were not reported"
    for kind in ("world", "robots", "tasks"):  # still answered, whatever was skipped
        try:
            reply = await mem.query(kind=kind, **({"status": "all"} if kind == "tasks" else {}))
        except RequestTimeout as exc:
            raise AssertionError(f"no answer to {kind} after a restart on bad records") from exc
        assert reply.ok, reply.error
    change = await mem.change(op="add_object", object=f"f{secrets.token_hex(2)}",
                              target="shelf")
    assert change.ok or change.code, change  # applied, or refused with a reason (the place
    assert mem.alive()                        # may have been a skipped record)


# -- stored events (the log's values, read back by scans, queries and the restart fold) ---------
@st.composite
def _bad_value(draw: st.DrawFn, raw: bytes) -> bytes:
    how = draw(st.sampled_from(["truncate", "flip", "bytes", "props"]))
    if how == "truncate":
        return raw[: draw(st.integers(0, len(raw)))]
    if how == "flip":
        i = draw(st.integers(0, len(raw) - 1))
        return raw[:i] + bytes([raw[i] ^ draw(st.integers(1, 255))]) + raw[i + 1:]
    if how == "props":  # a header that announces properties, then anything
        return raw[:4] + b"\x08" + draw(st.binary(max_size=12)) + b"\x91" * draw(
            st.sampled_from([0, 10, 5000]))
    return draw(st.binary(max_size=24))


def test_stored_events_mutated_never_break_a_scan_or_a_query(tmp_path: Path) -> None:
    head = pack(True, 1, Properties(sender="g1", content_type="application/json"))
    with open_store(tmp_path / "store") as db:
        db.append_many([("a/b", b'{"x": 1}', 1000, head), ("a/c", b"kept", 2000)])
        seg = db.log.segment(db.log.starts()[0])
        with seg.env.begin() as txn:
            key, raw = next((bytes(k), bytes(v)) for k, v in txn.cursor(seg.events))
        draws = corpus_mod.draw_examples(_bad_value(raw), 300 * SCALE, 20261207)
        views = _views()
        for value in draws:
            with seg.env.begin(write=True) as txn:
                txn.put(key, value, db=seg.events)
            events = list(db.scan())  # the restart fold and recorders read this way
            assert events[-1].payload == b"kept" and len(events) == 2, events
            for ev in events:
                views.observe(ev.topic, ev.payload, ev.ts_ns)
            reply = answer(MemoryQuery(kind="events", limit=10), views, db.log, 1 << 20)
            assert reply.ok and len(reply.result["events"]) == 2, reply
            _roundtrip(reply)
    print("STORED_EVENTS values", len(draws))
