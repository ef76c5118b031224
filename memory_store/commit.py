"""Group commit: many events per LMDB transaction, inside a bounded durability window.

Producers call :meth:`GroupCommitter.put` (cheap: one list append) on the event loop. The
committer task hands the pending batch to a worker thread that commits it with one
transaction, when ``max_events`` are pending or ``window_s`` after the oldest pending event,
whichever comes first. While one batch commits, the next one fills, so throughput grows with
load. :meth:`flush` returns once everything put before it is durable: that is the
acknowledgement.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
import structlog

from robobus.memory_store.errors import MemoryStoreError
from robobus.memory_store.log import Record
from robobus.memory_store.store import MemoryStore
from robobus.memory_store.views import Dirty, Views

log = structlog.get_logger("memory.commit")


@dataclass(slots=True)
class CommitOptions:
    """The durability window: at most ``max_events`` or ``window_s``, whichever comes first."""

    max_events: int = 20_000
    window_s: float = 0.005
    #: the views' changed records go to views.mdb with a commit at most this often (and at
    #: once for :meth:`GroupCommitter.sync` and on the way out). The log holds every event and
    #: a restart folds in those after the views' stored position, so nothing is lost in
    #: between; saving them at every 5 ms commit cost a second synced LMDB transaction per
    #: commit, and with 1,000 robots at 10 Hz half the memory agent's CPU went to its commit
    #: threads (issue 16 item 7, ``bench/memory_fleet.py``)
    views_every_s: float = 0.25
    #: producers wait (backpressure) while this many events are not yet committed
    max_pending: int = 200_000
    #: after the store refused a batch (map or disk full, I/O error): wait, then retry it
    retry_s: float = 0.5
    max_retry_s: float = 5.0


class GroupCommitter:
    """Batches events for ``store``; runs as a task in the agent's task group."""

    def __init__(self, store: MemoryStore, views: Views | None = None,
                 options: CommitOptions | None = None) -> None:
        self.store = store
        self.views = views
        self.opts = options or CommitOptions()
        self.put_count = 0
        self.committed = 0
        self.last_seq = store.log.last_seq
        self.commits = 0
        self._cycles_started = self._cycles_done = 0
        self._pending: list[Record] = []
        self._wake = anyio.Event()
        self._full = anyio.Event()
        self._done = anyio.Event()
        self._room = anyio.Event()
        #: called with the committed count after each commit (the agent acks the bus there)
        self.on_commit: Callable[[int], None] | None = None
        #: the store's refusal while it lasts; the refused batch is held and retried
        self.failure: MemoryStoreError | None = None
        #: awaited with each new kind of refusal (the agent reports it on P/errors)
        self.on_failure: Callable[[MemoryStoreError], Awaitable[None]] | None = None
        self._held: tuple[list[Record], Dirty | None] | None = None
        self._retry_s = self.opts.retry_s
        #: when the views are next saved with a commit; 0: with the next one
        self._views_at = 0.0

    def put(self, topic: str, payload: bytes, ts_ns: int, head: bytes = b"") -> None:
        """Queue one event for the next commit (not yet acknowledged); ``head`` is its stored
        header (retain, QoS, properties: :func:`memory_store.headers.head_of`)."""
        pending = self._pending
        pending.append((topic, payload, ts_ns, head) if head else (topic, payload, ts_ns))
        self.put_count += 1
        if len(pending) == 1:
            self._wake.set()
        elif len(pending) >= self.opts.max_events:
            self._full.set()

    def extend(self, records: list[Record]) -> None:
        """Queue a burst of events at once (what :meth:`put` does for one, per call)."""
        pending = self._pending
        was = len(pending)
        pending += records
        self.put_count += len(records)
        if not was and pending:
            self._wake.set()
        if len(pending) >= self.opts.max_events:
            self._full.set()

    @property
    def holding(self) -> bool:
        """Whether a batch the store refused is held for a retry (it is not durable yet)."""
        return self._held is not None

    @property
    def backlog(self) -> int:
        """Events put but not yet committed."""
        return self.put_count - self.committed

    async def wait_room(self) -> None:
        """Block the producer while the backlog exceeds ``max_pending`` (backpressure)."""
        while self.backlog >= self.opts.max_pending:
            self._full.set()
            if self._room.is_set():
                self._room = anyio.Event()
            await self._room.wait()

    async def flush(self) -> int:
        """Wait until every event put so far is committed; return the last committed seq."""
        return await self.flush_to(self.put_count)

    async def flush_to(self, target: int) -> int:
        """Wait until the first ``target`` events put are committed; raise the store's
        :class:`MemoryStoreError` if it refuses them (they stay held and are retried)."""
        while self.committed < target:
            await self._next_commit()
            if self.failure is not None and self.committed < target:
                raise self.failure
        return self.last_seq

    async def sync(self) -> int:
        """Wait for a commit cycle that starts after this call (persists dirty views too)."""
        target = self._cycles_started + 1
        self._views_at = 0.0
        while self._cycles_done < target:
            await self._next_commit()
        if self.failure is not None:
            raise self.failure
        return self.last_seq

    async def _next_commit(self) -> None:
        """Ask for a commit now and wait for the next one to finish."""
        self._wake.set()
        self._full.set()
        if self._done.is_set():
            self._done = anyio.Event()
        await self._done.wait()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        """Commit batches until cancelled; the last batch is committed on the way out."""
        task_status.started()
        try:
            while True:
                # views a commit left unsaved (saved at most every views_every_s) are saved
                # when due, even if no event comes to wake a commit
                with anyio.move_on_after(self._views_due()):
                    await self._wake.wait()
                self._wake = anyio.Event()
                with anyio.move_on_after(self.opts.window_s):
                    await self._full.wait()
                self._full = anyio.Event()
                await self._commit_pending()
                if self.failure is not None:  # give the disk time; readers are still served
                    await anyio.sleep(self._retry_s)
                    self._retry_s = min(self._retry_s * 2, self.opts.max_retry_s)
                    self._wake.set()
        finally:
            with anyio.CancelScope(shield=True):
                self._views_at = 0.0
                await self._commit_pending()

    def _views_due(self) -> float:
        """Seconds until unsaved views are due; infinite when none are unsaved."""
        if self.views is None or not self.views.dirty:
            return math.inf
        return max(0.0, self._views_at - anyio.current_time())

    async def commit_now(self) -> None:
        """Commit what is pending right away (shutdown, after :meth:`run` has stopped)."""
        self._views_at = 0.0
        await self._commit_pending()

    async def _commit_pending(self) -> None:
        self._cycles_started += 1
        batch, self._pending = self._pending, []
        dirty = None
        if self.views is not None and (now := anyio.current_time()) >= self._views_at:
            dirty = self.views.take_dirty()
            self._views_at = now + self.opts.views_every_s
        if self._held is not None:  # what the store refused last time goes first
            batch, dirty = self._held[0] + batch, _merge(self._held[1], dirty)
            self._held = None
        if batch or (dirty is not None and not dirty.empty()):
            # Shielded: once taken off the queue, the batch and the views' changes exist only
            # here. A cancellation (the agent stopping) at the thread hand-off's checkpoint
            # used to drop them both, so the stored views fell behind what was observed.
            with anyio.CancelScope(shield=True):
                await self._store(batch, dirty)
        self._cycles_done += 1
        self._done.set()
        self._room.set()
        if self._pending:
            self._wake.set()
        if self.commits % 1000 == 0:
            log.debug("group_commit", commits=self.commits, committed=self.committed)

    async def _store(self, batch: list[Record], dirty: Dirty | None) -> None:
        """Commit in the writer thread; a refusal holds what was not stored, for a retry."""
        try:
            self.last_seq = await anyio.to_thread.run_sync(self.store.commit, batch, dirty)
        except MemoryStoreError as exc:
            stored = getattr(exc, "stored", 0)  # events of earlier segments did commit
            self._held = (batch[stored:], dirty)
            self.last_seq = self.store.log.last_seq
            self._advance(stored)
            await self._refused(exc)
            return
        if self.failure is not None:
            log.info("store_recovered", error=str(self.failure))
        self.failure, self._retry_s = None, self.opts.retry_s
        self._advance(len(batch))
        self.commits += 1

    def _advance(self, stored: int) -> None:
        if stored:
            self.committed += stored
            if self.on_commit is not None:
                self.on_commit(self.committed)

    async def _refused(self, exc: MemoryStoreError) -> None:
        new = self.failure is None or str(self.failure) != str(exc)
        self.failure = exc
        log.error("store_refused_commit", error=str(exc), held=len(self._held[0])
                  if self._held else 0)
        if new and self.on_failure is not None:
            await self.on_failure(exc)


def _merge(old: Dirty | None, new: Dirty | None) -> Dirty | None:
    """Held view records first, so that the newer ones overwrite them in the same commit."""
    if old is None or new is None:
        return old or new
    return Dirty(robots=old.robots + new.robots, tasks=old.tasks + new.tasks,
                 world=new.world if new.world is not None else old.world,
                 scene=new.scene if new.scene is not None else old.scene)
