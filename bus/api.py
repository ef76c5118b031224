"""The one async API: ``async with Bus.connect(url, name=...) as bus``."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import importlib
import itertools
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import anyio
import msgspec
import structlog

from robobus.bus.errors import (
    BusError,
    DecodeError,
    DisconnectedError,
    PayloadTooLarge,
    RequestTimeout,
    UnknownSchemeError,
)
from robobus.bus.limits import RateLimit, TokenBuckets, tell_suppressed
from robobus.bus.message import Message, Will
from robobus.bus.reply import refuse_reply_topic
from robobus.bus.subscription import Overflow, Subscription
from robobus.bus.topics import TOPIC_CACHE_LIMIT, matches, remember, validate_filter, validate_topic
from robobus.bus.transport import Transport, TransportConfig

T = TypeVar("T")
log = structlog.get_logger("bus")

#: Scheme -> "module:Class". Backends are imported lazily, only when their scheme is used.
BACKENDS: dict[str, str] = {
    "memory": "robobus.bus.backends.memory:MemoryTransport",
    "zmq": "robobus.bus.backends.zmq:ZmqTransport",
    "zmq+tcp": "robobus.bus.backends.zmq:ZmqTransport",
    "zmq+ipc": "robobus.bus.backends.zmq:ZmqTransport",
    "mqtt": "robobus.bus.backends.mqtt:MqttTransport",
    "mqtts": "robobus.bus.backends.mqtt:MqttTransport",
}

DEFAULT_URL = "zmq://127.0.0.1:7650"
Payload = bytes | bytearray | memoryview | str | msgspec.Struct | dict[Any, Any] | list[Any]


@dataclass(slots=True)
class BusOptions:
    """Small set of knobs shared by every backend."""

    prefix: str = "robobus"
    max_payload: int = 1 << 20
    #: a will, or a callable asked for a fresh one before every connection (a presence)
    will: Will | Callable[[], Will] | None = None
    keepalive_s: float = 1.0
    request_timeout: float = 5.0
    report_errors: bool = True
    #: how this client encodes what it publishes: ``msgpack`` or ``json`` (``?codec=json`` on
    #: the URL wins); every client reads both (:mod:`robobus.schemas.codec`)
    codec: str = "msgpack"
    extra: dict[str, Any] = field(default_factory=dict)


def default_url() -> str:
    """``$ROBOBUS_URL`` or the embedded ZeroMQ default."""
    return os.environ.get("ROBOBUS_URL", DEFAULT_URL)


def encode(payload: Payload, codec: str = "msgpack") -> bytes:
    """Bytes pass through, text is UTF-8, structs and dicts become msgpack (or JSON)."""
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, bytearray | memoryview):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode()
    return msgspec.msgpack.encode(payload) if codec == "msgpack" else msgspec.json.encode(payload)


def codec_of(url: str, options: BusOptions) -> str:
    """The codec a client publishes with: the URL's ``codec=``, else ``options.codec``."""
    from robobus.schemas.codec import CODECS

    codec = parse_qs(urlsplit(url).query).get("codec", [options.codec])[-1]
    if codec not in CODECS:
        raise BusError(f"unknown codec {codec!r} in {url!r}; known: {', '.join(CODECS)}")
    return codec


def _expire(reply: asyncio.Future[Message], exc: BaseException) -> None:
    if not reply.done():
        reply.set_exception(exc)


