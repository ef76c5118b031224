"""A connected participant's state and its publish path (:class:`robobus.bus.api.Bus` builds on it)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
from collections.abc import Awaitable, Sequence

import anyio
import structlog

from robobus.bus.errors import PayloadTooLarge
from robobus.bus.limits import RateLimit, TokenBuckets
from robobus.bus.message import Message
from robobus.bus.options import BusOptions, Payload, codec_of, encode
from robobus.bus.subscription import Subscription
from robobus.bus.topics import TOPIC_CACHE_LIMIT, validate_topic
from robobus.bus.transport import Transport

log = structlog.get_logger("bus")


class BusCore:
    """State shared by the parts of :class:`robobus.bus.api.Bus`, and publishing."""

    def __init__(self, url: str, name: str, options: BusOptions, transport: Transport) -> None:
        self.url = url
        self.name = name
        self.options = options
        self.client_id = f"{name}-{secrets.token_hex(4)}"
        self._transport = transport
        from robobus.schemas.codec import encoder

        self.codec = codec_of(url, options)
        self._encode, self.content_type = encoder(self.codec)
        self._subs: dict[int, Subscription] = {}
        # topic -> subscriptions matching it; cleared whenever the subscriptions change
        self._routes: dict[str, list[Subscription]] = {}
        self._valid_topics: set[str] = set()  # topics already checked by publish
        self._ids = itertools.count(1)
        self._inbox = f"{options.prefix}/_inbox/{self.client_id}"
        self._inbox_live = False
        self._inbox_lock = anyio.Lock()
        self._pending: dict[bytes, asyncio.Future[Message]] = {}
        self._limits: dict[int, TokenBuckets] = {}
        # error reports are themselves rate limited per topic, so a flood cannot amplify
        self._error_buckets = TokenBuckets(RateLimit(rate=20, burst=50))
        self._tg: anyio.abc.TaskGroup | None = None
        self.connected = False
        #: connections made so far: 1 after connect, +1 per reconnect (see :meth:`reconnected`)
        self.connections = 0
        self._connection_changed = anyio.Event()
        self.log = log.bind(client=self.client_id)

    # -- publish ------------------------------------------------------------------------
    def topic(self, *parts: str) -> str:
        """Join ``parts`` under the configured prefix: ``bus.topic("robots", "g1", "state")``."""
        return "/".join((self.options.prefix, *parts))

    async def publish(
        self,
        topic: str,
        payload: Payload,
        *,
        retain: bool = False,
        qos: int = 0,
        response_topic: str | None = None,
        correlation: bytes | None = None,
        content_type: str | None = None,
        user_properties: Sequence[tuple[str, str]] = (),
        payload_format: int | None = None,
    ) -> None:
        """Publish ``payload`` on ``topic``. With ``qos=1``, wait for the hub/broker's ack
        (``qos=2``: MQTT exactly-once; ZeroMQ treats it like 1).

        ``user_properties`` and ``payload_format`` are MQTT 5 properties (the key ``sender``
        is the bus's own: this client's name); ZeroMQ does not carry them.

        Structs, dicts and lists are encoded with this client's codec (msgpack or JSON) and
        labelled with its content type; bytes go as they are, labelled ``content_type`` if
        given (a replay restores the recorded one).
        """
        await self._transport.publish(self._message(
            topic, payload, retain, qos, response_topic, correlation, content_type,
            user_properties, payload_format))

    async def post(
        self,
        topic: str,
        payload: Payload,
        *,
        retain: bool = False,
        qos: int = 1,
        response_topic: str | None = None,
        correlation: bytes | None = None,
        content_type: str | None = None,
        user_properties: Sequence[tuple[str, str]] = (),
        payload_format: int | None = None,
    ) -> Awaitable[None]:
        """Publish like :meth:`publish` without waiting for the acknowledgement: returns once
        the message is sent, with an awaitable that completes when the hub or broker
        acknowledges it and raises what :meth:`publish` would (``PublishError``,
        ``DisconnectedError``). Await every one.

        Acknowledged messages leave in call order, posts and ``qos >= 1`` publishes of this
        client alike, so a window of them can be in flight at once and stay in order on the
        wire (the brain's task statuses, issue 16). Unlike ``publish``, ``qos`` defaults to
        1; with 0 the awaitable is already done (on ZeroMQ, qos 0 takes the data path, which
        has no order with the acknowledged one). It waits only while the transport's own
        window of unacknowledged messages is full.
        """
        return await self._transport.post(self._message(
            topic, payload, retain, qos, response_topic, correlation, content_type,
            user_properties, payload_format))

    def coalesce(self) -> contextlib.AbstractContextManager[None]:
        """``with bus.coalesce():`` acknowledged publishes made inside leave together when it
        exits: on ZeroMQ one control message and one acknowledgement for all of them (the
        brain's task statuses). Without it the first acknowledged publish of an event-loop
        turn leaves at once and the rest of the turn together. Order is kept either way; a
        no-op on the other transports."""
        coalesce = getattr(self._transport, "coalesce", None)
        return coalesce() if coalesce is not None else contextlib.nullcontext()

    def _message(self, topic: str, payload: Payload, retain: bool, qos: int,
                 response_topic: str | None, correlation: bytes | None,
                 content_type: str | None, user_properties: Sequence[tuple[str, str]],
                 payload_format: int | None) -> Message:
        if isinstance(payload, bytes):
            data, ctype = payload, content_type
        elif isinstance(payload, bytearray | memoryview | str):
            data, ctype = encode(payload), None
        else:
            data, ctype = self._encode(payload), self.content_type
        if len(data) > self.options.max_payload:
            raise PayloadTooLarge(topic, len(data), self.options.max_payload)
        if topic not in self._valid_topics:
            validate_topic(topic)
            if len(self._valid_topics) > TOPIC_CACHE_LIMIT:
                self._valid_topics.clear()
            self._valid_topics.add(topic)
        # Positional (topic, payload, retain, qos, response_topic, correlation, sender): on the
        # hot path keyword arguments cost ~0.6 µs per message.
        msg = Message(topic, data, retain, qos, response_topic, correlation, self.name, ctype)
        if user_properties:
            msg.user_properties = tuple((str(k), str(v)) for k, v in user_properties
                                        if k != "sender")
        if payload_format is not None:
            msg.payload_format = payload_format
        return msg

