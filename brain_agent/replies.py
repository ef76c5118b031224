"""Replies to instructions: a task's statuses on the sender's reply topic (issue 14).

An instruction names its reply topic with MQTT 5's Response Topic (``mosquitto_rr -e``), a
ZeroMQ reply inbox (the same header), or its ``reply_to`` field (any transport, MQTT 3.1.1
too). Every status of the task but ``progress`` goes there as well as to the task's own topic,
with the instruction's correlation data echoed, until the final status; refusals of the
instruction go there too (:meth:`robobus.bus.Bus.report_error` with ``reply``).

Reply topics are the sender's: a topic under the fleet prefix is refused unless it is a reply
inbox (``{prefix}/_inbox/...``), so an instruction cannot make the brain publish statuses onto
a robot's command topic or another task's topic.
"""

from __future__ import annotations

from collections.abc import Awaitable

import structlog

from robobus.bus import Bus, BusError, Message
from robobus.schemas.messages import Instruction, TaskStatus
from robobus.schemas.tasks import is_final

log = structlog.get_logger("brain.replies")
#: statuses that are not sent to a reply topic (many per step; the task topic has them)
QUIET = frozenset({"progress"})
#: at most this many tasks wait for a reply at once (oldest forgotten first)
MAX_PENDING = 10_000

Reply = tuple[str, bytes | None]


def reply_of(msg: Message, inst: Instruction | None) -> Reply | None:
    """The reply topic and correlation data of an instruction: the message's (MQTT 5 Response
    Topic, ZeroMQ reply inbox) first, else the ``reply_to`` and ``correlation`` fields."""
    if msg.response_topic:
        return msg.response_topic, msg.correlation
    if inst is None or not inst.reply_to:
        return None
    corr = inst.correlation.encode() if inst.correlation is not None else msg.correlation
    return inst.reply_to, corr


class Replies:
    """Reply topics of live tasks; :meth:`send` forwards a status to its task's requester."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._by_task: dict[str, Reply] = {}

    def expect(self, task_id: str, reply: Reply) -> None:
        """Send ``task_id``'s statuses to ``reply`` from now on."""
        if len(self._by_task) >= MAX_PENDING:
            self._by_task.pop(next(iter(self._by_task)))
        self._by_task[task_id] = reply

    def forget(self, task_id: str) -> None:
        self._by_task.pop(task_id, None)

    async def send(self, status: TaskStatus) -> Awaitable[None] | None:
        """Post ``status`` on its task's reply topic, if the task has one; returns what to
        await for its acknowledgement (a failure there is logged, never raised)."""
        reply = self._by_task.get(status.task_id)
        if reply is None or status.status in QUIET:
            return None
        if is_final(status.status):
            del self._by_task[status.task_id]
        topic, corr = reply
        try:
            ack = await self.bus.post(topic, status, qos=1, correlation=corr)
        except BusError as exc:  # the requester's topic must never stop the status stream
            log.warning("reply_failed", task=status.task_id, topic=topic[:128], error=repr(exc))
            return None
        return _checked(ack, status.task_id, topic)


async def _checked(ack: Awaitable[None], task_id: str, topic: str) -> None:
    try:
        await ack
    except BusError as exc:
        log.warning("reply_failed", task=task_id, topic=topic[:128], error=repr(exc))
