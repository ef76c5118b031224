"""Direct requests on the ZeroMQ backend: straight to the client that serves the topic.

Through the hub a request and its reply cross the forwarder twice, four socket hops and two
wake-ups of the hub's proxy thread. A client that *advertises* a request pattern binds a
ROUTER, and the hub keeps a table of ``pattern -> endpoint`` for the clients alive. A
requester that asked for the table (``WATCH``) sends a matching request on a DEALER straight to
that ROUTER; the reply comes back the same way. Everything else about the request is as on the
data path: it is delivered to every subscription of the server that matches it (so a recorder
subscribed to ``#`` still records it), and the server answers with ``bus.reply``.

Read-your-writes is kept. A subscriber receives one publisher's messages in order per path
(best-effort and acknowledged), so a direct request carries *marks*: the topic and sequence
number of the requester's last publish on each path. The server delivers the request only
once it has received those (or after ``PARK_S``, for a mark that a full queue dropped), so a
query never overtakes what the requester published before it.

Requests fall back to the hub when no table has arrived yet, no client serves the topic, the
endpoint is not connected (``IMMEDIATE``), or the request is acknowledged (qos 1). Direct
serving is off under CURVE (the direct sockets would bypass the hub's authentication) and for
durable clients (their stream carries no sequence numbers to check marks against).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec
import structlog
import zmq

from robobus.bus import zmq_wire as wire
from robobus.bus.message import Message
from robobus.bus.topics import matches, remember

if TYPE_CHECKING:
    from robobus.bus.backends.zmq import ZmqTransport

log = structlog.get_logger("bus.zmq.direct")

#: longest a direct request waits for the requester's earlier publishes to arrive
PARK_S = 0.05
#: requests answered directly whose reply is still owed (a bound: a server may never answer)
MAX_OWED = 10_000
#: (client path id, topic, sequence number) of a requester's last publish on one path
Mark = tuple[str, str, int]
_marks = msgspec.msgpack.Decoder(list[tuple[str, str, int]])
_table = msgspec.msgpack.Decoder(list[tuple[str, str]])
_NOBLOCK = int(zmq.NOBLOCK)


def serve_address(ep: wire.Endpoints, client_id: str) -> str | None:
    """Where a server binds its ROUTER: next to an ipc hub, or on the interface that reaches
    a tcp hub (loopback for a loopback hub)."""
    if not ep.tcp_ports:
        return f"{ep.control.removesuffix('.ctl')}.{client_id}.svc"
    host = ep.host
    try:
        if ipaddress.ip_address(host).is_loopback:
            return "tcp://127.0.0.1:*"
    except ValueError:
        if host == "localhost":
            return "tcp://127.0.0.1:*"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((host, ep.tcp_ports[0]))  # no packet is sent: this picks the route
            return f"tcp://{probe.getsockname()[0]}:*"
        except OSError:
            return None


@dataclass(slots=True)
class _Parked:
    msg: Message
    marks: list[Mark]
    timer: asyncio.TimerHandle | None = None


@dataclass(slots=True)
class Direct:
    """The direct-request state of one :class:`ZmqTransport`."""

    transport: ZmqTransport
    #: patterns this client serves, and the endpoint its ROUTER is bound to
    served: set[str] = field(default_factory=set)
    endpoint: str | None = None
    router: zmq.Socket | None = None
    router_drain: Callable[[], None] | None = None
    #: correlation data -> requester routing id, for replies still owed
    owed: dict[bytes, bytes] = field(default_factory=dict)
    parked: list[_Parked] = field(default_factory=list)
    #: the hub's table, once asked for: (pattern, endpoint) pairs
    table: list[tuple[str, str]] | None = None
    watching: bool = False
    dealers: dict[str, tuple[zmq.Socket, Callable[[], None]]] = field(default_factory=dict)
    routes: dict[str, tuple[zmq.Socket, Callable[[], None]] | None] = field(default_factory=dict)
    sent: int = 0  # requests sent direct
    served_count: int = 0  # direct requests delivered here

    # -- serving -------------------------------------------------------------------------
    def advertise(self, pattern: str) -> bool:
        """Serve requests matching ``pattern`` directly; False where direct serving is off."""
        t = self.transport
        if self.router is None:
            address = serve_address(t.ep, t.config.client_id)
            if address is None:
                return False
            self.router = t.ctx.socket(zmq.ROUTER)
            self.router.setsockopt(zmq.LINGER, 0)
            self.router.setsockopt(zmq.RCVHWM, wire.CONTROL_HWM)
            self.router.setsockopt(zmq.SNDHWM, wire.CONTROL_HWM)
            self.router.bind(address)
            self.endpoint = self.router.getsockopt(zmq.LAST_ENDPOINT).decode()
            self.router_drain = t.watch_socket(self.router, self._on_request)
        self.served.add(pattern)
        t.send_control([wire.SERVE, pattern.encode(), self.endpoint.encode()])
        return True

    def withdraw(self, pattern: str) -> None:
        if pattern in self.served:
            self.served.discard(pattern)
            self.transport.send_control([wire.UNSERVE, pattern.encode()])

    def rejoin(self) -> None:
        """A restarted hub knows nothing: advertise again, and ask for the table again."""
        for pattern in self.served:
            self.transport.send_control([wire.SERVE, pattern.encode(), self.endpoint.encode()])
        if self.watching:
            self.transport.send_control([wire.WATCH])

    def _on_request(self, frames: list[bytes]):  # noqa: ANN202
        if len(frames) != 4:
            return None
        ident, topic, body, marks = frames
        try:
            msg, _ = wire.decode_body(topic, body)
            pending_marks = _marks.decode(marks) if marks else []
        except (ValueError, msgspec.DecodeError, RecursionError) as exc:
            log.warning("bad_direct_request", error=str(exc)[:200])
            return None
        if msg.correlation is None or not msg.response_topic:
            log.warning("bad_direct_request", error="no correlation data or response topic")
            return None
        if len(self.owed) >= MAX_OWED:
            del self.owed[next(iter(self.owed))]
        self.owed[msg.correlation] = ident
        self.served_count += 1
        if self.parked or not self._seen(pending_marks):
            return self._park(msg, pending_marks)
        return self.transport.config.dispatch(msg, None)

    def _seen(self, marks: list[Mark]) -> bool:
        """Has every mark on a topic we subscribe to been received?"""
        t = self.transport
        for client, topic, seq in marks:
            if t.seq_in.get((client, topic), 0) < seq and any(
                    matches(p, topic) for p in t.patterns.values()):
                return False
        return True

    def _park(self, msg: Message, marks: list[Mark]) -> None:
        parked = _Parked(msg, marks)
        parked.timer = self.transport.loop.call_later(PARK_S, self.release, True)
        self.parked.append(parked)

    def release(self, expired: bool = False) -> None:
        """Deliver parked requests, in arrival order, up to the first still waiting."""
        dispatch = self.transport.config.dispatch
        while self.parked:
            head = self.parked[0]
            if not self._seen(head.marks):
                if not expired:
                    return
                log.warning("direct_request_marks_missing", topic=head.msg.topic,
                            waited_s=PARK_S)
            self.parked.pop(0)
            if head.timer is not None:
                head.timer.cancel()
            expired = False
            pending = dispatch(head.msg, None)
            if pending is not None:  # a full buffer: the rest waits for the next message
                self.transport.config.task_group.start_soon(_await, pending)
                return

    def try_reply(self, msg: Message) -> bool:
        """Send ``msg`` back to a direct requester, if it answers one."""
        ident = self.owed.pop(msg.correlation, None)  # type: ignore[arg-type]
        if ident is None or self.router is None:
            return False
        body = wire.pack_body(self.transport.header(msg, 2), msg.payload)
        self.router.send_multipart([ident, msg.topic.encode(), body])
        self.transport.loop.call_soon(self.router_drain)
        return True

    # -- requesting ----------------------------------------------------------------------
    def try_request(self, msg: Message) -> bool:
        """Send a request straight to the client serving its topic, if one is known."""
        if not msg.response_topic:  # a reply to a request that came through the hub
            return False
        if self.table is None:
            if not self.watching:
                self.watching = True
                self.transport.send_control([wire.WATCH])
            return False
        route = self.routes.get(msg.topic, False)
        if route is False:
            route = remember(self.routes, msg.topic, self._route(msg.topic))
        if route is None:
            return False
        dealer, drain = route
        t = self.transport
        frames = [msg.topic.encode(), wire.pack_body(t.header(msg, 2), msg.payload),
                  msgspec.msgpack.encode(t.marks())]
        try:
            dealer.send_multipart(frames, _NOBLOCK)
        except zmq.Again:  # not connected (yet, or any more): the hub path still works
            return False
        finally:
            t.loop.call_soon(drain)
        self.sent += 1
        return True

    def _route(self, topic: str) -> tuple[zmq.Socket, Callable[[], None]] | None:
        for pattern, endpoint in self.table or ():
            if matches(pattern, topic):
                if endpoint not in self.dealers:
                    self.dealers[endpoint] = self._dealer(endpoint)
                return self.dealers[endpoint]
        return None

    def _dealer(self, endpoint: str) -> tuple[zmq.Socket, Callable[[], None]]:
        t = self.transport
        dealer = t.ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.setsockopt(zmq.IMMEDIATE, 1)
        dealer.setsockopt(zmq.SNDHWM, wire.CONTROL_HWM)
        dealer.connect(endpoint)
        return dealer, t.watch_socket(dealer, t.on_data, lambda: dealer.closed)

    def on_table(self, blob: bytes) -> None:
        """The hub's table changed: drop routes and the dealers of endpoints now gone."""
        try:
            table = _table.decode(blob)
        except msgspec.DecodeError as exc:
            log.warning("bad_service_table", error=str(exc)[:200])
            return
        self.table = table
        self.routes.clear()
        live = {endpoint for _, endpoint in table}
        for endpoint in [e for e in self.dealers if e not in live]:
            self._close_dealer(*self.dealers.pop(endpoint))

    def _close_dealer(self, dealer: zmq.Socket, drain: Callable[[], None]) -> None:
        self.transport.forget_socket(dealer, drain)
        dealer.close()

    def close(self) -> None:
        for dealer, drain in self.dealers.values():
            self._close_dealer(dealer, drain)
        self.dealers.clear()
        for parked in self.parked:
            if parked.timer is not None:
                parked.timer.cancel()
        self.parked.clear()
        if self.router is not None and self.router_drain is not None:
            self.transport.forget_socket(self.router, self.router_drain)
            self.router.close()
            self.router = None


async def _await(pending: object) -> None:
    await pending  # type: ignore[misc]
