"""Hypothesis-generated bad input for every topic an agent subscribes to, plus a verdict oracle.

:func:`build_corpus` draws a deterministic list of :class:`FuzzInput` from hypothesis
strategies (seeded, no example database), one category at a time: random bytes, truncated and
deeply nested msgpack, wrong types, huge strings, unknown robots and skills, replayed task ids,
long instructions and unicode tricks. :func:`judge` decides, with the agents' own decoders, what
each input must provoke:

* ``reject``: an agent must refuse it and say so on ``P/errors``;
* ``accept``: well-formed input that is harmless by construction (telemetry of a robot nobody
  runs, an instruction nobody can plan); it must be recorded, and must not disturb the run;
* ``unsafe``: well-formed input that an agent would act on (a valid command to a real robot,
  a valid world event). That is forgery, which the ACLs of issue 7 section 3 keep out, not
  bad input: such draws are discarded and never sent.

Loaded by path (tests/fuzz is not a package): see ``load_corpus_module`` in the tests.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import msgspec
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from robobus.bus.errors import DecodeError
from robobus.edge_agent.commands import parse_command
from robobus.schemas.codec import decode_as, decode_lenient, parse_instruction
from robobus.schemas.messages import (
    Alive,
    FaultSpec,
    Instruction,
    RobotRegistration,
    RobotState,
    SkillFeedback,
    TaskStatus,
)
from robobus.schemas.topics import Topics
from robobus.schemas.world import WorldChange, WorldEvent
from robobus.skills.errors import SkillError

MAX_PAYLOAD = 1 << 20
TELEMETRY = {"registration": RobotRegistration, "alive": Alive, "state": RobotState,
             "feedback": SkillFeedback}
CATEGORIES = ("random_bytes", "truncated_msgpack", "nested_msgpack", "wrong_types",
              "huge_strings", "unknown_robots_skills", "replayed_task_ids", "long_instructions",
              "unicode_tricks")
TRICKS = ["\u202e", "\u200b", "\u200d", "\ufeff", "\x00", "\u0301", "\U0001f916", "\u2028",
          "../", "%s%n", "$(id)"]
WORDS = ["put", "the", "apple", "in", "basket", "bring", "to", "office", "desk", "knife", "and"]


@dataclass(frozen=True, slots=True)
class Fleet:
    """What the fuzzer aims at: the scenario's robots, their skills, known task ids."""

    robots: dict[str, tuple[str, ...]]
    task_ids: tuple[str, ...]
    prefix: str = "robobus"

    @property
    def topics(self) -> Topics:
        return Topics(self.prefix)


@dataclass(slots=True)
class FuzzInput:
    """One input: where it goes, what it is, and what it must provoke."""

    category: str
    topic: str
    payload: bytes
    verdict: str = "reject"          # reject | accept | unsafe
    reason: str = ""                 # the oracle's reason (a decode error, a rule)
    task_id: str | None = None       # accepted instructions: the task that must end


# -- strategies -----------------------------------------------------------------------------
def _junk_value() -> st.SearchStrategy[Any]:
    leaves = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1),
                       st.floats(allow_nan=True), st.binary(max_size=16), st.text(max_size=16))
    return st.recursive(leaves, lambda kids: st.lists(kids, max_size=3)
                        | st.dictionaries(st.text(max_size=6), kids, max_size=3), max_leaves=6)


def _name(real: Iterable[str]) -> st.SearchStrategy[str]:
    ghost = st.builds(lambda t, n: f"ghost{t}{n}", st.sampled_from(["", *TRICKS[:4]]),
                      st.integers(0, 10**6))
    return st.one_of(st.sampled_from(sorted(real)), ghost)


def _deep(depth: int, kind: str) -> bytes:
    """``depth`` nested arrays or maps around an int, as msgpack (or JSON with kind json)."""
    if kind == "json":
        return b'{"a":' * depth + b"1" + b"}" * depth
    head = b"\x91" if kind == "array" else b"\x81\xa1a"
    return head * depth + b"\x01"


def _fields(robot: str, skill: str) -> dict[str, dict[str, Any]]:
    """A well-formed plain dict per message kind (mutated by the strategies)."""
    return {
        "registration": {"robot": robot, "type": "g1", "profile": {"start": "nowhere"}, "skills": []},
        "alive": {"robot": robot, "online": True},
        "state": {"robot": robot, "place": "kitchenTable", "battery": 0.5, "holding": []},
        "feedback": {"command_id": "c1", "robot": robot, "skill": skill, "status": "done"},
        "skills": {"command_id": "c1", "skill": skill, "args": {"target": "officeDesk"}},
        "faults": {"skill": skill, "times": 1},
        "tasks": {"task_id": "t1", "status": "done"},
        "change": {"op": "move", "robot": robot, "target": "officeDesk"},
        "events": {"seq": 10**6, "change": {"op": "move", "robot": robot, "target": "officeDesk"}},
        "query": {"kind": "world"},
        "instructions": {"text": "dance", "task_id": "t1"},
    }


