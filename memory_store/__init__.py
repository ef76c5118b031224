"""robobus memory_store: LMDB-backed temporal, spatial, embodiment and task memory.

``memory_store.open(path, readonly=False, **options)`` opens a store; see
:class:`memory_store.store.StoreOptions` for the options and docs/memory.md for the design.
"""

from __future__ import annotations

from robobus.memory_store.errors import MemoryStoreError, QueryError, ReadOnlyStore, StoreClosed, StoreFull
from robobus.memory_store.log import Event
from robobus.memory_store.store import MemoryStore, StoreOptions, open_store

open = open_store  # noqa: A001 - the documented entry point is ``memory_store.open``

__all__ = [
    "Event",
    "MemoryStore",
    "MemoryStoreError",
    "QueryError",
    "ReadOnlyStore",
    "StoreClosed",
    "StoreFull",
    "StoreOptions",
    "open",
]
