"""Publishing over MQTT: QoS 0 straight to the socket, QoS 1 and 2 through a window of
unacknowledged messages (``inflight``) whose PUBACKs complete ``publish`` or ``post``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from robobus.bus.backends.mqtt_conn import _NO_CONN, _OK, MqttConnection
from robobus.bus.backends.mqtt_wire import publish_properties
from robobus.bus.errors import DisconnectedError, PublishError
from robobus.bus.message import Message
from robobus.bus.transport import acked


class MqttPublisher(MqttConnection):
    """``publish`` and ``post`` of :class:`robobus.bus.backends.mqtt.MqttTransport`."""

    async def publish(self, msg: Message) -> None:
        client = await self._ready()
        props = publish_properties(msg, self._props_cache)
        if msg.qos <= 0:
            info = client.publish(msg.topic, msg.payload, 0, msg.retain, props)
            if info.rc != _OK:
                self._refuse(msg.topic, info.rc)
            if not self._drained.is_set():  # kernel buffer full: backpressure the publisher
                await self._drained.wait()
            return
        async with self._inflight:  # QoS 2 goes through: paho runs PUBREC/PUBREL/PUBCOMP
            info = client.publish(msg.topic, msg.payload, min(msg.qos, 2), msg.retain, props)
            if info.rc not in (_OK, _NO_CONN):  # NO_CONN: paho keeps it and resends
                self._refuse(msg.topic, info.rc)
            if not self._puback:  # on_publish costs two objects per QoS 0 message: only when needed
                client.on_publish = self._on_publish
            fut = self._puback[info.mid] = self._loop.create_future()
            reason = await self._await_ack(fut, self._puback, info.mid, msg.topic)
        if reason.is_failure:
            raise PublishError(msg.topic, f"broker refused: {reason}")

    async def post(self, msg: Message) -> Awaitable[None]:
        if msg.qos <= 0:
            await self.publish(msg)
            return acked()
        client = await self._ready()
        props = publish_properties(msg, self._props_cache)
        await self._inflight.acquire()  # released once acknowledged, as publish holds it
        try:
            info = client.publish(msg.topic, msg.payload, min(msg.qos, 2), msg.retain, props)
            if info.rc not in (_OK, _NO_CONN):
                self._refuse(msg.topic, info.rc)
        except BaseException:
            self._inflight.release()
            raise
        if not self._puback:
            client.on_publish = self._on_publish
        fut = self._puback[info.mid] = self._loop.create_future()
        # A task, not a bare coroutine: the window and the ack table are released even if
        # the caller never gets to await it (its bus closing, say).
        return self._loop.create_task(self._settle(fut, info.mid, msg.topic),
                                      name="mqtt-post-ack")

    async def _settle(self, fut: asyncio.Future[Any], mid: int, topic: str) -> None:
        try:
            reason = await self._await_ack(fut, self._puback, mid, topic)
        except DisconnectedError:
            # an ack its owner no longer awaits (the bus is closing) is no error worth a
            # "never retrieved" traceback; one who awaits it still gets the exception
            task = asyncio.current_task()
            if task is not None:
                task.add_done_callback(_retrieved)
            raise
        finally:
            self._inflight.release()
        if reason.is_failure:
            raise PublishError(topic, f"broker refused: {reason}")

    def _refuse(self, topic: str, rc: int) -> None:
        if rc == _NO_CONN:
            raise DisconnectedError(f"publish to {topic!r}: not connected to {self._opts.address}")
        raise PublishError(topic, paho.error_string(rc))

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: ReasonCode,
                    props: Properties | None) -> None:
        self._routes.rx += 1
        fut = self._puback.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(reason)


def _retrieved(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()