def _topic(fleet: Fleet, kind: str, robot: str, skill: str, task: str) -> str:
    t = fleet.topics
    return {"registration": t.registration(robot), "alive": t.alive(robot), "state": t.state(robot),
            "feedback": t.feedback(robot), "skills": t.skill(robot, skill),
            "faults": t.faults(robot), "tasks": t.task(task), "change": t.world_change,
            "events": t.world_events, "query": t.memory_query,
            "instructions": t.instructions}[kind]


KINDS = ("registration", "alive", "state", "feedback", "skills", "faults", "tasks", "change",
         "events", "query", "instructions")


@st.composite
def _target(draw: st.DrawFn, fleet: Fleet) -> tuple[str, str, dict[str, Any]]:
    """(kind, topic, a well-formed dict for that kind) with legal topic levels."""
    kind = draw(st.sampled_from(KINDS))
    robot = draw(_name(fleet.robots)).replace("/", "_")
    skills = fleet.robots.get(robot, ("navigate", "pick"))
    skill = draw(st.sampled_from([*skills, "fly", "self_destruct"]))
    task = f"fz{draw(st.integers(0, 10**9))}"
    base = _fields(robot, skill)[kind]
    return kind, _topic(fleet, kind, robot, skill, task), base


@st.composite
def random_bytes(draw: st.DrawFn, fleet: Fleet) -> tuple[str, bytes]:
    _, topic, _ = draw(_target(fleet))
    return topic, draw(st.binary(max_size=300))


@st.composite
def truncated_msgpack(draw: st.DrawFn, fleet: Fleet) -> tuple[str, bytes]:
    _, topic, base = draw(_target(fleet))
    data = msgspec.msgpack.encode(base)
    return topic, data[: draw(st.integers(1, len(data) - 1))]


@st.composite
def nested_msgpack(draw: st.DrawFn, fleet: Fleet) -> tuple[str, bytes]:
    kind, topic, base = draw(_target(fleet))
    depth = draw(st.sampled_from([64, 500, 1_100, 5_000, 100_000]))
    style = draw(st.sampled_from(["array", "map", "json", "field", "recursive"]))
    if style == "recursive":
        return topic, msgspec.msgpack.encode(draw(_junk_value()))
    if style != "field":
        return topic, _deep(depth, style)
    key = draw(st.sampled_from(sorted(base)))
    rest = {k: v for k, v in base.items() if k != key}
    head = msgspec.msgpack.encode({**rest, key: 0})[:-1]  # `key` last, minus its value (0)
    return topic, head + _deep(depth, "array")


@st.composite
def wrong_types(draw: st.DrawFn, fleet: Fleet) -> tuple[str, bytes]:
    kind, topic, base = draw(_target(fleet))
    broken = dict(base)
    for key in draw(st.lists(st.sampled_from(sorted(base)), min_size=1, max_size=3, unique=True)):
        broken[key] = draw(_junk_value())
    encoding = draw(st.sampled_from(["msgpack", "json"]))
    if encoding == "json" and kind in ("skills", "faults", "instructions"):
        try:
            return topic, msgspec.json.encode(broken)
        except (TypeError, msgspec.EncodeError):  # bytes or NaN do not go to JSON
            pass
    return topic, msgspec.msgpack.encode(broken)


