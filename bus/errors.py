"""Bus error hierarchy: one base, attributes instead of parsed strings."""

from __future__ import annotations

from robobus.schemas.errors import DecodeError

__all__ = [
    "BusError", "ConnectError", "DecodeError", "DisconnectedError", "PayloadTooLarge", "PublishError",
    "RequestTimeout", "TopicError", "UnknownSchemeError",
]


class BusError(Exception):
    """Base of every error raised by :mod:`bus`."""


class UnknownSchemeError(BusError, ValueError):
    """The URL names a scheme with no backend."""


class ConnectError(BusError, ConnectionError):
    """The transport could not reach its hub or broker."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot connect to {url}: {reason}")
        self.url = url
        self.reason = reason


class DisconnectedError(BusError, ConnectionError):
    """The connection dropped while a subscription or request was waiting."""


class PayloadTooLarge(BusError, ValueError):
    """A payload exceeds the configured size limit."""

    def __init__(self, topic: str, size: int, limit: int) -> None:
        super().__init__(f"payload on {topic!r} is {size} bytes, limit is {limit}")
        self.topic = topic
        self.size = size
        self.limit = limit


class TopicError(BusError, ValueError):
    """A topic or topic filter is malformed."""


class RequestTimeout(BusError, TimeoutError):
    """No reply arrived within the request timeout."""

    def __init__(self, topic: str, timeout: float) -> None:
        super().__init__(f"no reply on {topic!r} within {timeout:.3f}s")
        self.topic = topic
        self.timeout = timeout


class PublishError(BusError):
    """The transport refused a publish (queue full, not authorised, ...)."""

    def __init__(self, topic: str, reason: str) -> None:
        super().__init__(f"publish to {topic!r} failed: {reason}")
        self.topic = topic
        self.reason = reason
