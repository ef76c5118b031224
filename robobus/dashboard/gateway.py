"""The bus side of ``robobus dashboard``: what every browser sees, and what it may send.

The gateway subscribes to the whole prefix once and fans each message out, as a JSON text
frame, to every connected browser. A browser that connects later first gets a snapshot: the
latest value of each presence, state and registration topic, the latest status of each task,
the world from the memory agent, then the recent event history. Robot state (telemetry at
10 Hz or more) is relayed at most every :data:`STATE_PERIOD_S`, always the newest value.

Frames a browser sends are answered one by one; a frame that is not understood gets an
``error`` frame saying why and the connection goes on (issue 17: bad input loses nothing).
"""

from __future__ import annotations

import json
import math
import secrets
from collections import deque
from typing import Any

import anyio
import anyio.abc
import msgspec
import structlog
from anyio.streams.memory import MemoryObjectSendStream

from robobus.brain_agent.fleet import MemoryUnavailable, query_memory
from robobus.bus.api import Bus
from robobus.bus.errors import BusError
from robobus.bus.message import Message
from robobus.cli.payloads import decode_payload
from robobus.dashboard.access import Permission
from robobus.schemas.memory import MemoryQuery
from robobus.schemas.messages import Instruction, Priority
from robobus.schemas.topics import Topics

log = structlog.get_logger("robobus.dashboard")

#: the largest frame a browser may send (an instruction is a few hundred bytes)
FRAME_LIMIT = 64 * 1024
#: events kept for browsers that connect later
HISTORY = 2000
#: tasks whose latest status is kept for the snapshot (the oldest go first)
TASKS_KEPT = 500
#: how often a robot's state is relayed at most (seconds)
STATE_PERIOD_S = 0.2
#: frames queued for one browser; a browser this far behind is disconnected (it reconnects)
CLIENT_BUFFER = 10_000
#: kinds of frame a browser may send
KINDS = ("instruct", "ping")


class InstructRequest(msgspec.Struct, forbid_unknown_fields=True):
    """What the instruction box sends."""

    kind: str
    text: str = msgspec.field(default="")
    priority: Priority = 0
    ref: str | None = None


def error_frame(code: str, reason: str, ref: Any = None) -> str:
    """An ``error`` frame: ``code`` for programs, ``reason`` for people."""
    return _dump({"kind": "error", "code": code, "reason": reason, "ref": _ref(ref)})


def _ref(ref: Any) -> str | None:
    return ref[:64] if isinstance(ref, str) else None


