"""An answer for an instruction that no brain will take (issue 12, safe intake).

Instructions are not retained and not queued: one sent while no brain runs is lost. A sender
that asked for a reply (MQTT 5 Response Topic, a ZeroMQ reply inbox, or the ``reply_to`` field)
would otherwise wait for ever. The memory agent, which runs beside every fleet, follows the
retained ``brain/status`` and answers such an instruction on its reply topic with a ``failed``
:class:`TaskStatus` whose reason starts ``no_brain:``, while the last status says ``offline``
or no brain has ever announced itself. A brain that is ``starting``, ``standby`` or ``ready``
answers for itself, so the memory agent keeps quiet then.
"""

from __future__ import annotations

import anyio
import anyio.abc
import structlog

from robobus.bus import Bus
from robobus.bus.errors import BusError, DecodeError
from robobus.bus.message import Message
from robobus.bus.reply import refuse_reply_topic
from robobus.bus.subscription import Overflow, Subscription
from robobus.schemas.codec import decode_as
from robobus.schemas.messages import BrainStatus, Instruction, TaskStatus
from robobus.schemas.topics import Topics

log = structlog.get_logger("memory.no_brain")

#: with no retained brain status at all, wait this long after subscribing before concluding
#: that no brain has ever announced itself (a retained value arrives within milliseconds)
SETTLE_S = 1.0


class BrainWatch:
    """The last brain status seen on the bus (None: none yet)."""

    def __init__(self) -> None:
        self.state: str | None = None
        self.settled = False

    def absent(self) -> bool:
        """Whether no brain will take an instruction now."""
        return self.state == "offline" or (self.state is None and self.settled)


async def answer_without_brain(bus: Bus, topics: Topics, *,
                               task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                               ) -> None:
    """Follow ``brain/status`` and answer instructions sent while no brain runs."""
    watch = BrainWatch()
    # instructions are the brain's: never reported here, and under a flood the oldest go
    # unanswered rather than holding up the memory agent's recording
    # (the shared topic and each account's own, where a secured bus's clients instruct)
    async with bus.subscribe(topics.brain_status, BrainStatus, reports=False,
                             overflow=Overflow.LATEST) as statuses, \
            bus.subscribe(topics.instructions, reports=False, maxsize=256,
                          overflow=Overflow.DROP_OLDEST) as instructions, \
            bus.subscribe(topics.instructions_from("+"), reports=False, maxsize=256,
                          overflow=Overflow.DROP_OLDEST) as own, \
            anyio.create_task_group() as tg:
        tg.start_soon(_follow, statuses, watch, name="memory-brain-watch")
        task_status.started()
        await anyio.sleep(SETTLE_S)
        watch.settled = True
        tg.start_soon(_answer_all, bus, topics, own, watch, name="memory-no-brain-accounts")
        await _answer_all(bus, topics, instructions, watch)


async def _answer_all(bus: Bus, topics: Topics, instructions: Subscription,
                      watch: BrainWatch) -> None:
    async for msg in instructions:
        if watch.absent() and not msg.retain:
            await _answer(bus, topics, msg, watch)


async def _follow(statuses: object, watch: BrainWatch) -> None:
    async for msg in statuses:  # type: ignore[attr-defined]
        status = msg.data
        if isinstance(status, BrainStatus):
            watch.state = status.state


async def _answer(bus: Bus, topics: Topics, msg: Message, watch: BrainWatch) -> None:
    """Publish the ``no_brain`` answer on the instruction's reply topic, if it has a usable one."""
    inst: Instruction | None
    try:
        inst = decode_as(msg.payload, Instruction, msg.topic, msg.content_type)
    except DecodeError:
        inst = None  # the brain reports malformed instructions; here only the reply matters
    topic, corr = msg.response_topic, msg.correlation
    if topic is None and inst is not None and inst.reply_to:
        topic = inst.reply_to
        corr = inst.correlation.encode() if inst.correlation is not None else corr
    if topic is None or refuse_reply_topic(topic, topics.prefix) is not None:
        return
    seen = "offline" if watch.state == "offline" else "no brain has announced itself"
    status = TaskStatus(
        task_id=(inst.task_id if inst is not None and inst.task_id else ""),
        status="failed", text=inst.text if inst is not None else "",
        reason=(f"no_brain: no brain is running ({topics.brain_status}: {seen}); the "
                f"instruction was not taken. Start a brain (robobus brain) and send it again"))
    try:
        await bus.publish(topic, status, qos=1, correlation=corr)
    except BusError as exc:
        log.warning("no_brain_reply_failed", topic=topic[:128], error=repr(exc))
        return
    log.info("no_brain_answered", topic=topic[:128], task=status.task_id)
