"""How ``robobus topic`` reads and prints payloads it did not write: msgpack, JSON, text, bytes."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

import msgspec
import yaml

from robobus.bus.message import Message

#: what the agents accept (BusOptions.max_payload); a bigger message is printed truncated
LIMIT = 1 << 20
#: characters of a message over :data:`LIMIT` that ``echo`` prints
SHOWN = 2000


class Format(StrEnum):
    json = "json"
    yaml = "yaml"


def _plain(obj: Any) -> Any:
    """msgpack data -> JSON/YAML-safe data (bytes become hex strings)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, bytes | bytearray | memoryview):
        return bytes(obj).hex()
    if isinstance(obj, msgspec.msgpack.Ext):
        return {"ext": obj.code, "data": bytes(obj.data).hex()}
    return obj


def _text(payload: bytes) -> str | None:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if text.isprintable() or all(c.isprintable() or c in "\r\n\t" for c in text) \
        else None


def decode_payload(payload: bytes) -> tuple[str, Any]:
    """Classify a payload: ("msgpack", data), ("json", data), ("text", str) or ("hex", str).

    Plain ASCII text is also valid msgpack when it is one character long (a fixint), so a
    payload only counts as msgpack when it decodes to a map or array, or is not text at all.
    Text that parses as a JSON object or array is JSON.
    """
    text = _text(payload)
    if text is not None and text.lstrip()[:1] in ("{", "["):
        try:
            return "json", json.loads(text)
        except ValueError:
            pass
    try:
        data = msgspec.msgpack.decode(payload)
    except (msgspec.DecodeError, ValueError, RecursionError):
        data = msgspec.UNSET
    if data is not msgspec.UNSET and (isinstance(data, dict | list) or text is None):
        return "msgpack", _plain(data)
    if text is not None:
        return "text", text
    return "hex", payload.hex()


def field(value: Any, path: str) -> Any:
    """``value``'s field at a dotted ``path`` (``pose.x``, ``steps.0.robot``); KeyError if none."""
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.lstrip("-").isdigit() and -len(value) <= int(part) < len(value):
            value = value[int(part)]
        else:
            raise KeyError(part)
    return value


def render(msg: Message, fmt: Format, verbose: bool, path: str | None = None) -> str | None:
    """The text ``echo`` prints for ``msg`` (None: it has no field ``path``).

    JSON payloads print as they came (YAML: as YAML); a message over :data:`LIMIT` bytes is
    cut to :data:`SHOWN` characters and says so."""
    kind, value = decode_payload(msg.payload)
    if path is not None:
        if kind not in ("msgpack", "json"):
            return None
        try:
            value = field(value, path)
        except KeyError:
            return None
        kind = "msgpack"  # re-rendered as data
    if fmt is Format.yaml:
        body = yaml.safe_dump(value, sort_keys=False, allow_unicode=True).rstrip() \
            if kind in ("msgpack", "json") else (value if kind == "text" else f"!!hex {value}")
    elif kind == "msgpack":
        body = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    elif kind == "json":
        body = msg.payload.decode().strip()
    else:
        body = value
    body = _cut(body, len(msg.payload))
    if fmt is Format.yaml:
        return f"# {msg.topic}\n{body}\n---" if verbose else f"{body}\n---"
    return f"{msg.topic} {body}" if verbose else body


def _cut(body: str, size: int) -> str:
    if size <= LIMIT or len(body) <= SHOWN:
        return body
    return f"{body[:SHOWN]}... [truncated: {size} bytes, over the {LIMIT}-byte limit]"


def sent_ns(payload: bytes) -> int | None:
    """The ``ts_ns`` field of a msgpack or JSON map, else None."""
    try:
        data = json.loads(payload) if payload.lstrip()[:1] == b"{" \
            else msgspec.msgpack.decode(payload)
    except (ValueError, msgspec.DecodeError, RecursionError):
        return None
    ts = data.get("ts_ns") if isinstance(data, dict) else None
    return ts if isinstance(ts, int) and not isinstance(ts, bool) else None


def encoding(msg: Message) -> str:
    """What a payload is: its MQTT 5 Content Type when it has one, else what it looks like."""
    return getattr(msg, "content_type", None) or sniff(msg.payload)


def sniff(payload: bytes) -> str:
    """``msgpack``, ``json``, ``text``, ``bytes`` or ``empty``, from the first bytes mostly."""
    if not payload:
        return "empty"
    if 0x80 <= payload[0] <= 0x9F or payload[0] in (0xDC, 0xDD, 0xDE, 0xDF):
        return "msgpack"  # a map or an array
    if payload.lstrip()[:1] in (b"{", b"["):
        return "json"
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes"
    return "text"
