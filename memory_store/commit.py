"""Group commit: many events per LMDB transaction, inside a bounded durability window.

Producers call :meth:`GroupCommitter.put` (cheap: one list append) on the event loop. The
committer task hands the pending batch to a worker thread that commits it with one
transaction, when ``max_events`` are pending or ``window_s`` after the oldest pending event,
whichever comes first. While one batch commits, the next one fills, so throughput grows with
load. :meth:`flush` returns once everything put before it is durable: that is the
acknowledgement.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import anyio
import structlog

from robobus.memory_store.store import MemoryStore
from robobus.memory_store.views import Views

log = structlog.get_logger("memory.commit")


@dataclass(slots=True)
class CommitOptions:
    """The durability window: at most ``max_events`` or ``window_s``, whichever comes first."""

    max_events: int = 20_000
    window_s: float = 0.005
    #: producers wait (backpressure) while this many events are not yet committed
    max_pending: int = 200_000


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
        self._pending: list[tuple[str, bytes, int]] = []
        self._wake = anyio.Event()
        self._full = anyio.Event()
        self._done = anyio.Event()
        self._room = anyio.Event()
        #: called with the committed count after each commit (the agent acks the bus there)
        self.on_commit: Callable[[int], None] | None = None

    def put(self, topic: str, payload: bytes, ts_ns: int) -> None:
        """Queue one event for the next commit (not yet acknowledged)."""
        pending = self._pending
        pending.append((topic, payload, ts_ns))
        self.put_count += 1
        if len(pending) == 1:
            self._wake.set()
        elif len(pending) >= self.opts.max_events:
            self._full.set()

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
        """Wait until the first ``target`` events put are committed."""
        while self.committed < target:
            await self._next_commit()
        return self.last_seq

    async def sync(self) -> int:
        """Wait for a commit cycle that starts after this call (persists dirty views too)."""
        target = self._cycles_started + 1
        while self._cycles_done < target:
            await self._next_commit()
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
                await self._wake.wait()
                self._wake = anyio.Event()
                with anyio.move_on_after(self.opts.window_s):
                    await self._full.wait()
                self._full = anyio.Event()
                await self._commit_pending()
        finally:
            with anyio.CancelScope(shield=True):
                await self._commit_pending()

    async def commit_now(self) -> None:
        """Commit what is pending right away (shutdown, after :meth:`run` has stopped)."""
        await self._commit_pending()

    async def _commit_pending(self) -> None:
        self._cycles_started += 1
        batch, self._pending = self._pending, []
        dirty = self.views.take_dirty() if self.views is not None else None
        if batch or (dirty is not None and not dirty.empty()):
            # Shielded: once taken off the queue, the batch and the views' changes exist only
            # here. A cancellation (the agent stopping) at the thread hand-off's checkpoint
            # used to drop them both, so the stored views fell behind what was observed.
            with anyio.CancelScope(shield=True):
                self.last_seq = await anyio.to_thread.run_sync(self.store.commit, batch, dirty)
            self.committed += len(batch)
            self.commits += 1
            if self.on_commit is not None:
                self.on_commit(self.committed)
        self._cycles_done += 1
        self._done.set()
        self._room.set()
        if self._pending:
            self._wake.set()
        if self.commits % 1000 == 0:
            log.debug("group_commit", commits=self.commits, committed=self.committed)
