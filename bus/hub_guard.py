"""Authorization on the ZeroMQ hub: the policy of ``secure init``, enforced per CURVE key.

ZAP (pyzmq's authenticator) admits a key and stamps every frame from that connection with the
key as its ``User-Id`` property (z85). The guard maps it to an account (``zmq/NAME.key``) and
asks the policy (:mod:`bus.policy`) before the hub forwards a publish, applies a subscription
(the XPUB runs in manual mode, see :func:`guarded_proxy`) or obeys a control command.

A refused action has no effect and one report: a log line and an ``ErrorReport`` (code
``forbidden``, ``sender`` the account) on ``{prefix}/errors``. Reports are limited per account;
the next report, or a summary a second later, says how many refusals went untold.

The sender header of every forwarded message is replaced by the account, so what receivers
key on (rate limits, ``memory/change`` sender checks) is the key, not a name the client chose.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import msgspec
import structlog
import zmq

from robobus.bus import zmq_wire as wire
from robobus.bus.limits import RateLimit, TokenBuckets
from robobus.bus.policy import Policy

log = structlog.get_logger("bus.hub")
PROBE = wire.PROBE_PREFIX
_PROBE = PROBE.encode()
_FENCE = b"/fence/"
_head_decode = msgspec.msgpack.Decoder(wire.Head).decode
_head_encode = msgspec.msgpack.Encoder().encode


class HubGuard:
    """The policy, the key -> account map and the client ids each account holds."""

    def __init__(self, policy: Policy, accounts: dict[str, str],
                 report_limit: RateLimit = RateLimit(rate=5, burst=20)) -> None:
        self.policy = policy
        self.accounts = accounts
        self.errors_topic = f"{policy.prefix}/errors"
        #: client id (the control socket's routing id) -> account, bound by the first hello
        self.clients: dict[str, str] = {}
        self.refused: Counter[str] = Counter()
        #: durable stream name -> the account that created it (it alone may attach)
        self.durable_owner: dict[str, str] = {}
        self._may_publish: dict[tuple[str, bytes], bool] = {}
        self._reports = TokenBuckets(report_limit)
        self._told = time.monotonic()
        self._lock = threading.Lock()  # reports come from the proxy and the control thread

    def account(self, user_id: str) -> str:
        """The account of a ZAP ``User-Id``; an admitted key outside the policy has no grants."""
        return self.accounts.get(user_id) or f"key:{user_id[:12]}"

    # -- decisions -----------------------------------------------------------------------
    def may_publish(self, account: str, topic: bytes) -> bool:
        if topic.startswith(_PROBE):  # not cached: it depends on who holds the client id now
            return _FENCE not in topic and self._own_level(account, topic.decode(errors="replace"), 2)
        key = (account, topic)
        allowed = self._may_publish.get(key)
        if allowed is None:
            if len(self._may_publish) > 50_000:
                self._may_publish.clear()
            allowed = self._may_publish[key] = self.policy.may_publish(
                account, topic.decode(errors="replace"))
        return allowed

    def may_subscribe(self, account: str, prefix: str) -> bool:
        if prefix.startswith(PROBE):
            return self._own_level(account, prefix, 2)
        # a {client} pattern (the inbox) admits a client id that is not another account's
        levels = [lv for lv in prefix.split("/") if self.clients.get(lv, account) == account]
        return self.policy.may_subscribe(account, prefix, levels)

    def may_read(self, account: str, topic: str, client: str) -> bool:
        return self.policy.may_read(account, topic, (client,))

    def may_stream(self, account: str) -> bool:
        """A durable stream carries every topic of the fleet: whoever may read them all."""
        return self.policy.may_subscribe(account, self.policy.prefix + "/")

    def bind(self, client: str, account: str) -> bool:
        """Tie a client id to the account that said hello with it; False if another holds it."""
        holder = self.clients.setdefault(client, account)
        return holder == account

    def _own_level(self, account: str, text: str, index: int) -> bool:
        levels = text.split("/")
        return len(levels) > index + 1 and self.clients.get(levels[index], account) == account

    # -- reports -------------------------------------------------------------------------
    def refuse(self, account: str, action: str, target: str) -> list[bytes] | None:
        """Count a refusal; the data frames of its report, or None while reports are limited."""
        with self._lock:
            self.refused[account] += 1
            if not self._reports.allow(account):
                return None
            untold = self._reports.take_suppressed(account)
        more = f" ({untold} earlier refusals of this account were not reported)" if untold else ""
        reason = f"account {account!r} may not {action} {target!r}{more}"
        log.warning("hub_refused", account=account, action=action, target=target[:200],
                    untold=untold)
        return self._report(target, reason, account, "forbidden")

    def untold(self, now: float) -> list[list[bytes]]:
        """Summaries of refusals still untold, at most once a second."""
        if now - self._told < 1.0:
            return []
        self._told = now
        with self._lock:
            counts = {a: n for a in list(self._reports.suppressed)
                      if (n := self._reports.take_suppressed(a))}
        out = []
        for account, count in counts.items():
            log.warning("hub_refusals_untold", account=account, count=count)
            out.append(self._report(self.errors_topic, f"{count} more refusals of account "
                                    f"{account!r} were not reported one by one", account,
                                    "forbidden_untold"))
        return out

    def _report(self, target: str, reason: str, account: str, code: str) -> list[bytes]:
        from robobus.schemas.messages import ErrorReport

        report = ErrorReport(source="hub", topic=target[:1024], code=code, reason=reason[:2000],
                             sender=account)
        head = _head_encode(wire.Head(s="hub"))
        return [self.errors_topic.encode(), wire.pack_body(head, msgspec.msgpack.encode(report))]

    def stamp(self, body: bytes, account: str) -> bytes | None:
        """``body`` with its sender header set to ``account``; None if the header is malformed."""
        end = 2 + int.from_bytes(body[:2], "big")
        header = self.stamp_header(body[2:end], account) if len(body) >= end else None
        return None if header is None else wire.pack_body(header, body[end:])

    @staticmethod
    def stamp_header(header: bytes, account: str) -> bytes | None:
        """A data header with its sender set to ``account``; None if it is malformed."""
        try:
            head = _head_decode(header) if header else wire.Head()
        except (msgspec.DecodeError, RecursionError):
            return None
        if head.s == account:
            return header
        head.s = account
        return _head_encode(head)


def user_of(frame: zmq.Frame) -> str | None:
    """The ZAP ``User-Id`` of a received frame; None for the hub's own inproc sockets."""
    try:
        return frame.get("User-Id")  # type: ignore[return-value]
    except zmq.ZMQError:
        return None


