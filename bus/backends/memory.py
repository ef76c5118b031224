"""``memory://NAME``: an in-process broker for unit tests and the skill harness.

Brokers live in a per-process registry keyed by the URL's name: that *is* the address space of
this scheme, the way ``inproc://`` names are for ZeroMQ.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Awaitable
from urllib.parse import urlsplit

from robobus.bus.errors import DisconnectedError
from robobus.bus.message import Message, Will
from robobus.bus.topics import matches
from robobus.bus.transport import TransportConfig, acked, will_of


class MemoryBroker:
    """Routes messages between the transports attached to it; keeps retained values."""

    def __init__(self) -> None:
        self.clients: set[MemoryTransport] = set()
        self.retained: dict[str, Message] = {}

    async def route(self, msg: Message) -> None:
        if msg.retain:
            if msg.payload:
                self.retained[msg.topic] = dataclasses.replace(msg, retain=True)
            else:
                self.retained.pop(msg.topic, None)
        live = dataclasses.replace(msg, retain=False)
        for client in list(self.clients):
            ids = client.match(msg.topic)
            if ids:
                await client.config.deliver(live, ids)


_brokers: weakref.WeakValueDictionary[str, MemoryBroker] = weakref.WeakValueDictionary()


def broker_for(url: str) -> MemoryBroker:
    """The broker named by ``memory://NAME`` (created on first use)."""
    name = urlsplit(url).netloc or urlsplit(url).path or "default"
    broker = _brokers.get(name)
    if broker is None:
        broker = _brokers[name] = MemoryBroker()
    return broker


class MemoryTransport:
    """Transport for ``memory://``: synchronous hand-off with real backpressure."""

    def __init__(self) -> None:
        self.filters: dict[int, str] = {}
        self.broker: MemoryBroker | None = None
        self.config: TransportConfig
        self._will: Will | None = None

    def match(self, topic: str) -> tuple[int, ...]:
        return tuple(i for i, p in self.filters.items() if matches(p, topic))

    async def start(self, config: TransportConfig) -> None:
        self.config = config
        self._will = will_of(config)
        self.broker = broker_for(config.url)
        self.broker.clients.add(self)

    def session_id(self) -> str:
        return self.config.client_id

    async def close(self, graceful: bool = True) -> None:
        broker, self.broker = self.broker, None
        if broker is None:
            return
        broker.clients.discard(self)
        will = self._will
        if not graceful and will is not None:
            await broker.route(Message(will.topic, will.payload, retain=will.retain, qos=will.qos))

    def _live(self) -> MemoryBroker:
        if self.broker is None:
            raise DisconnectedError(f"{self.config.url} is closed")
        return self.broker

    async def publish(self, msg: Message) -> None:
        await self._live().route(msg)

    async def post(self, msg: Message) -> Awaitable[None]:
        """Routed at once: there is no acknowledgement to wait for."""
        await self.publish(msg)
        return acked()

    async def subscribe(self, pattern: str, sub_id: int) -> None:
        broker = self._live()
        self.filters[sub_id] = pattern
        for topic, msg in list(broker.retained.items()):
            if matches(pattern, topic):
                self.config.snapshot(sub_id, msg)

    async def unsubscribe(self, pattern: str, sub_id: int) -> None:
        self.filters.pop(sub_id, None)
