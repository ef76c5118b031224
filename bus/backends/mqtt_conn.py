"""The MQTT connection's socket on the asyncio event loop, and waiting for the broker's acks.

The base of :class:`robobus.bus.backends.mqtt.MqttTransport`: paho's socket is registered with
``loop.add_reader``/``add_writer`` (no paho thread), reading pauses for backpressure, and
publish, subscribe and unsubscribe wait here for their PUBACK/SUBACK/UNSUBACK.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections import deque
from collections.abc import Awaitable
from typing import Any

import paho.mqtt.client as paho
import structlog
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from robobus.bus.backends.mqtt_options import MqttOptions
from robobus.bus.backends.mqtt_routes import Routes
from robobus.bus.backends.mqtt_wire import FastClient
from robobus.bus.errors import BusError, DisconnectedError, PublishError
from robobus.bus.message import Message
from robobus.bus.transport import Dispatch, TransportConfig

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



class MqttConnection:
    """State of one MQTT transport, its socket and its acknowledgement waits."""

    def __init__(self) -> None:
        self._opts: MqttOptions
        self._config: TransportConfig
        self._client: FastClient
        self._loop: asyncio.AbstractEventLoop
        self._loop_thread: int  # set by start: a socket close seen on another thread is ignored
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

    def _fail_waiters(self) -> None:
        for table in (self._puback, self._suback):
            for fut in table.values():
                if not fut.done():
                    fut.set_exception(DisconnectedError(f"{self._opts.address} closed"))
            table.clear()
