"""Presence like Sparkplug B: births and deaths numbered by a birth/death sequence.

An agent publishes a retained birth when it is ready and again after every reconnect; its last
will is the matching death, carrying the same sequence number (``bd_seq``) and stamped just
after the birth. Each connection asks :meth:`Presence.__call__` for a fresh will, so every
connection has its own number and a death of an older connection can be told from a newer
birth. What the payloads are is the caller's: ``make(online, bd_seq, ts_ns)`` builds them.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
import msgspec
import structlog

from robobus.bus.api import Bus
from robobus.bus.errors import BusError
from robobus.bus.message import Will
from robobus.schemas.messages import TICK_NS, now_ns

log = structlog.get_logger("bus.presence")

#: ``make(online, bd_seq, ts_ns)``: the birth (online) or death message of one connection
MakePresence = Callable[[bool, int, int], msgspec.Struct]


class Presence:
    """Births and deaths of one agent on ``topic`` (retained, QoS 1).

    Pass it as ``BusOptions(will=presence)``: the transports call it before each connection.
    The sequence starts from the wall clock in milliseconds, so it also grows across restarts
    of the agent (a restarted agent's birth outranks its old death).
    """

    def __init__(self, topic: str, make: MakePresence) -> None:
        self.topic = topic
        self.make = make
        self.bd_seq = time.time_ns() // 1_000_000
        self.birth_ns = now_ns()

    def __call__(self) -> Will:
        """The will of a new connection: the next sequence number's death."""
        self.bd_seq += 1
        self.birth_ns = now_ns()
        # One tick after the birth (timestamps are multiples of TICK_NS, exact in JavaScript):
        # a client keeping "the newest" sees the death win. The bus encodes it (its codec).
        death = self.make(False, self.bd_seq, self.birth_ns + TICK_NS)
        return Will(self.topic, death, retain=True, qos=1)

    def birth(self) -> msgspec.Struct:
        """The birth of the current connection (same ``bd_seq`` as its will)."""
        return self.make(True, self.bd_seq, self.birth_ns)

    async def publish_birth(self, bus: Bus) -> None:
        await bus.publish(self.topic, self.birth(), retain=True, qos=1)

    async def publish_death(self, bus: Bus) -> None:
        """A clean stop: ``offline`` retained, stamped now (never an empty retained value)."""
        await bus.publish(self.topic, self.make(False, self.bd_seq, now_ns()),
                          retain=True, qos=1)

    async def reassert(self, bus: Bus, *, task_status: anyio.abc.TaskStatus[None]
                       = anyio.TASK_STATUS_IGNORED) -> None:
        """Publish the birth again after every reconnect, until cancelled.

        Start it once the first birth is out; the broker or hub replaced that birth with the
        old connection's will when the connection dropped.
        """
        seen = bus.connections
        task_status.started()
        while True:
            seen = await bus.reconnected(seen)
            try:
                await self.publish_birth(bus)
            except BusError as exc:  # dropped again: the next reconnect publishes it
                log.warning("birth_failed", topic=self.topic, error=str(exc))
