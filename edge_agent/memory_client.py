"""The edge agent's view of the memory agent: world snapshots and world changes over the bus."""

from __future__ import annotations

import msgspec

from robobus.bus import Bus, DecodeError, RequestTimeout
from robobus.schemas.codec import decode_as
from robobus.schemas.memory import MemoryQuery, QueryReply
from robobus.schemas.topics import Topics
from robobus.schemas.world import World, WorldChange, WorldReply, WorldSnapshot
from robobus.skills.errors import SkillFailed


class BusWorldPort:
    """A :class:`skills.context.WorldPort` that asks the memory agent (``P/memory/...``)."""

    def __init__(self, bus: Bus, topics: Topics, timeout: float = 5.0) -> None:
        self.bus = bus
        self.topics = topics
        self.timeout = timeout

    async def snapshot(self, timeout: float | None = None) -> World:
        """The memory agent's current world; raise ``SkillFailed(memory_unavailable)``."""
        reply = await self._ask(self.topics.memory_query, MemoryQuery(kind="world"), QueryReply,
                                timeout)
        if not reply.ok:
            raise SkillFailed(f"memory agent refused the world query: {reply.error}",
                              reply.code or "memory_error")
        try:
            return World(msgspec.convert(reply.result, WorldSnapshot, strict=False))
        except msgspec.ValidationError as exc:
            raise SkillFailed(f"memory agent sent a malformed world: {exc}", "memory_error") from exc

    async def change(self, change: WorldChange) -> WorldReply:
        return await self._ask(self.topics.world_change, change, WorldReply, None)

    async def _ask(self, topic: str, payload: msgspec.Struct, type_: type, timeout: float | None):
        limit = self.timeout if timeout is None else timeout
        try:
            msg = await self.bus.request(topic, payload, timeout=limit)
        except RequestTimeout as exc:
            raise SkillFailed(f"memory agent did not answer on {topic} within {limit:.2f}s",
                              "memory_unavailable") from exc
        try:
            return decode_as(msg.payload, type_, msg.topic)
        except DecodeError as exc:
            raise SkillFailed(f"memory agent reply undecodable: {exc.reason}",
                              "memory_error") from exc
