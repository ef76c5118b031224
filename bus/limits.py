"""Per-sender rate limits: floods are refused (and reported), not queued."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``rate`` messages per second per key, with bursts up to ``burst``."""

    rate: float
    burst: float = 0.0

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise ValueError("rate must be positive")


class TokenBuckets:
    """One token bucket per key (a sender name, or a topic for error reports).

    The number of keys is bounded: the least recently refilled half is forgotten past
    ``max_keys``, so a flood of forged sender names cannot grow memory.
    """

    def __init__(self, limit: RateLimit, max_keys: int = 10_000) -> None:
        self.limit = limit
        self.capacity = max(limit.burst, limit.rate, 1.0)
        self.max_keys = max_keys
        self.refused = 0
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
            return False
        bucket[0] = tokens - 1.0
        return True

    def _forget(self) -> None:
        oldest = sorted(self._buckets.items(), key=lambda kv: kv[1][1])
        for key, _ in oldest[: len(oldest) // 2]:
            del self._buckets[key]
