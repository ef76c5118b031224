"""The brain's presence and its active/standby role on one fleet (issue 12).

All of this holds per robot group too (issue 16): the brains of group ``G`` use
``P/groups/G/brain/status`` where this says ``P/brain/status``, so each group has one active
brain and its own standbys, and brains of different groups never see each other as rivals.

Only the active brain has a retained presence on ``P/brain/status``: a birth (``starting``,
then ``ready``) on connect and after every reconnect, its last will the matching death
(``offline``, same ``bd_seq``). The will belongs to a small connection of its own, opened when
the brain claims the fleet: a standby must not leave a death on the active brain's topic.

Every brain instance, standby or active, also has a presence of its own on
``P/brain/{instance}/status`` (births ``starting``, ``standby`` or ``ready``; the death
``offline``), held by a second small connection for the brain's whole life, so a client sees
"one active, one standby" from the retained values alone.

Both presence connections heartbeat every :data:`PRESENCE_KEEPALIVE_S`: the ZeroMQ hub declares
a client dead 2.5 keepalives after its last heartbeat, and the standby's takeover (promised
within 2 s) starts only then. On MQTT the broker sees a killed process's socket close at once.

Roles:

* A brain that hears a live birth of another brain when it starts (retained ``starting`` or
  ``ready`` with a ``bd_seq``) is a ``standby``: it says so without retain, takes no
  instructions and dispatches nothing.
* When that brain's death arrives (its will after kill -9, or its clean ``offline``), the
  standby claims the fleet: it publishes its own birth (``starting``), boots (world, task
  recovery) and says ``ready``.
* Two brains claiming at once (both started on an empty fleet, or two standbys): each listens
  :data:`SETTLE_S` after its claim. A brain already ``ready`` wins; otherwise the lower
  ``(bd_seq, instance)`` wins (``bd_seq`` starts from the wall clock at start-up, so the brain
  started first). The loser closes its presence connection cleanly (no will) and is a standby;
  the winner publishes its birth again over the loser's.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Literal

import anyio
import msgspec
import structlog

from robobus.bus import Bus, BusOptions, Subscription
from robobus.bus.errors import BusError
from robobus.bus.presence import Presence
from robobus.schemas.codec import decode_as
from robobus.schemas.errors import DecodeError
from robobus.schemas.messages import BrainState, BrainStatus, presence_supersedes
from robobus.schemas.topics import Topics

log = structlog.get_logger("brain.leader")

#: how long a brain listens for another brain's retained birth, and for rival claims
SETTLE_S = 0.3
#: heartbeat period of the presence connections (the hub's death verdict: 2.5 of them)
PRESENCE_KEEPALIVE_S = 0.4
Mode = Literal["deciding", "standby", "active"]


def _rank(status: BrainStatus) -> tuple[int, int, str]:
    """Lower wins: a ready brain, then the lower birth sequence, then the instance id."""
    return (0 if status.state == "ready" else 1, status.bd_seq, status.instance)


class Leader:
    """One brain's role and presence. ``mode`` is ``deciding`` until it knows whether it leads."""

    def __init__(self, bus: Bus, name: str, planner: str, group: str | None = None) -> None:
        self.bus, self.name, self.planner = bus, name, planner
        topics = Topics(bus.options.prefix)
        # a group's brains elect their active one among themselves (issue 16)
        self.topic = topics.brain_status if group is None else topics.group_brain_status(group)
        self.instance = secrets.token_hex(4)
        self.state: BrainState = "starting"
        self.presence = Presence(self.topic, self._make)
        #: this instance's own presence (standby or active), on its own connection
        self.own = Presence(topics.brain_instance_status(self.instance), self._make_own)
        self.own_bus: Bus | None = None
        self.mode: Mode = "deciding"
        self._changed = anyio.Event()
        self.others: dict[str, BrainStatus] = {}  # instance -> its newest presence
        self.presence_bus: Bus | None = None
        self.took_over_ns: int | None = None

    def _make(self, online: bool, bd_seq: int, ts_ns: int) -> BrainStatus:
        return BrainStatus(self.name, self.state if online else "offline", self.planner,
                           ts_ns=ts_ns, bd_seq=bd_seq, instance=self.instance)

    def _make_own(self, online: bool, bd_seq: int, ts_ns: int) -> BrainStatus:
        state: BrainState = "standby" if self.mode == "standby" else self.state
        return BrainStatus(self.name, state if online else "offline", self.planner,
                           ts_ns=ts_ns, bd_seq=bd_seq, instance=self.instance)

    def _set_mode(self, mode: Mode) -> None:
        self.mode = mode
        self._changed.set()
        self._changed = anyio.Event()

    async def _say_own(self) -> None:
        """Publish this instance's birth in its current role (retained)."""
        if self.own_bus is None:
            return
        try:
            await self.own.publish_birth(self.own_bus)
        except BusError as exc:  # dropped: the reconnect publishes it again
            log.warning("instance_status_failed", error=str(exc))

    async def decided(self) -> Mode:
        """Wait until the brain knows whether it leads; ``active`` or ``standby``."""
        while self.mode == "deciding":
            await self._changed.wait()
        return self.mode

    # -- the role -----------------------------------------------------------------------
    async def lead(self, boot: Callable[[], Awaitable[None]], *,
                   task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Decide the role, wait as a standby while another brain lives, then claim the fleet
        and run ``boot`` (an async callable); keep the presence until cancelled."""
        async with self._presence_bus(self.own, "instance") as ibus, \
                self.bus.subscribe(self.topic) as sub, anyio.create_task_group() as tg:
            self.own_bus = ibus
            try:
                await self.own.publish_birth(ibus)
                await tg.start(self.own.reassert, ibus, name="brain-instance-presence")
                task_status.started()
                await self._lead(sub, boot)
            finally:
                with anyio.CancelScope(shield=True), anyio.move_on_after(2.0):
                    try:  # a clean stop leaves offline; if the bus is gone, the will says it
                        await self.own.publish_death(ibus)
                    except BusError as exc:
                        log.warning("goodbye_failed", error=str(exc))

    async def _lead(self, sub: Subscription, boot: Callable[[], Awaitable[None]]) -> None:
        await self._listen(sub, SETTLE_S)
        while True:
            if self._rival() is not None:
                await self._standby(sub)
            async with self._presence_bus(self.presence, "presence") as pbus:
                if await self._claim(pbus, sub):
                    await self._active(pbus, sub, boot)
                    return  # never reached: _active runs until cancelled
            self._set_mode("deciding")

    async def _standby(self, sub: Subscription) -> None:
        self._set_mode("standby")
        rival = self._rival()
        log.info("brain_standby", active=rival.instance if rival else None)
        await self._say_standby()
        await self._say_own()
        while (rival := self._rival()) is not None:
            msg = await sub.get()
            if self._note(msg) and msg is not None:
                rival_now = self._rival()
                if rival_now is not None and rival_now.instance != rival.instance:
                    await self._say_standby()
        self._set_mode("deciding")
        self.took_over_ns = time.time_ns()
        log.info("brain_takeover", previous=rival.instance if rival else None)

    async def _say_standby(self) -> None:
        """Non-retained: the retained value stays the active brain's."""
        status = self._make(True, self.presence.bd_seq, time.time_ns())
        status = msgspec.structs.replace(status, state="standby")
        try:
            await self.bus.publish(self.topic, status, qos=1)
        except BusError as exc:
            log.warning("standby_status_failed", error=str(exc))

    async def _claim(self, pbus: Bus, sub: Subscription) -> bool:
        """Publish a ``starting`` birth; True if no rival claim outranks it."""
        self.state = "starting"
        await self.presence.publish_birth(pbus)
        await self._say_own()
        await self._listen(sub, SETTLE_S)
        rival = self._rival()
        mine = self.presence.birth()
        assert isinstance(mine, BrainStatus)
        if rival is not None and _rank(rival) < _rank(mine):
            log.info("brain_claim_lost", winner=rival.instance, bd_seq=self.presence.bd_seq)
            return False
        self._set_mode("active")
        return True

    async def _active(self, pbus: Bus, sub: Subscription, boot: Callable[[], Awaitable[None]]
                      ) -> None:
        self.presence_bus = pbus
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(self.presence.reassert, pbus, name="brain-presence")
                tg.start_soon(self._hold, pbus, sub, name="brain-hold")
                await boot()
                await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2.0):
                self.state = "offline"
                try:  # a clean stop says offline; if the bus is gone, the will says it
                    await self.presence.publish_death(pbus)
                except BusError as exc:
                    log.warning("goodbye_failed", error=str(exc))

    async def _hold(self, pbus: Bus, sub: Subscription) -> None:
        """While active: a rival's birth that overwrote the retained value is answered with
        this brain's birth again (the rival yields: it sees a brain that outranks it)."""
        async for msg in sub:
            if self._note(msg) and self._rival() is not None:
                try:
                    await self.presence.publish_birth(pbus)
                except BusError as exc:
                    log.warning("birth_failed", error=str(exc))

    async def announce(self, state: BrainState) -> None:
        """Publish this (active) brain's birth in ``state``, retained."""
        self.state = state
        if self.presence_bus is not None:
            await self.presence.publish_birth(self.presence_bus)
        await self._say_own()

    # -- what the topic says ---------------------------------------------------------------
    async def _listen(self, sub: Subscription, seconds: float) -> None:
        with anyio.move_on_after(seconds):
            while True:
                self._note(await sub.get())

    def _note(self, msg: object) -> bool:
        """Keep another brain's newest presence; True if it changed what is known."""
        payload = getattr(msg, "payload", b"")
        if not payload or getattr(msg, "replayed", False):
            return False
        try:
            status = decode_as(payload, BrainStatus)  # msgpack or JSON
        except DecodeError:
            return False
        if status.instance == self.instance or status.bd_seq == 0:
            return False  # own, or without presence (an older brain)
        held = self.others.get(status.instance)
        if not presence_supersedes(held, status):
            return False
        self.others[status.instance] = status
        return True

    def _rival(self) -> BrainStatus | None:
        """The best-ranked other brain that leads or claims (``starting`` or ``ready``); a
        claim that lost ends with its brain's ``standby``."""
        live = [s for s in self.others.values() if s.state in ("starting", "ready")]
        return min(live, key=_rank) if live else None

    @asynccontextmanager
    async def _presence_bus(self, presence: Presence, what: str) -> AsyncIterator[Bus]:
        """A connection whose last will is ``presence``'s death: the fleet's (one per claim)
        or this instance's (one per brain)."""
        o = self.bus.options
        options = BusOptions(prefix=o.prefix, max_payload=o.max_payload, will=presence,
                             keepalive_s=min(o.keepalive_s, PRESENCE_KEEPALIVE_S),
                             request_timeout=o.request_timeout, report_errors=False,
                             extra=dict(o.extra))
        async with Bus.connect(self.bus.url, name=f"{self.name}-{what}", options=options) as pbus:
            yield pbus
