"""What a Bus is made from: the URL's scheme picks a backend (imported lazily) and its codec,
:class:`BusOptions` the rest; :func:`run` starts every robobus process on one event loop."""

from __future__ import annotations

import importlib
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import anyio
import msgspec

from robobus.bus.errors import BusError, UnknownSchemeError
from robobus.bus.message import Will
from robobus.bus.transport import Transport

T = TypeVar("T")

#: Scheme -> "module:Class". Backends are imported lazily, only when their scheme is used.
BACKENDS: dict[str, str] = {
    "memory": "robobus.bus.backends.memory:MemoryTransport",
    "zmq": "robobus.bus.backends.zmq:ZmqTransport",
    "zmq+tcp": "robobus.bus.backends.zmq:ZmqTransport",
    "zmq+ipc": "robobus.bus.backends.zmq:ZmqTransport",
    "mqtt": "robobus.bus.backends.mqtt:MqttTransport",
    "mqtts": "robobus.bus.backends.mqtt:MqttTransport",
}

DEFAULT_URL = "zmq://127.0.0.1:7650"
Payload = bytes | bytearray | memoryview | str | msgspec.Struct | dict[Any, Any] | list[Any]


@dataclass(slots=True)
class BusOptions:
    """Small set of knobs shared by every backend."""

    prefix: str = "robobus"
    max_payload: int = 1 << 20
    #: a will, or a callable asked for a fresh one before every connection (a presence)
    will: Will | Callable[[], Will] | None = None
    keepalive_s: float = 1.0
    request_timeout: float = 5.0
    report_errors: bool = True
    #: how this client encodes what it publishes: ``msgpack`` or ``json`` (``?codec=json`` on
    #: the URL wins); every client reads both (:mod:`robobus.schemas.codec`)
    codec: str = "msgpack"
    extra: dict[str, Any] = field(default_factory=dict)


def default_url() -> str:
    """``$ROBOBUS_URL`` or the embedded ZeroMQ default."""
    return os.environ.get("ROBOBUS_URL", DEFAULT_URL)


def encode(payload: Payload, codec: str = "msgpack") -> bytes:
    """Bytes pass through, text is UTF-8, structs and dicts become msgpack (or JSON)."""
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, bytearray | memoryview):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode()
    return msgspec.msgpack.encode(payload) if codec == "msgpack" else msgspec.json.encode(payload)


def codec_of(url: str, options: BusOptions) -> str:
    """The codec a client publishes with: the URL's ``codec=``, else ``options.codec``."""
    from robobus.schemas.codec import CODECS

    codec = parse_qs(urlsplit(url).query).get("codec", [options.codec])[-1]
    if codec not in CODECS:
        raise BusError(f"unknown codec {codec!r} in {url!r}; known: {', '.join(CODECS)}")
    return codec


def run(func: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run an async entry point on asyncio, with uvloop when it is installed.

    Every robobus process starts through this, so the loop choice is made in one place.
    """
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return anyio.run(func, *args, backend="asyncio")
    return anyio.run(func, *args, backend="asyncio", backend_options={"use_uvloop": True})


def load_backend(url: str) -> Transport:
    scheme = urlsplit(url).scheme
    if scheme not in BACKENDS:
        known = ", ".join(sorted(BACKENDS))
        raise UnknownSchemeError(f"unknown bus URL scheme {scheme!r} in {url!r}; known: {known}")
    module, _, cls = BACKENDS[scheme].partition(":")
    backend: Callable[[], Transport] = getattr(importlib.import_module(module), cls)
    return backend()
