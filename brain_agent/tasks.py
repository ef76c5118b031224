"""Task and step bookkeeping, and the ordered task-status publisher."""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from robobus.brain_agent.goals import GoalSet
from robobus.bus import Bus
from robobus.bus.errors import BusError
from robobus.schemas.memory import TaskRecord
from robobus.schemas.messages import Plan, PlanStep, SkillCommand, TaskState, TaskStatus
from robobus.schemas.tasks import ACTIVE as ACTIVE_STATUSES
from robobus.schemas.tasks import Refused, is_final, next_status
from robobus.schemas.topics import Topics

log = structlog.get_logger("brain.tasks")

TaskPhase = Literal["planning", "running", "replanning", "preempted", "done", "failed", "cancelled"]
StepState = Literal["pending", "running", "done", "failed", "cancelled", "dropped"]
ACTIVE: frozenset[str] = frozenset({"planning", "running", "replanning", "preempted"})
_order = itertools.count()


@dataclass(eq=False, slots=True)
class StepRun:
    """One plan step's execution: its command id, state and watchdog."""

    step: PlanStep
    task: Task
    state: StepState = "pending"
    command_id: str = ""
    watchdog: asyncio.TimerHandle | None = None
    command: SkillCommand | None = None
    sent_at: float = 0.0  # anyio clock of the last send
    resends: int = 0
    #: robots the brain holds for this step while it runs (its own, a handover's receiver)
    holds: tuple[str, ...] = ()
    #: (the registration it was read from, the world change the step makes): see
    #: ``sharing.project``, which applies every open step of the tasks ahead on each plan
    change: tuple[Any, Any] | None = None

    @property
    def robot(self) -> str:
        return self.step.robot

    def describe(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.step.args.items())
        return f"{self.step.robot} {self.step.skill}({args})"


@dataclass(eq=False, slots=True)
class Task:
    """An instruction being planned, executed, replanned or preempted."""

    id: str
    text: str
    priority: int = 0
    phase: TaskPhase = "planning"
    goals: GoalSet | None = None
    plan: Plan | None = None
    runs: dict[str, StepRun] = field(default_factory=dict)
    replans: int = 0
    failures: int = 0
    excluded: set[str] = field(default_factory=set)
    last_failure: str | None = None
    orphans: dict[str, str] = field(default_factory=dict)  # step id -> robot, from before a crash
    order: int = field(default_factory=lambda: next(_order))
    #: the last status published on the task's topic (None: none yet); see schemas/tasks.py
    status: TaskState | None = None
    #: where the requester is (the instruction's origin; issue 15)
    origin: str | None = None

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE

    def install(self, plan: Plan) -> None:
        self.plan = plan
        self.runs = {s.id: StepRun(s, self) for s in plan.steps}

    def running(self) -> list[StepRun]:
        return [r for r in self.runs.values() if r.state == "running"]

    def reserved(self) -> set[str]:
        """Robots this task still needs (pending or running steps)."""
        return {r.robot for r in self.runs.values() if r.state in ("pending", "running")}

    def ready(self) -> list[StepRun]:
        """Pending steps whose dependencies are all done, in plan order."""
        # a loop, not a generator per step: asked of every live task on each dispatch check
        runs = self.runs
        out: list[StepRun] = []
        for r in runs.values():
            if r.state != "pending":
                continue
            for d in r.step.after:
                dep = runs.get(d)
                if dep is not None and dep.state != "done":
                    break
            else:
                out.append(r)
        return out

    def complete(self) -> bool:
        return all(r.state == "done" for r in self.runs.values())

    def drop_pending(self) -> None:
        for run in self.runs.values():
            if run.state == "pending":
                run.state = "dropped"

    def remaining_s(self, robot: str) -> float:
        return sum(r.step.est_s for r in self.runs.values()
                   if r.robot == robot and r.state in ("pending", "running"))


def not_resumable(rec: TaskRecord) -> tuple[str, str] | None:
    """(reason, code) if a task record from memory must not be resumed by a restarted brain.

    A record exists only from a brain's ``accepted`` (the memory agent applies the task state
    machine), and a brain sends the instruction's text and, before any step, the plan with
    every status. A final record, or one whose steps are not its plan's, was not made that way.
    """
    if rec.status not in ACTIVE_STATUSES:
        code = "final" if is_final(rec.status) else "unknown_status"
        return f"task {rec.task_id[:64]!r} is {rec.status[:32]!r}, not active", code
    steps = {s.id for s in rec.plan.steps} if rec.plan else set()
    if not rec.text.strip() or not set(rec.steps) <= steps:
        return (f"task {rec.task_id[:64]!r} is not a record a brain made (no instruction text, "
                "or steps outside its plan)", "forged_task")
    return None


