"""One contract suite, run against every backend (memory, ZeroMQ via a hub, MQTT via Mosquitto)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import msgspec
import pytest

from robobus.bus import (
    Bus,
    BusOptions,
    DisconnectedError,
    Message,
    Overflow,
    PayloadTooLarge,
    RequestTimeout,
    Subscription,
    Will,
)
from robobus.schemas.messages import ErrorReport, RobotState

pytestmark = pytest.mark.anyio
WAIT = 5.0


@asynccontextmanager
async def pair(url: str, prefix: str, **b_opts: object) -> AsyncIterator[tuple[Bus, Bus]]:
    """Two participants on one bus: ``a`` and ``b`` (``b`` with extra options)."""
    async with (
        Bus.connect(url, name="a", options=BusOptions(prefix=prefix)) as a,
        Bus.connect(url, name="b", options=BusOptions(prefix=prefix, **b_opts)) as b,
    ):
        yield a, b


async def take(sub: Subscription, n: int = 1) -> list[Message]:
    with anyio.fail_after(WAIT):
        return [await sub.get() for _ in range(n)]


async def until(sub: Subscription, payload: bytes) -> list[Message]:
    """Messages up to (not including) the first with ``payload``."""
    out: list[Message] = []
    with anyio.fail_after(WAIT):
        async for msg in sub:
            if msg.payload == payload:
                return out
            out.append(msg)
    raise AssertionError("subscription ended")


async def test_publish_subscribe(bus_url: str, prefix: str) -> None:
    async with pair(bus_url, prefix) as (a, b), b.subscribe(f"{prefix}/hello") as sub:
        await a.publish(f"{prefix}/hello", b"world")
        await a.publish(f"{prefix}/hello", {"k": 1})
        first, second = await take(sub, 2)
    assert (first.topic, first.payload, first.sender) == (f"{prefix}/hello", b"world", "a")
    assert msgspec.msgpack.decode(second.payload) == {"k": 1}


async def test_wildcards_match_identically(bus_url: str, prefix: str) -> None:
    p = prefix
    patterns = {"plus": f"{p}/r/+/s", "hash": f"{p}/r/#", "top": f"{p}/+"}
    async with (
        pair(bus_url, prefix) as (a, b),
        b.subscribe(patterns["plus"]) as plus,
        b.subscribe(patterns["hash"]) as hsh,
        b.subscribe(patterns["top"]) as top,
    ):
        for topic in (f"{p}/r/1/s", f"{p}/r/1/s/x", f"{p}/r", f"{p}/q", f"{p}/r/2/t",
                      f"{p}x/r/1/s", f"{p}/r/1/s"):
            await a.publish(topic, topic)
        await a.publish(f"{p}/r/end/s", b"end")
        await a.publish(f"{p}/end", b"end")
        seen = {name: [m.topic for m in await until(sub, b"end")]
                for name, sub in (("plus", plus), ("hash", hsh), ("top", top))}
    assert seen["plus"] == [f"{p}/r/1/s", f"{p}/r/1/s"]
    assert seen["hash"] == [f"{p}/r/1/s", f"{p}/r/1/s/x", f"{p}/r", f"{p}/r/2/t", f"{p}/r/1/s"]
    assert seen["top"] == [f"{p}/r", f"{p}/q"]


async def test_overlapping_subscriptions_each_get_one_copy(bus_url: str, prefix: str) -> None:
    async with (
        pair(bus_url, prefix) as (a, b),
        b.subscribe(f"{prefix}/x/#") as s1,
        b.subscribe(f"{prefix}/x/+") as s2,
        b.subscribe(f"{prefix}/x/#") as s3,
    ):
        await a.publish(f"{prefix}/x/1", b"one")
        await a.publish(f"{prefix}/x/1", b"end")
        for sub in (s1, s2, s3):
            assert [m.payload for m in await until(sub, b"end")] == [b"one"]


async def test_retained_last_value_and_clearing(bus_url: str, prefix: str) -> None:
    topic = f"{prefix}/robots/g1/registration"
    async with pair(bus_url, prefix) as (a, b):
        await a.publish(topic, b"v1", retain=True, qos=1)
        await a.publish(topic, b"v2", retain=True, qos=1)
        async with b.subscribe(f"{prefix}/robots/+/registration") as sub:
            (msg,) = await take(sub)
            assert msg.payload == b"v2"
            await a.publish(topic, b"live", qos=1)  # live updates follow the snapshot
            (msg,) = await take(sub)
            assert msg.payload == b"live"
        await a.publish(topic, b"", retain=True, qos=1)  # an empty retained payload clears it
        async with b.subscribe(topic) as sub:
            await a.publish(topic, b"marker", qos=1)
            (msg,) = await take(sub)
            assert msg.payload == b"marker"


async def test_snapshot_is_never_followed_by_an_older_value(bus_url: str, prefix: str) -> None:
    """Subscribing while the retained value keeps changing: the snapshot comes first and no
    value older than one already seen follows it (ZeroMQ: the snapshot fence)."""
    topic = f"{prefix}/robots/g3/pose"
    async with pair(bus_url, prefix) as (a, b):
        await a.publish(topic, b"0", retain=True, qos=1)

        values = iter(range(1, 1_000_000))  # cancelled once the subscriptions are checked

        async def writer() -> None:  # several of them keep acknowledged publishes in flight
            for i in values:
                await a.publish(topic, str(i).encode(), retain=True, qos=1)
                await anyio.sleep(0)

        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(writer)
            for _ in range(20):
                async with b.subscribe(topic) as sub:
                    seen = [int(m.payload) for m in await take(sub, 5)]
                assert seen == sorted(set(seen)), seen
            tg.cancel_scope.cancel()


async def test_retained_goes_only_to_the_new_subscription(bus_url: str, prefix: str) -> None:
    topic = f"{prefix}/robots/g2/alive"
    async with pair(bus_url, prefix) as (a, b):
        await a.publish(topic, b"online", retain=True, qos=1)
        async with b.subscribe(topic) as first:
            assert [m.payload for m in await take(first)] == [b"online"]
            async with b.subscribe(topic) as second:
                assert [m.payload for m in await take(second)] == [b"online"]
                await a.publish(topic, b"end", qos=1)
                assert await until(first, b"end") == []  # no second copy of the snapshot
                assert await until(second, b"end") == []
        await a.publish(topic, b"", retain=True, qos=1)


async def test_last_will_on_abort_not_on_close(bus_url: str, prefix: str) -> None:
    alive = f"{prefix}/robots/dying/alive"
    will = Will(alive, b"offline", retain=True, qos=1)
    async with Bus.connect(bus_url, name="watcher") as watcher, watcher.subscribe(alive) as sub:
        async with Bus.connect(bus_url, name="polite", options=BusOptions(will=will)):
            pass  # graceful close: no will
        await watcher.publish(alive, b"marker", qos=1)
        (msg,) = await take(sub)
        assert msg.payload == b"marker"
        async with Bus.connect(bus_url, name="dying", options=BusOptions(will=will)) as dying:
            await dying.publish(alive, b"online", retain=True, qos=1)
            (msg,) = await take(sub)
            assert msg.payload == b"online"
            await dying.abort()
            with anyio.fail_after(3.0):
                msg = await sub.get()
        assert msg.payload == b"offline"
        async with Bus.connect(bus_url, name="late") as late, late.subscribe(alive) as sub2:
            (msg,) = await take(sub2)
            assert msg.payload == b"offline"  # the will was retained
            await late.publish(alive, b"", retain=True, qos=1)


async def test_request_reply_and_timeout(bus_url: str, prefix: str) -> None:
    async with pair(bus_url, prefix) as (a, b), b.subscribe(f"{prefix}/svc") as srv:

        async def serve() -> None:
            async for req in srv:
                await b.reply(req, b"re:" + req.payload)

        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            replies = [await a.request(f"{prefix}/svc", f"q{i}", timeout=WAIT, qos=i % 2)
                       for i in range(3)]
            tg.cancel_scope.cancel()
        assert [r.payload for r in replies] == [b"re:q0", b"re:q1", b"re:q2"]
        with pytest.raises(RequestTimeout) as err:
            await a.request(f"{prefix}/nobody", b"?", timeout=0.3)
        assert err.value.topic == f"{prefix}/nobody"


async def test_qos1_publish_is_acknowledged(bus_url: str, prefix: str) -> None:
    async with pair(bus_url, prefix) as (a, b), b.subscribe(f"{prefix}/cmd") as sub:
        for i in range(50):
            await a.publish(f"{prefix}/cmd", str(i), qos=1)
        got = await take(sub, 50)
    assert [m.payload for m in got] == [str(i).encode() for i in range(50)]


async def test_posts_are_pipelined_in_order_with_publishes(bus_url: str, prefix: str) -> None:
    """``post`` sends at once and acknowledges later: a window of acknowledged messages in
    flight keeps call order on the wire, among posts and acknowledged publishes (issue 16)."""
    topic = f"{prefix}/status"
    async with pair(bus_url, prefix) as (a, b), b.subscribe(topic) as sub:
        acks = [await a.post(topic, str(i)) for i in range(100)]
        await a.publish(topic, b"published", qos=1)  # after every post above
        acks.append(await a.post(topic, b"last"))
        with anyio.fail_after(WAIT):
            for ack in acks:
                await ack
        got = await take(sub, 102)
        await (await a.post(topic, b"best effort", qos=0))  # nothing to wait for
        assert (await take(sub))[0].payload == b"best effort"
    assert [m.payload for m in got] == [str(i).encode() for i in range(100)] + [
        b"published", b"last"]
    with pytest.raises(DisconnectedError):
        await a.post(topic, b"after close")


async def test_overflow_latest_keeps_newest_per_topic(bus_url: str, prefix: str) -> None:
    async with (
        pair(bus_url, prefix) as (a, b),
        b.subscribe(f"{prefix}/state/+", maxsize=10, overflow=Overflow.LATEST) as state,
        b.subscribe(f"{prefix}/barrier") as barrier,
    ):
        for i in range(100):
            for robot in ("r1", "r2"):
                await a.publish(f"{prefix}/state/{robot}", str(i))
        await a.publish(f"{prefix}/barrier", b"end")
        await take(barrier)
        got = {m.topic: m.payload for m in await take(state, 2)}
        assert len(state) == 0
    assert got == {f"{prefix}/state/r1": b"99", f"{prefix}/state/r2": b"99"}


async def test_overflow_drop_oldest_counts_drops(bus_url: str, prefix: str) -> None:
    async with (
        pair(bus_url, prefix) as (a, b),
        b.subscribe(f"{prefix}/tele", maxsize=10, overflow=Overflow.DROP_OLDEST) as tele,
        b.subscribe(f"{prefix}/barrier") as barrier,
    ):
        for i in range(100):
            await a.publish(f"{prefix}/tele", str(i))
        await a.publish(f"{prefix}/barrier", b"end")
        await take(barrier)
        assert tele.dropped == 90
        assert [m.payload for m in await take(tele, 10)] == [str(i).encode() for i in range(90, 100)]


async def test_overflow_block_loses_nothing(bus_url: str, prefix: str) -> None:
    n = 5000
    async with (
        pair(bus_url, prefix) as (a, b),
        b.subscribe(f"{prefix}/burst", maxsize=50, overflow=Overflow.BLOCK) as sub,
    ):
        received: list[bytes] = []

        async def consume() -> None:
            async for msg in sub:
                received.append(msg.payload)
                if len(received) % 100 == 0:
                    await anyio.sleep(0.001)  # a slow consumer
                if len(received) == n:
                    return

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(consume)
                for i in range(n):
                    await a.publish(f"{prefix}/burst", i.to_bytes(4, "big"), qos=1)
    assert sub.dropped == 0
    assert received == [i.to_bytes(4, "big") for i in range(n)]


async def test_typed_decode_errors_reported_and_skipped(bus_url: str, prefix: str) -> None:
    topic = f"{prefix}/robots/g1/state"
    async with (
        pair(bus_url, prefix) as (a, b),
        a.subscribe(f"{prefix}/errors", ErrorReport) as errors,
        b.subscribe(f"{prefix}/robots/+/state", RobotState) as states,
    ):
        await a.publish(topic, b"\xc1\xff garbage")
        await a.publish(topic, {"robot": 5, "battery": "full"})
        await a.publish(topic, RobotState(robot="g1", battery=0.5))
        (msg,) = await take(states)
        assert isinstance(msg.data, RobotState) and msg.data.battery == 0.5
        reports = [m.data for m in await take(errors, 2)]
    assert {r.topic for r in reports} == {topic}
    assert all(r.code == "decode" and r.source == "b" for r in reports)
    assert any("malformed" in r.reason for r in reports)
    assert any("schema" in r.reason for r in reports)


async def test_oversized_payload_rejected(bus_url: str, prefix: str) -> None:
    async with (
        pair(bus_url, prefix, max_payload=1000) as (a, b),
        a.subscribe(f"{prefix}/errors", ErrorReport) as errors,
        b.subscribe(f"{prefix}/big") as sub,
    ):
        with pytest.raises(PayloadTooLarge):
            await b.publish(f"{prefix}/big", b"x" * 1001)
        await a.publish(f"{prefix}/big", b"y" * 5000)  # fine for a, too large for b
        await a.publish(f"{prefix}/big", b"small")
        (msg,) = await take(sub)
        assert msg.payload == b"small"
        (report,) = await take(errors)
    assert report.data.code == "too_large" and report.data.topic == f"{prefix}/big"


async def test_requests_see_the_requesters_earlier_publishes(bus_url: str, prefix: str) -> None:
    """A request arrives after everything its sender published before it (best-effort, and
    acknowledged), and its reply reaches the sender."""
    async with pair(bus_url, prefix) as (a, b), b.subscribe(f"{prefix}/#") as sub:

        async def answer_counts() -> None:
            seen = 0
            async for msg in sub:
                if msg.topic == f"{prefix}/count":
                    await b.reply(msg, str(seen))
                elif msg.topic == f"{prefix}/data":
                    seen += 1

        async with anyio.create_task_group() as tg:
            tg.start_soon(answer_counts)
            counts = []
            for _ in range(3):
                for i in range(200):
                    await a.publish(f"{prefix}/data", b"x", qos=1 if i % 50 == 0 else 0)
                counts.append(int((await a.request(f"{prefix}/count", b"", timeout=WAIT)).payload))
            tg.cancel_scope.cancel()
    assert counts == [200, 400, 600]
