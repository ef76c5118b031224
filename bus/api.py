"""The one async API: ``async with Bus.connect(url, name=...) as bus``.

:class:`Bus` is put together from one module per concept: :mod:`~robobus.bus.options` (URL,
options, codec, event loop), :mod:`~robobus.bus.core` (state and publishing),
:mod:`~robobus.bus.request_reply`, :mod:`~robobus.bus.errors_report` and
:mod:`~robobus.bus.typed`; this module adds the lifecycle, subscriptions and delivery.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import anyio

from robobus.bus.errors import DisconnectedError
from robobus.bus.errors_report import ErrorReports
from robobus.bus.limits import RateLimit, TokenBuckets
from robobus.bus.message import Message, Will
from robobus.bus.options import (
    BACKENDS,
    DEFAULT_URL,
    BusOptions,
    Payload,
    codec_of,
    default_url,
    encode,
    load_backend,
    run,
)
from robobus.bus.request_reply import Requests
from robobus.bus.subscription import Overflow, Subscription
from robobus.bus.topics import matches, remember, validate_filter
from robobus.bus.transport import TransportConfig
from robobus.bus.typed import decoder

__all__ = ["BACKENDS", "DEFAULT_URL", "Bus", "BusOptions", "Payload", "codec_of", "connect",
           "default_url", "encode", "run"]

T = TypeVar("T")


class Bus(ErrorReports, Requests):
    """A connected participant. Create it with :meth:`Bus.connect`."""

    # -- lifecycle ---------------------------------------------------------------------
    @classmethod
    @asynccontextmanager
    async def connect(
        cls, url: str | None = None, *, name: str = "client", options: BusOptions | None = None
    ) -> AsyncIterator[Bus]:
        """Connect to ``url`` (``memory://``, ``zmq://``, ``zmq+ipc://``, ``mqtt://``, ``mqtts://``)."""
        url = url or default_url()
        opts = options or BusOptions()
        bus = cls(url, name, opts, load_backend(url))
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
        decode = decoder(self, type, owns) if type is not None else None
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


def _unwrap(group: BaseExceptionGroup) -> BaseException:
    """Task groups wrap errors; a single error is re-raised as itself (ConnectError, ...)."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


connect = Bus.connect
