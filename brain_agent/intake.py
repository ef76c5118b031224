"""Instruction intake that cannot be replayed by accident.

* A retained instruction is refused: the contract says instructions are not retained, and a
  retained one would be executed again by every brain that starts. The brain reports it on
  ``P/errors`` (code ``retained_instruction``, naming the task id and the text) and clears it
  with an empty retained payload on the same topic.
* A task id a client chose is new only if the durable task record (the memory agent) does not
  know it: a brain restarted since the id was used has forgotten it, memory has not.
"""

from __future__ import annotations

import msgspec
import structlog

from robobus.bus import Bus, BusError, Message
from robobus.schemas.codec import decode_as
from robobus.schemas.errors import DecodeError
from robobus.schemas.memory import MemoryQuery, QueryReply
from robobus.schemas.messages import Instruction
from robobus.schemas.topics import Topics

log = structlog.get_logger("brain.intake")
RETAINED = "retained_instruction"
_reply = msgspec.msgpack.Decoder(QueryReply)


def decode(bus: Bus, msg: Message) -> Instruction | None:
    """The instruction in ``msg``, or None: undecodable (reported, as a typed subscription
    would) or the empty payload with which this brain cleared a retained one."""
    if not msg.payload and msg.sender == bus.name:
        return None
    try:
        return decode_as(msg.payload, Instruction, msg.topic)
    except DecodeError as exc:
        bus.report_error_soon(msg.topic, exc.reason, "decode", msg.payload)
        return None


async def refuse_retained(bus: Bus, msg: Message, inst: Instruction) -> None:
    """Report a retained instruction (correlated by its task id and text), then clear it."""
    text = inst.text if len(inst.text) <= 60 else inst.text[:57] + "..."
    reason = (f"retained instruction refused (task id {inst.task_id!r}, text {text!r}): "
              "instructions must not be retained; it was cleared and not executed")
    log.warning("instruction_refused", task=(inst.task_id or "")[:128], code=RETAINED)
    await bus.report_error(msg.topic, reason, RETAINED, msg.payload)
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
        reply = _reply.decode((await bus.request(topics.memory_query, query, timeout=timeout)).payload)
    except (BusError, msgspec.DecodeError) as exc:
        log.warning("task_id_unchecked", task=task_id[:128], error=repr(exc))
        return None
    if not reply.ok or not isinstance(reply.result, dict):
        if reply.code != "unknown":
            log.warning("task_id_unchecked", task=task_id[:128], error=reply.error)
        return None
    return str(reply.result.get("status", "?"))[:32]