#: acknowledged statuses in flight at once (posted, ack not yet seen). One at a time, a
#: status cost a hub round trip each and lagged 109 ms at 250 instructions/s (issue 16).
STATUS_WINDOW = 64
#: longest a dispatch waits to post its task's statuses before its command (s). Past it the
#: command goes ahead and the statuses follow from the background task: a hub or broker that
#: stops acknowledging must not hold robot commands for the bus's whole ack timeout.
FLUSH_WAIT_S = 2.0
#: what a forward returns: the reply's acknowledgement to await, or None
Forward = Callable[[TaskStatus], Awaitable[Awaitable[None] | None]]
#: a posted status, its acknowledgement and its reply's
_Posted = tuple[TaskStatus, Awaitable[None], Awaitable[None] | None]


#: statuses logged at debug only (see :meth:`StatusPublisher._publish`)
_ROUTINE = frozenset({"accepted", "planned", "dispatched", "progress", "step_done"})

class StatusPublisher:
    """Publishes task statuses in order (qos 1).

    Enqueueing never waits for the hub's acknowledgement, so skill commands are not delayed
    behind status traffic. Statuses leave in the order emitted (``Bus.post`` keeps call
    order), from the background task or from a dispatch that needs them out first
    (:meth:`flush`), one drainer at a time; up to :data:`STATUS_WINDOW` await their
    acknowledgement at once, and a second task awaits them in order and reports a failed one
    as ``status_publish_failed``.
    """

    def __init__(self, bus: Bus, topics: Topics, window: int = STATUS_WINDOW,
                 flush_wait: float = FLUSH_WAIT_S) -> None:
        self.bus = bus
        self.topics = topics
        self.window = max(window, 1)
        self.flush_wait = flush_wait
        self._queue: deque[TaskStatus] = deque()
        self._queued = anyio.Event()
        self._closed = False
        # one drainer at a time (the background task or a flush); no loop turn when free
        self._lock = anyio.Lock(fast_acquire=True)
        self._posted: MemoryObjectSendStream[_Posted] | None = None
        #: posted statuses whose acknowledgement is not settled yet, and a wake-up for room
        self._in_flight = 0
        self._room = anyio.Event()
        #: statuses that could not be published for a reason other than the bus (reported)
        self.failures = 0
        #: called with each status once posted: posts the requester's reply (issue 14)
        self.forward: Forward | None = None

    def emit(self, task: Task, status: str, **fields: Any) -> None:
        """Queue ``status`` for ``task`` if the task state machine lets it follow the last one:
        nothing follows a final status (a cancelled step's failure after ``cancelled``)."""
        step = next_status(task.status, status)
        if isinstance(step, Refused):
            log.info("task_status_withheld", task=task.id, status=status, code=step.code,
                     reason=step.reason)
            return
        task.status = step
        if self._closed:
            log.debug("status_dropped_at_shutdown", task=task.id, status=status)
            return
        self._queue.append(TaskStatus(task_id=task.id, status=step, text=task.text,
                                      priority=task.priority, replans=task.replans, **fields))
        self._queued.set()

    async def flush(self) -> None:
        """Post every status queued so far, here and now, in order; wait at most
        :attr:`flush_wait` seconds for the window or the other drainer.

        Called inside the ``bus.coalesce()`` that also posts a skill command: the task's
        ``accepted`` and ``planned`` then reach the hub or broker before the command, in one
        control message on ZeroMQ (one hub wake-up for all). A brain killed just after
        dispatch otherwise left a command running for a task no record knew, which a
        restarted brain could not resume (found by the warehouse scenario, issue 15). Before
        :meth:`run` starts nothing is posted (the statuses wait for it). When acknowledgements
        stall (a stopped hub) the window stays full: the flush gives up at its deadline, the
        command goes, and what is still queued follows from :meth:`run`.
        """
        posted = self._posted
        if posted is None or not self._queue:
            return
        deadline = anyio.current_time() + self.flush_wait
        with anyio.move_on_after(self.flush_wait) as waited:
            await self._lock.acquire()  # cancelled here, nothing was taken from the queue
        if waited.cancelled_caught:
            self._flush_late()
            return
        try:
            if not await self._drain(posted, deadline):
                self._flush_late()
        finally:
            self._lock.release()

    def _flush_late(self) -> None:
        log.warning("status_flush_late", queued=len(self._queue), in_flight=self._in_flight,
                    waited_s=self.flush_wait)

    async def run(self) -> None:
        posted, settle = anyio.create_memory_object_stream[_Posted](float("inf"))
        self._posted = posted
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._settle, settle, name="brain-status-acks")
            async with posted:
                while self._queue or not self._closed:
                    await self._queued.wait()
                    self._queued = anyio.Event()
                    # Everything queued goes out in this wake-up, as one batch on ZeroMQ (one
                    # control message and one ack): a brain's control sends were its largest
                    # cost (issue 16).
                    async with self._lock:
                        with self.bus.coalesce():
                            await self._drain(posted)
            self._posted = None

    async def _drain(self, posted: MemoryObjectSendStream[_Posted],
                     deadline: float | None = None) -> bool:
        """Post what is queued, each once the window has room; False if ``deadline`` came
        first (the rest stays queued). Only the wait for room is ever cancelled: a status
        taken from the queue is always posted and settled."""
        queue = self._queue
        while queue:
            while self._in_flight >= self.window:
                room = self._room = anyio.Event()
                if deadline is None:
                    await room.wait()
                    continue
                with anyio.move_on_after(deadline - anyio.current_time()):
                    await room.wait()
                if self._in_flight >= self.window:
                    return False
            await self._publish(queue.popleft(), posted)
        return True

    async def _publish(self, msg: TaskStatus, posted: MemoryObjectSendStream[_Posted]) -> None:
        # logged here, off the instruction-to-command path. The routine statuses of a task
        # going well are debug: rendered at info they cost the brain about 20 µs each, about
        # six per instruction in bench.brain --throughput (issue 16, item 2). Every status is
        # on the bus and in task memory; what an operator looks for (an end, a replan, a
        # preemption) stays at info.
        (log.debug if msg.status in _ROUTINE else log.info)(
            "task_status", task=msg.task_id, status=msg.status, step=msg.step_id,
            reason=msg.reason)
        sent = await self._post(msg)
        if sent is None:
            return
        self._in_flight += 1
        posted.send_nowait(sent)  # unbounded: the window is kept by _drain

    async def _post(self, msg: TaskStatus) -> _Posted | None:
        try:
            ack = await self.bus.post(self.topics.task(msg.task_id), msg, qos=1)
        except Exception as exc:  # noqa: BLE001 - reported and counted, see _failed
            self._failed(msg, exc)
            return None
        reply = None
        if self.forward is not None:
            try:
                reply = await self.forward(msg)
            except Exception as exc:  # noqa: BLE001 - reported and counted, see _failed
                self._failed(msg, exc)
        return msg, ack, reply

    async def _settle(self, posted: MemoryObjectReceiveStream[_Posted]) -> None:
        """Await each posted status's acknowledgement (and its reply's), in order. What is
        queued is taken without a loop turn each (an acknowledged future returns at once):
        one turn per ack throttled the window to the loop's pace on a busy brain."""
        async with posted:
            async for item in posted:
                await self._settled(*item)
                while True:
                    try:
                        item = posted.receive_nowait()
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                    await self._settled(*item)

    async def _settled(self, msg: TaskStatus, ack: Awaitable[None],
                       reply: Awaitable[None] | None) -> None:
        try:
            await ack
        except BusError as exc:
            log.error("status_publish_failed", task=msg.task_id, error=repr(exc))
        finally:
            self._in_flight -= 1
            self._room.set()
        if reply is not None:
            await reply

    def _failed(self, msg: TaskStatus, exc: Exception) -> None:
        if isinstance(exc, BusError):
            log.error("status_publish_failed", task=msg.task_id, error=repr(exc))
            return
        # A status that cannot be encoded (a value no schema bounded) must not end the
        # stream: every later task would go silent (issue 13).
        self.failures += 1
        log.exception("status_not_published", task=msg.task_id, failures=self.failures)
        self.bus.report_error_soon(self.topics.task(msg.task_id),
                                   f"status {msg.status!r} not published: {exc!r}",
                                   "internal_error", b"")

    def close(self) -> None:
        """No more statuses: :meth:`run` returns once the queue is flushed."""
        self._closed = True
        self._queued.set()