def _dump(frame: dict[str, Any]) -> str:
    try:
        return json.dumps(frame, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except ValueError:  # a NaN or infinity in a payload: JSON.parse would refuse the frame
        return json.dumps(_finite(frame), ensure_ascii=False, separators=(",", ":"))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


class Gateway:
    """Relays one bus to many browsers and takes their instructions."""

    def __init__(self, bus: Bus, topics: Topics, permission: Permission) -> None:
        self.bus, self.topics, self.permission = bus, topics, permission
        self.latest: dict[str, str] = {}  # topic -> frame: presence, registrations, state, status
        self.tasks: dict[str, str] = {}  # task topic -> its latest status frame
        self.history: deque[str] = deque(maxlen=HISTORY)
        self.world: str | None = None
        self.clients: set[MemoryObjectSendStream[str]] = set()
        self._states: dict[str, str] = {}  # robot state frames not relayed yet
        self._world_stale = anyio.Event()
        self._base = len(topics.prefix) + 1

    # -- bus -> browsers -----------------------------------------------------------------------
    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        """Relay the bus until cancelled; ``started()`` once the subscription is live."""
        async with self.bus.subscribe(f"{self.topics.prefix}/#", reports=False) as sub, \
                anyio.create_task_group() as tg:
            task_status.started()
            tg.start_soon(self._flush_states, name="dashboard:states")
            tg.start_soon(self._track_world, name="dashboard:world")
            async for msg in sub:
                self.on_message(msg)

    def on_message(self, msg: Message) -> None:
        """Fold one bus message into the snapshot and relay it."""
        rel = msg.topic[self._base:]
        parts = rel.split("/")
        if parts[0] in ("_inbox", "memory") and rel != "memory/status":
            return  # request/reply traffic: the dashboard's own world queries among it
        data = decode_payload(msg.payload)[1] if msg.payload else None
        frame = _dump({"kind": "bus", "topic": rel, "data": data, "retain": msg.retain})
        if parts[0] == "robots" and parts[-1] == "state" and len(parts) == 3:
            self._states[rel] = frame
            self.latest[rel] = frame
            return
        if (parts[0] == "robots" and len(parts) == 3 and parts[2] in ("registration", "alive")) \
                or parts[0] == "brain" \
                or rel in ("memory/status", "world/scene"):
            self._keep(self.latest, rel, frame, data)
        elif parts[0] == "tasks":
            self._keep(self.tasks, rel, frame, data)
            while len(self.tasks) > TASKS_KEPT:
                del self.tasks[next(iter(self.tasks))]
        if rel == "world/events":
            self._world_stale.set()
        if not (parts[0] == "robots" and len(parts) == 3 and parts[2] == "faults"):
            self.history.append(frame)
        self.broadcast(frame)

    @staticmethod
    def _keep(store: dict[str, str], rel: str, frame: str, data: Any) -> None:
        store.pop(rel, None)  # re-inserted last: the newest at the end
        if data is not None:  # an empty retained message clears the topic
            store[rel] = frame

    def broadcast(self, frame: str) -> None:
        """Queue ``frame`` for every browser; one too far behind is dropped (it reconnects)."""
        for client in list(self.clients):
            try:
                client.send_nowait(frame)
            except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
                self.clients.discard(client)
                client.close()
                log.warning("browser too slow, disconnected", buffered=CLIENT_BUFFER)

    async def _flush_states(self) -> None:
        while True:
            await anyio.sleep(STATE_PERIOD_S)
            states, self._states = self._states, {}
            for frame in states.values():
                self.broadcast(frame)

    async def _track_world(self) -> None:
        """The world from the memory agent: at start, then again after world events."""
        while True:
            try:
                world = await query_memory(self.bus, self.topics, MemoryQuery(kind="world"), 3.0)
            except MemoryUnavailable as exc:
                log.info("no world yet", reason=str(exc))
                await anyio.sleep(1.0)
                continue
            self.world = _dump({"kind": "world", "data": world})
            self.broadcast(self.world)
            self._world_stale = anyio.Event()
            await self._world_stale.wait()
            await anyio.sleep(0.2)  # a burst of events costs one query

    def snapshot(self) -> list[str]:
        """What a browser that connects now is sent first."""
        hello = _dump({"kind": "hello", "prefix": self.topics.prefix, "bus": self.bus.url,
                       "may_instruct": self.permission.may_instruct,
                       "account": self.permission.account, "why": self.permission.reason})
        history = [f'{{"replay":true,{frame[1:]}' for frame in self.history]
        world = [self.world] if self.world is not None else []
        return [hello, *world, *self.latest.values(), *self.tasks.values(), *history,
                _dump({"kind": "live"})]

    # -- browsers -> bus -----------------------------------------------------------------------
    async def handle(self, text: str | None, data: bytes | None) -> str:
        """The answer to one frame from a browser: ``accepted``, ``pong`` or ``error``."""
        if text is None:
            return error_frame("binary", f"binary frames ({len(data or b'')} bytes) are not "
                                         "accepted: send JSON text")
        if len(text) > FRAME_LIMIT:  # characters: at least as many bytes
            return error_frame("too_large", f"frame of {len(text)} characters; the limit is "
                                            f"{FRAME_LIMIT}")
        try:
            frame = json.loads(text)
        except ValueError as exc:
            return error_frame("malformed", f"not JSON: {exc}")
        kind = frame.get("kind") if isinstance(frame, dict) else None
        ref = frame.get("ref") if isinstance(frame, dict) else None
        if not isinstance(kind, str):
            return error_frame("malformed", 'a frame is a JSON object with a "kind"', ref)
        if kind == "ping":
            return _dump({"kind": "pong", "ref": _ref(ref)})
        if kind == "instruct":
            return await self._instruct(frame, ref)
        return error_frame("unknown_kind", f"unknown kind {kind[:64]!r}; known: {', '.join(KINDS)}",
                           ref)

    async def _instruct(self, frame: dict[str, Any], ref: Any) -> str:
        if not self.permission.may_instruct:
            return error_frame("forbidden", f"this dashboard may not instruct: "
                                            f"{self.permission.reason}", ref)
        try:
            req = msgspec.convert(frame, InstructRequest)
            if not req.text.strip():
                raise ValueError("the instruction text is empty")
            task_id = secrets.token_hex(6)
            instruction = Instruction(req.text, req.priority, task_id,
                                      source=f"dashboard:{self.permission.account or 'anonymous'}")
        except (msgspec.ValidationError, ValueError) as exc:
            return error_frame("invalid", str(exc), ref)
        try:
            await self.bus.publish(self.topics.instructions_from(self.permission.account),
                                   instruction, qos=1)
        except BusError as exc:
            return error_frame("bus", f"not published: {exc}", ref)
        log.info("instruction sent", task=task_id, priority=req.priority)
        return _dump({"kind": "accepted", "ref": _ref(ref), "task_id": task_id,
                      "text": req.text, "priority": req.priority})
