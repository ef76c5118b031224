"""An answer for an instruction that no brain will take (issue 12, safe intake).

Instructions are not retained and not queued: one sent while no brain runs is lost. A sender
that asked for a reply (MQTT 5 Response Topic, a ZeroMQ reply inbox, or the ``reply_to`` field)
would otherwise wait for ever. The memory agent, which runs beside every fleet, follows the
retained ``brain/status`` and answers such an instruction on its reply topic with a ``failed``
:class:`TaskStatus` whose reason starts ``no_brain:``, while the last status says ``offline``
or no brain has ever announced itself. A brain that is ``starting``, ``standby`` or ``ready``
answers for itself, so the memory agent keeps quiet then.

Robot groups (issue 16) are followed the same way, each on its own: an instruction on
``groups/G/instructions`` is answered while ``groups/G/brain/status`` says ``offline`` or
group ``G`` never had a brain, whatever the ungrouped brain's status.
"""

from __future__ import annotations

from contextlib import AsyncExitStack

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
    """The last brain status seen on the bus, per robot group (``None``: the ungrouped brain)."""

    def __init__(self) -> None:
        self.states: dict[str | None, str] = {}
        self.settled = False

    def state(self, group: str | None = None) -> str | None:
        """The group's last brain state (``None``: none seen yet)."""
        return self.states.get(group)

    def absent(self, group: str | None = None) -> bool:
        """Whether no brain will take the group's instructions now."""
        state = self.states.get(group)
        return state == "offline" or (state is None and self.settled)


def group_of(topic: str, prefix: str) -> str | None:
    """The robot group a brain-status or instruction topic belongs to (``None``: ungrouped)."""
    levels = topic[len(prefix) + 1:].split("/") if topic.startswith(prefix + "/") else []
    return levels[1] if len(levels) > 2 and levels[0] == "groups" else None


async def answer_without_brain(bus: Bus, topics: Topics, *,
                               task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                               ) -> None:
    """Follow ``brain/status`` and answer instructions sent while no brain runs."""
    watch = BrainWatch()
    # instructions are the brain's: never reported here, and under a flood the oldest go
    # unanswered rather than holding up the memory agent's recording
    # (the shared topic and each account's own, where a secured bus's clients instruct)
    # the shared topic and each account's own (where a secured bus's clients instruct), for the
    # ungrouped brain and for every robot group's
    group = topics.group_instructions("+")
    instruction_topics = (topics.instructions, topics.instructions_from("+"), group, group + "/+")
    async with AsyncExitStack() as stack:  # the subscriptions outlive the task group
        statuses = [await stack.enter_async_context(bus.subscribe(
            pattern, BrainStatus, reports=False, maxsize=64, overflow=Overflow.DROP_OLDEST))
            for pattern in (topics.brain_status, topics.group_brain_status("+"))]
        subs = [await stack.enter_async_context(bus.subscribe(
            pattern, reports=False, maxsize=256, overflow=Overflow.DROP_OLDEST))
            for pattern in instruction_topics]
        async with anyio.create_task_group() as tg:
            for sub in statuses:
                tg.start_soon(_follow, sub, topics.prefix, watch, name="memory-brain-watch")
            task_status.started()
            await anyio.sleep(SETTLE_S)
            watch.settled = True
            for sub in subs:
                tg.start_soon(_answer_all, bus, topics, sub, watch, name="memory-no-brain")

async def _answer_all(bus: Bus, topics: Topics, instructions: Subscription,
                      watch: BrainWatch) -> None:
    async for msg in instructions:
        group = group_of(msg.topic, topics.prefix)
        if watch.absent(group) and not msg.retain:
            await _answer(bus, topics, msg, watch, group)


async def _follow(statuses: Subscription, prefix: str, watch: BrainWatch) -> None:
    async for msg in statuses:
        status = msg.data
        if isinstance(status, BrainStatus):
            watch.states[group_of(msg.topic, prefix)] = status.state


async def _answer(bus: Bus, topics: Topics, msg: Message, watch: BrainWatch,
                  group: str | None) -> None:
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
    seen = "offline" if watch.state(group) == "offline" else "no brain has announced itself"
    where = topics.brain_status if group is None else topics.group_brain_status(group)
    start = "robobus brain" if group is None else f"robobus brain --group {group} --robots ..."
    status = TaskStatus(
        task_id=(inst.task_id if inst is not None and inst.task_id else ""),
        status="failed", text=inst.text if inst is not None else "",
        reason=(f"no_brain: no brain is running ({where}: {seen}); the "
                f"instruction was not taken. Start a brain ({start}) and send it again"))
    try:
        await bus.publish(topic, status, qos=1, correlation=corr)
    except BusError as exc:
        log.warning("no_brain_reply_failed", topic=topic[:128], error=repr(exc))
        return
    log.info("no_brain_answered", topic=topic[:128], task=status.task_id)
