"""Errors of the memory store and the memory agent: one base, attributes instead of strings."""

from __future__ import annotations


class MemoryStoreError(Exception):
    """Base of every error raised by :mod:`memory_store`."""


class StoreClosed(MemoryStoreError):
    """The store was closed and cannot be used any more."""


class ReadOnlyStore(MemoryStoreError):
    """A write was attempted on a store opened with ``readonly=True``."""


class StoreFull(MemoryStoreError):
    """A time segment reached its LMDB map size."""

    def __init__(self, path: str, map_size: int) -> None:
        super().__init__(f"segment {path} is full at map size {map_size} bytes: "
                         "raise --map-size or shorten --segment")
        self.path = path
        self.map_size = map_size
        self.code = "store_full"


class QueryError(MemoryStoreError, ValueError):
    """A memory query that cannot be answered; ``code`` is machine-readable."""

    def __init__(self, reason: str, code: str = "invalid") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class StoreWriteError(MemoryStoreError):
    """LMDB refused a write (disk full, I/O error, ...); nothing of the batch was stored."""

    def __init__(self, path: str, reason: str, code: str = "store_error") -> None:
        super().__init__(f"cannot write to {path}: {reason}")
        self.path = path
        self.reason = reason
        self.code = code
