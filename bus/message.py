"""The envelope every backend delivers: topic, raw payload and a few headers."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any


class QoS(enum.IntEnum):
    """Delivery class. ``AT_LEAST_ONCE`` publishes wait for the hub or broker to acknowledge."""

    BEST_EFFORT = 0
    AT_LEAST_ONCE = 1


@dataclass(slots=True)
class Message:
    """One message as it travels on the bus.

    ``payload`` is always the raw bytes; ``data`` is filled by typed subscriptions.
    ``ts_ns`` is the wall-clock receive (or publish) time in integer nanoseconds.
    """

    topic: str
    payload: bytes
    retain: bool = False
    qos: int = 0
    response_topic: str | None = None
    correlation: bytes | None = None
    sender: str | None = None
    ts_ns: int = field(default_factory=time.time_ns)
    data: Any = None

    def headers(self) -> dict[str, Any]:
        """The optional headers, without empty ones (used by backends that frame them)."""
        out: dict[str, Any] = {}
        if self.response_topic:
            out["rt"] = self.response_topic
        if self.correlation is not None:
            out["cd"] = self.correlation
        if self.sender:
            out["s"] = self.sender
        if self.retain:
            out["r"] = True
        return out


@dataclass(slots=True)
class Will:
    """A last will: published by the hub or broker if the client dies without saying goodbye."""

    topic: str
    payload: bytes
    retain: bool = True
    qos: int = 1
