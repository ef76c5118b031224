"""The byte-moving layer each backend implements. User code never touches it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from robobus.bus.message import Message, Will

#: Delivery callback: (message, subscription ids that matched, or None to match by pattern).
Deliver = Callable[[Message, "tuple[int, ...] | None"], Awaitable[None]]
#: Called with the subscription id and a retained message for that subscription only.
Snapshot = Callable[[int, Message], None]
#: Synchronous delivery: returns None when done, else an awaitable to finish (backpressure).
Dispatch = Callable[[Message, "tuple[int, ...] | None"], "Awaitable[None] | None"]


@dataclass(slots=True)
class TransportConfig:
    """What every backend is given when it starts."""

    url: str
    client_id: str
    #: a will, or a callable giving a fresh one per connection (use :func:`will_of`)
    will: Will | Callable[[], Will] | None
    deliver: Deliver
    snapshot: Snapshot
    on_state: Callable[[str], None]
    dispatch: Dispatch | None = None
    keepalive_s: float = 1.0
    #: the Bus's task group: backends start their background tasks in it
    task_group: Any = None


def acked() -> asyncio.Future[None]:
    """An acknowledgement already received: what ``post`` returns when there is none to wait
    for (qos 0, the in-process broker)."""
    fut = asyncio.get_running_loop().create_future()
    fut.set_result(None)
    return fut


def will_of(config: TransportConfig) -> Will | None:
    """The last will for a new connection. A callable will is asked again for every
    connection, so a presence can number its births and deaths (see :mod:`bus.presence`)."""
    will = config.will
    return will() if callable(will) else will


class Transport(Protocol):
    """A backend: moves bytes, keeps subscriptions, retained values and the last will."""

    async def start(self, config: TransportConfig) -> None:
        """Connect; returns once publishes and subscriptions work."""

    async def close(self, graceful: bool = True) -> None:
        """Disconnect; ``graceful`` discards the last will."""

    def session_id(self) -> str:
        """The id the hub or broker knows this connection by, once started.

        The bus names its reply inbox after it, so an ACL granting each client its own inbox
        (Mosquitto's ``%c``, the hub's ``{client}``) grants the inbox the client really has.
        """

    async def publish(self, msg: Message) -> None:
        """Send ``msg``; for qos >= 1, return only once the hub or broker acknowledged it."""

    async def post(self, msg: Message) -> Awaitable[None]:
        """Send ``msg`` in call order with :meth:`publish` and return without waiting for its
        acknowledgement: the awaitable completes (or raises) as ``publish`` would have."""

    async def subscribe(self, pattern: str, sub_id: int) -> None:
        """Start receiving ``pattern``; returns once the subscription is live.

        Retained values matching it are handed to ``config.snapshot`` (or delivered with
        ``sub_id``) before this returns or shortly after.
        """

    async def unsubscribe(self, pattern: str, sub_id: int) -> None:
        """Stop receiving ``pattern`` for ``sub_id``."""
