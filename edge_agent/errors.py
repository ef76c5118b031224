"""Edge agent errors: one base, with the offending field named."""

from __future__ import annotations


class EdgeError(Exception):
    """Base of every edge-agent error."""


class ProfileError(EdgeError, ValueError):
    """A robot profile is invalid. ``field`` is a dotted path such as ``embodiment.speed``."""

    def __init__(self, source: str, field: str, reason: str) -> None:
        super().__init__(f"{source}: {field}: {reason}")
        self.source = source
        self.field = field
        self.reason = reason
