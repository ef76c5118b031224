"""The contract fuzz, in process (issue 13 item 6): hypothesis drives mutations of valid
messages (tests/fuzz/contract.py) for every ``TOPIC_TYPES`` topic, msgpack and JSON, through the
handlers the agents run on them (the memory views, query, change and decoders, the brain's
intake, the edge's command parser).

Property: each input is refused with a documented error or accepted as a value that encodes
back. Hypothesis shrinks what fails and keeps it in its example database
(``.pytest_cache/robobus-fuzz``), replayed first on the next run; crashers found so far are
``contract.REGRESSIONS``, replayed always. The same mutations go to a live fleet in
test_fuzz_live.py, and stored records are mutated in test_fuzz_stored.py.

Bounded for CI; ``ROBOBUS_FUZZ_SCALE=20`` multiplies every budget for a long run.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

from bench.machine import load_file
from robobus.bus import DecodeError
from robobus.edge_agent.commands import parse_command
from robobus.memory_store.errors import QueryError
from robobus.memory_store.query import answer
from robobus.memory_store.query import parse as parse_query
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
PREFIX = "robobus"
DB = DirectoryBasedExampleDatabase(str(HERE.parents[1] / ".pytest_cache" / "robobus-fuzz"))


def load(name: str) -> ModuleType:
    return load_file(HERE / f"{name}.py", f"robobus_fuzz_{name}")


contract = load("contract")
SCALE, REGRESSIONS = contract.SCALE, contract.REGRESSIONS
_roundtrip, _views = contract.roundtrip, contract.seeded_views


# -- in-process: the property ----------------------------------------------------------------
REFUSALS = (DecodeError, QueryError, SkillError, WorldConflict)
#: accepted values that do not encode back (an integer past 64 bits in JSON, say): none since
#: every integer field has bounds (issue 13); the property run fails on any it finds
SCHEMA_GAPS: set[str] = set()


def _topic(pattern: tuple[str, ...]) -> str:
    return contract.concrete(pattern, PREFIX, "g1")


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
