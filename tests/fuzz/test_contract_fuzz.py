"""A fuzz suite that learns, over every topic of the contract, the hub's control socket and the
stored records (issue 13 item 6).

* In-process, hypothesis drives mutations of valid messages (tests/fuzz/contract.py) for every
  ``TOPIC_TYPES`` topic, msgpack and JSON, through the handlers the agents run on them (the
  memory views, query, change and decoders, the brain's intake, the edge's command parser).
  Property: each input is refused with a documented error or accepted as a value that encodes
  back. Hypothesis shrinks what fails and keeps it in its example database
  (``.pytest_cache/robobus-fuzz``), replayed first on the next run; crashers found so far are
  :data:`REGRESSIONS`, replayed always.
* Live, the same mutations go to a running fleet (hub, memory, brain, three edges: processes),
  with the corpus oracle's checks (tests/fuzz/driver.py): no process dies, every refused input
  is reported on ``P/errors``, nothing stored before is lost, every accepted input is recorded,
  the scenario passes, and a fresh valid instruction completes afterwards.
* The hub's control socket gets hypothesis-drawn frames from a raw ZeroMQ client; the hub lives.
* Stored records (views.mdb) are replaced by mutations of themselves; the memory agent, restarted
  on them, reports each bad one, skips it, and answers.

Bounded for CI (about 40 s here); ``ROBOBUS_FUZZ_SCALE=20`` multiplies every budget for a long run.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import secrets
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import lmdb
import msgspec
import msgspec.inspect as mi
import pytest
import zmq
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

from bench.machine import load_file
from robobus import testing
from robobus.bus import Bus, DecodeError, RequestTimeout
from robobus.edge_agent.commands import parse_command
from robobus.launch import fleet as fleet_mod
from robobus.memory_store.errors import QueryError
from robobus.memory_store.headers import Properties, pack
from robobus.memory_store.query import answer
from robobus.memory_store.query import parse as parse_query
from robobus.memory_store.store import open_store
from robobus.memory_store.views import Views
from robobus.schemas.codec import decode_as, decode_lenient, parse_instruction
from robobus.schemas.contract import TOPIC_TYPES
from robobus.schemas.memory import MemoryQuery, QueryReply
from robobus.schemas.messages import (
    Alive,
    BrainStatus,
    ErrorReport,
    FaultSpec,
    MemoryStatus,
    RobotState,
    SkillCommand,
    SkillFeedback,
    TaskStatus,
)
from robobus.schemas.world import WorldChange, WorldConflict
from robobus.skills.errors import SkillError

HERE = Path(__file__).resolve().parent
SCALE = max(1, int(os.environ.get("ROBOBUS_FUZZ_SCALE", "1")))
PREFIX = "robobus"
DB = DirectoryBasedExampleDatabase(str(HERE.parents[1] / ".pytest_cache" / "robobus-fuzz"))
SCENARIO = HERE.parents[1] / "scenarios" / "fruit_and_knife.yaml"


def load(name: str) -> ModuleType:
    return load_file(HERE / f"{name}.py", f"robobus_fuzz_{name}")


contract, corpus_mod, driver = load("contract"), load("corpus"), load("driver")

#: Crashers the fuzz found, kept as regression cases (pattern, payload, what it killed).
REGRESSIONS: list[tuple[tuple[str, ...], bytes, str]] = [
    # a wrong-typed field, then deep nesting: RecursionError out of decode_as (schemas/codec.py),
    # which ended the memory agent's views on any robot topic
    (("robots", "+", "alive"), b"\x82\xa5robot\x05\xa1z" + b"\x91" * 50_000 + b"\x01",
     "memory views: RecursionError"),
    (("robots", "+", "state"), b'{"robot": 5, "z": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
     "memory views: RecursionError (JSON)"),
    # the same with the rest truncated: msgspec.DecodeError instead of robobus' DecodeError
    (("robots", "+", "alive"), msgspec.msgpack.encode({"robot": 5, "online": True})[:-1],
     "decode_as: msgspec.DecodeError"),
    # an integer past 64 bits in JSON, in a field without bounds: the views kept it and the
    # memory agent's committer died encoding the record, again after every restart
    (("robots", "+", "state"), b'{"robot": "g1", "ts_ns": 18446744073709551616}',
     "memory committer: OverflowError"),
    # a lone surrogate where a number goes, read leniently: UnicodeEncodeError out of convert
    (("robots", "+", "faults"), b'{"skill": "g1", "times": "\\ud800"}',
     "decode_lenient: UnicodeEncodeError"),
]


# -- in-process: the property ----------------------------------------------------------------
REFUSALS = (DecodeError, QueryError, SkillError, WorldConflict)
#: accepted values that do not encode back (an integer past 64 bits in JSON, say): none since
#: every integer field has bounds (issue 13); the property run fails on any it finds
SCHEMA_GAPS: set[str] = set()


def _topic(pattern: tuple[str, ...]) -> str:
    return contract.concrete(pattern, PREFIX, "g1")


def _roundtrip(value: Any) -> None:
    """What an agent accepted must encode back (the brain died encoding its own status)."""
    data = msgspec.msgpack.encode(value)
    msgspec.msgpack.decode(data, type=type(value))


def _views() -> Views:
    views = Views()
    views.seed({"places": {"kitchenTable": {"position": [2.0, 1.0]}},
                "objects": {"apple": {"kind": "fruit", "at": "kitchenTable"}}}, ["g1"])
    return views


def handle(pattern: tuple[str, ...], payload: bytes) -> None:
    """Run ``payload`` through every in-process handler an agent applies to ``pattern``."""
    topic, type_ = _topic(pattern), TOPIC_TYPES[pattern]
    views = _views()
    views.observe(topic, payload, 1)  # the memory agent folds every topic; it never raises
    views.take_dirty()  # and its committer stores what the fold kept
    try:
        value = decode_as(payload, type_, topic)  # every typed subscriber's decode
    except DecodeError:
        value = None
    if value is not None:
        try:
            _roundtrip(value)
        except (OverflowError, UnicodeEncodeError) as exc:  # a schema gap: no agent re-sends it
            SCHEMA_GAPS.add(f"{type_.__name__}: {type(exc).__name__}")
    try:
        _specific(pattern, topic, payload, views)
    except REFUSALS:
        pass
    except (ValueError, TypeError, KeyError):  # what agent._change maps to "invalid"
        if pattern != ("memory", "change"):
            raise


def _specific(pattern: tuple[str, ...], topic: str, payload: bytes, views: Views) -> None:
    if pattern == ("instructions",):
        inst = parse_instruction(payload, topic)
        _roundtrip(inst)
        _roundtrip(TaskStatus(task_id="t", status="accepted", text=inst.text,
                              priority=inst.priority))
    elif pattern == ("memory", "query"):
        reply = answer(parse_query(payload), views, None)
        assert isinstance(reply, QueryReply)
        _roundtrip(reply)
    elif pattern == ("memory", "change"):
        change = decode_as(payload, WorldChange, topic)
        views.foreign_change(change, "g1")
        views.late_change(change)
        _roundtrip(views.change(change, 1))
    elif pattern == ("robots", "+", "skills", "+"):
        _roundtrip(parse_command(payload, topic, "g1", "g1"))
    elif pattern == ("robots", "+", "faults"):
        decode_lenient(payload, FaultSpec, topic)


def _with_regressions(test: Any) -> Any:
    for pattern, payload, _ in REGRESSIONS:
        test = example(pattern=pattern, payload=payload)(test)
    return test


@st.composite
def _draw(draw: st.DrawFn) -> tuple[tuple[str, ...], bytes]:
    pattern = draw(st.sampled_from(sorted(TOPIC_TYPES)))
    payload, _ = draw(contract.mutated(TOPIC_TYPES[pattern]))
    return pattern, payload


@settings(max_examples=400 * SCALE, database=DB, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(drawn=_draw())
def test_every_contract_topic_refuses_or_accepts_what_encodes_back(
        drawn: tuple[tuple[str, ...], bytes]) -> None:
    handle(*drawn)


def test_no_schema_gaps() -> None:
    """After the property ran: no accepted value failed to encode back (see SCHEMA_GAPS)."""
    assert not SCHEMA_GAPS, sorted(SCHEMA_GAPS)


#: What the fuzzer flagged before every integer field had bounds: a JSON integer past 64 bits
#: was accepted into these fields, then could not be encoded again (issue 13).
HUGE_INTS: list[tuple[type[msgspec.Struct], str, int]] = [
    (Alive, "ts_ns", 2**64), (BrainStatus, "ts_ns", 10**20), (FaultSpec, "seed", 2**64),
    (FaultSpec, "times", -(2**63) - 1), (MemoryQuery, "limit", 2**64),
    (MemoryQuery, "t0_ns", -(2**64)), (MemoryQuery, "k", 10**40), (MemoryStatus, "ts_ns", 2**64),
    (SkillCommand, "ts_ns", 2**64), (SkillFeedback, "ts_ns", 2**64), (RobotState, "ts_ns", 10**40),
    (ErrorReport, "ts_ns", 2**64),
]


@pytest.mark.parametrize("type_,field,huge", HUGE_INTS,
                         ids=[f"{t.__name__}.{f}" for t, f, _ in HUGE_INTS])
def test_integers_past_64_bits_are_refused(type_: type[msgspec.Struct], field: str,
                                           huge: int) -> None:
    sample = contract.valid_sample(type_)
    with pytest.raises(DecodeError, match=field):
        decode_as(msgspec.json.encode({**sample, field: huge}), type_, "robobus/x")
    if type_ is FaultSpec:  # the edge reads faults leniently (numbers as strings too)
        with pytest.raises(DecodeError):
            decode_lenient(msgspec.json.encode({**sample, field: str(huge)}), type_, "robobus/x")
    # within the bounds it is taken, and encodes the fields as they were sent (msgpack, JSON)
    sent = {**sample, field: 7}
    for encoding in ("msgpack", "json"):
        value = decode_as(contract.encode(sent, encoding), type_, "robobus/x")
        assert msgspec.msgpack.decode(msgspec.msgpack.encode(value), type=type_) == value
        assert {k: v for k, v in msgspec.to_builtins(value).items() if k in sent} == sent


def test_every_integer_field_is_bounded_to_64_bits() -> None:
    """Every ``int`` in every Struct of ``schemas/`` has bounds within int64/uint64, so nothing
    the schemas accept fails to encode again (new fields included)."""
    loose = []
    for struct in _schema_structs():
        for field in mi.type_info(struct).fields:
            loose += [f"{struct.__name__}.{field.name}{where}"
                      for where in _unbounded(field.type, "")]
    assert not loose, loose


def _schema_structs() -> list[type[msgspec.Struct]]:
    out: list[type[msgspec.Struct]] = []
    for name in ("codec", "contract", "memory", "messages", "scenario", "tasks", "world"):
        module = importlib.import_module(f"robobus.schemas.{name}")
        out += [obj for obj in vars(module).values()
                if inspect.isclass(obj) and issubclass(obj, msgspec.Struct)
                and obj.__module__ == module.__name__]
    return out


def _unbounded(t: mi.Type, where: str) -> list[str]:
    if isinstance(t, mi.IntType):
        lo = t.ge if t.ge is not None else (t.gt + 1 if t.gt is not None else None)
        hi = t.le if t.le is not None else (t.lt - 1 if t.lt is not None else None)
        return [] if lo is not None and hi is not None and -(2**63) <= lo and hi < 2**64 \
            else [where or "(int)"]
    if isinstance(t, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType):
        return _unbounded(t.item_type, f"{where}[]")
    if isinstance(t, mi.TupleType):
        return [w for i, x in enumerate(t.item_types) for w in _unbounded(x, f"{where}[{i}]")]
    if isinstance(t, mi.DictType):
        return _unbounded(t.key_type, f"{where}{{key}}") + _unbounded(t.value_type, f"{where}{{}}")
    if isinstance(t, mi.UnionType):
        return [w for x in t.types for w in _unbounded(x, where)]
    return []  # nested Structs are checked as structs of their own


@pytest.mark.parametrize("pattern,payload,what", REGRESSIONS, ids=[r[2] for r in REGRESSIONS])
def test_found_crashers_stay_fixed(pattern: tuple[str, ...], payload: bytes, what: str) -> None:
    handle(pattern, payload)
    if pattern[-1] != "faults":  # the memory views refuse it; the edge's decode refuses faults
        rejected = _views().observe(_topic(pattern), payload, 1)
        assert rejected and rejected[0].code in ("decode", "invalid"), rejected


def test_every_subscribed_topic_has_valid_mutable_samples() -> None:
    """A topic added to the contract is fuzzed as is: its sample is built from its type."""
    for pattern, type_ in TOPIC_TYPES.items():
        sample = contract.valid_sample(type_)
        for encoding in ("msgpack", "json"):
            decode_as(contract.encode(sample, encoding), type_, _topic(pattern))


# -- live: a fleet of processes -----------------------------------------------------------------
#: Topics whose owner the live fleet does not run, so nobody would report what is refused
#: there: a robot group's instructions belong to that group's brain (tests/brain/test_scaleout.py)
UNSERVED = {("groups", "+", "instructions"), ("groups", "+", "instructions", "+")}


def build_live_corpus(fleet: Any, per_topic: int, seed: int) -> list[Any]:
    """Mutations for every contract topic plus the regressions, judged by the corpus oracle;
    topics no agent acts on are ``accept`` (recorded) unless well-formed (forgery: not sent)."""
    judge = corpus_mod.Judge(fleet)
    out: list[Any] = []
    robots = sorted(fleet.robots)
    for i, (pattern, type_) in enumerate(sorted(TOPIC_TYPES.items())):
        if pattern in UNSERVED:
            continue
        draws = corpus_mod.draw_examples(st.sampled_from(robots).flatmap(
            lambda r, p=pattern, t=type_: st.tuples(contract.mutated(t, _base(p, r, fleet)),
                                                    st.just(r))), per_topic, seed + i)
        for (payload, how), robot in draws:
            _add(out, judge, fleet, pattern, type_, payload, how, robot)
        for p, payload, what in REGRESSIONS:
            if p == pattern:
                _add(out, judge, fleet, pattern, type_, payload, what, robots[0])
    return out


def _base(pattern: tuple[str, ...], robot: str, fleet: Any) -> dict[str, Any]:
    """Fields that make the valid base fit its topic (mutations then break it)."""
    if pattern[0] == "robots":
        return {"robot": robot, "skill": fleet.robots[robot][0]}
    return {"task_id": "fz1"} if pattern[0] == "tasks" else {}


def _add(out: list[Any], judge: Any, fleet: Any, pattern: tuple[str, ...], type_: type,
         payload: bytes, how: str, robot: str) -> None:
    topic = fill(pattern, fleet.prefix, robot, fleet.robots[robot][0])
    item = _judge(judge, corpus_mod.FuzzInput(f"contract:{how.split(':')[0]}", topic, payload),
                  pattern, type_)
    if item.verdict != "unsafe":
        out.append(item)


def fill(pattern: tuple[str, ...], prefix: str, robot: str, skill: str) -> str:
    """A topic for ``pattern``: a robot's level is ``robot``, a skill's ``skill``, else fz."""
    levels = [p if p != "+" else (robot if n == 1 else skill) if pattern[0] == "robots"
              else f"fz{n}" for n, p in enumerate(pattern)]
    return "/".join([prefix, *levels])


_JUDGED = {"robots", "instructions", "tasks", "memory", "world"}


def _judge(judge: Any, item: Any, pattern: tuple[str, ...], type_: type) -> Any:
    if pattern[0] in _JUDGED and pattern != ("memory", "status"):
        try:
            return judge(item)
        except (msgspec.MsgspecError, RecursionError) as exc:  # the oracle's own decode
            item.verdict, item.reason = "reject", f"decode: {exc}"
            return item
    if len(item.payload) > contract.MAX_PAYLOAD:  # refused, but no report about a report
        verdict = "dropped" if pattern == ("errors",) else "reject"
        item.verdict, item.reason = verdict, "too_large"
        return item
    try:
        decode_as(item.payload, type_, item.topic)
        item.verdict, item.reason = "unsafe", "a well-formed presence or report (forgery)"
    except DecodeError:
        item.verdict, item.reason = "accept", "no agent acts on it: recorded only"
    return item


@pytest.mark.slow
@pytest.mark.anyio
async def test_live_fleet_survives_contract_fuzz(tmp_path: Path) -> None:
    await _live(fleet_mod.default_bus_url(), tmp_path)


@pytest.mark.slow
@pytest.mark.broker
@pytest.mark.anyio
@pytest.mark.skipif(SCALE == 1, reason="long run only (ROBOBUS_FUZZ_SCALE > 1): CI time")
async def test_live_fleet_survives_contract_fuzz_mqtt(mosquitto_url: str, tmp_path: Path) -> None:
    await _live(mosquitto_url, tmp_path)


async def _live(url: str, tmp_path: Path) -> None:
    prefix = f"cf{secrets.token_hex(3)}"
    fleet = driver.fleet_of(SCENARIO, prefix, corpus_mod)
    build = functools.partial(build_live_corpus, fleet, 12 * SCALE, 20261207)
    run = await driver.fuzz_scenario(SCENARIO, url, prefix, build,
                                     report_dir=tmp_path / "run", speed=3.0, rate=250.0,
                                     paced_rate=8.0, flood=0, fresh=True)
    summary = driver.summary(run, prefix)
    print("CONTRACT_FUZZ", {k: summary[k] for k in ("inputs", "per_topic", "verdicts",
                                                     "unreported_rejects", "crashed")})
    checks = load("test_fuzz_agents")
    result = run.result
    assert result.passed, result.error or [f.reason for f in result.failures()]
    assert not run.hooks.crashed, run.hooks.crashed
    assert {"memory", "brain"} <= set(run.hooks.alive_at_end), run.hooks.alive_at_end
    sent = {driver.topic_kind(fleet.topics, i.topic) for i in run.sent}
    assert len(sent) >= len(TOPIC_TYPES) - len(UNSERVED) - 1, sent  # (the scenario may end)
    must = Counter(i.topic for i in run.sent if i.verdict == "reject")
    got = run.reports_by_topic()
    short = {t: (n, got[t]) for t, n in must.items() if got[t] < n}
    for t in short:
        print("SHORT", t, Counter(i.reason[:40] for i in run.sent if i.topic == t
                                  and i.verdict == "reject"),
              Counter(r.code for r in run.reports if r.topic == t))
    assert not short, f"refused inputs without a report (topic: sent, reported): {short}"
    checks._check_store(run, result.report_dir / "store", f"{prefix}/memory/query")
    assert run.fresh_done, f"a fresh valid instruction did not complete: {run.fresh_statuses}"


# -- the hub's control socket -------------------------------------------------------------------
COMMANDS = [b"HELLO", b"HB", b"BYE", b"PUB", b"SNAP", b"DURABLE", b"DACK", b"WHO", b"ACK",
            b"DATA", b"NODURABLE", b"DENY", b"", b"\xff" * 3]


def _frames() -> st.SearchStrategy[list[bytes]]:
    hello = st.builds(lambda k, w: msgspec.msgpack.encode({"keepalive": k, "will": w}),
                      st.one_of(st.floats(allow_nan=True), st.text(max_size=4), st.none(),
                                st.integers(-(2**63), 2**63 - 1)),
                      st.one_of(st.none(), st.dictionaries(st.text(max_size=5),
                                                           st.text(max_size=5), max_size=2)))
    arg = st.one_of(st.binary(max_size=40), hello, st.just(b"\x91" * 5000 + b"\x01"),
                    st.just("\ud800".encode("utf-8", "surrogatepass")),
                    st.integers(0, 2**70).map(lambda n: n.to_bytes(9, "big")))
    return st.tuples(st.sampled_from(COMMANDS), st.lists(arg, max_size=5)).map(
        lambda t: [t[0], *t[1]])


@pytest.mark.anyio
async def test_hub_control_socket_survives_drawn_frames() -> None:
    frames = corpus_mod.draw_examples(_frames(), 300 * SCALE, 20261207)
    with testing.hub() as url:
        port = int(url.rsplit(":", 1)[1])
        ctx = zmq.Context()
        ctl = ctx.socket(zmq.DEALER)
        ctl.connect(f"tcp://{testing.LOOPBACK}:{port + 2}")
        try:
            async with Bus.connect(url, name="witness") as bus, bus.subscribe("w/#") as sub:
                for parts in frames:
                    ctl.send_multipart(parts)
                    await anyio.lowlevel.checkpoint()
                with anyio.fail_after(20):  # acked: the hub's control loop still works
                    await bus.publish("w/1", b"after the frames", qos=1)
                    assert (await sub.get()).payload == b"after the frames"
        finally:
            ctl.close(0)
            ctx.term()
    print("CONTROL_FUZZ frames", len(frames))


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
