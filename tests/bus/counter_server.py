"""A server that counts ``PREFIX/data`` messages and answers ``PREFIX/count`` with the count.

``python FILE URL PREFIX`` runs it as a process, advertised for direct requests
(tests/bus/test_direct.py); the contract test runs :func:`answer_counts` in-process.
"""

import sys

import anyio

from robobus.bus import Bus, BusOptions, Subscription


async def answer_counts(bus: Bus, sub: Subscription, prefix: str) -> None:
    """Serve ``sub`` (subscribed to ``PREFIX/#``) until cancelled."""
    seen = 0
    async for msg in sub:
        if msg.topic == f"{prefix}/count":
            await bus.reply(msg, str(seen))
        elif msg.topic == f"{prefix}/data":
            seen += 1


async def main(url: str, prefix: str) -> None:
    async with Bus.connect(url, name="counter", options=BusOptions(prefix=prefix)) as bus, \
            bus.subscribe(f"{prefix}/#") as sub, bus.advertise(f"{prefix}/count"):
        await answer_counts(bus, sub, prefix)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2])
