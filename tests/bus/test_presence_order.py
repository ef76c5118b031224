"""Presence ordering and the per-connection will (issue 12), without processes."""

from __future__ import annotations

import pytest

from robobus.bus import Bus, BusOptions
from robobus.edge_agent.agent import alive_presence
from robobus.schemas.messages import TICK_NS, Alive, presence_supersedes

pytestmark = pytest.mark.anyio


def test_order_by_bd_seq_then_death_after_birth() -> None:
    birth = Alive("g1", True, ts_ns=10, bd_seq=5)
    death = Alive("g1", False, ts_ns=11, bd_seq=5)
    assert presence_supersedes(None, death)
    assert presence_supersedes(birth, death)  # its own death ends a birth
    assert not presence_supersedes(death, birth)  # a birth never revives its own death
    assert not presence_supersedes(birth, Alive("g1", False, ts_ns=99, bd_seq=4))  # stale death
    assert presence_supersedes(death, Alive("g1", True, ts_ns=1, bd_seq=6))  # a newer birth
    assert presence_supersedes(Alive("g1", False), Alive("g1", True))  # no bd_seq: last heard


def test_each_will_is_the_next_death_not_older_than_its_birth() -> None:
    presence = alive_presence("g1", "p")
    first = presence().payload  # the message: the bus encodes it with its codec (issue 14)
    birth = presence.birth()
    assert isinstance(first, Alive) and (first.online, first.bd_seq) == (False, birth.bd_seq)
    # one tick later: timestamps are multiples of TICK_NS, exact as doubles (JavaScript)
    assert first.ts_ns == birth.ts_ns + TICK_NS and birth.ts_ns % TICK_NS == 0
    assert float(first.ts_ns) > float(birth.ts_ns)
    second = presence().payload
    assert isinstance(second, Alive) and second.bd_seq == first.bd_seq + 1


async def test_abort_publishes_the_current_connections_death() -> None:
    presence = alive_presence("g1", "p")
    async with Bus.connect("memory://presence", name="watch") as watch, \
            watch.subscribe("p/robots/g1/alive", Alive) as sub:
        async with Bus.connect("memory://presence", name="g1",
                               options=BusOptions(prefix="p", will=presence)) as bus:
            await presence.publish_birth(bus)
            await bus.abort()
        birth, death = (await sub.get()).data, (await sub.get()).data
    assert birth.online and not death.online and birth.bd_seq == death.bd_seq
