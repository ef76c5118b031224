"""What the runner sees on the bus: every message, decoded, plus the live state it implies.

:class:`Observed` is also the line format of the report's ``events.jsonl``; the summary and the
timeline are pure functions of a list of them (see :mod:`robobus.launch.report`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import msgspec
import structlog

from robobus.bus.errors import DecodeError
from robobus.schemas.codec import decode_as
from robobus.schemas.contract import message_type
from robobus.schemas.messages import SkillCommand, SkillFeedback, TaskStatus
from robobus.schemas.tasks import FINAL, Refused, next_status
from robobus.schemas.topics import Topics

log = structlog.get_logger("launch.observe")

#: ``Observed.type`` of the runner's own markers (not bus messages).
RUNNER = "Runner"
_TASK_LEVEL = FINAL | {"accepted", "planned", "replanning", "preempted"}
TERMINAL_SKILL = frozenset({"done", "failed", "cancelled", "rejected"})


class Observed(msgspec.Struct, omit_defaults=True):
    """One observed message: receive time (wall ns), topic, decoded type name and data."""

    t_ns: int
    topic: str
    type: str
    data: Any = None
    retained: bool = False


def marker(kind: str, **data: Any) -> Observed:
    """A runner marker (``ready``, ``instruction``, ``fault``, ``end``) for the event log."""
    return Observed(time.time_ns(), f"$runner/{kind}", RUNNER, {"kind": kind, **data})


def decode(topics: Topics, topic: str, payload: bytes) -> tuple[str, Any]:
    """(type name, plain data) for a message; undecodable payloads are kept as text or hex."""
    kind = message_type(topic, topics.prefix)
    if kind is not None:
        try:
            return kind.__name__, msgspec.to_builtins(decode_as(payload, kind, topic))
        except DecodeError as exc:
            return "Undecodable", {"reason": exc.reason, "hex": payload[:256].hex()}
    try:
        return "Raw", msgspec.msgpack.decode(payload)
    except (msgspec.DecodeError, RecursionError):  # RecursionError: hostile nesting
        return "Raw", payload[:256].decode("utf-8", "replace")


def follow(current: str | None, incoming: str) -> str | None:
    """The task state machine as the runner applies it: the next status, None if refused.

    A task first seen after its ``accepted`` (a recording cut short) is followed from there.
    """
    step = next_status(current, incoming)
    if isinstance(step, Refused):
        return incoming if current is None and step.code == "not_accepted" else None
    return step


@dataclass
class TaskView:
    """A task as the runner saw it."""

    task_id: str
    text: str = ""
    status: str = "sent"
    reason: str | None = None
    replans: int = 0
    robots: set[str] = field(default_factory=set)
    state: str | None = None  # the last status the task state machine let through
    refused: int = 0  # statuses it refused (e.g. one after a final status)


@dataclass
class RobotView:
    name: str
    registered: bool = False
    online: bool = False
    current: dict[str, str] = field(default_factory=dict)  # command id -> "skill arg"
    last: str = ""


SkillListener = Callable[[SkillFeedback], None]


class Observer:
    """Folds observed messages into task and robot views, and keeps the full log."""

    def __init__(self, topics: Topics, robots: list[str]) -> None:
        self.topics = topics
        self.events: list[Observed] = []
        self.tasks: dict[str, TaskView] = {}
        self.robots: dict[str, RobotView] = {r: RobotView(r) for r in robots}
        self.commands: dict[str, SkillCommand] = {}
        self.listeners: list[SkillListener] = []
        self.watchers: list[Callable[[Observed], None]] = []
        self.changed = anyio.Event()
        self.version = 0

    def add(self, ev: Observed) -> None:
        """Record ``ev`` and update the views."""
        self.events.append(ev)
        handler = getattr(self, f"_on_{ev.type}", None)
        if handler is not None:
            handler(ev)
            self.version += 1
            self.changed.set()
            self.changed = anyio.Event()
        for watch in list(self.watchers):
            watch(ev)

    async def wait_change(self, timeout: float) -> None:
        """Wait until a task, skill, liveness or world message arrives, or ``timeout``."""
        event = self.changed
        with anyio.move_on_after(timeout):
            await event.wait()

    def ingest(self, topic: str, payload: bytes, retained: bool = False) -> Observed:
        name, data = decode(self.topics, topic, payload)
        ev = Observed(time.time_ns(), topic, name, data, retained)
        self.add(ev)
        return ev

    def task(self, task_id: str) -> TaskView:
        return self.tasks.setdefault(task_id, TaskView(task_id))

    def _robot(self, name: str) -> RobotView:
        return self.robots.setdefault(name, RobotView(name))

    def _on_RobotRegistration(self, ev: Observed) -> None:
        self._robot(ev.data["robot"]).registered = True

    def _on_Alive(self, ev: Observed) -> None:
        robot = self._robot(ev.data["robot"])
        robot.online = bool(ev.data["online"])
        if not robot.online:
            robot.current.clear()

    def _on_TaskStatus(self, ev: Observed) -> None:
        st = msgspec.convert(ev.data, TaskStatus)
        view = self.task(st.task_id)
        view.text = st.text or view.text
        view.replans = max(view.replans, st.replans)
        if st.robot:
            view.robots.add(st.robot)
        state = follow(view.state, st.status)
        if state is None:
            view.refused += 1
            return
        view.state = state
        view.status = state if state in _TASK_LEVEL else "running"
        if state in FINAL:
            view.reason = st.reason

    def _on_WorldEvent(self, ev: Observed) -> None:
        """World changes only wake waiters (expectations are checked against memory)."""

    def _on_SkillCommand(self, ev: Observed) -> None:
        cmd = msgspec.convert(ev.data, SkillCommand)
        if cmd.action == "run":
            self.commands[cmd.command_id] = cmd

    def _on_SkillFeedback(self, ev: Observed) -> None:
        fb = msgspec.convert(ev.data, SkillFeedback)
        robot = self._robot(fb.robot)
        if fb.status in ("started", "accepted"):
            robot.current[fb.command_id] = self.label(fb.command_id, fb.skill)
        elif fb.status in TERMINAL_SKILL:
            robot.current.pop(fb.command_id, None)
            robot.last = f"{self.label(fb.command_id, fb.skill)}: {fb.status}"
        for listener in list(self.listeners):
            listener(fb)

    def label(self, command_id: str, skill: str) -> str:
        """``pick apple``: the skill with its first argument, when the command was seen."""
        cmd = self.commands.get(command_id)
        args = [str(v) for v in (cmd.args.values() if cmd else ())]
        return " ".join([skill, *args[:1]])
