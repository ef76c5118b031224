"""Spatial, embodiment and task memory, derived from the event log.

:class:`Views` folds bus messages into the current world (:class:`World`), one
:class:`RobotRecord` per robot and one :class:`TaskRecord` per task. It decodes only the topics
it needs; everything else costs one dictionary lookup. The same fold rebuilds memory from a
recorded log (``live=False``): world changes then come only from the recorded ``world/events``,
so the rebuilt world equals the one the agent kept.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Container, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import msgspec
import structlog

from robobus.bus.errors import DecodeError
from robobus.schemas.codec import decode_as
from robobus.schemas.memory import TaskRecord
from robobus.schemas.messages import (
    Alive,
    RobotRegistration,
    RobotState,
    SkillFeedback,
    TaskStatus,
    presence_supersedes,
)
from robobus.schemas.tasks import FINAL, STEP, Refused, next_status
from robobus.schemas.topics import Topics
from robobus.schemas.world import World, WorldChange, WorldConflict, WorldEvent, WorldSnapshot

log = structlog.get_logger("memory.views")

_ROUTE_CACHE_MAX = 10_000
#: finished tasks the agent keeps in RAM by default; older ones are read from views.mdb
MAX_FINISHED_IN_RAM = 1000
#: step statuses of a command the brain still waits for
_IN_FLIGHT = frozenset({"dispatched", "progress"})


class RobotRecord(msgspec.Struct, omit_defaults=True):
    """Embodiment memory of one robot: the latest of each message kind."""

    registration: RobotRegistration | None = None
    state: RobotState | None = None
    alive: bool | None = None
    #: the birth/death sequence of ``alive``: a death of an older connection is ignored
    bd_seq: int = 0
    feedback: SkillFeedback | None = None
    updated_ns: int = 0


class _RobotRecordOut(msgspec.Struct, omit_defaults=True):
    """:class:`RobotRecord` as stored, with its registration already encoded: the same bytes.

    A registration (a few KiB of skill schemas) changes about never while the state changes
    at 10 Hz: encoding the whole record at each commit cost ~11 us per state at 1,000 robots
    (issue 16 item 7); with the registration's bytes kept, ~1 us."""

    registration: msgspec.Raw | None = None
    state: RobotState | None = None
    alive: bool | None = None
    bd_seq: int = 0
    feedback: SkillFeedback | None = None
    updated_ns: int = 0


@dataclass(frozen=True, slots=True)
class Rejected:
    """An input the views refused: reported on ``P/errors`` by the agent."""

    topic: str
    reason: str
    code: str


Effect = WorldEvent | Rejected


class TaskArchive(Protocol):
    """Where task records evicted from RAM are read back (``ViewStore`` of views.mdb)."""

    def task(self, task_id: str) -> TaskRecord | None: ...

    def iter_tasks(self, skip: Container[str] = (), max_bytes: int | None = None
                   ) -> Iterator[TaskRecord]: ...

    def task_ids(self, after: str = "", limit: int = 1000) -> list[str]: ...
_NONE: list[Effect] = []


@dataclass(slots=True)
class Dirty:
    """Encoded records changed since the last commit, handed to the writer thread."""

    robots: list[tuple[bytes, bytes]] = field(default_factory=list)
    tasks: list[tuple[bytes, bytes]] = field(default_factory=list)
    world: bytes | None = None
    scene: bytes | None = None

    def empty(self) -> bool:
        return not (self.robots or self.tasks or self.world is not None or self.scene is not None)


