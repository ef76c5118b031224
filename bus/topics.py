"""MQTT topic filter syntax (``+`` and ``#``), identical on every backend."""

from __future__ import annotations

from functools import lru_cache
from typing import TypeVar

from robobus.bus.errors import TopicError

K = TypeVar("K")
V = TypeVar("V")
#: entries a per-topic cache holds before it starts over (bounded: topics may carry ids)
TOPIC_CACHE_LIMIT = 10_000


def remember(cache: dict[K, V], key: K, value: V) -> V:
    """Store ``value`` under ``key`` in a per-topic cache, emptied first once full; returns it.
    Called on a miss only: the hit stays one ``dict.get`` on the hot path."""
    if len(cache) > TOPIC_CACHE_LIMIT:
        cache.clear()
    cache[key] = value
    return value


def validate_topic(topic: str) -> str:
    """Return ``topic`` if it is a valid concrete topic name, else raise TopicError."""
    if not topic or "+" in topic or "#" in topic or "\x00" in topic:
        raise TopicError(f"invalid topic name {topic!r}: must be non-empty, without wildcards")
    if len(topic.encode()) > 65535:
        raise TopicError("topic name longer than 65535 bytes")
    return topic


def validate_filter(pattern: str) -> str:
    """Return ``pattern`` if it is a valid MQTT topic filter, else raise TopicError."""
    if not pattern or "\x00" in pattern:
        raise TopicError(f"invalid topic filter {pattern!r}")
    levels = pattern.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise TopicError(f"invalid filter {pattern!r}: '#' must be a whole, final level")
        if "+" in level and level != "+":
            raise TopicError(f"invalid filter {pattern!r}: '+' must be a whole level")
    return pattern


@lru_cache(maxsize=4096)
def _split(pattern: str) -> tuple[str, ...]:
    return tuple(pattern.split("/"))


def matches(pattern: str, topic: str) -> bool:
    """True when ``topic`` matches the MQTT filter ``pattern``.

    Topics starting with ``$`` are not matched by a leading wildcard, as in MQTT.
    """
    if pattern == topic:
        return True
    if topic.startswith("$") and pattern[:1] in ("+", "#"):
        return False
    pat = _split(pattern)
    top = topic.split("/")
    for i, level in enumerate(pat):
        if level == "#":
            return True
        if i >= len(top):
            return False
        if level != "+" and level != top[i]:
            return False
    return len(pat) == len(top)


def literal_prefix(pattern: str) -> str:
    """The part of ``pattern`` before its first wildcard (used for ZeroMQ prefix filters)."""
    cut = len(pattern)
    for ch in "+#":
        idx = pattern.find(ch)
        if idx != -1:
            cut = min(cut, idx)
    return pattern[:cut]
