"""Typed messages. Every struct encodes to plain msgpack (a map with these field names)."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

import msgspec

#: Every timestamp robobus writes is a multiple of this (2**10 ns, about a microsecond): an
#: int64 multiple of 1024 has at most 53 significant bits, so it is exactly an IEEE double and
#: a JavaScript client reads it exactly (``JSON.parse``, msgpack decoders), while Python keeps
#: ints (issue 14). Readers take any integer, and integral floats too.
TICK_NS = 1024


def now_ns() -> int:
    """Wall-clock time in integer nanoseconds, a multiple of :data:`TICK_NS` (data, never a
    timer)."""
    return time.time_ns() & -TICK_NS


# Domains of what crosses the bus (issue 13). Every integer fits msgpack's 64 bits and every
# float is finite, so a value that was accepted can always be encoded again: an instruction
# with a 130-bit priority used to kill the brain when it published its own ``accepted``.
#: wall-clock nanoseconds
Nanos = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
#: any other integer: a signed 64-bit one (a JSON integer past it was accepted, then could not
#: be encoded again)
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
#: task priority (higher preempts lower)
Priority = Annotated[int, msgspec.Meta(ge=-1_000_000, le=1_000_000)]
#: counters a task carries (replans)
Count = Annotated[int, msgspec.Meta(ge=0, le=1_000_000)]
#: a robot, robot type, skill or place name: one topic level at most
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
#: seconds of a skill (timeouts, nominal durations): at most a day
Seconds = Annotated[float, msgspec.Meta(ge=0, le=86_400)]
#: a coordinate in metres
Coord = Annotated[float, msgspec.Meta(ge=-1e6, le=1e6)]
#: robot speed in m/s; 0 for a fixed robot
Speed = Annotated[float, msgspec.Meta(ge=0, le=100)]
_Small = Annotated[int, msgspec.Meta(ge=0, le=64)]


def check_utf8(**fields: str | None) -> None:
    """Raise ValueError for a string that is not valid UTF-8 (a lone surrogate from JSON's
    ``\\ud800``): it would be accepted, then fail when encoded again."""
    for name, value in fields.items():
        if value is None or value.isascii():
            continue
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"{name} is not valid UTF-8 (a lone surrogate at character "
                             f"{exc.start})") from None


class Base(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=False):
    """Common base: unknown fields are ignored so that newer senders stay compatible."""


class Instruction(Base):
    """A natural-language instruction published on ``robobus/instructions``."""

    text: str
    priority: Priority = 0
    task_id: str | None = None
    source: str | None = None
    ts_ns: Nanos = msgspec.field(default_factory=now_ns)
    #: where the brain sends this task's statuses and refusals: a reply inbox for clients that
    #: cannot set MQTT 5's Response Topic (ZeroMQ, MQTT 3.1.1); the property wins when both are set
    reply_to: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)] | None = None
    #: echoed as the replies' correlation data (UTF-8) when the message carries none itself
    correlation: Annotated[str, msgspec.Meta(max_length=1024)] | None = None
    #: where the requester is, a place name: "me"/"here"/"我"/"这里" deliver there (issue 15)
    origin: Annotated[str, msgspec.Meta(min_length=1, max_length=256)] | None = None

    def __post_init__(self) -> None:
        check_utf8(text=self.text, task_id=self.task_id, source=self.source,
                   reply_to=self.reply_to, correlation=self.correlation, origin=self.origin)


class PlanStep(Base):
    """One skill call of a plan. ``after`` lists the step ids it waits for."""

    id: str
    robot: str
    skill: str
    args: dict[str, Any] = {}
    after: list[str] = []
    est_s: float = 0.0


class Plan(Base):
    """A DAG of skill calls produced by a planner and checked by the validator."""

    task_id: str
    steps: list[PlanStep]
    planner: str = "symbolic"
    goal: str = ""
    makespan_s: float = 0.0


TaskState = Literal[
    "accepted",
    "planned",
    "dispatched",
    "progress",
    "step_done",
    "step_failed",
    "replanning",
    "preempted",
    "done",
    "failed",
    "cancelled",
]


class TaskStatus(Base):
    """A status update on ``robobus/tasks/{task_id}``."""

    task_id: str
    status: TaskState
    text: str = ""
    priority: Priority = 0
    plan: Plan | None = None
    step_id: str | None = None
    robot: str | None = None
    skill: str | None = None
    progress: float | None = None
    reason: str | None = None
    replans: Count = 0
    #: the step's skill command, on step statuses (the memory agent ties world changes to it)
    command_id: str | None = None
    ts_ns: Nanos = msgspec.field(default_factory=now_ns)


class SkillCommand(Base):
    """Run (or cancel) a skill: published on ``robobus/robots/{robot}/skills/{skill}``."""

    command_id: str
    skill: str
    args: dict[str, Any] = {}
    task_id: str | None = None
    step_id: str | None = None
    #: finite and positive: a NaN timeout ended the edge agent (issue 13)
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] | None = None
    action: Literal["run", "cancel"] = "run"
    ts_ns: Nanos = msgspec.field(default_factory=now_ns)


FeedbackState = Literal["accepted", "started", "progress", "done", "failed", "cancelled", "rejected"]


class SkillFeedback(Base):
    """Progress and result of one skill command, on ``robobus/robots/{robot}/feedback``."""

    command_id: str
    robot: str
    skill: str
    status: FeedbackState
    task_id: str | None = None
    step_id: str | None = None
    progress: float = 0.0
    reason_code: str | None = None
    reason: str | None = None
    result: dict[str, Any] = {}
    ts_ns: Nanos = msgspec.field(default_factory=now_ns)


class SkillSpec(Base):
    """What a robot can do: a skill's argument schema plus its planner-readable model."""

    name: Name
    args_schema: dict[str, Any] = {}
    result_schema: dict[str, Any] = {}
    preconditions: list[str] = []
    effects: list[str] = []
    #: what each argument names: "object", "place", "container", "robot", "kind", "place|container"
    param_kinds: dict[str, str] = {}
    #: the memory_store.world.WorldChange op the skill performs (move/pick/place/handover) or None
    change: str | None = None
    resource: str = "arm"
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 60.0