class Views:
    """The in-memory views; ``live`` means registrations add robots to the world.

    Task memory in RAM is bounded once an :attr:`archive` is set (the agent sets views.mdb):
    every live task plus the ``max_finished`` most recently finished ones stay in
    :attr:`tasks`; :meth:`trim` drops older finished ones, which :meth:`task` and
    :meth:`all_tasks` then read back from the archive (issue 13: RSS grew ~6 KB per task).
    """

    def __init__(self, topics: Topics | None = None, *, live: bool = True,
                 max_finished: int = MAX_FINISHED_IN_RAM) -> None:
        self.topics = topics or Topics()
        self.live = live
        self.world = World()
        self.scene: dict[str, Any] | None = None
        self.robots: dict[str, RobotRecord] = {}
        #: live tasks and recently finished ones (all tasks while there is no archive)
        self.tasks: dict[str, TaskRecord] = {}
        self.archive: TaskArchive | None = None
        self.max_finished = max_finished
        #: finished tasks in RAM, oldest finish first
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._dirty_robots: set[str] = set()
        self._dirty_tasks: set[str] = set()
        self._world_dirty = self._scene_dirty = False
        self._routes: dict[str, Callable[[str, bytes, int], list[Effect]] | None] = {}
        #: state topic -> the robot it names (filled with the routes)
        self._state_robots: dict[str, str] = {}
        #: robot -> its registration and that registration encoded (valid while it is the same)
        self._registrations: dict[str, tuple[RobotRegistration, msgspec.Raw]] = {}

    # -- seeding and direct changes ---------------------------------------------------------
    def seed(self, scene: dict[str, Any], robots: Iterable[str] = ()) -> None:
        """Start the world from a scene (places and objects). An object may be held by one of
        ``robots`` (the scenario's fleet) or of the robots registered so far."""
        self.world = World.from_scene(scene, [*robots, *self.robots])
        self.scene = scene
        self._world_dirty = self._scene_dirty = True

    def change(self, change: WorldChange, ts_ns: int) -> WorldEvent:
        """Apply ``change`` through :class:`World`; raise :class:`WorldConflict` if refused."""
        if change.op == "add_robot" and change.robot in self.robots:
            alive = self.robots[change.robot].alive
            if alive is not None:
                change = msgspec.structs.replace(change, data={**change.data, "alive": alive})
        self.world.apply(change)
        self._world_dirty = True
        return WorldEvent(seq=self.world.version, change=change, ts_ns=ts_ns)

    def late_change(self, change: WorldChange) -> Rejected | None:
        """Why ``change`` comes too late to apply, or None: its task is final, or the brain
        ended its command's step (the robot was declared dead and the step reassigned, say).

        A change names its task and command (``task_id``, ``command_id``, filled by the edge);
        one that names neither, or a task or command not recorded yet, is judged by the world.
        """
        rec = self.task(change.task_id) if change.task_id is not None else None
        if rec is None:
            return None
        what = f"{change.op} by command {change.command_id!r} of task {rec.task_id[:64]!r}"
        if rec.status in FINAL:
            return Rejected(self.topics.world_change, f"{what} refused: the task has ended "
                                                      f"({rec.status})", "late_change")
        step = rec.commands.get(change.command_id or "")
        if step is not None and step not in _IN_FLIGHT:
            return Rejected(self.topics.world_change, f"{what} refused: the brain ended that "
                                                      f"step ({step})", "late_change")
        return None

    def foreign_change(self, change: WorldChange, sender: str | None) -> Rejected | None:
        """Why robot ``sender`` may not make ``change``, or None (issue 13).

        A robot's edge (a sender named like a known robot) changes only itself and what it
        holds: no change naming another robot, no removing an object another holds or nobody
        holds. Other senders (the brain, tools) are not limited here; the bus ACL decides who
        may publish on ``P/memory/change`` at all. The sender name is what the bus carries
        (the MQTT 5 user property, the ZeroMQ header): self-declared unless the bus binds it.
        """
        if sender is None or (sender not in self.robots and sender not in self.world.robots):
            return None
        if change.robot is not None and change.robot != sender:
            why = f"robot {sender!r} may not change robot {change.robot!r}"
        elif change.op == "remove_object" and self.world.holder(change.object or "") != sender:
            why = f"robot {sender!r} may not remove {change.object!r}, which it does not hold"
        else:
            return None
        return Rejected(self.topics.world_change, f"{change.op} refused: {why}", "not_yours")

    # -- the fold ---------------------------------------------------------------------------
    def observe(self, topic: str, payload: bytes, ts_ns: int) -> list[Effect]:
        """Fold one bus message into the views; returns world events to publish or rejections."""
        route = self._routes.get(topic, _MISSING)
        if route is _MISSING:
            route = self._route(topic)
        if route is None:
            return _NONE  # not a view topic
        if not payload:  # clears a retained value; world events are never retained
            return _NONE if topic != self.topics.world_events else [
                Rejected(topic, "an empty payload is not a world event", "decode")]
        try:
            return route(topic, payload, ts_ns)
        except DecodeError as exc:
            return [Rejected(topic, exc.reason, "decode")]
        except WorldConflict as exc:
            return [Rejected(topic, exc.reason, exc.code)]
        except (ValueError, TypeError, KeyError) as exc:  # well-formed msgpack, nonsense values
            return [Rejected(topic, f"invalid {topic.rsplit('/', 1)[-1]}: {exc!r}", "invalid")]

    def _route(self, topic: str) -> Callable[[str, bytes, int], list[Effect]] | None:
        if len(self._routes) > _ROUTE_CACHE_MAX:
            self._routes.clear()
            self._state_robots.clear()
        t = self.topics
        route: Callable[[str, bytes, int], list[Effect]] | None = None
        if topic == t.world_events:
            route = self._on_world_event
        elif topic == t.scene:
            route = self._on_scene
        elif (robot := t.robot_of(topic)) is not None and topic.count("/") == \
                t.prefix.count("/") + 3:
            route = {
                t.registration(robot): self._on_registration, t.alive(robot): self._on_alive,
                t.state(robot): self._on_state, t.feedback(robot): self._on_feedback,
            }.get(topic)
            if route == self._on_state:
                self._state_robots[topic] = robot
        elif topic.startswith(t.prefix + "/tasks/") and topic.count("/") == \
                t.prefix.count("/") + 2:
            route = self._on_task
        self._routes[topic] = route
        return route

    def _record(self, robot: str, ts_ns: int) -> RobotRecord:
        rec = self.robots.get(robot)
        if rec is None:
            rec = self.robots[robot] = RobotRecord()
        rec.updated_ns = ts_ns
        self._dirty_robots.add(robot)
        return rec

    def _check_robot(self, topic: str, robot: str, msg: msgspec.Struct | None = None) -> None:
        if msg is not None:
            _storable(msg)
        reason = self.topics.robot_mismatch(topic, robot)
        if reason is not None:
            raise WorldConflict(reason, "robot_mismatch")

    def _on_registration(self, topic: str, payload: bytes, ts_ns: int) -> list[Effect]:
        reg = decode_as(payload, RobotRegistration, topic)
        self._check_robot(topic, reg.robot, reg)
        self._record(reg.robot, ts_ns).registration = reg
        if not self.live or reg.robot in self.world.robots:
            return _NONE
        start = reg.profile.get("start")
        effects: list[Effect] = []
        if start is not None and start not in self.world.places:
            effects.append(Rejected(topic, f"robot {reg.robot!r} starts at unknown place "
                                           f"{start!r}", "unknown_place"))
            start = None
        data = {**reg.profile, "profile": reg.type}
        effects.append(self.change(WorldChange("add_robot", robot=reg.robot, target=start,
                                               data=data), ts_ns))
        return effects

    def _on_alive(self, topic: str, payload: bytes, ts_ns: int) -> list[Effect]:
        msg = decode_as(payload, Alive, topic)
        self._check_robot(topic, msg.robot, msg)
        held = self.robots.get(msg.robot)
        if held is not None and held.alive is not None and not presence_supersedes(
                Alive(msg.robot, held.alive, bd_seq=held.bd_seq), msg):
            log.info("stale_presence_ignored", robot=msg.robot, online=msg.online,
                     bd_seq=msg.bd_seq, current=held.bd_seq)
            return _NONE
        rec = self._record(msg.robot, ts_ns)
        rec.alive, rec.bd_seq = msg.online, msg.bd_seq
        robot = self.world.robots.get(msg.robot)
        if robot is not None and robot.alive != msg.online:
            robot.alive = msg.online
            self._world_dirty = True
        return _NONE

    def _on_state(self, topic: str, payload: bytes, ts_ns: int) -> list[Effect]:
        state = decode_as(payload, RobotState, topic)
        # The common case costs two lookups (issue 16 item 7: 10,000 states/s at 1,000 robots):
        # the robot the topic names is known from routing, and a state decoded from msgpack
        # encodes back (bounded ints, valid UTF-8); only JSON's may not.
        if state.robot != self._state_robots.get(topic) or payload[0] not in _MSGPACK_MAP:
            self._check_robot(topic, state.robot, state)
        self._record(state.robot, ts_ns).state = state
        return _NONE

    def _on_feedback(self, topic: str, payload: bytes, ts_ns: int) -> list[Effect]:
        fb = decode_as(payload, SkillFeedback, topic)
        self._check_robot(topic, fb.robot, fb)
        self._record(fb.robot, ts_ns).feedback = fb
        return _NONE

    def _on_task(self, topic: str, payload: bytes, ts_ns: int) -> list[Effect]:
        st = _storable(decode_as(payload, TaskStatus, topic))
        if topic.rsplit("/", 1)[-1] != st.task_id:
            return [Rejected(topic, f"status of task {st.task_id[:64]!r} on another task's topic",
                             "task_mismatch")]
        rec = self.task(st.task_id)
        # the task state machine decides: a record is created only by a brain's ``accepted``,
        # and nothing leaves a final status (a cancelled task stays cancelled)
        step = next_status(rec.status if rec is not None else None, st.status)
        if isinstance(step, Refused):
            return [Rejected(topic, f"task {st.task_id[:64]!r}: {step.reason}", step.code)]
        if rec is None:
            rec = self.tasks[st.task_id] = TaskRecord(task_id=st.task_id, created_ns=st.ts_ns)
        rec.status, rec.updated_ns, rec.replans = step, st.ts_ns, st.replans
        rec.text = st.text or rec.text
        rec.priority = st.priority or rec.priority
        rec.plan = st.plan or rec.plan
        rec.reason = st.reason if st.reason is not None else rec.reason
        if st.step_id is not None and st.status in STEP:
            rec.steps[st.step_id] = st.status
            if st.command_id is not None:
                rec.commands[st.command_id] = st.status
        self.tasks[st.task_id] = rec  # a record read back from the archive comes back to RAM
        self._dirty_tasks.add(st.task_id)
        if step in FINAL:
            self._finished[st.task_id] = None
        return _NONE

    def _on_world_event(self, topic: str, payload: bytes, ts_ns: int) -> list[Effect]:
        ev = decode_as(payload, WorldEvent, topic)
        if ev.seq <= self.world.version:
            return _NONE  # already applied (our own event coming back, or a duplicate)
        if self.live and ev.seq != self.world.version + 1:
            # Live, this agent numbers the events: one from elsewhere that skips ahead would
            # push the version towards its maximum and refuse every later change.
            return [Rejected(topic, f"world event {ev.seq} skips ahead of version "
                                    f"{self.world.version}", "seq_gap")]
        try:
            self.change(ev.change, ev.ts_ns)
        except WorldConflict as exc:
            return [Rejected(topic, f"world event {ev.seq} does not apply: {exc.reason}",
                             exc.code)]
        self.world.version = ev.seq
        return _NONE

    def _on_scene(self, topic: str, payload: bytes, ts_ns: int) -> list[Effect]:
        if self.world.version or self.world.places:
            return _NONE  # the world already exists; a republished scene changes nothing
        scene = decode_as(payload, dict, topic)
        try:
            self.seed(scene)
        except (KeyError, TypeError, ValueError) as exc:
            return [Rejected(topic, f"invalid scene: {exc}", "bad_scene")]
        return _NONE

    # -- bounded task memory -----------------------------------------------------------------
    def task(self, task_id: str) -> TaskRecord | None:
        """One task record: from RAM, else from the archive (an old finished task)."""
        rec = self.tasks.get(task_id)
        if rec is None and self.archive is not None:
            rec = self.archive.task(task_id)
        return rec

    def all_tasks(self, max_bytes: int | None = None) -> list[TaskRecord]:
        """Every task record, those in RAM winning over their stored copy; the archive may
        refuse to read more than ``max_bytes`` of records (``QueryError``, ``too_large``)."""
        if self.archive is None:
            return list(self.tasks.values())
        stored = list(self.archive.iter_tasks(self.tasks, max_bytes))
        return [*stored, *self.tasks.values()]

    def trim(self) -> int:
        """Drop the oldest finished tasks beyond ``max_finished`` from RAM; returns how many.

        Called right after a commit succeeded: a record that is not dirty now went out in that
        commit or an earlier one, so it is on disk. Dirty ones stay until the next call.
        """
        excess = len(self._finished) - self.max_finished
        if self.archive is None or excess <= 0:
            return 0
        gone: list[str] = []
        for task_id in self._finished:
            if len(gone) >= excess:
                break
            if task_id not in self._dirty_tasks:
                gone.append(task_id)
        for task_id in gone:
            del self._finished[task_id]
            self.tasks.pop(task_id, None)
        return len(gone)

    # -- persistence hand-off ----------------------------------------------------------------
    @property
    def dirty(self) -> bool:
        """Something changed since the last :meth:`take_dirty`."""
        return bool(self._dirty_robots or self._dirty_tasks or self._world_dirty
                    or self._scene_dirty)

    def take_dirty(self) -> Dirty:
        """Encode what changed since the last call (on the event loop, so it is consistent)."""
        enc = msgspec.msgpack.encode
        dirty = Dirty(
            robots=[(r.encode(), self._encode_robot(r)) for r in self._dirty_robots],
            tasks=[(t.encode(), enc(self.tasks[t])) for t in self._dirty_tasks],
            world=enc(self.world.snapshot()) if self._world_dirty else None,
            scene=enc(self.scene) if self._scene_dirty else None,
        )
        self._dirty_robots.clear()
        self._dirty_tasks.clear()
        self._world_dirty = self._scene_dirty = False
        return dirty

    def _encode_robot(self, robot: str) -> bytes:
        """``msgpack.encode(self.robots[robot])``, the registration's bytes kept between calls."""
        rec = self.robots[robot]
        reg, raw = rec.registration, None
        if reg is not None:
            kept = self._registrations.get(robot)
            if kept is None or kept[0] is not reg:
                kept = self._registrations[robot] = (reg, msgspec.Raw(msgspec.msgpack.encode(reg)))
            raw = kept[1]
        return msgspec.msgpack.encode(_RobotRecordOut(raw, rec.state, rec.alive, rec.bd_seq,
                                                      rec.feedback, rec.updated_ns))

    def restore(self, world: WorldSnapshot | None, scene: dict[str, Any] | None,
                robots: dict[str, RobotRecord], tasks: dict[str, TaskRecord]) -> None:
        """Load persisted views (after a restart)."""
        if world is not None:
            self.world = World(world)
        self.scene = scene
        self.robots = robots
        self.tasks = tasks
        finished = sorted((r.updated_ns, t) for t, r in tasks.items() if r.status in FINAL)
        self._finished = OrderedDict((t, None) for _, t in finished)


_MISSING: Any = object()
#: first bytes of a msgpack map (fixmap, map 16, map 32): a message encoded as msgpack
_MSGPACK_MAP = frozenset([*range(0x80, 0x90), 0xDE, 0xDF])
_T = TypeVar("_T")


def _storable(msg: _T) -> _T:
    """``msg`` if it encodes back to msgpack; else ValueError (reported as ``invalid``).

    JSON lets an integer past 64 bits through a field without bounds (a RobotState's
    ``ts_ns``, say); stored in a record, it ended the agent's committer at the next
    commit, and again after every restart (found by tests/fuzz/test_contract_fuzz.py)."""
    try:
        msgspec.msgpack.encode(msg)
    except (OverflowError, UnicodeEncodeError) as exc:
        raise ValueError(f"a value that cannot be stored: {exc}") from exc
    return msg
