"""The ZeroMQ hub: an XSUB/XPUB forwarder plus last-value cache, liveness and last wills.

The data path is ``zmq.proxy_steerable`` running in C (no Python per message). Python only
handles the control ROUTER: hellos and heartbeats, last wills, acknowledged (qos 1) and
retained publishes, and retained snapshots for new subscriptions. Control-path messages are
injected into the data path through an inproc PUB connected to the XSUB, so every subscriber
sees one ordered stream per publisher path.
"""

from __future__ import annotations

import secrets
import threading
import time
from typing import TYPE_CHECKING

import msgspec
import structlog
import zmq

from robobus.bus import hub_control_guard as control_guard
from robobus.bus import zmq_wire as wire
from robobus.bus.hub_clients import BAD_KEEPALIVE, Client, checked_will, dead, keepalive
from robobus.bus.hub_guard import HubGuard, guarded_proxy, user_of
from robobus.bus.hub_replay import ReplayBuffer
from robobus.bus.topics import matches
from robobus.schemas.contract import is_command

if TYPE_CHECKING:  # imported when CURVE is on (see _secure)
    from zmq.auth.thread import ThreadAuthenticator

log = structlog.get_logger("bus.hub")


class Hub:
    """A hub bound to the endpoints of ``url``. Run with :meth:`serve` or :meth:`start`."""

    def __init__(self, url: str, *, context: zmq.Context | None = None,
                 curve_secret: bytes | None = None, authorized_keys: list[bytes] | None = None,
                 replay_buffer: int = 0, guard: HubGuard | None = None) -> None:
        self.url = url
        self.endpoints = wire.endpoints(url)
        self.ctx = context or zmq.Context.instance()
        self.retained: dict[str, tuple[bytes, bytes]] = {}
        self.clients: dict[bytes, Client] = {}
        self.stats = {"acked": 0, "wills": 0, "snapshots": 0, "hellos": 0}
        self._inproc = f"inproc://robobus-hub-{secrets.token_hex(4)}"
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._curve = (curve_secret, authorized_keys)
        self._auth: ThreadAuthenticator | None = None
        self.replay = ReplayBuffer(replay_buffer) if replay_buffer > 0 else None
        self._capture: zmq.Socket | None = None
        self._capture_in: zmq.Socket | None = None
        #: authorization per CURVE key (``secure init``'s policy); None: any admitted key may
        #: do anything
        self.guard = guard if curve_secret is not None else None

    # -- lifecycle ---------------------------------------------------------------------
    def _bind(self) -> None:
        ep = self.endpoints
        self.xsub = self.ctx.socket(zmq.XSUB)
        self.xpub = self.ctx.socket(zmq.XPUB)
        self.router = self.ctx.socket(zmq.ROUTER)
        self._secure(self.xsub, self.xpub, self.router)
        self.xpub.setsockopt(zmq.SNDHWM, wire.DATA_HWM)
        self.xsub.setsockopt(zmq.RCVHWM, wire.DATA_HWM)
        if self.guard is None:
            self.router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        else:
            # Without handover a second connection with a routing id in use is ignored until
            # the first is gone: another key cannot take over a client's acks, durable stream
            # or will. Subscriptions are applied by the guarded proxy (manual XPUB).
            self.xpub.setsockopt(zmq.XPUB_MANUAL, 1)
        self.router.setsockopt(zmq.RCVHWM, wire.CONTROL_HWM)
        self.router.setsockopt(zmq.SNDHWM, wire.CONTROL_HWM)
        for sock in (self.xsub, self.xpub, self.router):
            sock.setsockopt(zmq.LINGER, 0)
        self.xsub.bind(ep.publish)
        self.xsub.bind(self._inproc)
        self.xpub.bind(ep.subscribe)
        self.router.bind(ep.control)
        # Subscribe the XSUB to everything: publishers then send every message to the hub
        # and the XPUB alone filters, so subscription readiness is a single hop.
        self.xsub.send(b"\x01")
        self.injector = self.ctx.socket(zmq.PUB)
        self.injector.setsockopt(zmq.SNDHWM, wire.DATA_HWM)
        self.injector.setsockopt(zmq.LINGER, 0)
        self.injector.connect(self._inproc)
        self._steer = self.ctx.socket(zmq.PAIR)
        steer_ep = f"inproc://robobus-steer-{secrets.token_hex(4)}"
        self._steer.bind(steer_ep)
        self._steer_peer = self.ctx.socket(zmq.PAIR)
        self._steer_peer.connect(steer_ep)
        if self.replay is not None:
            # PUB, not PAIR: a lagging replay buffer drops copies instead of stalling the bus.
            cap_ep = f"inproc://robobus-capture-{secrets.token_hex(4)}"
            self._capture = self.ctx.socket(zmq.PUB)
            self._capture.setsockopt(zmq.SNDHWM, 1_000_000)
            self._capture.bind(cap_ep)
            self._capture_in = self.ctx.socket(zmq.SUB)
            self._capture_in.setsockopt(zmq.RCVHWM, 1_000_000)
            self._capture_in.setsockopt(zmq.SUBSCRIBE, b"")
            self._capture_in.connect(cap_ep)
        log.info("hub_listening", publish=ep.publish, subscribe=ep.subscribe, control=ep.control,
                 curve=self._curve[0] is not None, policy=self.guard is not None)

    def _secure(self, *socks: zmq.Socket) -> None:
        secret, keys = self._curve
        if secret is None:
            return
        from zmq.auth.thread import ThreadAuthenticator

        self._auth = ThreadAuthenticator(self.ctx)
        self._auth.start()
        self._auth.configure_curve_callback(domain="*", credentials_provider=_KeySet(keys or []))
        public = zmq.curve_public(secret)
        for sock in socks:
            sock.curve_secretkey = secret
            sock.curve_publickey = public
            sock.curve_server = True

    def start(self) -> None:
        """Bind and serve in background threads (the embedded, in-process hub)."""
        self._bind()
        for target, name in ((self._proxy, "hub-proxy"), (self._control_loop, "hub-control")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def serve(self) -> None:
        """Bind and serve until :meth:`stop` (the ``robobus hub`` process)."""
        self._bind()
        proxy = threading.Thread(target=self._proxy, name="hub-proxy", daemon=True)
        proxy.start()
        self._threads.append(proxy)
        self._control_loop()

    def stop(self) -> None:
        """Ask the control loop to stop; it terminates the proxy on its way out.

        Safe from a signal handler: only a control loop running in its own thread (the
        embedded hub) is waited for, never the proxy, which waits for the control loop.
        """
        self._stop.set()
        for thread in self._threads:
            if thread.name == "hub-control" and thread is not threading.current_thread():
                thread.join(timeout=2)

    def _proxy(self) -> None:
        try:
            if self.guard is not None:
                guarded_proxy(self.xsub, self.xpub, self._capture, self._steer_peer, self.guard)
                return
            zmq.proxy_steerable(self.xsub, self.xpub, self._capture, self._steer_peer)
        except zmq.ContextTerminated:
            pass

    # -- control plane -------------------------------------------------------------------
    def _control_loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        if self._capture_in is not None:
            poller.register(self._capture_in, zmq.POLLIN)
        try:
            next_reap = 0.0
            while not self._stop.is_set():
                for sock, _ in poller.poll(100):
                    if sock is self.router:
                        self._drain()
                    else:
                        self._drain_capture()
                now = time.monotonic()
                # Not after every message: reaping walks every client (1,000 robots).
                if now >= next_reap:
                    next_reap = now + REAP_EVERY_S
                    self._reap(now)
                if self.guard is not None:
                    for report in self.guard.untold(now):
                        wire.send_frames(self.injector, report)
        finally:
            self._steer.send(b"TERMINATE")
            for thread in self._threads:
                if thread is not threading.current_thread() and thread.name == "hub-proxy":
                    thread.join(timeout=2)
            for sock in (self.router, self.injector, self._steer, self._steer_peer, self.xsub,
                         self.xpub, self._capture, self._capture_in):
                if sock is not None:
                    sock.close(0)
            if self._auth is not None:
                self._auth.stop()
            log.info("hub_stopped", **self.stats)

    def _drain(self) -> None:
        """Handle what the router holds. The poll said it is readable, so the first read
        succeeds; after it one EVENTS query ends a lone message, and only a burst ends on
        ``zmq.Again`` (~3.5 µs), once. Frames come with their ``more`` flag, which spares a
        getsockopt(RCVMORE) per frame, and flags are plain ints (see ``zmq_wire``)."""
        router = self.router
        recv = router.recv
        burst = False
        while True:
            try:
                frame = recv(wire.NOBLOCK, copy=False)
                raw = [frame]
                while frame.more:
                    frame = recv(wire.NOBLOCK, copy=False)
                    raw.append(frame)
            except zmq.Again:
                return
            self._on_control(raw)
            if not burst:
                burst = True
                if not wire.readable(router):
                    return

    def _on_control(self, raw: list[zmq.Frame]) -> None:
        frames = [f.bytes for f in raw]
        if len(frames) < 2:
            return
        try:
            account = None
            if self.guard is not None:
                account = self._allowed(raw[1], frames)
                if account is None:
                    return
            self._handle(frames[0], frames[1], frames[2:], account)
        except BAD_CONTROL as exc:  # one malformed frame must not take the bus down
            log.warning("hub_bad_control", command=frames[1][:16], client=frames[0][:32],
                        error=repr(exc)[:200])

    def _drain_capture(self) -> None:
        """Number what the capture socket holds (bounded, so control messages are never
        starved), then stream it to the durable clients."""
        if self.replay is None or self._capture_in is None:
            return
        self.replay.capture_from(self._capture_in)
        self.replay.pump(self.router)

    def _handle(self, ident: bytes, cmd: bytes, args: list[bytes], account: str | None = None
                ) -> None:
        """One control command; ``account``: the sender's, when a policy is on (checked)."""
        client = self.clients.get(ident)
        if client is not None:
            client.last_seen = time.monotonic()
        if cmd == wire.PUBS and len(args) == 2:
            self._publish_batch(ident, args[0], wire.decode_batch(args[1]), account)
        elif cmd == wire.PUB and len(args) == 4:
            self._publish(args[1], args[2], args[3])
            wire.send_frames(self.router, [ident, wire.ACK, args[0]])
            self.stats["acked"] += 1
        elif cmd == wire.HEARTBEAT:
            if client is None:
                wire.send_frames(self.router, [ident, wire.WHO])
        elif cmd == wire.HELLO and args:
            hello = _dict.decode(args[0])
            seconds = keepalive(hello.get("keepalive", 1.0))
            if seconds is None:
                log.warning("hub_bad_hello", client=ident[:32], keepalive=repr(hello.get("keepalive"))[:40])
                wire.send_frames(self.router, [ident, wire.DENY, wire.HELLO, BAD_KEEPALIVE])
                return
            self.clients[ident] = Client(checked_will(hello.get("will")), timeout_s=2.5 * seconds)
            self.stats["hellos"] += 1
            wire.send_frames(self.router, [ident, wire.HELLO, wire.FEATURES])
        elif cmd == wire.DURABLE and args:
            self._attach_durable(args[0].decode(errors="replace"), ident)
        elif cmd == wire.DACK and args and self.replay is not None:
            self.replay.ack(ident, int.from_bytes(args[0], "big"))
            self.replay.pump(self.router)
        elif cmd == wire.BYE:
            self._forget(ident)
        elif cmd == wire.SNAP and len(args) in (2, 3):
            self._snapshot(ident, args[0], args[1].decode(), args[2] if len(args) == 3 else None)
        else:
            log.warning("hub_bad_control", command=cmd[:16], client=ident[:32])

    def _publish_batch(self, ident: bytes, first: bytes, entries: list[wire.Entry],
                       account: str | None) -> None:
        """``PUBS``: publish each entry in order, then one ``ACKS`` for the range. Under a
        policy every entry is checked on its own: a refused or malformed one is answered
        ``DENY`` (before the ``ACKS``, which the client then ignores for it) and the rest go
        through."""
        start = wire.unpack_id(first)
        for i, (topic, header, payload) in enumerate(entries):
            try:
                if account is not None:
                    stamped = self._entry_allowed(ident, account, start + i, topic, header)
                    if stamped is None:
                        continue
                    header = stamped
                self._publish(topic, header, payload)
            except BAD_CONTROL as exc:  # one malformed entry: refused, not the whole batch
                log.warning("hub_bad_control", command=wire.PUBS, client=ident[:32],
                            error=repr(exc)[:200])
                wire.send_frames(self.router, [ident, wire.DENY, wire.pack_id(start + i),
                                               topic])
        wire.send_frames(self.router, [ident, wire.ACKS, first,
                                       len(entries).to_bytes(4, "big")])
        self.stats["acked"] += len(entries)

    def _entry_allowed(self, ident: bytes, account: str, ack_id: int, topic: bytes,
                       header: bytes) -> bytes | None:
        """One publish of a batch under the policy: its stamped header, or None if refused
        (answered ``DENY`` and reported)."""
        guard = self.guard
        assert guard is not None
        verdict = control_guard.check_publish(guard, account, wire.pack_id(ack_id), topic,
                                              header)
        self._tell(ident, guard, account, verdict)
        return verdict.header if verdict.ok else None

    def _allowed(self, first: zmq.Frame, frames: list[bytes]) -> str | None:
        """The account of this client's key if the policy lets it send this control command
        (None: refused, reported and without effect; the sender of a refused hello or qos 1
        publish is told ``DENY``). Each publish of a ``PUBS`` is checked on its own later."""
        guard = self.guard
        assert guard is not None
        user = user_of(first)
        account = guard.account(user) if user is not None else "hub"
        verdict = control_guard.check(guard, account, frames[0].decode(errors="replace"),
                                      frames[1], frames[2:])
        if verdict.header is not None:
            frames[4] = verdict.header
        self._tell(frames[0], guard, account, verdict)
        return account if verdict.ok else None

    def _tell(self, ident: bytes, guard: HubGuard, account: str,
              verdict: control_guard.Verdict) -> None:
        """Send a verdict's answer to the client and report its refusal."""
        if verdict.answer is not None:
            wire.send_frames(self.router, [ident, *verdict.answer])
        if verdict.denied is not None:
            report = guard.refuse(account, *verdict.denied)
            if report is not None:
                wire.send_frames(self.injector, report)

    def _forget(self, ident: bytes) -> None:
        """A client left (goodbye) or died: its durable stream, if any, is detached."""
        self.clients.pop(ident, None)
        if self.guard is not None:
            self.guard.clients.pop(ident.decode(errors="replace"), None)
        if self.replay is not None:
            self.replay.detach(ident)

    def _attach_durable(self, name: str, ident: bytes) -> None:
        if self.replay is None:
            log.warning("durable_without_replay_buffer", client=name,
                        hint="start the hub with --replay-buffer N")
            wire.send_frames(self.router, [ident, wire.NO_DURABLE])
            return
        self.replay.attach(name, ident)
        self.replay.pump(self.router)

    def _publish(self, topic: bytes, header: bytes, payload: bytes) -> None:
        head = _dict.decode(header) if header else {}  # also refuses a malformed header
        if head.pop("r", False):
            key = topic.decode()
            if payload:
                self.retained[key] = (msgspec.msgpack.encode({**head, "r": True}), payload)
            else:
                self.retained.pop(key, None)
            if not is_command(key):  # a command keeps it: its receiver refuses it (issue 12)
                header = msgspec.msgpack.encode(head)
        wire.send_frames(self.injector, [topic, wire.pack_body(header, payload)])

    def _snapshot(self, ident: bytes, sub_id: bytes, pattern: str, fence: bytes | None) -> None:
        """Retained values matching ``pattern``. With a ``fence`` topic the snapshot travels on
        the data path behind every control-path publish injected before it, so the client can
        tell what is older than the snapshot (dropped) from what is newer (delivered)."""
        hits = [[t.encode(), h, p] for t, (h, p) in self.retained.items() if matches(pattern, t)
                and self._may_read(ident, t)]
        blob = msgspec.msgpack.encode(hits)
        if fence is None:
            wire.send_frames(self.router, [ident, wire.SNAP, sub_id, blob])
        else:
            wire.send_frames(self.injector, [fence, wire.pack_body(b"", blob)])
        self.stats["snapshots"] += 1

    def _may_read(self, ident: bytes, topic: str) -> bool:
        """A snapshot holds only what the asking client's account may read."""
        if self.guard is None:
            return True
        client = ident.decode(errors="replace")
        account = self.guard.clients.get(client)
        return account is not None and self.guard.may_read(account, topic, client)

    def _reap(self, now: float) -> None:
        for ident in dead(self.clients, now):
            will = self.clients[ident].will
            self._forget(ident)
            log.info("client_dead", client=ident.decode(errors="replace"), will=bool(will))
            if will:
                head: dict[str, object] = {"r": True} if will.get("retain", True) else {}
                head["s"] = "hub"
                self._publish(will["topic"].encode(), msgspec.msgpack.encode(head), will["payload"])
                self.stats["wills"] += 1


_dict = msgspec.msgpack.Decoder(dict)
#: how often the control loop looks for clients whose heartbeats stopped
REAP_EVERY_S = 0.05
#: what a malformed control frame from a client raises (RecursionError: hostile nesting)
BAD_CONTROL = (msgspec.DecodeError, RecursionError, UnicodeDecodeError, ValueError, TypeError)



class _KeySet:
    """CURVE credentials provider: admits only the listed client public keys (z85)."""

    def __init__(self, keys: list[bytes]) -> None:
        self.keys = set(keys)

    def callback(self, domain: str, key: bytes) -> bool:
        return zmq.utils.z85.encode(key) in self.keys or key in self.keys