class RegistrationProfile(Base):
    """The keys of ``RobotRegistration.profile`` that agents read, with their domains.

    Other keys pass unchecked. A retained registration with ``hands: "two"`` or
    ``start: [1, 2]`` used to crash the brain on every start (issue 13).
    """

    type: Name | None = None
    profile: Name | None = None
    mobile: bool = True
    hands: _Small = 1
    arms: _Small = 1
    speed: Speed = 1.0
    capacity: Annotated[float, msgspec.Meta(ge=0, le=1e6)] = 1.0
    start: Name | None = None
    position: tuple[Coord, Coord] | None = None
    telemetry_hz: Annotated[float, msgspec.Meta(gt=0, le=10_000)] = 10.0
    sensors: _Small = 1
    #: nominal duration per skill name (the planner's estimate)
    durations: Annotated[dict[Name, Seconds], msgspec.Meta(max_length=256)] = {}


class RobotRegistration(Base):
    """Retained on ``robobus/robots/{robot}/registration``.

    ``profile`` stays a plain map on the wire; its known keys are checked against
    :class:`RegistrationProfile` when a registration is made or decoded.
    """

    robot: Name
    type: Name
    profile: dict[str, Any] = {}
    skills: Annotated[list[SkillSpec], msgspec.Meta(max_length=256)] = []
    ts_ns: Nanos = msgspec.field(default_factory=now_ns)

    def __post_init__(self) -> None:
        try:
            msgspec.convert(self.profile, RegistrationProfile)
        except msgspec.ValidationError as exc:
            raise ValueError(f"invalid profile: {exc}".replace("`$.", "`$.profile.")) from None


class Pose(Base):
    x: float = 0.0
    y: float = 0.0
    theta: float = 0.0


