"""Options of the ``mqtt://`` and ``mqtts://`` backends, read from the URL query and environment.

Example: ``mqtt://127.0.0.1:1883?session=persistent&client_id=memory&expiry=3600``.
Credentials never come from the URL (it shows up in process lists and logs): they come from
``ROBOBUS_MQTT_USERNAME`` plus ``ROBOBUS_MQTT_PASSWORD`` or ``ROBOBUS_MQTT_PASSWORD_FILE``.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from robobus.bus.errors import BusError


class MqttOptionError(BusError, ValueError):
    """The MQTT URL or its credentials are malformed."""


_KNOWN = {
    "session", "client_id", "expiry", "keepalive", "connect_timeout", "reconnect",
    "reconnect_max", "publish_wait", "ack_timeout", "inflight", "receive_max", "max_pending",
    "park_s", "ca", "cert", "key", "insecure",
    "codec",  # read by the Bus (robobus.bus.options.codec_of): the encoding this client publishes
}


@dataclass(frozen=True, slots=True)
class Credentials:
    """Username and password; ``repr`` never shows the password."""

    username: str
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class MqttOptions:
    """Everything the MQTT transport needs besides the :class:`TransportConfig`."""

    host: str
    port: int
    tls: bool
    client_id: str
    persistent: bool = False
    expiry_s: int = 3600
    keepalive_s: int = 1
    connect_timeout_s: float = 3.0
    reconnect: bool = True
    reconnect_max_s: float = 5.0
    publish_wait_s: float = 10.0
    ack_timeout_s: float = 10.0
    inflight: int = 1000
    receive_max: int = 1000
    max_pending: int = 20_000
    park_s: float = 10.0
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    insecure: bool = False
    credentials: Credentials | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        """``host:port`` for messages; never includes credentials."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def session_client_id(client_id: str, credentials: Credentials | None) -> str:
    """The MQTT client id: ``client_id`` plus, for an account with a password, a tag only that
    account can compute (issue 13).

    A fixed id (the memory agent's persistent ``robobus-memory``) let any authenticated account
    connect with it, take the session over and drop its queued messages; the other agents' ids
    are readable in their reply-inbox topics. The tag is an HMAC of the account and the id keyed
    by the account's password: stable across restarts (a persistent session survives them),
    unknown to every other account. Mosquitto's ``use_username_as_clientid``
    would do it too, but would make two clients of one account (two operator tools, a standby
    brain beside the active one) take each other's connection over.
    """
    if credentials is None or not credentials.password:
        return client_id
    tag = hmac.new(credentials.password.encode(), f"{credentials.username}\0{client_id}".encode(),
                   hashlib.sha256).hexdigest()[:16]
    return f"{client_id}-{tag}"


#: The smallest keepalive asked of the broker unless the URL sets ``keepalive``. At 1 s a loop
#: stall of 0.5 s (a loaded 2-core machine, a test blocking its loop) cost the connection and
#: published the client's will; at 2 s a hung client is declared dead in 3 to 4 s.
MIN_KEEPALIVE_S = 2


def parse(url: str, client_id: str, keepalive_s: float) -> MqttOptions:
    """Parse ``url``; ``client_id`` and ``keepalive_s`` come from the bus's TransportConfig."""
    parts = urlsplit(url)
    if parts.password is not None or parts.username is not None:
        raise MqttOptionError(
            "credentials in the bus URL are refused: set ROBOBUS_MQTT_USERNAME and "
            "ROBOBUS_MQTT_PASSWORD (or ROBOBUS_MQTT_PASSWORD_FILE) instead"
        )
    tls = parts.scheme == "mqtts"
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    unknown = sorted(set(query) - _KNOWN)
    if unknown:
        raise MqttOptionError(f"unknown MQTT URL option(s) {unknown}; known: {sorted(_KNOWN)}")
    session = query.get("session", "clean")
    if session not in ("clean", "persistent"):
        raise MqttOptionError(f"session={session!r}: use 'clean' or 'persistent'")
    persistent = session == "persistent"
    # A persistent session needs an id that survives restarts: drop the bus's random suffix.
    default_id = client_id.rsplit("-", 1)[0] if persistent else client_id
    credentials = credentials_from_env()
    chosen = session_client_id(query.get("client_id", default_id), credentials)
    try:
        return MqttOptions(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or (8883 if tls else 1883),
            tls=tls,
            client_id=chosen,
            persistent=persistent,
            expiry_s=int(query.get("expiry", 3600)),
            # As configured, in MQTT's whole seconds, at least MIN_KEEPALIVE_S: the broker
            # declares a silent client dead after 1.5 keepalives (rounding up to 5 s left a
            # hung edge online for 7.5 s, issue 12), and paho pings only after a whole
            # keepalive of silence, so the event loop may stall for half a keepalive at most.
            keepalive_s=int(query.get("keepalive", max(MIN_KEEPALIVE_S, math.ceil(keepalive_s)))),
            connect_timeout_s=float(query.get("connect_timeout", 3.0)),
            reconnect=_flag(query.get("reconnect", "1")),
            reconnect_max_s=float(query.get("reconnect_max", 5.0)),
            publish_wait_s=float(query.get("publish_wait", 10.0)),
            ack_timeout_s=float(query.get("ack_timeout", 10.0)),
            inflight=_positive(query, "inflight", 1000, 65_000),
            receive_max=_positive(query, "receive_max", 1000, 65_535),
            max_pending=_positive(query, "max_pending", 20_000, 10**7),
            park_s=float(query.get("park_s", 10.0)),
            ca=query.get("ca"),
            cert=query.get("cert"),
            key=query.get("key"),
            insecure=_flag(query.get("insecure", "0")),
            credentials=credentials,
        )
    except ValueError as exc:
        if isinstance(exc, MqttOptionError):
            raise
        raise MqttOptionError(f"bad MQTT URL option in {url!r}: {exc}") from exc


def _flag(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected a boolean, got {value!r}")


def _positive(query: dict[str, str], name: str, default: int, limit: int) -> int:
    value = int(query.get(name, default))
    if not 1 <= value <= limit:
        raise ValueError(f"{name}={value} must be between 1 and {limit}")
    return value


def credentials_from_env(env: Mapping[str, str] | None = None) -> Credentials | None:
    """Read ``ROBOBUS_MQTT_USERNAME`` / ``_PASSWORD`` / ``_PASSWORD_FILE`` (file wins)."""
    env = os.environ if env is None else env
    username = env.get("ROBOBUS_MQTT_USERNAME")
    password = env.get("ROBOBUS_MQTT_PASSWORD")
    path = env.get("ROBOBUS_MQTT_PASSWORD_FILE")
    if path:
        try:
            password = Path(path).read_text().rstrip("\r\n")
        except OSError as exc:
            raise MqttOptionError(f"cannot read ROBOBUS_MQTT_PASSWORD_FILE {path!r}: "
                                  f"{exc.strerror}") from exc
    if username is None:
        if password is not None:
            raise MqttOptionError("an MQTT password is set but ROBOBUS_MQTT_USERNAME is not")
        return None
    return Credentials(username, password)
