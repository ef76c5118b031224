"""``zmq://`` and ``zmq+ipc://``: the ZeroMQ backend, through a ``robobus hub``.

Each client has three sockets: PUB (best-effort fast path) to the hub's XSUB, SUB from its
XPUB, and a DEALER to its control ROUTER (hello, heartbeats, last will, acknowledged publishes
for qos 1 and retained messages, retained snapshots). Sockets are read on the asyncio loop
through their file descriptors, so no thread sits on the hot path.

Subscription readiness: ZeroMQ subscriptions propagate asynchronously ("slow joiner"), so
``subscribe`` returns only after a probe message published on our own PUB came back through
the hub on a probe topic subscribed *after* the real filter; subscriptions are applied in
order, so the real filter is live too. The retained snapshot then comes back on the data path
as a "fence" that the hub injects behind every control-path publish it handled before: the new
subscription drops what arrives ahead of the fence (older than the snapshot, e.g. a value
cleared just before we subscribed) and takes everything after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import msgspec
import structlog
import zmq

from robobus.bus import zmq_wire as wire
from robobus.bus.backends.zmq_acked import AckedSender
from robobus.bus.backends.zmq_durable import Durable
from robobus.bus.backends.zmq_reader import Handler, watch
from robobus.bus.errors import ConnectError, DisconnectedError, PublishError
from robobus.bus.message import Message
from robobus.bus.security import zmq_client_keys
from robobus.bus.topics import literal_prefix, matches, remember
from robobus.bus.transport import Dispatch, TransportConfig, acked, will_of

if TYPE_CHECKING:  # imported only for ?embed=1 URLs (see _maybe_embed)
    from robobus.bus.hub import Hub

log = structlog.get_logger("bus.zmq")


class ZmqTransport:
    """Client side of the hub protocol (see :mod:`bus.zmq_wire`)."""

    def __init__(self) -> None:
        self.dropped = 0
        self._prefixes: Counter[str] = Counter()
        self._filters: dict[int, str] = {}
        self._patterns: dict[int, str] = {}
        self._joining: set[int] = set()  # subscriptions waiting for their snapshot fence
        self._fences: dict[str, tuple[int, asyncio.Future[None]]] = {}
        self._seq_out: dict[tuple[str, int], int] = {}
        self._seq_in: dict[tuple[str, str], int] = {}
        self._snaps: dict[bytes, asyncio.Future[bytes]] = {}
        self._probes: dict[str, asyncio.Event] = {}
        self._hello: asyncio.Future[None] | None = None
        self._own_retained: dict[str, Message] = {}
        self._probe_ids = itertools.count(1)
        self._hub: Hub | None = None
        self._closed = False
        self._rejoining = False  # a rejoin (hello again) is under way
        self._drains: dict[zmq.Socket, Callable[[], None]] = {}  # per read socket; see _kick

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self, config: TransportConfig) -> None:
        if config.dispatch is None:
            raise ValueError("the ZeroMQ backend hands messages over through config.dispatch")
        self.config = config
        self.dispatch: Dispatch = config.dispatch
        self.ep = wire.endpoints(config.url)
        # the hub's numbered stream instead of subscriptions (zmq_durable), for recorders
        self.durable = Durable(self, self.ep.durable) if self.ep.durable else None
        self._maybe_embed()
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self.pub = self._socket(ctx, zmq.PUB, self.ep.publish)
        self.sub = self._socket(ctx, zmq.SUB, self.ep.subscribe)
        self.ctl = self._socket(ctx, zmq.DEALER, self.ep.control, ident=config.client_id.encode())
        self._probe_prefix = f"$robobus/probe/{config.client_id}/"
        # the publishing client id in headers, per path: best-effort, acknowledged
        self._path_ids = (config.client_id, config.client_id + "/q")
        self.loop = asyncio.get_running_loop()
        #: acknowledged publishes: coalesced per loop turn, resent until acked (zmq_acked)
        self.outbox = AckedSender(self.loop, self.send_control)
        self._watch(self.sub, self._on_data)
        self._watch(self.ctl, self._on_control)
        try:
            with anyio.fail_after(5):
                await self._say_hello()
                await self.sync()
        except ConnectError:  # the hub's policy refused our hello
            await self.close(graceful=False)
            raise
        except TimeoutError as exc:
            await self.close(graceful=False)
            hint = ("the hub may require CURVE keys: set ROBOBUS_ZMQ_KEYS" if
                    not os.environ.get("ROBOBUS_ZMQ_KEYS") else "check the CURVE keys")
            raise ConnectError(config.url, "no robobus hub answered within 5 s (start one with "
                               f"`robobus hub`; {hint})") from exc
        config.task_group.start_soon(self._heartbeat, name="zmq-heartbeat")
        config.on_state("connected")

    def _socket(self, ctx: zmq.Context, kind: int, endpoint: str, ident: bytes | None = None
                ) -> zmq.Socket:
        sock = ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        hwm = wire.CONTROL_HWM if kind == zmq.DEALER else wire.DATA_HWM
        sock.setsockopt(zmq.SNDHWM, hwm)
        sock.setsockopt(zmq.RCVHWM, hwm)
        if ident is not None:
            sock.setsockopt(zmq.ROUTING_ID, ident)
        _apply_curve(sock, self.config.url)
        sock.connect(endpoint)
        return sock

    def _maybe_embed(self) -> None:
        """Start an in-process hub for ``?embed=1`` URLs when none is listening."""
        if not self.ep.embed or _hub_listening(self.ep):
            return
        from robobus.bus.hub import Hub

        self._hub = Hub(self.config.url)
        self._hub.start()
        log.info("embedded_hub_started", url=self.config.url)

    def session_id(self) -> str:
        return self.config.client_id

    async def close(self, graceful: bool = True) -> None:
        if self._closed:
            return
        self._closed = True
        if graceful:
            self.outbox.flush()  # this turn's batch leaves before the goodbye
            self.ctl.send_multipart([wire.BYE], zmq.NOBLOCK)
            for sock in (self.pub, self.ctl):
                sock.setsockopt(zmq.LINGER, 200)
        for sock in (self.sub, self.ctl):
            self.loop.remove_reader(sock.FD)
        for sock in (self.pub, self.sub, self.ctl):
            sock.close()
        self.outbox.close()
        for fut in self._snaps.values():
            if not fut.done():
                fut.set_exception(DisconnectedError("transport closed"))
                fut.exception()  # retrieved: its owner may be gone (see AckedSender.close)
        if self._hub is not None:
            self._hub.stop()

    async def _say_hello(self) -> None:
        will = will_of(self.config)  # a fresh one per hello: a presence numbers them
        hello: dict[str, object] = {"keepalive": self.config.keepalive_s, "will": None}
        if will is not None:
            hello["will"] = {"topic": will.topic, "payload": will.payload, "retain": will.retain}
        self._hello = self.loop.create_future()
        self.send_control([wire.HELLO, msgspec.msgpack.encode(hello)])
        await self._hello

    async def _heartbeat(self) -> None:
        while not self._closed:
            await anyio.sleep(self.config.keepalive_s)
            if not self._closed:
                self.send_control([wire.HEARTBEAT])

    # -- reading -----------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    def _watch(self, sock: zmq.Socket, handle: Handler) -> None:
        """Read ``sock`` on the loop (see :mod:`zmq_reader`)."""
        self._drains[sock] = watch(self.loop, sock, handle, self.config.task_group,
                                   lambda: self._closed)

    def _kick(self, sock: zmq.Socket) -> None:
        """Drain ``sock`` again after a send or setsockopt on it, if it has a message waiting:
        ZeroMQ's FD is edge-triggered and those calls may consume the edge while messages
        wait, which stalls the socket for good (seen as "hub did not acknowledge" with the
        acks queued unread). Only the socket touched can lose its edge; asking its EVENTS
        first spares a drain (and a ``zmq.Again``) after nearly every send."""
        if not self._closed and wire.readable(sock):
            self.loop.call_soon(self._drains[sock])

    def _on_data(self, frames: list[bytes]):  # noqa: ANN202
        if len(frames) != 2:
            return None
        try:
            msg, head = wire.decode_body(frames[0], frames[1])
        except (ValueError, msgspec.DecodeError, RecursionError) as exc:  # hostile nesting, too
            log.warning("bad_data_frame", error=str(exc))
            return None
        if msg.topic.startswith(self._probe_prefix):
            self._on_probe(msg)
            return None
        self._check_seq(msg.topic, head)
        if self._joining:
            return self._dispatch_joining(msg)
        return self.dispatch(msg, None)

    def _on_probe(self, msg: Message) -> None:
        fence = self._fences.pop(msg.topic, None)
        if fence is None:
            event = self._probes.get(msg.topic)
            if event is not None:
                event.set()
            return
        # The snapshot fence: everything before it on the stream is older than the snapshot.
        sub_id, done = fence
        self._joining.discard(sub_id)
        self._deliver_snapshot(sub_id, msg.payload)
        if not done.done():
            done.set_result(None)

    def _dispatch_joining(self, msg: Message):  # noqa: ANN202
        """A subscription still waiting for its fence gets nothing: what reaches it now was
        forwarded before its snapshot was taken (a retained value is in the snapshot)."""
        topic = msg.topic
        if not any(matches(self._patterns[i], topic) for i in self._joining):
            return self.dispatch(msg, None)
        live = tuple(i for i, p in self._patterns.items()
                     if i not in self._joining and matches(p, topic))
        return self.dispatch(msg, live)

    def _check_seq(self, topic: str, head: wire.Head) -> None:
        client, seq = head.c, head.n
        if client is None or seq is None:
            return
        key = (client, topic)
        last = self._seq_in.get(key)
        if last is None:  # bounded: a brain publishes on a topic per task (see _header)
            remember(self._seq_in, key, seq)
            return
        self._seq_in[key] = seq
        if seq > last + 1:
            self.dropped += seq - last - 1
            log.warning("messages_lost_at_hwm", topic=topic, publisher=client,
                        lost=seq - last - 1, total_lost=self.dropped)

    def _on_control(self, frames: list[bytes]):  # noqa: ANN202
        cmd = frames[0]
        if cmd == wire.ACKS and len(frames) == 3:
            self.outbox.acked(wire.unpack_id(frames[1]), wire.unpack_id(frames[2]))
        elif cmd == wire.ACK and len(frames) == 2:
            self.outbox.acked(wire.unpack_id(frames[1]), 1)
        elif cmd == wire.DENY and len(frames) == 3:
            self._denied(frames[1], frames[2].decode(errors="replace"))
        elif cmd == wire.SNAP and len(frames) == 3:
            snap = self._snaps.pop(frames[1], None)
            if snap is not None and not snap.done():
                snap.set_result(frames[2])
        elif cmd == wire.HELLO:
            # a hub older than PUBS answers a bare HELLO: send it single PUBs
            self.outbox.batches = len(frames) > 1 and wire.PUBS in frames[1].split()
            if self._hello is not None and not self._hello.done():
                self._hello.set_result(None)
        elif cmd == wire.DATA and len(frames) == 4 and self.durable is not None:
            return self.durable.on_data(frames)
        elif cmd == wire.NO_DURABLE and self.durable is not None and self.durable.on:
            self.durable.refused()
        elif cmd == wire.WHO and not self._rejoining:
            # one rejoin for a burst: after a partition, every heartbeat queued meanwhile
            # gets its own WHO
            self._rejoining = True
            self.config.task_group.start_soon(self._rejoin, name="zmq-rejoin")

    def _denied(self, what: bytes, reason: str) -> None:
        """The hub's policy refused our hello (its will) or an acknowledged publish (``reason``
        is then its topic)."""
        if what == wire.HELLO:
            if self._hello is not None and not self._hello.done():
                self._hello.set_exception(ConnectError(self.config.url, f"hub refused: {reason}"))
            return
        self.outbox.denied(wire.unpack_id(what), reason)

    def add_filter(self, pattern: str, sub_id: int) -> None:
        """ZeroMQ filters by prefix: the literal part before the first wildcard, ref-counted."""
        prefix = literal_prefix(pattern)
        self._filters[sub_id] = prefix
        self._patterns[sub_id] = pattern
        self._prefixes[prefix] += 1
        if self._prefixes[prefix] == 1:
            self.sub.setsockopt(zmq.SUBSCRIBE, prefix.encode())

    async def _rejoin(self) -> None:
        """The hub forgot us (it restarted, or declared us dead during a partition): hello
        again and restore our retained values."""
        log.warning("hub_restarted_rejoining", url=self.config.url)
        self.config.on_state("reconnected")
        with anyio.move_on_after(5) as hello:
            await self._say_hello()
        self._rejoining = False
        if hello.cancelled_caught:  # the hub's next WHO starts another try
            log.warning("rejoin_hello_unanswered", url=self.config.url)
            return
        if self.durable is not None:
            self.durable.rejoin()
        try:
            for msg in list(self._own_retained.values()):
                await self._publish_acked(msg)
        except PublishError as exc:  # cut off again: the next WHO restores them
            log.warning("rejoin_incomplete", url=self.config.url, error=str(exc))
            return
        # after the old retained values: a presence's new birth must land after them
        self.config.on_state("connected")

    # -- publishing --------------------------------------------------------------------
    def _header(self, msg: Message, path: int) -> bytes:
        key = (msg.topic, path)
        seq = self._seq_out.get(key, 0) + 1
        if seq == 1:
            # Bounded like the other per-topic caches: the brain publishes on a topic per
            # task, and these dicts grew by one entry a task for good. Emptied, numbering
            # starts again at 1, which a subscriber never counts as a loss.
            remember(self._seq_out, key, seq)
        else:
            self._seq_out[key] = seq
        return wire.encode_header(msg, self._path_ids[path], seq)

    async def publish(self, msg: Message) -> None:
        if msg.qos == 0 and not msg.retain:
            self._send_plain(msg)
            return
        await self._publish_acked(msg)

    async def post(self, msg: Message) -> Awaitable[None]:
        if msg.qos == 0 and not msg.retain:
            self._send_plain(msg)
            return acked()
        return await self._send_acked(msg)

    def coalesce(self) -> contextlib.AbstractContextManager[None]:
        """See :meth:`robobus.bus.core.BusCore.coalesce`."""
        return self.outbox.coalesce()

    def _send_plain(self, msg: Message) -> None:
        if self._closed:
            raise DisconnectedError(f"{self.config.url} is closed")
        self.pub.send(msg.topic.encode(), wire.SNDMORE)
        self.pub.send(wire.pack_body(self._header(msg, 0), msg.payload))

    async def _publish_acked(self, msg: Message) -> None:
        """Acknowledged publish through the hub's control socket, resent until acked."""
        await (await self._send_acked(msg))

    async def _send_acked(self, msg: Message) -> asyncio.Future[None]:
        """Send ``msg`` on the control socket (see :mod:`zmq_acked`); the future completes at
        the hub's ack. A caller cancelled while awaiting it leaves nothing behind: the resend
        sweep drops a cancelled future's entry."""
        if self._closed:
            raise DisconnectedError(f"{self.config.url} is closed")
        if self.outbox.full:
            await self.outbox.room()
        if msg.retain:
            if msg.payload:
                self._own_retained[msg.topic] = msg
            else:
                self._own_retained.pop(msg.topic, None)
        return self.outbox.post(msg.topic.encode(), self._header(msg, 1), msg.payload)

    def send_control(self, frames: list[bytes]) -> None:
        """Send on the control socket without ever blocking the loop, then drain again (see
        :meth:`_kick`). With no hub connection to queue on (a hub that refused our CURVE
        handshake drops it), ZeroMQ blocks a DEALER's send, which froze the whole agent; the
        frames are dropped instead, and the caller's own retry or deadline takes over (acked
        publishes are resent, a hello times out into ConnectError)."""
        try:
            wire.send_frames(self.ctl, frames, wire.NOBLOCK)
        except zmq.Again:
            log.debug("control_send_dropped", command=frames[0][:16])
        self._kick(self.ctl)

    # -- subscribing -------------------------------------------------------------------
    async def subscribe(self, pattern: str, sub_id: int) -> None:
        if self.durable is not None and self.durable.on and sub_id != 0:
            await self.durable.subscribe(pattern, sub_id)
            return
        await self._subscribe_live(pattern, sub_id)

    async def _subscribe_live(self, pattern: str, sub_id: int) -> None:
        if sub_id == 0:  # the reply inbox has no retained values
            self.add_filter(pattern, sub_id)
            await self.sync()
            return
        # The fence topic is subscribed before the sync probe, so it is live once the probe is.
        fence = f"{self._probe_prefix}fence/{sub_id}"
        self.add_filter(pattern, sub_id)
        self._joining.add(sub_id)
        self.sub.setsockopt(zmq.SUBSCRIBE, fence.encode())
        try:
            await self.sync()
            await self._await_fence(pattern, sub_id, fence)
        finally:
            self._joining.discard(sub_id)
            self._fences.pop(fence, None)
            if not self._closed:
                self.sub.setsockopt(zmq.UNSUBSCRIBE, fence.encode())
                self._kick(self.sub)

    async def _await_fence(self, pattern: str, sub_id: int, fence: str) -> None:
        """Ask for the snapshot behind a fence; asked again if a full queue dropped it."""
        done = self.loop.create_future()
        self._fences[fence] = (sub_id, done)
        with anyio.fail_after(5):
            while not done.done():
                self.send_control([wire.SNAP, str(sub_id).encode(), pattern.encode(),
                                   fence.encode()])
                with anyio.move_on_after(0.5):
                    await asyncio.shield(done)

    async def unsubscribe(self, pattern: str, sub_id: int) -> None:
        prefix = self._filters.pop(sub_id, None)
        self._patterns.pop(sub_id, None)
        if prefix is None or self._closed:
            return
        self._prefixes[prefix] -= 1
        if self._prefixes[prefix] <= 0:
            del self._prefixes[prefix]
            self.sub.setsockopt(zmq.UNSUBSCRIBE, prefix.encode())
            self._seq_in.clear()

    async def fetch_snapshot(self, pattern: str, sub_id: int) -> None:
        key = str(sub_id).encode()
        fut = self.loop.create_future()
        self._snaps[key] = fut
        self.send_control([wire.SNAP, key, pattern.encode()])
        with anyio.fail_after(5):
            blob = await fut
        self._deliver_snapshot(sub_id, blob)

    def _deliver_snapshot(self, sub_id: int, blob: bytes) -> None:
        """Hand the hub's retained ``[topic, header, payload]`` entries to the subscription."""
        for topic, header, payload in msgspec.msgpack.decode(blob):
            msg, _ = wire.decode_frames([topic, header, payload])
            self.config.snapshot(sub_id, msg)

    async def sync(self) -> None:
        """Wait until the hub applies our latest subscriptions (see module docstring)."""
        topic = f"{self._probe_prefix}{next(self._probe_ids)}"
        event = self._probes[topic] = asyncio.Event()
        self.sub.setsockopt(zmq.SUBSCRIBE, topic.encode())
        self._kick(self.sub)
        wait = 0.002
        try:
            with anyio.fail_after(5):
                while not event.is_set():
                    self.pub.send_multipart([topic.encode(), wire.pack_body(b"", b"")])
                    with anyio.move_on_after(wait):
                        await event.wait()
                    wait = min(wait * 2, 0.1)
        finally:
            self._probes.pop(topic, None)
            if not self._closed:
                self.sub.setsockopt(zmq.UNSUBSCRIBE, topic.encode())


def _hub_listening(ep: wire.Endpoints) -> bool:
    if not ep.tcp_ports:
        return Path(ep.control.removeprefix("ipc://")).exists()
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((ep.host, ep.tcp_ports[2])) == 0


def _apply_curve(sock: zmq.Socket, url: str) -> None:
    """CURVE client keys from ``ROBOBUS_ZMQ_KEYS`` (a directory made by ``robobus secure init``)."""
    keys = zmq_client_keys(url)
    if keys is None:
        return
    public, secret, server = keys
    sock.curve_publickey = public
    sock.curve_secretkey = secret
    sock.curve_serverkey = server
