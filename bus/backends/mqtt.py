"""``mqtt://`` and ``mqtts://``: MQTT 5 through paho-mqtt, driven by the asyncio event loop.

No paho thread: paho's socket is registered with ``loop.add_reader``/``add_writer`` (as aiomqtt
does) and a periodic task runs ``loop_misc`` for keepalive. Only the blocking TCP/TLS connect
runs in a worker thread. A received message is handed to ``config.dispatch`` right in the
reader callback when every buffer has room; otherwise it joins one ordered queue that a single
task drains with ``await``, and past ``max_pending`` queued messages the socket stops being
read (backpressure into the broker). QoS 1 messages are acknowledged only once in a
subscription buffer, so the broker's flow control (our Receive Maximum) bounds what is in
flight. See :mod:`bus.backends.mqtt_options` for URL options.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket
import ssl
import threading
from collections import deque
from collections.abc import Awaitable
from functools import partial
from typing import Any

import paho.mqtt.client as paho
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from robobus.bus.backends.mqtt_options import MqttOptions, parse
from robobus.bus.backends.mqtt_routes import Routes
from robobus.bus.backends.mqtt_wire import FastClient, Publish, publish_properties, will_properties
from robobus.bus.errors import BusError, ConnectError, DisconnectedError, PublishError
from robobus.bus.message import AckToken, Message
from robobus.bus.transport import Dispatch, TransportConfig, acked, will_of
from robobus.schemas.contract import is_command

log = structlog.get_logger("bus.mqtt")
_OK = paho.MQTT_ERR_SUCCESS
_NO_CONN = paho.MQTT_ERR_NO_CONN


class SubscribeError(BusError):
    """The broker refused a subscription (SUBACK with a failure reason code)."""

    def __init__(self, pattern: str, reason: str) -> None:
        super().__init__(f"subscription to {pattern!r} refused: {reason}")
        self.pattern = pattern
        self.reason = reason


class _Dropped(Exception):
    """Internal: the connection dropped while waiting for an acknowledgement."""


class MqttTransport:
    """Transport for ``mqtt://HOST:PORT`` and ``mqtts://HOST:PORT`` (MQTT 5)."""

    def __init__(self) -> None:
        self._opts: MqttOptions
        self._config: TransportConfig
        self._client: FastClient
        self._loop: asyncio.AbstractEventLoop
        self._routes: Routes
        self._fd = -1
        self._paused = False
        self._closing = False
        self._connected = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._drained = asyncio.Event()
        self._closed_sock = asyncio.Event()
        self._queue: deque[tuple[Message, tuple[int, ...], int, int]] = deque()
        self._puback: dict[int, asyncio.Future[ReasonCode]] = {}
        self._suback: dict[int, asyncio.Future[list[ReasonCode]]] = {}
        self._connack: asyncio.Future[tuple[ReasonCode, bool]] | None = None
        self._waiters = 0
        self._sync: Dispatch | None = None
        self._backlog: tuple[Awaitable[None], Message] | None = None
        self._generation = 0  # bumped per connection: acks never cross connections
        self._inflight: asyncio.Semaphore
        self._tasks: list[asyncio.Task[None]] = []
        self._reconnector: asyncio.Task[None] | None = None
        self._props_cache: dict[tuple[str | None, str | None], Properties] = {}
        self.log = log

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

    def _register(self, sock: Any) -> None:
        if isinstance(sock, socket.socket) and sock.family != socket.AF_UNIX:
            # Nagle plus delayed ACK turns a QoS 1 round trip into ~88 ms.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._fd = sock.fileno()
        self._closed_sock.clear()
        self._paused = False
        self._loop.add_reader(self._fd, self._on_readable)
        self._flush()

    def _drop_socket(self) -> None:
        """Close the socket without DISCONNECT (the broker then publishes the will)."""
        sock = self._client.socket()
        if sock is not None:
            self._on_socket_close(self._client, None, sock)
            sock.close()

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

    # -- socket events (event-loop thread; paho callbacks run inside these) -----------------
    def _on_readable(self) -> None:
        client = self._client
        for _ in range(64):  # bounded batch: let other tasks run between bursts
            before = self._routes.rx
            if client.loop_read() != _OK or self._routes.rx == before:
                break
        sock = client.socket()
        while isinstance(sock, ssl.SSLSocket) and sock.pending():
            if client.loop_read() != _OK:
                break
        self._flush()

    def _flush(self) -> None:
        """Write what paho queued from inside callbacks; watch for writability if it blocks."""
        client = self._client
        if client.want_write():
            client.loop_write()
        if self._fd < 0:
            return
        if client.want_write():
            self._drained.clear()
            self._loop.add_writer(self._fd, self._on_writable)
        else:
            self._drained.set()

    def _on_writable(self) -> None:
        self._client.loop_write()
        if not self._client.want_write() and self._fd >= 0:
            self._loop.remove_writer(self._fd)
            self._drained.set()

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        if self._fd < 0 or threading.get_ident() != self._loop_thread:
            return
        self._loop.remove_reader(self._fd)
        self._loop.remove_writer(self._fd)
        self._fd = -1
        self._drained.set()
        self._closed_sock.set()

    def _pause(self, paused: bool) -> None:
        if paused == self._paused or self._fd < 0:
            return
        self._paused = paused
        if paused:
            self._loop.remove_reader(self._fd)
        else:
            self._loop.add_reader(self._fd, self._on_readable)

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

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: ReasonCode,
                    props: Properties | None) -> None:
        self._routes.rx += 1
        fut = self._puback.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(reason)

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reasons: Any,
                      props: Properties | None) -> None:
        fut = self._suback.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(list(reasons) if isinstance(reasons, list) else [reasons])

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

    async def _resubscribe(self) -> None:
        for pattern in self._routes.patterns():
            ident = self._routes.add_ident(pattern, None)
            await self._subscribe_ident(pattern, ident)

    # -- operations ----------------------------------------------------------------------------
    async def _ready(self) -> paho.Client:
        if self._closing:
            raise DisconnectedError(f"{self._opts.address} is closed")
        if not self._connected.is_set():
            try:
                async with asyncio.timeout(self._opts.publish_wait_s):
                    await self._connected.wait()
            except TimeoutError as exc:
                raise DisconnectedError(f"not connected to {self._opts.address} after "
                                        f"{self._opts.publish_wait_s}s") from exc
        return self._client

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

    async def _await_ack(self, fut: asyncio.Future[Any], table: dict[int, Any], mid: int,
                         topic: str) -> Any:
        self._waiters += 1
        self._pause(False)  # an ack may sit behind unread data: never wait on a paused socket
        try:
            async with asyncio.timeout(self._opts.ack_timeout_s):
                return await fut
        except TimeoutError as exc:
            raise PublishError(topic, f"no acknowledgement within {self._opts.ack_timeout_s}s"
                               ) from exc
        finally:
            self._waiters -= 1
            table.pop(mid, None)
            if table is self._puback and not table:
                self._client.on_publish = None

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

    def _fail_waiters(self) -> None:
        for table in (self._puback, self._suback):
            for fut in table.values():
                if not fut.done():
                    fut.set_exception(DisconnectedError(f"{self._opts.address} closed"))
            table.clear()


def _retrieved(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()