def run(func: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run an async entry point on asyncio, with uvloop when it is installed.

    Every robobus process starts through this, so the loop choice is made in one place.
    """
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return anyio.run(func, *args, backend="asyncio")
    return anyio.run(func, *args, backend="asyncio", backend_options={"use_uvloop": True})


def _load_backend(url: str) -> Transport:
    scheme = urlsplit(url).scheme
    if scheme not in BACKENDS:
        known = ", ".join(sorted(BACKENDS))
        raise UnknownSchemeError(f"unknown bus URL scheme {scheme!r} in {url!r}; known: {known}")
    module, _, cls = BACKENDS[scheme].partition(":")
    backend: Callable[[], Transport] = getattr(importlib.import_module(module), cls)
    return backend()


class Bus:
    """A connected participant. Create it with :meth:`Bus.connect`."""

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

    # -- lifecycle ---------------------------------------------------------------------
    @classmethod
    @asynccontextmanager
    async def connect(
        cls, url: str | None = None, *, name: str = "client", options: BusOptions | None = None
    ) -> AsyncIterator[Bus]:
        """Connect to ``url`` (``memory://``, ``zmq://``, ``zmq+ipc://``, ``mqtt://``, ``mqtts://``)."""
        url = url or default_url()
        opts = options or BusOptions()
        bus = cls(url, name, opts, _load_backend(url))
        try:
            async with anyio.create_task_group() as tg:
                bus._tg = tg
                await bus._transport.start(bus._transport_config(tg))
                # the inbox is named after the id the broker knows (an account's tagged MQTT
                # client id), which is what the ACL's per-client inbox grant matches
                bus._inbox = f"{opts.prefix}/_inbox/{bus._transport.session_id()}"
                bus.connected = True
                try:
                    yield bus
                finally:
                    bus.connected = False
                    with anyio.CancelScope(shield=True):
                        await bus._transport.close(graceful=True)
                    for sub in bus._subs.values():
                        sub.close()
                    tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            raise _unwrap(group) from None

    def _transport_config(self, tg: anyio.abc.TaskGroup) -> TransportConfig:
        return TransportConfig(
            url=self.url,
            client_id=self.client_id,
            will=self._will if self.options.will is not None else None,
            deliver=self._deliver,
            dispatch=self.dispatch,
            snapshot=self._snapshot,
            on_state=self._on_state,
            keepalive_s=self.options.keepalive_s,
            task_group=tg,
        )

    def _will(self) -> Will:
        """The configured will with its payload in this client's encoding."""
        will = self.options.will
        will = will() if callable(will) else will
        assert will is not None
        if isinstance(will.payload, bytes):
            return will
        return dataclasses.replace(will, payload=self._encode(will.payload),
                                   content_type=self.content_type)

    async def abort(self) -> None:
        """Drop the connection without goodbye, so the last will fires (tests, fault drills)."""
        await self._transport.close(graceful=False)

    async def reconnected(self, seen: int) -> int:
        """Wait until more than ``seen`` connections were made; return the new count.

        Agents re-assert what a broker forgot or replaced on a reconnect (a presence birth):
        ``seen = bus.connections`` once ready, then ``seen = await bus.reconnected(seen)``.
        """
        while self.connections <= seen:
            await self._connection_changed.wait()
        return self.connections

    def _on_state(self, state: str) -> None:
        self.log.debug("bus_state", state=state, url=self.url)
        if state == "connected":
            self.connections += 1
            self._connection_changed.set()
            self._connection_changed = anyio.Event()
        if state == "lost":
            for sub in self._subs.values():
                sub.close(DisconnectedError(f"connection to {self.url} lost"))

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

    # -- subscribe ----------------------------------------------------------------------
    @asynccontextmanager
    async def subscribe(
        self,
        pattern: str,
        type: type[T] | None = None,
        *,
        maxsize: int = 10_000,
        overflow: Overflow = Overflow.BLOCK,
        rate_limit: RateLimit | None = None,
        manual_ack: bool = False,
        reports: bool | Callable[[str], bool] | None = None,
    ) -> AsyncIterator[Subscription]:
        """Subscribe to an MQTT-style filter; typed subscriptions set ``msg.data``.

        A message that fails to decode into ``type`` is reported on ``{prefix}/errors`` and
        skipped; the subscription goes on. With ``rate_limit``, messages beyond the rate of their
        key (:meth:`RateLimit.key`) are refused and reported the same way. With ``manual_ack``,
        the transport's acknowledgement (MQTT PUBACK) waits until the consumer calls ``msg.ack()``: a broker
        with a persistent session then redelivers what a crash left unconfirmed.

        ``reports``: whether refusals on this subscription (too large, rate, decode) are
        reported, or a predicate on the topic. An input is reported once, by the agent that
        owns its topic, never by a passive observer (issue 14, :mod:`robobus.schemas.owners`);
        by default a filter ending in ``#`` (a recorder, a monitor, ``topic echo``) observes
        and every other filter owns what it receives.
        """
        validate_filter(pattern)
        sub_id = next(self._ids)
        owns = not pattern.endswith("#") if reports is None else reports
        decode = self._decoder(type, owns) if type is not None else None
        sub = Subscription(pattern, maxsize=maxsize, overflow=overflow, decode=decode, sub_id=sub_id,
                           manual_ack=manual_ack, reports=owns)
        if rate_limit is not None:
            self._limits[sub_id] = TokenBuckets(rate_limit)
        self._subs[sub_id] = sub
        self._routes.clear()
        try:
            await self._transport.subscribe(pattern, sub_id)
            yield sub
        finally:
            self._subs.pop(sub_id, None)
            self._routes.clear()
            self._limits.pop(sub_id, None)
            sub.close()
            if self.connected:
                with anyio.CancelScope(shield=True):
                    await self._transport.unsubscribe(pattern, sub_id)

    def _decoder(self, type_: type[Any], reports: bool | Callable[[str], bool]) -> Any:
        from robobus.schemas.codec import decode_as

        def decode(msg: Message) -> Message | None:
            try:
                data = decode_as(msg.payload, type_, msg.topic, msg.content_type)
                return dataclasses.replace(msg, data=data)
            except DecodeError as exc:
                if reports is True or (reports is not False and reports(msg.topic)):
                    self.report_error_soon(msg.topic, exc.reason, "decode", msg.payload,
                                           about=msg)
                else:
                    self.log.debug("input_skipped", topic=msg.topic, reason=exc.reason)
                return None

        return decode

    def dispatch(self, msg: Message, sub_ids: tuple[int, ...] | None) -> Awaitable[None] | None:
        """Deliver ``msg`` synchronously where buffers have room.

        Returns None when done, or an awaitable that finishes delivery to full BLOCK buffers
        (the transport awaits it before reading more: that is the backpressure).
        """
        if msg.topic.startswith(self._inbox):
            self._resolve(msg)
            return None
        if sub_ids is None:
            targets = self._routes.get(msg.topic)
            if targets is None:
                targets = remember(self._routes, msg.topic, [
                    s for s in self._subs.values() if matches(s.pattern, msg.topic)])
        else:
            targets = [self._subs[i] for i in sub_ids if i in self._subs]
        if len(msg.payload) > self.options.max_payload:
            self._too_large(msg, targets)
            return None
        if self._limits:
            targets = [s for s in targets if self._admit(s, msg)]
        token = msg.ack_token
        if token is not None:
            manual = sum(1 for s in targets if s.manual_ack)
            if manual:
                token.remaining, token.deferred = manual, True
        full: list[Subscription] = []
        for sub in targets:  # a loop, not a comprehension: no frame per message
            if not sub.put_nowait(msg):
                full.append(sub)
        return self._put_all(full, msg) if full else None

    def _too_large(self, msg: Message, targets: list[Subscription]) -> None:
        reason = f"payload of {len(msg.payload)} bytes exceeds {self.options.max_payload}"
        if any(s.reports_on(msg.topic) for s in targets):  # observers leave it to the owner
            self.report_error_soon(msg.topic, reason, "too_large", msg.payload[:64], about=msg)
        else:
            self.log.debug("input_skipped", topic=msg.topic, reason=reason)

    def _admit(self, sub: Subscription, msg: Message) -> bool:
        buckets = self._limits.get(sub.sub_id)
        if buckets is None:
            return True
        limit = buckets.limit
        if buckets.allow(key := limit.key(msg)):
            return True
        reason = f"{limit.keyed_by} {key!r} exceeds {limit.rate:g} msg/s on {sub.pattern!r}"
        if sub.reports_on(msg.topic):  # the report names the key: an account is the sender
            self.report_error_soon(msg.topic, reason, "rate_limited", msg.payload[:64], about=msg,
                                   sender=key if limit.level is not None else None)
        return False

    @staticmethod
    async def _put_all(subs: list[Subscription], msg: Message) -> None:
        for sub in subs:
            await sub.put(msg)

    async def _deliver(self, msg: Message, sub_ids: tuple[int, ...] | None) -> None:
        pending = self.dispatch(msg, sub_ids)
        if pending is not None:
            await pending

    def _snapshot(self, sub_id: int, msg: Message) -> None:
        sub = self._subs.get(sub_id)
        if sub is not None:
            sub.put_snapshot(msg)

    # -- request / reply ----------------------------------------------------------------
    async def request(
        self, topic: str, payload: Payload, *, timeout: float | None = None, qos: int = 0
    ) -> Message:
        """Publish a request and wait for the one reply (response topic + correlation data)."""
        if not self._inbox_live:
            await self._ensure_inbox()
        corr = secrets.token_hex(8).encode()  # printable: `mosquitto_sub -F %J` shows it as text
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Message] = loop.create_future()
        self._pending[corr] = reply
        limit = timeout if timeout is not None else self.options.request_timeout
        # A loop timer rather than a timeout scope: on a ~500 µs round trip, entering and
        # leaving an anyio scope and event costs a measurable share.
        timer = loop.call_later(limit, _expire, reply, RequestTimeout(topic, limit))
        try:
            await self.publish(topic, payload, qos=qos, response_topic=self._inbox + "/r",
                               correlation=corr)
            return await reply
        finally:
            timer.cancel()
            self._pending.pop(corr, None)

    async def reply(self, request: Message, payload: Payload) -> None:
        """Answer ``request`` on its response topic, echoing its correlation data."""
        if not request.response_topic:
            raise ValueError(f"message on {request.topic!r} has no response topic")
        await self.publish(request.response_topic, payload, correlation=request.correlation)

    async def _ensure_inbox(self) -> None:
        async with self._inbox_lock:
            if not self._inbox_live:
                await self._transport.subscribe(self._inbox + "/#", 0)
                self._inbox_live = True

    def _resolve(self, msg: Message) -> None:
        reply = self._pending.get(msg.correlation or b"")
        if reply is not None and not reply.done():
            reply.set_result(msg)

    # -- errors -------------------------------------------------------------------------
    async def report_error(
        self, topic: str, reason: str, code: str = "invalid", payload: bytes = b"", *,
        about: Message | None = None, task_id: str | None = None, sender: str | None = None,
        reply: tuple[str, bytes | None] | None = None,
    ) -> None:
        """Log a rejected input and publish it on ``{prefix}/errors``.

        ``about`` is the refused message: the report names its sender and, when it asked for
        a reply (MQTT 5 Response Topic, ZeroMQ reply inbox), also goes there with its
        correlation data echoed; ``reply`` names a reply topic the payload asked for instead.
        """
        from robobus.schemas.messages import ErrorReport

        self.log.warning("input_rejected", topic=topic, code=code, reason=reason, task=task_id)
        if not self.options.report_errors or topic == self.topic("errors"):
            return
        if about is not None:
            sender = sender or about.sender
            if reply is None and about.response_topic:
                reply = (about.response_topic, about.correlation)
        report = ErrorReport(source=self.name, topic=topic, code=code, reason=reason,
                             excerpt=bytes(payload[:64]).hex(), sender=sender, task_id=task_id)
        try:
            await self.publish(self.topic("errors"), report)
            if reply is not None and refuse_reply_topic(reply[0], self.options.prefix) is None:
                await self.publish(reply[0], report, correlation=reply[1])
        except BusError as exc:  # the error channel must never take the agent down
            self.log.error("error_report_failed", error=repr(exc))

    def report_error_soon(
        self, topic: str, reason: str, code: str, payload: bytes, *,
        about: Message | None = None, task_id: str | None = None, sender: str | None = None,
        reply: tuple[str, bytes | None] | None = None,
    ) -> None:
        """Schedule :meth:`report_error` from synchronous code (at most 20/s per topic)."""
        if not self._error_buckets.allow(topic):  # never hidden: the count is told (issue 13)
            if self._error_buckets.suppressed.get(topic) == 1 and self._tg is not None:
                say = functools.partial(self.report_error, topic, code="suppressed")
                self._tg.start_soon(tell_suppressed, self._error_buckets, topic,
                                    lambda n: say(f"{n} reports on this topic suppressed"))
            return
        if untold := self._error_buckets.take_suppressed(topic):
            reason = f"{reason} ({untold} earlier reports on this topic suppressed)"
        if self._tg is not None:
            self._tg.start_soon(functools.partial(
                self.report_error, topic, reason, code, payload, about=about, task_id=task_id,
                sender=sender, reply=reply))


def _unwrap(group: BaseExceptionGroup) -> BaseException:
    """Task groups wrap errors; a single error is re-raised as itself (ConnectError, ...)."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


connect = Bus.connect
