"""``robobus brain``: instruction intake, fleet and world caches, scheduler, crash recovery."""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any, cast

import anyio
import anyio.lowlevel
import msgspec
import structlog

from robobus.brain_agent import intake
from robobus.brain_agent.config import BrainConfig
from robobus.brain_agent.fleet import FleetView, MemoryUnavailable, query_memory
from robobus.brain_agent.guard import Guard
from robobus.brain_agent.known_tasks import KnownTasks
from robobus.brain_agent.leader import Leader
from robobus.brain_agent.planners import load_planner
from robobus.brain_agent.replies import Replies, Reply, reply_of
from robobus.brain_agent.scheduler import Scheduler, goals_of
from robobus.brain_agent.states import RobotTopics, StateIntake
from robobus.brain_agent.tasks import StatusPublisher, Task, not_resumable
from robobus.bus import Bus, Message, Overflow
from robobus.bus.reply import refuse_reply_topic
from robobus.schemas.memory import MemoryQuery, TaskRecord
from robobus.schemas.messages import (
    Alive,
    Instruction,
    RobotRegistration,
    RobotState,
    SkillFeedback,
    TaskState,
)
from robobus.schemas.owners import owned_by
from robobus.schemas.topics import Topics
from robobus.schemas.world import WorldEvent

log = structlog.get_logger("brain")
_IN_FLIGHT = ("dispatched", "progress")
MAX_TASK_ID = 128


def new_task_id() -> str:
    """A task id unique across brain restarts (64 random bits; ids a client chooses are
    checked against task memory instead)."""
    return secrets.token_hex(8)


