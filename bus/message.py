"""The envelope every backend delivers: topic, raw payload and a few headers."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: The sender name ``robobus replay`` publishes under. Every message on the bus carries its
#: sender (an MQTT 5 user property on MQTT, a header on ZeroMQ), so this is how an agent tells
#: a replayed message from a live one (:attr:`Message.replayed`). A live client must not use it.
REPLAY_SENDER = "robobus-replay"


class QoS(enum.IntEnum):
    """Delivery class. ``AT_LEAST_ONCE`` publishes wait for the hub or broker to acknowledge."""

    BEST_EFFORT = 0
    AT_LEAST_ONCE = 1
    #: MQTT only (passed through to the broker); ZeroMQ treats it like ``AT_LEAST_ONCE``
    EXACTLY_ONCE = 2


@dataclass(slots=True)
class Message:
    """One message as it travels on the bus.

    ``payload`` is always the raw bytes; ``data`` is filled by typed subscriptions.
    ``ts_ns`` is the wall-clock receive (or publish) time in integer nanoseconds (local, never
    sent: timestamps on the wire are the messages' own ``ts_ns`` fields).
    """

    topic: str
    payload: bytes
    retain: bool = False
    qos: int = 0
    response_topic: str | None = None
    correlation: bytes | None = None
    sender: str | None = None
    #: the payload's encoding when the publisher said it (MQTT 5 Content Type), or the bus
    #: encoded it: ``application/msgpack``, ``application/json``; None: see the payload
    content_type: str | None = None
    ts_ns: int = field(default_factory=time.time_ns)
    data: Any = None
    ack_token: AckToken | None = None
    #: MQTT 5 user properties other than ``sender``, as (key, value) pairs in the order sent
    user_properties: tuple[tuple[str, str], ...] = ()
    #: MQTT 5 Payload Format Indicator as sent (0 bytes, 1 UTF-8); None: absent
    payload_format: int | None = None

    @property
    def replayed(self) -> bool:
        """True for a message that ``robobus replay`` republished from a recording."""
        return self.sender == REPLAY_SENDER

    def ack(self) -> None:
        """Confirm processing (subscriptions with ``manual_ack=True``); a no-op otherwise."""
        if self.ack_token is not None:
            self.ack_token.done()

    def settle(self) -> None:
        """Transport side: acknowledge now, unless a manual-ack subscription took it over."""
        token = self.ack_token
        if token is not None and not token.deferred and token.send is not None:
            send, token.send = token.send, None
            send()


@dataclass(slots=True)
class AckToken:
    """Delays a transport-level acknowledgement (MQTT PUBACK) until every manual-ack
    subscription that received the message called :meth:`Message.ack`.

    This is what makes "acknowledged" mean "committed" for a recorder: the broker keeps (and
    redelivers after a crash) every message not yet acknowledged.
    """

    send: Callable[[], None] | None
    remaining: int = 0
    deferred: bool = False

    def done(self) -> None:
        self.remaining -= 1
        if self.remaining <= 0 and self.send is not None:
            send, self.send = self.send, None
            send()


@dataclass(slots=True)
class Will:
    """A last will: published by the hub or broker if the client dies without saying goodbye."""

    topic: str
    #: bytes as they are, or a message the bus encodes with its codec before each connection
    payload: bytes | Any
    retain: bool = True
    qos: int = 1
    content_type: str | None = None
