"""Guarded handlers and background tasks: one message can fail, never the brain (issue 13).

Every subscription handler and every task the brain starts runs through :class:`Guard`. An
exception that escapes one (a bug, or an input the schemas let through that a handler cannot
take) is logged with its traceback, reported on ``P/errors`` for the topic it concerns (the
input's topic, or the task's status topic), counted, and the brain goes on with the next
message. Cancellation is not an ``Exception`` and passes through.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import structlog

from robobus.bus import Bus

log = structlog.get_logger("brain.guard")
#: the code of the error report for a failure inside the brain
CODE = "internal_error"
_MAX_REASON = 400


class Guard:
    """Runs handlers and background tasks so that an exception is reported, not fatal."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        #: failures caught so far, by what failed
        self.failures: dict[str, int] = {}

    @property
    def count(self) -> int:
        """Failures caught since the brain started."""
        return sum(self.failures.values())

    def failed(self, what: str, topic: str, exc: Exception, payload: bytes = b"") -> None:
        """Log, count and report one failure of ``what`` on ``topic``."""
        self.failures[what] = self.failures.get(what, 0) + 1
        log.error("brain_handler_failed", what=what, topic=topic, error=repr(exc),
                  failures=self.count, exc_info=exc)
        reason = f"the brain could not handle this ({what}): {exc!r}"
        self.bus.report_error_soon(topic, reason[:_MAX_REASON], CODE, payload)

    async def call(self, what: str, topic: str, fn: Callable[..., Awaitable[Any] | None],
                   *args: Any, payload: bytes = b"") -> None:
        """``await fn(*args)`` (or call it, if it is synchronous) under the guard."""
        try:
            result = fn(*args)
            if result is not None:
                await result
        except Exception as exc:  # noqa: BLE001 - reported on P/errors and counted, not hidden
            self.failed(what, topic, exc, payload)

    def spawn(self, tg: anyio.abc.TaskGroup, what: str, topic: str,
              fn: Callable[..., Awaitable[Any]], *args: Any, name: str | None = None) -> None:
        """Start ``fn(*args)`` in ``tg`` as a guarded background task."""
        tg.start_soon(self.call, what, topic, fn, *args, name=name or what)
