"""``mqtt://`` and ``mqtts://``: MQTT 5 through paho-mqtt, driven by the asyncio event loop.

No paho thread: paho's socket is registered with ``loop.add_reader``/``add_writer`` (as aiomqtt
does) and a periodic task runs ``loop_misc`` for keepalive. Only the blocking TCP/TLS connect
runs in a worker thread. A received message is handed to ``config.dispatch`` right in the
reader callback when every buffer has room; otherwise it joins one ordered queue that a single
task drains with ``await``, and past ``max_pending`` queued messages the socket stops being
read (backpressure into the broker). QoS 1 messages are acknowledged only once in a
subscription buffer, so the broker's flow control (our Receive Maximum) bounds what is in
flight. See :mod:`bus.backends.mqtt_options` for URL options.

The transport is put together from one module per concept: :mod:`.mqtt_conn` (the socket on
the loop, waiting for acks), :mod:`.mqtt_publish`, :mod:`.mqtt_subscribe`; this one connects,
reconnects, and receives (paho's callbacks).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import ssl
import threading
from functools import partial
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from robobus.bus.backends.mqtt_conn import _OK, SubscribeError, _Dropped, log
from robobus.bus.backends.mqtt_options import parse
from robobus.bus.backends.mqtt_publish import MqttPublisher
from robobus.bus.backends.mqtt_routes import Routes
from robobus.bus.backends.mqtt_subscribe import MqttSubscriber
from robobus.bus.backends.mqtt_wire import FastClient, Publish, will_properties
from robobus.bus.errors import ConnectError, PublishError
from robobus.bus.message import AckToken, Message
from robobus.bus.transport import TransportConfig, will_of

__all__ = ["MqttTransport", "SubscribeError"]


class MqttTransport(MqttPublisher, MqttSubscriber):
    """Transport for ``mqtt://HOST:PORT`` and ``mqtts://HOST:PORT`` (MQTT 5)."""

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self, config: TransportConfig) -> None:
        self._config = config
        self._sync = config.dispatch
        self._opts = parse(config.url, config.client_id, config.keepalive_s)
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._routes = Routes(persistent=self._opts.persistent)
        self._inflight = asyncio.Semaphore(self._opts.inflight)
        self.log = log.bind(url=self._opts.address, client=self._opts.client_id)
        self._client = self._new_client()
        await self._connect_once()
        self._connected.set()
        self._tasks = [
            asyncio.create_task(self._dispatch(), name=f"mqtt-dispatch-{config.client_id}"),
            asyncio.create_task(self._housekeeping(), name=f"mqtt-misc-{config.client_id}"),
        ]
        for task in self._tasks:
            task.add_done_callback(self._task_done)
        config.on_state("connected")

    def _task_done(self, task: asyncio.Task[None]) -> None:
        """A background task must not die quietly: subscriptions then raise instead of hanging."""
        if task.cancelled() or task.exception() is None or self._closing:
            return
        self.log.error("mqtt_task_failed", task=task.get_name(), error=repr(task.exception()))
        self._config.on_state("lost")

    def _new_client(self) -> FastClient:
        o = self._opts
        c = FastClient(paho.CallbackAPIVersion.VERSION2, client_id=o.client_id,
                        protocol=paho.MQTTv5, reconnect_on_failure=False, manual_ack=True)
        c.connect_timeout = o.connect_timeout_s
        c.max_inflight_messages_set(min(o.inflight, 65_000))
        if o.credentials is not None:
            c.username_pw_set(o.credentials.username, o.credentials.password)
        if o.tls:
            c.tls_set(ca_certs=o.ca, certfile=o.cert, keyfile=o.key)
            c.tls_insecure_set(o.insecure)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish_packet = self._on_packet
        c.on_subscribe = self._on_subscribe
        c.on_unsubscribe = self._on_subscribe
        c.on_socket_close = self._on_socket_close
        props = Properties(PacketTypes.CONNECT)
        props.ReceiveMaximum = o.receive_max
        props.SessionExpiryInterval = o.expiry_s if o.persistent else 0
        c.connect_async(o.host, o.port, o.keepalive_s, clean_start=not o.persistent,
                        properties=props)
        return c

    async def _connect_once(self) -> bool:
        """One connection attempt; returns the CONNACK's session-present flag."""
        o = self._opts
        # A fresh will per connection: a presence gives each one its own birth sequence.
        will = will_of(self._config)
        if will is not None:
            self._client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain,
                                  properties=will_properties(will.content_type, will.payload))
        self._connack = self._loop.create_future()
        try:
            async with asyncio.timeout(o.connect_timeout_s + 0.5):
                rc = await asyncio.to_thread(self._client.reconnect)
                if rc != _OK:
                    raise ConnectError(o.address, paho.error_string(rc))
                self._register(self._client.socket())
                reason, session_present = await self._connack
        except TimeoutError as exc:
            self._drop_socket()
            raise ConnectError(o.address, f"no CONNACK within {o.connect_timeout_s}s") from exc
        except (OSError, ssl.SSLError) as exc:
            raise ConnectError(o.address, getattr(exc, "strerror", None) or str(exc)) from exc
        except _Dropped as exc:
            raise ConnectError(o.address, "connection closed during the handshake") from exc
        if reason.is_failure:
            self._drop_socket()
            raise ConnectError(o.address, f"broker refused: {reason}")
        return session_present

    def session_id(self) -> str:
        """The MQTT client id, with the account's tag (``mqtt_options.session_client_id``)."""
        return self._opts.client_id

    async def close(self, graceful: bool = True) -> None:
        if self._closing:
            return
        self._closing = True
        if self._reconnector is not None:
            self._reconnector.cancel()
        if self._fd >= 0:
            # MQTT 5 reason 0x04 asks the broker to publish the will, like a crash would.
            code = None if graceful else ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message")
            self._client.disconnect(reasoncode=code)
            self._flush()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._closed_sock.wait()
            self._drop_socket()
        self._connected.clear()
        for task in self._tasks:
            task.cancel()
        pending = self._backlog[0] if self._backlog is not None else None
        if inspect.iscoroutine(pending) and inspect.getcoroutinestate(pending) == "CORO_CREATED":
            pending.close()  # never awaited: close it rather than leak a warning
        self._fail_waiters()
        self._config.on_state("closed")

    # -- paho callbacks ----------------------------------------------------------------------
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: ReasonCode,
                    props: Properties | None) -> None:
        server_max = getattr(props, "ReceiveMaximum", 65_535) if props else 65_535
        # Honour the broker's Receive Maximum (Mosquitto's default is 20): exceeding it gets us
        # disconnected. paho's setter refuses once connected, hence the attribute.
        client._max_inflight_messages = min(self._opts.inflight, server_max)
        self._generation += 1
        if self._connack is not None and not self._connack.done():
            self._connack.set_result((reason, bool(flags.session_present)))

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: ReasonCode,
                       props: Properties | None) -> None:
        self._connected.clear()
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(_Dropped())
            return
        for fut in self._suback.values():
            if not fut.done():
                fut.set_exception(_Dropped())
        if self._closing or self._reconnector is not None:
            return
        self.log.warning("mqtt_connection_lost", reason=str(reason))
        if not self._opts.reconnect:
            self._config.on_state("lost")
            self._fail_waiters()
            return
        self._config.on_state("reconnecting")
        self._reconnector = self._loop.create_task(self._reconnect(), name="mqtt-reconnect")

    def _on_packet(self, pub: Publish) -> None:
        sender = None
        user = pub.user
        if user is not None:  # parsed only when the publisher sent any
            if len(user) == 1 and user[0][0] == "sender":
                sender, user = user[0][1], None
            else:
                sender = next((v for k, v in user if k == "sender"), None)
        msg = Message(pub.topic, pub.payload, retain=pub.retain, qos=pub.qos,
                      response_topic=pub.response_topic, correlation=pub.correlation,
                      sender=sender, content_type=pub.content_type)
        if user:
            msg.user_properties = tuple(kv for kv in user if kv[0] != "sender")
        if pub.payload_format is not None:
            msg.payload_format = pub.payload_format
        if pub.qos:
            msg.ack_token = AckToken(partial(self._ack, pub.mid, pub.qos, self._generation))
        ids = self._routes.route(pub.sub_ids, msg, pub.mid)
        if ids is None:  # parked until a subscription claims it (persistent sessions)
            return
        if not self._queue and self._backlog is None and self._sync is not None:
            # Fast path, no task hop: hand over right here when every buffer has room.
            pending = self._sync(msg, ids) if ids else None
            if pending is None:
                msg.settle()
                return
            self._backlog = (pending, msg)  # the dispatcher finishes it
        else:
            self._queue.append((msg, ids, pub.mid, pub.qos))
        self._wakeup.set()
        if len(self._queue) >= self._opts.max_pending and not self._waiters:
            self._pause(True)

    # -- delivery ----------------------------------------------------------------------------
    async def _dispatch(self) -> None:
        """Deliver, in order, what the fast path could not (full BLOCK buffers, or no dispatch)."""
        deliver, queue = self._config.deliver, self._queue
        low = self._opts.max_pending // 2
        while True:
            if self._backlog is not None:
                pending, msg = self._backlog
                await pending
                self._backlog = None
                msg.settle()
            while queue:
                msg, ids, _mid, _qos = queue.popleft()
                if ids:
                    await deliver(msg, ids)
                msg.settle()
                if self._paused and len(queue) <= low:
                    self._pause(False)
            self._wakeup.clear()
            await self._wakeup.wait()

    def _ack(self, mid: int, qos: int, generation: int | None = None) -> None:
        """Acknowledge after delivery: at-least-once end to end (redelivered after a crash).

        Acks for a previous connection are dropped: message ids restart, and the broker
        redelivers whatever that connection left unacknowledged.
        """
        if generation is not None and generation != self._generation:
            return
        if qos and self._connected.is_set():
            self._client.ack(mid, qos)

    async def _housekeeping(self) -> None:
        period = min(0.5, self._opts.keepalive_s / 4)
        while True:
            await asyncio.sleep(period)
            if self._connected.is_set() and self._fd >= 0:
                self._client.loop_misc()
                for mid, qos in self._routes.expire_parked(self._opts.park_s):
                    self._client.ack(mid, qos)
                self._flush()

    # -- reconnect -----------------------------------------------------------------------------
    async def _reconnect(self) -> None:
        delay = 0.05
        try:
            while not self._closing:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._opts.reconnect_max_s)
                try:
                    present = await self._connect_once()
                    if not present:
                        await self._resubscribe()
                except (ConnectError, _Dropped, SubscribeError, PublishError) as exc:
                    self.log.info("mqtt_reconnect_failed", error=str(exc), retry_in=delay)
                    continue
                except Exception as exc:  # never let one odd failure end reconnection for good
                    self.log.warning("mqtt_reconnect_failed", error=repr(exc), retry_in=delay,
                                     exc_info=True)
                    continue
                self._connected.set()
                self._config.on_state("connected")
                return
        finally:
            self._reconnector = None
