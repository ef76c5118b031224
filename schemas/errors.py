"""Errors of the contract itself, raised where a payload meets its message type.

The transport re-exports :class:`DecodeError` (``robobus.bus.DecodeError``), so code on either
side of the contract catches the one class.
"""

from __future__ import annotations


class DecodeError(ValueError):
    """A payload could not be decoded into the expected message type."""

    def __init__(self, topic: str, reason: str) -> None:
        super().__init__(f"cannot decode message on {topic!r}: {reason}")
        self.topic = topic
        self.reason = reason