class Brain:
    """The brain agent's wiring: subscriptions feed the fleet view and the scheduler."""

    def __init__(self, bus: Bus, config: BrainConfig, tg: anyio.abc.TaskGroup) -> None:
        self.bus, self.config, self.tg = bus, config, tg
        self.topics = Topics(bus.options.prefix)
        self.planner = load_planner(config.planner, **config.planner_options)
        self.fleet = FleetView(bus, self.topics, query_timeout=config.query_timeout_s)
        self.guard = Guard(bus)
        self.status = StatusPublisher(bus, self.topics)
        #: requesters' reply topics, fed every status the publisher sends (issue 14)
        self.replies = Replies(bus)
        self.status.forward = self.replies.send
        self.scheduler = Scheduler(bus, self.topics, self.fleet, self.planner, config,
                                   self.status, tg, guard=self.guard)
        self.started_ns = time.time_ns()
        self._refreshing = False
        #: active or standby on this fleet, and the brain's presence (issue 12)
        group = config.group
        self.leader = Leader(bus, config.name, self.planner.name,
                             group.name if group is not None else None)
        #: a group's brain takes its group's instructions and names its tasks after it
        self.intake_topic = (self.topics.instructions if group is None
                             else self.topics.group_instructions(group.name))
        self.new_task_id = new_task_id if group is None else group.new_task_id
        #: capacity: past it new instructions are shed before any planning (issue 16)
        self.admission = intake.Admission(config.max_pending, config.max_backlog)
        #: every task id memory may know: a client's id it surely lacks needs no query
        self.known = KnownTasks()
        #: instructions waiting in the intake buffer (its subscription, once open)
        self.backlog: Callable[[], int] = lambda: 0
        #: robot topic -> (robot, led by this brain), decided once per topic
        self.robot_topics = RobotTopics(self.topics, group)

    async def subscribe_all(self, stack: AsyncExitStack) -> None:
        """Open every subscription and start one consumer task per subscription."""
        t = self.topics
        subs: list[tuple[str, Any, Any, dict[str, Any]]] = [
            (t.registration(), RobotRegistration, self._on_registration, {}),
            (t.alive(), Alive, self.fleet.on_alive, {}),
            (t.feedback(), SkillFeedback, self.scheduler.on_feedback, {}),
            (t.world_events, WorldEvent, self._on_world_event, {}),
        ]
        # the memory agent reports what is refused on these topics (once: issue 14)
        owns = owned_by("brain", t.prefix)
        for pattern, type_, handler, opts in subs:
            sub = await stack.enter_async_context(self.bus.subscribe(pattern, type_, reports=owns,
                                                                     **opts))
            self.tg.start_soon(self._consume, sub, handler, name=f"brain-sub-{pattern}")
        # untyped: another group's robot's state is dropped by its topic, never decoded
        states = await stack.enter_async_context(self.bus.subscribe(
            t.state(), reports=owns, overflow=Overflow.LATEST))
        intake_states = StateIntake(self.bus, self.robot_topics, self.guard, self._on_state, owns)
        self.tg.start_soon(intake_states.serve, states, states.pattern,
                           name=f"brain-sub-{states.pattern}")
        # the shared topic and each account's own (rate-limited per account: issue 13)
        intakes = await intake.subscribe(self.bus, self.intake_topic,
                                         self.config.instruction_rate_limit, stack)
        self.backlog = lambda: sum(len(s) for s in intakes)
        for sub in intakes:
            self.tg.start_soon(self._intake, sub, name=f"brain-sub-{sub.pattern}")
        if self.config.group is not None:
            # other groups' brains take client ids too: their statuses keep the filter current
            # (untyped: the topic names the task). A brain that leads the whole fleet is the only
            # one taking tasks, so its own intake and its boot-time load suffice: following every
            # status cost it throughput (bench.brain --throughput shed at 150/s with it)
            statuses = await stack.enter_async_context(self.bus.subscribe(t.task(),
                                                                          reports=False))
            self.tg.start_soon(self.known.follow, statuses, name="brain-known-tasks")
        # untyped: a cleared registration (an empty value) takes the robot out of the fleet
        clears = await stack.enter_async_context(self.bus.subscribe(t.registration(), reports=False))
        self.tg.start_soon(self.fleet.follow_clears, clears, self.guard.call, name="brain-clears")

    async def _intake(self, sub: Any) -> None:
        async for msg in sub:
            await self._take(msg)
            # A buffered message is returned without a pause, and shedding or refusing one
            # never waits: a flood would starve the presence heartbeats without this (issue 16).
            await anyio.lowlevel.checkpoint()

    async def _take(self, msg: Message) -> None:
        """One instruction: ignored (standby, replayed), refused, shed or taken."""
        if self._standby() or (self.leader.mode == "deciding"
                               and await self.leader.decided() == "standby"):
            # the active brain takes it
            log.debug("standby_instruction_ignored", topic=msg.topic)
            return
        if msg.replayed and not self.config.accept_replayed:
            log.debug("replayed_instruction_ignored", topic=msg.topic)
            return
        inst = intake.decode(self.bus, msg)
        if inst is None:
            return
        if msg.retain:  # kept by the broker or hub: refused and cleared, never executed
            await self.guard.call("retained instruction", msg.topic, intake.refuse_retained,
                                  self.bus, msg, inst, payload=msg.payload)
            return
        await self.guard.call("_on_instruction on instructions", msg.topic,
                              self._on_instruction, inst, msg, payload=msg.payload)

    async def _consume(self, sub: Any, handler: Any) -> None:
        what = f"{handler.__name__} on {sub.pattern}"
        feedback = handler == self.scheduler.on_feedback
        async for msg in sub:
            if feedback and (self._standby() or (self.leader.mode == "deciding"
                                                 and await self.leader.decided() == "standby")):
                continue  # results of the active brain's commands; a standby has none
            if self._from_its_robot(msg):
                # one message that a handler cannot take is reported; the next one is served
                await self.guard.call(what, msg.topic, handler, msg.data, payload=msg.payload)

    def _standby(self) -> bool:
        """A standby, decided (then no coroutine per message: ``Leader.decided`` only waits
        while the role is being decided)."""
        return self.leader.mode == "standby"

    def _from_its_robot(self, msg: Message) -> bool:
        if not self.robot_topics(msg.topic)[1]:
            return False  # another group's robot: another brain's, never planned or commanded here
        reason = self.robot_topics.mismatch(msg, getattr(msg.data, "robot", None))
        if reason is None:
            return True
        self.bus.report_error_soon(msg.topic, reason, "robot_mismatch", msg.payload)
        return False

    # -- handlers --------------------------------------------------------------------------
    def _on_instruction(self, inst: Instruction, msg: Message | None = None) -> Awaitable[None] | None:
        task_id = inst.task_id or self.new_task_id()
        reply = reply_of(msg, inst) if msg is not None else None
        refused = _refuse_task_id(task_id, self.scheduler.tasks)
        if refused is None and reply is not None:
            why = refuse_reply_topic(reply[0], self.topics.prefix)
            refused, reply = ((why, "bad_reply_topic"), None) if why else (None, reply)
        if refused is not None:
            log.info("instruction_refused", task=task_id[:128], code=refused[1])
            self.bus.report_error_soon(self.intake_topic, refused[0], refused[1],
                                       msg.payload if msg else b"", about=msg,
                                       task_id=task_id[:MAX_TASK_ID], reply=reply,
                                       sender=_sender(msg, inst))
            return None
        ask = inst.task_id is not None and self.known.maybe(task_id)
        self.known.add(task_id)  # memory will know it from this brain's statuses (shed ones too)
        shed = self.admission.refuse(len(self.scheduler.live), self.backlog())
        if reply is not None:  # before the task can say anything
            self.replies.expect(task_id, reply)
        task = Task(task_id, inst.text, inst.priority, origin=inst.origin)
        if shed is not None:
            self._shed(task, shed, msg, _sender(msg, inst))
            return None
        self.scheduler.add(task)
        if ask and self.fleet.world_ready.is_set():
            # a client's id the filter may know: the durable record decides it is new (once
            # memory has answered; before that, the task waits for the world and the intake
            # must not wait for memory). An id the filter lacks is new: no round trip.
            self.guard.spawn(self.tg, "task start", self.topics.task(task_id), self._start_if_new,
                             task, msg.payload if msg else b"", reply, _sender(msg, inst),
                             name=f"task-{task_id}")
            return None
        if self.planner.inline and self.fleet.world_ready.is_set():
            # a planner that never waits is run on the intake path: one scheduling hop less
            # between the instruction and the first command (not while the task would wait for
            # the world: that would hold up every instruction behind it)
            return self.scheduler.start_task(task)
        self.guard.spawn(self.tg, "task start", self.topics.task(task_id),
                         self.scheduler.start_task, task, name=f"task-{task_id}")
        return None

    def _shed(self, task: Task, reason: str, msg: Message | None, sender: str | None) -> None:
        """Refuse a new task at capacity: its statuses (task topic, reply topic) say
        ``overloaded``, and so does an error report (those are rate-limited per topic)."""
        log.debug("instruction_shed", task=task.id)
        self.scheduler.shed(task, reason)
        # the requester has the task's failed status; the report is for operators
        self.bus.report_error_soon(self.intake_topic, reason, intake.OVERLOADED,
                                   msg.payload if msg else b"", task_id=task.id, sender=sender)

    async def _start_if_new(self, task: Task, payload: bytes, reply: Reply | None,
                            sender: str | None) -> None:
        status = await intake.known_task(self.bus, self.topics, task.id,
                                         self.config.query_timeout_s)
        if status is None:
            await self.scheduler.start_task(task)
            return
        self.scheduler.tasks.pop(task.id, None)
        self.scheduler.live.pop(task.id, None)
        self.replies.forget(task.id)
        log.info("instruction_refused", task=task.id, code="duplicate_task")
        self.bus.report_error_soon(self.intake_topic, f"task id {task.id!r} is already "
                                   f"taken: task memory has it ({status})", "duplicate_task",
                                   payload, task_id=task.id, reply=reply, sender=sender)

    def _on_registration(self, reg: RobotRegistration) -> None:
        self.fleet.on_registration(reg)
        self.guard.spawn(self.tg, "dispatch", self.topics.registration(reg.robot),
                         self.scheduler.pump)

    def _on_state(self, state: RobotState) -> None:
        self.fleet.on_state(state)
        self.scheduler.reconcile(state)
        if not state.busy and state.ts_ns > self.started_ns:
            self.scheduler.robot_idle(state.robot)

    def _on_world_event(self, event: WorldEvent) -> None:
        if not self.fleet.on_event(event) and not self._refreshing:
            self._refreshing = True
            self.guard.spawn(self.tg, "world refresh", self.topics.world_events, self._refresh,
                             name="brain-world-refresh")

    async def _refresh(self) -> None:
        try:
            await self.fleet.refresh()
        finally:
            self._refreshing = False

    # -- start-up and recovery -------------------------------------------------------------
    async def boot(self) -> None:
        """Warm the planner up, load the world from memory, resume active tasks, say ready."""
        # model backends load weights now, not on the first instruction
        self.guard.spawn(self.tg, "planner warmup", self.topics.brain_status,
                         self.planner.warmup, name="brain-planner-warmup")
        await self.fleet.load_world_until_ready()
        # memory answers now; loaded again each time this brain leads (another led meanwhile)
        await self.known.load(self.bus, self.topics, self.config.query_timeout_s)
        if self.config.recover:
            # a recovery that fails is reported; the brain still takes new work
            await self.guard.call("task recovery", self.topics.brain_status, self.recover)
        await self.announce_ready()

    async def announce_ready(self) -> None:
        """Publish ``BrainStatus(ready)``: the birth of this active brain's presence, retained
        so that later subscribers (a launcher, an operator's tool) see it too."""
        await self.leader.announce("ready")
        log.info("brain_ready", topic=self.topics.brain_status)

    async def recover(self) -> None:
        try:
            result = await query_memory(self.bus, self.topics,
                                        MemoryQuery(kind="tasks", status="active"),
                                        self.config.query_timeout_s)
        except MemoryUnavailable as exc:
            log.warning("task_recovery_failed", reason=str(exc))
            return
        for rec in self._task_records(result):
            if rec.task_id in self.scheduler.tasks or not self._ours(rec):
                continue
            refused = not_resumable(rec)
            if refused is not None:  # never resume a final task or a record no brain made
                log.warning("task_not_resumed", task=rec.task_id[:128], code=refused[1])
                self.bus.report_error_soon(self.topics.memory_query, refused[0], refused[1],
                                           rec.task_id.encode()[:64])
                continue
            log.info("task_resumed", task=rec.task_id, status=rec.status)
            task = Task(rec.task_id, rec.text, rec.priority, goals=goals_of(rec.plan),
                        replans=rec.replans, status=cast(TaskState, rec.status))
            orphans = {s.id: s.robot for s in (rec.plan.steps if rec.plan else [])
                       if rec.steps.get(s.id) in _IN_FLIGHT and self.fleet.online.get(s.robot, True)}
            self.guard.spawn(self.tg, "task resume", self.topics.task(rec.task_id),
                             self.scheduler.resume, task, orphans, name=f"resume-{rec.task_id}")

    def _ours(self, rec: TaskRecord) -> bool:
        """A group's brain resumes only its group's tasks (another group's brain has the rest)."""
        return self.config.group is None or self.config.group.owns(rec)

    def _task_records(self, result: object) -> list[TaskRecord]:
        """The valid records of a ``tasks`` reply; each one out of its schema's bounds (a
        forged ``replans`` of 2**64-1, say) is reported and skipped."""
        records: list[TaskRecord] = []
        for raw in result if isinstance(result, list) else []:
            try:
                records.append(msgspec.convert(raw, TaskRecord))
            except msgspec.ValidationError as exc:
                task_id = raw.get("task_id") if isinstance(raw, dict) else None
                task_id = task_id[:MAX_TASK_ID] if isinstance(task_id, str) else "?"
                log.warning("task_record_skipped", task=task_id, reason=str(exc))
                self.bus.report_error_soon(self.topics.memory_query,
                                           f"task record {task_id[:64]!r} not resumed: {exc}",
                                           "bad_task_record", task_id.encode(errors="replace"))
        return records


