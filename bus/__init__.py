"""robobus transport layer: one async pub/sub API over memory, ZeroMQ and MQTT."""

from robobus.bus.api import BACKENDS, DEFAULT_URL, Bus, BusOptions, connect, default_url, encode, run
from robobus.bus.errors import (
    BusError,
    ConnectError,
    DecodeError,
    DisconnectedError,
    PayloadTooLarge,
    PublishError,
    RequestTimeout,
    TopicError,
    UnknownSchemeError,
)
from robobus.bus.limits import RateLimit
from robobus.bus.message import Message, QoS, Will
from robobus.bus.subscription import Overflow, Subscription
from robobus.bus.topics import matches

__all__ = [
    "BACKENDS", "DEFAULT_URL", "Bus", "BusError", "BusOptions", "ConnectError", "DecodeError",
    "DisconnectedError", "Message", "Overflow", "PayloadTooLarge", "PublishError", "QoS", "RateLimit",
    "RequestTimeout", "Subscription", "TopicError", "UnknownSchemeError", "Will", "connect",
    "default_url", "encode", "matches", "run",
]
