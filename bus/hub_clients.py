"""What the ZeroMQ hub keeps of each client: its hello's keepalive and last will, checked on
arrival so that reaping a client whose heartbeats stopped cannot fail later."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(slots=True)
class Client:
    """A client that said hello: its will (published when it dies) and liveness."""

    will: dict | None
    timeout_s: float
    last_seen: float = field(default_factory=time.monotonic)


#: the longest keepalive a client may ask for: 2.5 times it is how long the hub waits
MAX_KEEPALIVE_S = 3600.0
BAD_KEEPALIVE = f"keepalive must be a finite number of seconds in (0, {MAX_KEEPALIVE_S:g}]".encode()


def keepalive(value: object) -> float | None:
    """A hello's keepalive if it is a finite number of seconds in range (NaN or inf would make
    the client immortal: its silence would never exceed 2.5 x keepalive), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    seconds = float(value)
    return seconds if 0.0 < seconds <= MAX_KEEPALIVE_S else None  # NaN fails both comparisons


def checked_will(will: object) -> dict | None:
    """A client's last will from its hello, checked now so that reaping it cannot fail later."""
    if will is None:
        return None
    if not (isinstance(will, dict) and isinstance(will.get("topic"), str)
            and isinstance(will.get("payload"), bytes)):
        raise ValueError(f"malformed last will: {will!r:.80}")
    return will


def dead(clients: dict[bytes, Client], now: float) -> list[bytes]:
    """The clients silent for longer than their timeout (2.5 x keepalive)."""
    return [i for i, c in clients.items() if now - c.last_seen > c.timeout_s]
