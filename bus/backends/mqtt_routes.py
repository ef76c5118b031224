"""Which robobus subscriptions an incoming MQTT PUBLISH belongs to.

MQTT keys subscriptions by filter, so two robobus subscriptions on one filter share one MQTT
subscription. Every SUBSCRIBE gets a fresh MQTT 5 subscription identifier ("ident"):

* a live message (RETAIN flag clear) goes to every robobus subscription on the ident's filter;
* a retained message (RETAIN flag set: the broker sends those only because of a SUBSCRIBE) goes
  only to the subscription(s) whose SUBSCRIBE created that ident, so a second subscriber on a
  filter gets the retained value once and the first one does not get it again.

Persistent sessions use a stable ident per filter, so messages the broker queued while the
process was down can be matched after a restart; until the application subscribes again they
are parked (and not acknowledged).
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field

import structlog

from robobus.bus.message import Message
from robobus.bus.topics import matches

log = structlog.get_logger("bus.mqtt")

_STABLE_SPAN = 0x7FF_FFFF  # stable idents: 1 .. 2**27 - 1
_DYNAMIC_BASE = 0x800_0000  # counters start above them
_MAX_IDENT = 0xFFF_FFFF  # MQTT 5 limit (268,435,455)
_KEEP_IDENTS = 8

Item = tuple[Message, tuple[int, ...], int, int]


@dataclass(slots=True)
class _Filter:
    sub_ids: dict[int, None] = field(default_factory=dict)
    ids: tuple[int, ...] = ()
    idents: list[int] = field(default_factory=list)


class Routes:
    """Subscription-identifier bookkeeping for one MQTT connection."""

    def __init__(self, *, persistent: bool) -> None:
        self.persistent = persistent
        self.rx = 0
        self._filters: dict[str, _Filter] = {}
        self._idents: dict[int, tuple[str, tuple[int, ...]]] = {}
        self._next = _DYNAMIC_BASE if persistent else 1
        self._parked: list[tuple[float, tuple[int, ...], Message, int]] = []

    def patterns(self) -> list[str]:
        return list(self._filters)

    def add_ident(self, pattern: str, sub_id: int | None) -> int:
        """A new ident for a SUBSCRIBE of ``pattern``; ``sub_id`` None means every subscriber."""
        flt = self._filters.get(pattern)
        first = flt is None
        if flt is None:
            flt = self._filters[pattern] = _Filter()
        if sub_id is not None:
            flt.sub_ids[sub_id] = None
            flt.ids = tuple(flt.sub_ids)
        ident = self.stable_ident(pattern) if first and self.persistent else self._allocate()
        self._idents[ident] = (pattern, (sub_id,) if sub_id is not None else flt.ids)
        flt.idents.append(ident)
        for old in flt.idents[:-_KEEP_IDENTS]:
            self._idents.pop(old, None)
        del flt.idents[:-_KEEP_IDENTS]
        return ident

    @staticmethod
    def stable_ident(pattern: str) -> int:
        return zlib.crc32(pattern.encode()) % _STABLE_SPAN + 1

    def _allocate(self) -> int:
        ident = self._next
        self._next = ident + 1 if ident < _MAX_IDENT else (_DYNAMIC_BASE if self.persistent else 1)
        return ident

    def remove(self, pattern: str, sub_id: int) -> bool:
        """Forget ``sub_id``; True when nobody is left on ``pattern`` (time to UNSUBSCRIBE)."""
        flt = self._filters.get(pattern)
        if flt is None:
            return False
        flt.sub_ids.pop(sub_id, None)
        flt.ids = tuple(flt.sub_ids)
        if flt.sub_ids:
            return False
        for ident in flt.idents:
            self._idents.pop(ident, None)
        del self._filters[pattern]
        return True

    def route(self, idents: list[int] | tuple[int, ...], msg: Message, mid: int
              ) -> tuple[int, ...] | None:
        """Subscription ids for ``msg``; None when it was parked for a later subscription."""
        self.rx += 1
        if len(idents) == 1:  # the common case, without building sets
            entry = self._idents.get(idents[0])
            if entry is not None:
                return entry[1] if msg.retain else self._live(entry[0])
        out: dict[int, None] = {}
        known = False
        for ident in idents:
            entry = self._idents.get(ident)
            if entry is not None:
                known = True
                out.update(dict.fromkeys(entry[1] if msg.retain else self._live(entry[0])))
        if known:
            return tuple(out)
        if not idents:  # a broker without subscription identifiers: match by filter
            return tuple(i for p, f in self._filters.items() if matches(p, msg.topic)
                         for i in f.ids)
        if self.persistent:
            self._parked.append((time.monotonic(), tuple(idents), msg, mid))
            return None
        return ()

    def _live(self, pattern: str) -> tuple[int, ...]:
        flt = self._filters.get(pattern)
        return flt.ids if flt is not None else ()

    def claim_parked(self, pattern: str) -> list[Item]:
        """Parked messages that the (just subscribed) ``pattern`` now accounts for, in order."""
        if not self._parked:
            return []
        stable = self.stable_ident(pattern)
        claimed = [p for p in self._parked if stable in p[1]]
        self._parked = [p for p in self._parked if stable not in p[1]]
        ids = self._live(pattern)
        return [(msg, ids, mid, msg.qos) for _, _, msg, mid in claimed]

    def expire_parked(self, max_age_s: float) -> list[tuple[int, int]]:
        """Give up on parked messages older than ``max_age_s``: (mid, qos) pairs to ack."""
        if not self._parked:
            return []
        cutoff = time.monotonic() - max_age_s
        old = [p for p in self._parked if p[0] < cutoff]
        if old:
            self._parked = [p for p in self._parked if p[0] >= cutoff]
            log.warning("mqtt_unclaimed_messages_dropped", count=len(old),
                        topics=sorted({p[2].topic for p in old})[:10],
                        reason=f"no subscription claimed them within {max_age_s}s")
        return [(mid, msg.qos) for _, _, msg, mid in old if msg.qos]