def _sender(msg: Message | None, inst: Instruction) -> str | None:
    """Who sent an instruction: its ``sender`` property (robobus clients), else its ``source``."""
    return (msg.sender if msg is not None else None) or inst.source


def _refuse_task_id(task_id: str, known: Any) -> tuple[str, str] | None:
    """(reason, code) if ``task_id`` cannot name a new task: it is one topic level, and new."""
    if len(task_id) > MAX_TASK_ID or any(c in task_id for c in "/+#\x00"):
        return (f"task id {task_id[:64]!r} is not a single topic level of at most "
                f"{MAX_TASK_ID} characters", "bad_task_id")
    if task_id in known:
        return f"task id {task_id!r} is already taken (a replayed instruction?)", "duplicate_task"
    return None


async def run(bus: Bus, config: BrainConfig | None = None, *,
              task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """Run the brain on ``bus`` until cancelled; ``started()`` once subscriptions are live."""
    config = config or BrainConfig()
    structlog.contextvars.bind_contextvars(agent=config.name)
    async with anyio.create_task_group() as tg, AsyncExitStack() as stack:
        brain = Brain(bus, config, tg)
        tg.start_soon(brain.status.run, name="brain-status")
        await brain.subscribe_all(stack)
        # boots once it leads the fleet: at once, or as a standby when the active brain dies
        await tg.start(brain.leader.lead, brain.boot, name="brain-lead")
        log.info("brain_started", planner=config.planner, prefix=brain.topics.prefix)
        task_status.started()
        await anyio.sleep_forever()