@st.composite
def huge_strings(draw: st.DrawFn, fleet: Fleet) -> tuple[str, bytes]:
    kind, topic, base = draw(_target(fleet))
    above = draw(st.booleans())
    size = draw(st.integers(MAX_PAYLOAD + 1, MAX_PAYLOAD + 300_000) if above
                else st.integers(5_000, 200_000))
    text_keys = [k for k, v in base.items() if isinstance(v, str)] or sorted(base)
    key = draw(st.sampled_from(text_keys))
    char = draw(st.sampled_from(["a", "\u202e", "\u00e9", "\U0001f916"]))
    return topic, msgspec.msgpack.encode({**base, key: char * (size // len(char.encode()))})


@st.composite
def unknown_robots_skills(draw: st.DrawFn, fleet: Fleet) -> tuple[str, bytes]:
    t = fleet.topics
    ghost = f"ghost{draw(st.integers(0, 10**6))}{draw(st.sampled_from(['', *TRICKS[:3]]))}"
    real = draw(st.sampled_from(sorted(fleet.robots)))
    bogus = draw(st.sampled_from(["fly", "teleport", "self_destruct", "pick\u200b", "NAVIGATE"]))
    choice = draw(st.integers(0, 7))
    if choice == 7:    # a robot nobody runs speaking for a real one (it must not knock it out)
        return t.alive(ghost), msgspec.msgpack.encode({"robot": real, "online": False})
    if choice == 0:    # a well-formed command for a skill the robot does not have
        return t.skill(real, bogus), msgspec.msgpack.encode({"command_id": f"u{ghost}", "skill": bogus})
    if choice == 1:    # a fault for a skill the robot does not have
        return t.faults(real), msgspec.msgpack.encode({"skill": bogus, "times": 3})
    if choice == 2:    # a world change by a robot the world does not know
        op = draw(st.sampled_from(["move", "pick", "place", "handover"]))
        return t.world_change, msgspec.msgpack.encode(
            {"op": op, "robot": ghost, "object": "apple", "target": "officeDesk"})
    if choice == 3:    # telemetry of a robot nobody runs
        return t.state(ghost), msgspec.msgpack.encode({"robot": ghost, "battery": 0.1})
    if choice == 4:    # a command to a robot nobody runs
        return t.skill(ghost, "pick"), msgspec.msgpack.encode({"command_id": "x", "skill": "pick"})
    if choice == 5:    # feedback for a command nobody sent
        return t.feedback(ghost), msgspec.msgpack.encode(
            {"command_id": f"n{ghost}", "robot": ghost, "skill": "pick", "status": "done"})
    text = f"{ghost}, {bogus} to the {draw(st.sampled_from(['moon', 'basement', '']))}"
    return t.instructions, msgspec.json.encode({"text": text, "task_id": f"uk{ghost[-6:]}"})


@st.composite
def replayed_task_ids(draw: st.DrawFn, fleet: Fleet) -> tuple[str, bytes]:
    task = draw(st.sampled_from(fleet.task_ids))
    text = draw(st.sampled_from(["Put the apple in the basket", "dance"]) | st.text(min_size=1))
    return fleet.topics.instructions, msgspec.msgpack.encode({"text": text, "task_id": task})


@st.composite
def long_instructions(draw: st.DrawFn, fleet: Fleet) -> tuple[str, bytes]:
    over = draw(st.booleans())
    n = draw(st.integers(4_200, 60_000) if over else st.integers(1_000, 4_000))
    if over:  # real vocabulary: it would plan if it were let through
        words = draw(st.lists(st.sampled_from(WORDS), min_size=8, max_size=8))
        text = (" ".join(words) + " ") * (n // 40 + 1)
    else:     # nonsense: nothing to plan, the task must fail with a reason
        word = draw(st.text(alphabet=string.ascii_lowercase, min_size=3, max_size=9))
        text = f"zq{word} " * (n // 8)
    return fleet.topics.instructions, text.encode()


@st.composite
def unicode_tricks(draw: st.DrawFn, fleet: Fleet) -> tuple[str, bytes]:
    t = fleet.topics
    tricky = "".join(draw(st.lists(st.sampled_from(TRICKS), min_size=1, max_size=6)))
    noise = draw(st.text(max_size=40))
    choice = draw(st.integers(0, 4))
    if choice == 0:    # text instruction; raw, a lone surrogate makes it invalid UTF-8
        text = tricky + noise
        if draw(st.booleans()):
            return t.instructions, (text + "\ud800").encode("utf-8", "surrogatepass")
        return t.instructions, text.encode("utf-8", "replace")
    if choice == 1:    # a tricky robot name in the topic and the payload
        name = f"g{tricky}1".replace("/", "").replace("\x00", "")
        return t.state(name or "g"), msgspec.msgpack.encode({"robot": name, "battery": "\u202e"})
    if choice == 2:    # a tricky skill level on a real robot
        real = draw(st.sampled_from(sorted(fleet.robots)))
        skill = f"pick{tricky}".replace("/", "").replace("\x00", "")
        return t.skill(real, skill), msgspec.msgpack.encode({"command_id": noise, "skill": skill})
    if choice == 3:    # a task id with topic syntax in it
        tid = draw(st.sampled_from(["a/b", "+", "#", "x\x00y", "", "../..", "\u202eevil"]))
        return t.instructions, msgspec.msgpack.encode({"text": "zzq" + noise, "task_id": tid})
    return t.memory_query, msgspec.msgpack.encode({"kind": "where", "name": tricky + noise})


STRATEGIES: dict[str, Callable[[Fleet], st.SearchStrategy[tuple[str, bytes]]]] = {
    "random_bytes": random_bytes, "truncated_msgpack": truncated_msgpack,
    "nested_msgpack": nested_msgpack, "wrong_types": wrong_types, "huge_strings": huge_strings,
    "unknown_robots_skills": unknown_robots_skills, "replayed_task_ids": replayed_task_ids,
    "long_instructions": long_instructions, "unicode_tricks": unicode_tricks,
}


def draw_examples(strategy: st.SearchStrategy[Any], n: int, seed: int) -> list[Any]:
    """``n`` draws of ``strategy``, reproducible from ``seed`` (no database, no shrinking)."""
    out: list[Any] = []

    @hypothesis_seed(seed)
    @settings(max_examples=n, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(example: Any) -> None:
        out.append(example)

    collect()
    return out


# -- the oracle -------------------------------------------------------------------------------
def _level_ok(task_id: str) -> bool:
    return not any(c in task_id for c in "/+#\x00") and len(task_id) <= 128


class Judge:
    """Decides each input's verdict with the agents' own decoders (stateful: task ids)."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.t = fleet.topics
        self.task_ids = set(fleet.task_ids)

    def __call__(self, item: FuzzInput) -> FuzzInput:
        if len(item.payload) > MAX_PAYLOAD:
            item.verdict, item.reason = "reject", "too_large"
            return item
        parts = item.topic[len(self.t.prefix) + 1:].split("/")
        try:
            item.verdict, item.reason = self._route(parts, item)
        except DecodeError as exc:
            item.verdict, item.reason = "reject", f"decode: {exc.reason}"
        except SkillError as exc:
            item.verdict, item.reason = "reject", f"{exc.code}: {exc.reason}"
        return item

    def _route(self, parts: list[str], item: FuzzInput) -> tuple[str, str]:
        payload, topic = item.payload, item.topic
        if parts[0] == "robots":
            return self._robot(parts[1], parts[2], parts[3] if len(parts) > 3 else "", item)
        if parts[0] == "instructions":
            return self._instruction(item)
        if parts[0] == "tasks":
            if not payload:
                return "accept", "empty payload clears a retained value"
            decode_as(payload, TaskStatus, topic)
            return "unsafe", "a well-formed task status (forgery, not bad input)"
        if parts[0] == "memory" and parts[1] == "query":
            return "reject", "no_reply_to"
        if parts[0] == "memory":
            change = decode_as(payload, WorldChange, topic)
            if change.op in ("move", "pick", "place", "handover") and change.robot not in self.fleet.robots:
                return "reject", "unknown_robot"
            return "unsafe", "a well-formed world change"
        decode_as(payload, WorldEvent, topic)  # world/events; b"" fails as well
        return "unsafe", "a well-formed world event"

    def _robot(self, robot: str, kind: str, skill: str, item: FuzzInput) -> tuple[str, str]:
        real = robot in self.fleet.robots
        if kind in TELEMETRY:
            if not item.payload:
                return "accept", "empty payload clears a retained value"
            msg = decode_as(item.payload, TELEMETRY[kind], item.topic)
            if real or kind == "registration":
                return "unsafe", f"a well-formed {kind}"
            if self.fleet.topics.robot_mismatch(item.topic, msg.robot):  # type: ignore[attr-defined]
                return "reject", "robot_mismatch"
            return "accept", "telemetry of a robot nobody runs"
        if not real:
            return "accept", "no agent serves this robot (recorded only)"
        skills = self.fleet.robots[robot]
        if kind == "faults":
            spec = decode_lenient(item.payload, FaultSpec, item.topic)
            return ("reject", "unknown_skill") if spec.skill not in skills else ("unsafe", "a fault")
        cmd = parse_command(item.payload, item.topic, robot, skill)
        if cmd.action == "cancel":
            return "reject", "unknown_command"
        if cmd.skill not in skills:
            return "reject", "unknown_skill"
        return "unsafe", "a well-formed command"

    def _instruction(self, item: FuzzInput) -> tuple[str, str]:
        inst: Instruction = parse_instruction(item.payload, item.topic)
        tid = inst.task_id
        if tid and not _level_ok(tid):
            return "reject", "bad_task_id"
        if tid and tid in self.task_ids:
            return "reject", "duplicate_task"
        if tid:
            self.task_ids.add(tid)
            item.task_id = tid
        return "accept", "an instruction nobody can plan: its task must fail with a reason"


def build_corpus(fleet: Fleet, per_category: int, seed: int,
                 categories: Iterable[str] = CATEGORIES) -> list[FuzzInput]:
    """Draw, judge and interleave inputs; unsafe draws are dropped (see the module doc)."""
    judge = Judge(fleet)
    out: list[FuzzInput] = []
    for i, name in enumerate(categories):
        n = per_category // 10 if name == "huge_strings" else per_category
        for topic, payload in draw_examples(STRATEGIES[name](fleet), max(n, 1), seed + i):
            item = judge(FuzzInput(name, topic, payload))
            if item.verdict != "unsafe":
                out.append(item)
    return out
