"""Subscriptions over MQTT: one subscription identifier per pattern (:mod:`.mqtt_routes`),
resubscribed after a reconnect that lost the session."""

from __future__ import annotations

import contextlib
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from robobus.bus.backends.mqtt_conn import _NO_CONN, _OK, MqttConnection, SubscribeError, _Dropped
from robobus.bus.errors import PublishError
from robobus.schemas.contract import is_command


class MqttSubscriber(MqttConnection):
    """``subscribe`` and ``unsubscribe`` of :class:`robobus.bus.backends.mqtt.MqttTransport`."""

    async def subscribe(self, pattern: str, sub_id: int) -> None:
        await self._ready()
        ident = self._routes.add_ident(pattern, sub_id)
        try:
            await self._subscribe_ident(pattern, ident)
        except _Dropped:
            await self._ready()  # the reconnect resubscribes every known pattern
        except BaseException:
            self._routes.remove(pattern, sub_id)
            raise
        for item in self._routes.claim_parked(pattern):
            self._queue.append(item)
            self._wakeup.set()

    async def _subscribe_ident(self, pattern: str, ident: int) -> None:
        props = Properties(PacketTypes.SUBSCRIBE)
        props.SubscriptionIdentifier = ident
        # Command topics with Retain As Published: a live receiver sees a retained command's
        # flag and refuses it (issue 12); elsewhere the flag marks a subscription's snapshot
        options = SubscribeOptions(qos=1, retainAsPublished=is_command(pattern))
        rc, mid = self._client.subscribe(pattern, options=options, properties=props)
        self._flush()
        if rc != _OK:
            raise _Dropped() if rc == _NO_CONN else SubscribeError(pattern, paho.error_string(rc))
        assert mid is not None  # paho gives a message id with every success
        fut = self._suback[mid] = self._loop.create_future()
        reasons = await self._await_ack(fut, self._suback, mid, pattern)
        if reasons and reasons[0].is_failure:
            raise SubscribeError(pattern, str(reasons[0]))

    async def unsubscribe(self, pattern: str, sub_id: int) -> None:
        # A persistent session's subscriptions belong to the session, so that a restarted
        # process gets what was published meanwhile: only forget them locally.
        if not self._routes.remove(pattern, sub_id) or self._closing or self._opts.persistent:
            return
        if not self._connected.is_set():
            return  # forgotten locally; the reconnect will not resubscribe it
        rc, mid = self._client.unsubscribe(pattern)
        self._flush()
        if rc == _OK and mid is not None:  # paho gives a message id with every success
            fut = self._suback[mid] = self._loop.create_future()
            with contextlib.suppress(_Dropped, PublishError):
                await self._await_ack(fut, self._suback, mid, pattern)

    async def _resubscribe(self) -> None:
        for pattern in self._routes.patterns():
            ident = self._routes.add_ident(pattern, None)
            await self._subscribe_ident(pattern, ident)

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reasons: Any,
                      props: Properties | None) -> None:
        fut = self._suback.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(list(reasons) if isinstance(reasons, list) else [reasons])
