"""Instruction intake that cannot be replayed by accident.

* A retained instruction is refused: the contract says instructions are not retained, and a
  retained one would be executed again by every brain that starts. The brain reports it on
  ``P/errors`` (code ``retained_instruction``, naming the task id and the text) and clears it
  with an empty retained payload on the same topic.
* A task id a client chose is new only if the durable task record (the memory agent) does not
  know it: a brain restarted since the id was used has forgotten it, memory has not.
"""

from __future__ import annotations

import dataclasses
from contextlib import AsyncExitStack

import structlog

from robobus.brain_agent.replies import Reply, reply_of
from robobus.bus import Bus, BusError, Message, RateLimit, Subscription
from robobus.bus.reply import refuse_reply_topic
from robobus.schemas.codec import decode_as, decode_object
from robobus.schemas.errors import DecodeError
from robobus.schemas.memory import MemoryQuery, QueryReply
from robobus.schemas.messages import Instruction
from robobus.schemas.topics import Topics

log = structlog.get_logger("brain.intake")
RETAINED = "retained_instruction"


async def subscribe(bus: Bus, topic: str, limit: RateLimit | None,
                    stack: AsyncExitStack) -> list[Subscription]:
    """The brain's instruction subscriptions: ``topic`` (``P/instructions``) and every
    account's own below it (``P/instructions/{account}``).

    Untyped (:func:`decode` decodes, so the intake sees the retain flag and its own clearing);
    the brain owns both topics and reports what it refuses there (size, rate, decode). The
    rate limit is per sender on ``topic`` (on a secured hub the account the hub stamps; on
    MQTT a name the client writes: an unsecured bus has no identity) and per account below it,
    the level the broker's ACL or the hub's policy binds to the authenticated user (issue 13).
    """
    per_account = dataclasses.replace(limit, level=-1) if limit is not None else None
    return [await stack.enter_async_context(bus.subscribe(pattern, rate_limit=rl, reports=True))
            for pattern, rl in ((topic, limit), (f"{topic}/+", per_account))]


def decode(bus: Bus, msg: Message) -> Instruction | None:
    """The instruction in ``msg``, or None: undecodable (reported, as a typed subscription
    would) or the empty payload with which this brain cleared a retained one."""
    if not msg.payload and msg.sender == bus.name:
        return None
    try:
        return decode_as(msg.payload, Instruction, msg.topic, msg.content_type)
    except DecodeError as exc:
        task_id, reply, source = _salvage(msg, bus.options.prefix)
        bus.report_error_soon(msg.topic, exc.reason, "decode", msg.payload, about=msg,
                              task_id=task_id, reply=reply, sender=msg.sender or source)
        return None


def _salvage(msg: Message, prefix: str) -> tuple[str | None, Reply | None, str | None]:
    """Task id, reply topic and source of an instruction that failed its schema, where the
    object names them (string fields), so that its refusal is correlated too."""
    reply = reply_of(msg, None)
    try:
        obj = decode_object(msg.payload, msg.topic)
    except DecodeError:
        return None, reply, None
    task_id, to, corr, source = (_text(obj, k) for k in ("task_id", "reply_to", "correlation",
                                                          "source"))
    if reply is None and to is not None and refuse_reply_topic(to, prefix) is None:
        reply = (to, corr.encode() if corr is not None else None)
    return (task_id[:128] if task_id else None), reply, source


def _text(obj: dict[str, object], key: str) -> str | None:
    value = obj.get(key)
    return value[:1024] if isinstance(value, str) and value and value.isprintable() else None


async def refuse_retained(bus: Bus, msg: Message, inst: Instruction) -> None:
    """Report a retained instruction (correlated by its task id and text), then clear it."""
    text = inst.text if len(inst.text) <= 60 else inst.text[:57] + "..."
    reason = (f"retained instruction refused (task id {inst.task_id!r}, text {text!r}): "
              "instructions must not be retained; it was cleared and not executed")
    log.warning("instruction_refused", task=(inst.task_id or "")[:128], code=RETAINED)
    await bus.report_error(msg.topic, reason, RETAINED, msg.payload, about=msg,
                           task_id=inst.task_id)
    try:
        await bus.publish(msg.topic, b"", retain=True, qos=1)
    except BusError as exc:
        log.error("retained_instruction_not_cleared", topic=msg.topic, error=repr(exc))


async def known_task(bus: Bus, topics: Topics, task_id: str, timeout: float) -> str | None:
    """The status of ``task_id``'s durable record, or None when memory has no such task.

    When the memory agent does not answer, None as well (logged): intake does not stop for it,
    and the id was still checked against every task this brain knows.
    """
    query = MemoryQuery(kind="task", name=task_id)
    try:
        answer = await bus.request(topics.memory_query, query, timeout=timeout)
        reply = decode_as(answer.payload, QueryReply, answer.topic, answer.content_type)
    except (BusError, DecodeError) as exc:
        log.warning("task_id_unchecked", task=task_id[:128], error=repr(exc))
        return None
    if not reply.ok or not isinstance(reply.result, dict):
        if reply.code != "unknown":
            log.warning("task_id_unchecked", task=task_id[:128], error=reply.error)
        return None
    return str(reply.result.get("status", "?"))[:32]


OVERLOADED = "overloaded"


class Admission:
    """The brain's capacity (issue 16): past it, a new instruction is shed at once.

    Two bounds, both checked before any planning: tasks not yet final (planning, running,
    queued behind robots: every dispatch and every plan walks them) and instructions waiting in
    the intake buffer (each one waits for all those ahead of it). A shed instruction ends
    ``failed`` with a reason starting ``overloaded:``; accepted tasks are never touched.
    """

    def __init__(self, max_pending: int, max_backlog: int) -> None:
        self.max_pending, self.max_backlog = max_pending, max_backlog
        #: instructions shed since the brain started, and in the current overload
        self.shed = 0
        self._episode = 0

    def refuse(self, pending: int, backlog: int) -> str | None:
        """Why a new instruction is shed now (None: it is taken)."""
        if pending >= self.max_pending:
            why = f"{pending} tasks in flight, its capacity (max_pending {self.max_pending})"
        elif backlog > self.max_backlog:
            why = (f"{backlog} instructions waiting ahead of this one, over its intake bound "
                   f"(max_backlog {self.max_backlog})")
        else:
            if self._episode:
                log.info("brain_overload_ended", shed=self._episode, shed_total=self.shed)
                self._episode = 0
            return None
        if not self._episode:
            log.warning("brain_overloaded", pending=pending, backlog=backlog)
        self._episode += 1
        self.shed += 1
        return (f"{OVERLOADED}: the brain is at capacity ({why}); the instruction was not "
                "taken. Send it again later, with a new task id")
