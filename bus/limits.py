"""Per-sender rate limits: floods are refused (and reported), not queued."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio

from robobus.bus.message import Message


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``rate`` messages per second per key, with bursts up to ``burst``.

    The key is the message's sender, or with ``level`` set, that level of its topic
    (``-1``: the last). The sender is what the hub stamps, the authenticated account, on a
    secured ZeroMQ hub, but a name the publisher writes on MQTT; a topic level that the
    broker's ACL grants one account only (``P/instructions/{account}``) is the identity there
    (issue 13).
    """

    rate: float
    burst: float = 0.0
    level: int | None = None

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise ValueError("rate must be positive")

    def key(self, msg: Message) -> str:
        """Whose quota ``msg`` takes."""
        if self.level is None:
            return msg.sender or "?"
        levels = msg.topic.split("/")
        return levels[self.level] if -len(levels) <= self.level < len(levels) else "?"

    @property
    def keyed_by(self) -> str:
        """What a key is, for the reason of a refusal."""
        return "sender" if self.level is None else "account"


class TokenBuckets:
    """One token bucket per key (a sender or an account, or a topic for error reports).

    The number of keys is bounded: the least recently refilled half is forgotten past
    ``max_keys``, so a flood of forged sender names cannot grow memory.
    """

    def __init__(self, limit: RateLimit, max_keys: int = 10_000) -> None:
        self.limit = limit
        self.capacity = max(limit.burst, limit.rate, 1.0)
        self.max_keys = max_keys
        self.refused = 0
        #: refusals per key not yet told (see :meth:`take_suppressed`)
        self.suppressed: dict[str, int] = {}
        self._buckets: dict[str, list[float]] = {}

    def allow(self, key: str, now: float | None = None) -> bool:
        """Take one token for ``key``; False (and counted) when the bucket is empty."""
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._forget()
            bucket = self._buckets[key] = [self.capacity, now]
        tokens = min(self.capacity, bucket[0] + (now - bucket[1]) * self.limit.rate)
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            self.refused += 1
            self.suppressed[key] = self.suppressed.get(key, 0) + 1
            return False
        bucket[0] = tokens - 1.0
        return True

    def _forget(self) -> None:
        oldest = sorted(self._buckets.items(), key=lambda kv: kv[1][1])
        for key, _ in oldest[: len(oldest) // 2]:
            del self._buckets[key]
            self.suppressed.pop(key, None)

    def take_suppressed(self, key: str) -> int:
        """How many times ``key`` was refused since this was last asked (then 0 again)."""
        return self.suppressed.pop(key, 0)


async def tell_suppressed(buckets: TokenBuckets, key: str, report: Callable[[int], Awaitable[None]],
                          after_s: float = 1.0) -> None:
    """After ``after_s``, report how many refusals of ``key`` went unreported meanwhile, so a
    flood of refusals is never hidden by the limiter that keeps reports from amplifying it.
    (A report allowed meanwhile has taken the count over and said it.)"""
    await anyio.sleep(after_s)
    count = buckets.take_suppressed(key)
    if count:
        await report(count)
