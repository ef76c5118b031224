"""robobus transport layer: one async pub/sub API over memory, ZeroMQ and MQTT."""

from bus.api import BACKENDS, DEFAULT_URL, Bus, BusOptions, connect, default_url, encode, run
from bus.errors import (
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
from bus.limits import RateLimit
from bus.message import Message, QoS, Will
from bus.subscription import Overflow, Subscription
from bus.topics import matches

__version__ = "0.1.0"

__all__ = [
    "BACKENDS", "DEFAULT_URL", "Bus", "BusError", "BusOptions", "ConnectError", "DecodeError",
    "DisconnectedError", "Message", "Overflow", "PayloadTooLarge", "PublishError", "QoS", "RateLimit",
    "RequestTimeout", "Subscription", "TopicError", "UnknownSchemeError", "Will", "connect",
    "default_url", "encode", "matches", "run",
]