class RobotState(Base):
    """Telemetry on ``robobus/robots/{robot}/state``."""

    robot: str
    pose: Pose = msgspec.field(default_factory=Pose)
    place: str | None = None
    battery: float = 1.0
    holding: list[str] = []
    busy: bool = False
    current: list[str] = []
    #: ids of the commands the robot holds (queued or running): the brain resends one it
    #: believes running that is missing here (lost on the way, or its result was)
    commands: list[str] = []
    ts_ns: Nanos = msgspec.field(default_factory=now_ns)


#: a birth/death sequence number: agents seed it from the wall clock in milliseconds, so it
#: also grows across restarts; 0 means "not sent" (a client older than presence)
BdSeq = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


class Alive(Base):
    """Retained on ``robobus/robots/{robot}/alive``: the robot's birth or death.

    Like Sparkplug B: ``online=True`` is a birth, published on connect and after every
    reconnect; the last will is the matching death (``online=False``, same ``bd_seq``, stamped
    just after the birth). Order values with :func:`presence_supersedes`, not by ``ts_ns``.
    """

    robot: str
    online: bool
    ts_ns: Nanos = msgspec.field(default_factory=now_ns)
    bd_seq: BdSeq = 0


def presence_supersedes(current: AnyPresence | None, incoming: AnyPresence) -> bool:
    """Whether ``incoming`` replaces ``current`` in a presence view.

    A higher ``bd_seq`` wins; a lower one is stale (a death or birth of an older connection)
    and is ignored. With the same sequence a death ends its birth, but a birth never revives
    its own death. Values without a sequence (``bd_seq`` 0 on both) keep the last one heard.
    """
    if current is None or incoming.bd_seq > current.bd_seq:
        return True
    if incoming.bd_seq < current.bd_seq:
        return False
    return incoming.bd_seq == 0 or not incoming.online or current.online


class MemoryStatus(Base):
    """Retained on ``robobus/memory/status``: the memory agent's birth or death, ordered like
    :class:`Alive` (by ``bd_seq``, a death after its birth). A plain client checks it to tell
    "no memory agent" from "a slow one"."""

    memory: str
    online: bool
    ts_ns: Nanos = msgspec.field(default_factory=now_ns)
    bd_seq: BdSeq = 0


#: What the brain says about itself (its presence, see :class:`BrainStatus`).
BrainState = Literal["starting", "standby", "ready", "offline"]


class BrainStatus(Base):
    """Retained on ``robobus/brain/status``: the active brain's birth or death.

    Births and deaths like :class:`Alive` (ordered by ``bd_seq``; the last will is ``offline``
    with the birth's ``bd_seq``). ``starting``: a brain claimed the fleet and is loading the
    world and resuming tasks (a slow brain); ``ready``: it takes instructions; ``offline``: no
    brain (a clean stop or its last will). A second brain that finds a live one is a
    ``standby``: it says so without retain (the retained value stays the active brain's) and
    takes over when that brain's death arrives. ``instance`` tells brains of one name apart.
    """

    brain: str
    state: BrainState
    planner: str
    ts_ns: Nanos = msgspec.field(default_factory=now_ns)
    bd_seq: BdSeq = 0
    instance: str = ""

    @property
    def online(self) -> bool:
        """A birth (any state but ``offline``), for :func:`presence_supersedes`."""
        return self.state != "offline"


#: the presence messages :func:`presence_supersedes` orders
AnyPresence = Alive | MemoryStatus | BrainStatus


class ErrorReport(Base):
    """A rejected input, on ``robobus/errors``."""

    source: str
    topic: str
    code: str
    reason: str
    excerpt: str = ""
    ts_ns: Nanos = msgspec.field(default_factory=now_ns)
    #: who sent the refused input, when known: its ``sender`` user property (robobus clients
    #: set it) or an instruction's ``source``; MQTT does not tell subscribers the client id
    sender: str | None = None
    #: the task the refused input concerns, when known (an instruction's ``task_id``)
    task_id: str | None = None


class FaultSpec(Base):
    """Fault injection for an edge agent, on ``robobus/robots/{robot}/faults``."""

    skill: str
    times: Int64 = 1
    object: str | None = None
    probability: float = 0.0
    seed: Int64 = 0
    reason: str = "injected"