def guarded_proxy(xsub: zmq.Socket, xpub: zmq.Socket, capture: zmq.Socket | None,
                  steer: zmq.Socket, guard: HubGuard) -> None:
    """The hub's data path with a policy: publishes checked and stamped, subscriptions applied
    only when allowed (``XPUB_MANUAL``). Python per message, where the open hub's path is
    ``zmq.proxy_steerable`` in C: the price of knowing who sent what."""
    poller = zmq.Poller()
    for sock in (xsub, xpub, steer):
        poller.register(sock, zmq.POLLIN)
    while True:
        ready = dict(poller.poll())
        if steer in ready and steer.recv() == b"TERMINATE":
            return
        if xpub in ready:
            _subscriptions(xpub, guard)
        if xsub in ready:
            for _ in range(10_000):  # bounded: subscriptions and TERMINATE get their turn
                try:
                    frames = xsub.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                out = _check(frames, guard)
                if out is not None:
                    xpub.send_multipart(out)
                    if capture is not None:
                        capture.send_multipart(out)


def _check(frames: list[zmq.Frame], guard: HubGuard) -> list[bytes] | None:
    """What to forward for one publish: itself (stamped), a refusal report, or nothing."""
    if len(frames) != 2:
        return None
    topic, body = frames[0].bytes, frames[1].bytes
    user = user_of(frames[0])
    if user is None:  # the hub's injector: control-path publishes, already checked
        return [topic, body]
    account = guard.account(user)
    if not guard.may_publish(account, topic):
        return guard.refuse(account, "publish on", topic.decode(errors="replace"))
    if topic.startswith(_PROBE):
        return [topic, body]
    stamped = guard.stamp(body, account)
    return None if stamped is None else [topic, stamped]


def _subscriptions(xpub: zmq.Socket, guard: HubGuard) -> None:
    while True:
        try:
            frame = xpub.recv(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return
        data = frame.bytes
        if not data or data[0] not in (0, 1):
            continue
        prefix = data[1:]
        if data[0] == 0:  # unsubscribing is always allowed
            xpub.setsockopt(zmq.UNSUBSCRIBE, prefix)
            continue
        user = user_of(frame)
        account = guard.account(user) if user is not None else "hub"
        text = prefix.decode(errors="replace")
        if user is None or guard.may_subscribe(account, text):
            xpub.setsockopt(zmq.SUBSCRIBE, prefix)
            continue
        report = guard.refuse(account, "subscribe to", text)
        if report is not None:
            xpub.send_multipart(report)
