"""Which task ids the memory agent may know, without asking it (issue 16, item 1).

A client chooses its own task id; an id memory already has is refused (``duplicate_task``),
even by a brain restarted since. Asking memory about every id was a round trip (2.4-4.3 ms)
on the path from instruction to first command. Instead the brain keeps a Bloom filter of every
id memory knows: loaded each time the brain starts to lead, page by page (the ``task_ids``
query), and kept current from every task this brain takes and, for a group's brain, every task
status on ``P/tasks/+`` (other groups' brains take tasks meanwhile; a brain of the whole fleet
is the only one that does). The filter never says "no" for an id it was given, so only a
"maybe" is asked of memory; a "no" starts the task at once. Until the filter is loaded, or
when it could not be, every client's id is asked, as before.
"""

from __future__ import annotations

import hashlib
import math

import structlog

from robobus.brain_agent.fleet import MemoryUnavailable, query_memory
from robobus.bus import Bus, Subscription
from robobus.schemas.memory import MemoryQuery
from robobus.schemas.topics import Topics

log = structlog.get_logger("brain.known_tasks")
#: ids per ``task_ids`` page asked for (the memory agent's most; its reply stays < 1 MiB)
PAGE = 10_000


class BloomFilter:
    """A fixed-size Bloom filter of strings: ``capacity`` of them at false-positive rate
    ``fp_rate``. Positions come from BLAKE2b (stable across processes, unlike ``hash``) by
    double hashing (Kirsch and Mitzenmacher)."""

    def __init__(self, capacity: int, fp_rate: float = 0.001) -> None:
        if capacity < 1 or not 0 < fp_rate < 1:
            raise ValueError(f"bad Bloom filter size: capacity {capacity}, fp_rate {fp_rate}")
        self.capacity = capacity
        self.bits = max(64, math.ceil(-capacity * math.log(fp_rate) / math.log(2) ** 2))
        self.hashes = max(1, round(self.bits / capacity * math.log(2)))
        self.count = 0
        self._array = bytearray((self.bits + 7) // 8)

    def add(self, key: str) -> None:
        array = self._array
        for pos in self._positions(key):
            array[pos >> 3] |= 1 << (pos & 7)
        self.count += 1

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        array = self._array
        return all(array[pos >> 3] & (1 << (pos & 7)) for pos in self._positions(key))

    def _positions(self, key: str) -> list[int]:
        digest = hashlib.blake2b(key.encode(errors="surrogatepass"), digest_size=16).digest()
        h1, h2 = int.from_bytes(digest[:8], "little"), int.from_bytes(digest[8:], "little") | 1
        return [(h1 + i * h2) % self.bits for i in range(self.hashes)]


class IdFilter:
    """Bloom filters that grow: when the newest is full, a new one twice its size is added
    (about 1.8 bytes per id at 0.1 %; a few stages add their false positives up)."""

    def __init__(self, capacity: int = 100_000, fp_rate: float = 0.001) -> None:
        self.fp_rate = fp_rate
        self.stages = [BloomFilter(capacity, fp_rate)]

    def add(self, key: str) -> None:
        last = self.stages[-1]
        if last.count >= last.capacity:
            last = BloomFilter(last.capacity * 2, self.fp_rate)
            self.stages.append(last)
        last.add(key)

    def __contains__(self, key: object) -> bool:
        return any(key in stage for stage in self.stages)

    def __len__(self) -> int:
        return sum(stage.count for stage in self.stages)


class KnownTasks:
    """Every task id memory may know: :meth:`maybe` is False only for an id it surely lacks."""

    def __init__(self) -> None:
        self.ids = IdFilter()
        #: True once every id memory held at boot is in :attr:`ids`
        self.loaded = False

    def add(self, task_id: str) -> None:
        self.ids.add(task_id)

    def maybe(self, task_id: str) -> bool:
        """Whether memory may know ``task_id`` (always True until the filter is loaded)."""
        return not self.loaded or task_id in self.ids

    async def follow(self, sub: Subscription) -> None:
        """Add the task id of every status on ``P/tasks/+`` (the topic's last level: no
        decoding, and a status memory refuses only costs a false positive)."""
        async for msg in sub:
            self.add(msg.topic.rpartition("/")[2])

    async def load(self, bus: Bus, topics: Topics, timeout: float) -> bool:
        """Add every id memory knows, page by page; False (logged once) if it cannot be
        loaded: every client's task id is then asked of memory, one query each."""
        self.loaded = False  # until it has every id: each client id is asked meanwhile
        cursor: str | None = None
        pages = 0
        while True:
            query = MemoryQuery(kind="task_ids", limit=PAGE, cursor=cursor)
            try:
                result = await query_memory(bus, topics, query, timeout)
                ids, cursor = _page(result)
            except (MemoryUnavailable, ValueError) as exc:
                log.warning("task_id_filter_unavailable", error=str(exc),
                            fallback="one memory query per client task id")
                return False
            for task_id in ids:
                self.add(task_id)
            pages += 1
            if cursor is None:
                break
        self.loaded = True
        log.info("task_id_filter_loaded", ids=len(self.ids), pages=pages)
        return True


def _page(result: object) -> tuple[list[str], str | None]:
    """The ids and next cursor of a ``task_ids`` reply, or ValueError."""
    if not isinstance(result, dict) or not isinstance(result.get("ids"), list):
        raise ValueError(f"malformed task_ids reply: {str(result)[:80]}")
    ids: list[str] = result["ids"]
    if not all(isinstance(t, str) for t in ids):
        raise ValueError("malformed task_ids reply: an id that is not a string")
    cursor = result.get("next_cursor")
    if cursor is not None and (not isinstance(cursor, str) or not ids):
        raise ValueError(f"malformed task_ids cursor: {cursor!r}")
    return ids, cursor
