"""Direct requests on ZeroMQ (bus/backends/zmq_direct.py), with the server as its own process:
the route is learnt, it keeps read-your-writes, it goes with a killed server and comes back with
a new one."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import anyio
import pytest

from robobus import testing
from robobus.bus import Bus, BusOptions, RequestTimeout
from robobus.bus.backends.zmq_direct import Direct

pytestmark = pytest.mark.anyio
SERVER = Path(__file__).with_name("counter_server.py")


def _direct(bus: Bus) -> Direct:
    direct = bus._transport.direct  # type: ignore[attr-defined]
    assert direct is not None
    return direct


async def _count(bus: Bus, prefix: str, timeout: float = 5.0) -> int:
    return int((await bus.request(f"{prefix}/count", b"", timeout=timeout)).payload)


async def _route_learnt(bus: Bus, prefix: str) -> str:
    """Ask until a request goes direct (the table names the server and the DEALER connected:
    until then requests go through the hub); returns the server's endpoint."""
    direct = _direct(bus)
    with anyio.fail_after(15):
        while True:
            sent = direct.sent
            with contextlib.suppress(RequestTimeout):
                await _count(bus, prefix, timeout=0.5)
                if direct.sent > sent:
                    (pattern, endpoint), = direct.table or []
                    assert pattern == f"{prefix}/count"
                    return endpoint
            await anyio.sleep(0.02)


async def test_route_is_learnt_kept_in_order_and_follows_the_server(prefix: str) -> None:
    with testing.hub() as url:
        argv = [sys.executable, str(SERVER), url, prefix]
        async with Bus.connect(url, name="req", options=BusOptions(prefix=prefix)) as bus:
            with testing.spawn(argv, name="counter") as first:
                endpoint = await _route_learnt(bus, prefix)
                sent = _direct(bus).sent
                # read-your-writes: 300 publishes on both hub paths, then a direct request
                for i in range(300):
                    await bus.publish(f"{prefix}/data", b"x", qos=1 if i % 30 == 0 else 0)
                assert await _count(bus, prefix) == 300
                assert _direct(bus).sent == sent + 1

                testing.kill9(first)
                with anyio.fail_after(10):  # the hub reaps it (2.5 keepalives) and drops it
                    while _direct(bus).table:
                        await anyio.sleep(0.05)
                with pytest.raises(RequestTimeout):
                    await _count(bus, prefix, timeout=0.3)
            with testing.spawn(argv, name="counter-2"):
                assert await _route_learnt(bus, prefix) != endpoint
                sent = _direct(bus).sent
                assert await _count(bus, prefix) == 0  # a new server, reached directly
                assert _direct(bus).sent == sent + 1
