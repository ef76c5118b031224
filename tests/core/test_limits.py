"""Per-sender rate limits refuse floods and report them on the error topic."""

from __future__ import annotations

import anyio
import msgspec
import pytest

from robobus.bus import Bus, RateLimit
from robobus.bus.limits import TokenBuckets
from robobus.schemas import ErrorReport

pytestmark = pytest.mark.anyio


def test_token_bucket_refills_at_the_rate() -> None:
    buckets = TokenBuckets(RateLimit(rate=10, burst=5))
    assert [buckets.allow("a", now=0.0) for _ in range(12)].count(True) == 10
    assert buckets.allow("b", now=0.0), "each sender has its own bucket"
    assert buckets.allow("a", now=0.15), "1.5 tokens refilled after 150 ms"
    assert not buckets.allow("a", now=0.15)
    assert buckets.refused == 3


def test_forged_sender_names_cannot_grow_memory() -> None:
    buckets = TokenBuckets(RateLimit(rate=1), max_keys=100)
    for i in range(1000):
        buckets.allow(f"forged-{i}", now=float(i))
    assert len(buckets._buckets) <= 100


async def test_flood_is_refused_and_reported(bus_url: str, prefix: str) -> None:
    async with Bus.connect(bus_url, name="flooder") as flooder, \
            Bus.connect(bus_url, name="agent") as agent, \
            agent.subscribe(f"{prefix}/in", rate_limit=RateLimit(rate=50, burst=20)) as sub, \
            agent.subscribe("robobus/errors", ErrorReport) as errors:
        for i in range(200):
            await flooder.publish(f"{prefix}/in", str(i))
        await flooder.publish(f"{prefix}/in", b"sync", qos=1)
        with anyio.fail_after(10):
            report = (await errors.get()).data
        assert report.code == "rate_limited" and "flooder" in report.reason
        got = []
        with anyio.move_on_after(0.5):
            async for msg in sub:
                got.append(msg.payload)
        assert 20 <= len(got) < 200, f"{len(got)} admitted of 200"
        # "sync" goes acknowledged, which on ZeroMQ is the hub's control path, not the proxy the
        # burst takes: it may overtake the burst (a fresh-clone run saw it third), so the order
        # is checked among the burst's own messages
        burst = [p for p in got if p != b"sync"]
        assert burst[:5] == [b"0", b"1", b"2", b"3", b"4"], "the first burst is admitted in order"
        assert msgspec.msgpack.decode(msgspec.msgpack.encode(report))


def test_a_subscription_remembers_only_recent_topics() -> None:
    """A subscription to ``tasks/+`` sees a new topic per task: what it remembers to keep late
    retained values from undoing live ones stays bounded, and still does that job."""
    from robobus.bus.message import Message
    from robobus.bus.subscription import Overflow, Subscription
    from robobus.bus.topics import TOPIC_CACHE_LIMIT

    sub = Subscription("t/+", overflow=Overflow.LATEST, maxsize=10)
    for i in range(3 * TOPIC_CACHE_LIMIT):
        sub.put_nowait(Message(f"t/{i}", b"live"))
    assert len(sub._seen_topics) <= TOPIC_CACHE_LIMIT + 1
    last = f"t/{3 * TOPIC_CACHE_LIMIT - 1}"
    sub.put_snapshot(Message(last, b"retained"))  # a recent live value is not undone
    assert sub._latest[last].payload == b"live"
