"""JSON Schemas and payloads for MCAP files that Foxglove and Lichtblick open.

Their JSON Schema reader (``parseJsonSchema`` in the ``mcap-support`` package of foxglove/studio
and Lichtblick) turns a channel's schema into message definitions and refuses what it cannot
map: the root and every nested object must say ``"type": "object"`` and list ``properties``;
every property needs one ``type`` (``boolean``, ``string``, ``number``, ``integer``, ``object``,
``array``; not ``null``, not a list of types); array ``items`` need one of those types too; it
follows no ``$ref``. msgspec's schemas use ``$ref``, ``anyOf`` with ``null`` for optional
fields, untyped enums and tuple ``prefixItems``, so :func:`foxglove_schema` rewrites them:
references inlined, an optional field typed as its value (absent when unset, see
:func:`foxglove_payload`), enums typed, free-form maps as objects without known properties.

Times: every integer field ``X_ns`` (wall-clock nanoseconds) gains a sibling ``X`` as
``{"sec", "nsec"}``, the shape Foxglove treats as a time (plots, message paths).
"""

from __future__ import annotations

import base64
from typing import Any

import msgspec

_SCALARS = ("boolean", "string", "number", "integer")
_KINDS = (*_SCALARS, "object", "array")
TIME_SCHEMA: dict[str, Any] = {
    "type": "object", "title": "time",
    "description": "wall-clock time (from the X_ns field beside it)",
    "properties": {"sec": {"type": "integer", "minimum": 0},
                   "nsec": {"type": "integer", "minimum": 0, "maximum": 999_999_999}},
}
#: the schema of a payload no contract type describes: a map as it is, text or raw bytes wrapped
GENERIC: dict[str, Any] = {
    "type": "object", "description": "robobus payload (a map, text or raw bytes)",
    "properties": {"text": {"type": "string"},
                   "raw_base64": {"type": "string", "contentEncoding": "base64"}},
}


def foxglove_schema(type_: type[msgspec.Struct] | None) -> dict[str, Any]:
    """The JSON Schema of ``type_`` (None: :data:`GENERIC`) in the form Foxglove reads."""
    if type_ is None:
        return GENERIC
    raw = msgspec.json.schema(type_)
    defs = raw.pop("$defs", {})
    return _object(_resolve(raw, defs), defs)


def _resolve(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return _resolve(defs[ref.rsplit("/", 1)[-1]], defs)
    return schema


def _object(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in schema.items() if k in ("title", "description")}
    props: dict[str, Any] = {}
    for name, prop in (schema.get("properties") or {}).items():
        props[name] = _field(prop, defs)
        if name.endswith("_ns") and props[name]["type"] == "integer" \
                and name[:-3] not in (schema.get("properties") or {}):
            props[name[:-3]] = TIME_SCHEMA
    return {**out, "type": "object", "properties": props}


def _field(prop: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """One property with exactly one Foxglove-readable type."""
    prop = _resolve(prop, defs)
    options = [_resolve(p, defs) for p in prop.get("anyOf", ())]
    present = [p for p in options if p.get("type") != "null"]
    if len(present) == 1:  # an optional field: typed as its value, absent when unset
        merged = {**present[0], **{k: v for k, v in prop.items() if k == "description"}}
        return _field(merged, defs)
    kind = prop.get("type")
    if kind is None and "enum" in prop:
        kind = _enum_type(prop["enum"])
    if kind == "object":
        return _object(prop, defs)
    if kind == "array":
        return _array(prop, defs)
    if kind in _SCALARS:
        keep = ("description", "enum", "minimum", "maximum", "maxLength", "minLength")
        return {"type": kind, **{k: v for k, v in prop.items() if k in keep}}
    # anything (``Any``) or a union of several types: shown as it comes, described as a map
    return {"type": "object", "properties": {},
            "description": "any value (shown as it is; not typed for plots)"}


def _enum_type(values: list[Any]) -> str:
    kinds = {type(v) for v in values}
    if kinds <= {str}:
        return "string"
    if kinds <= {int}:
        return "integer"
    return "number" if kinds <= {int, float} else "string"


def _array(prop: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    items = prop.get("items")
    if not isinstance(items, dict) and prop.get("prefixItems"):
        items = prop["prefixItems"][0]  # a tuple (a 2-D position): its first element's type
    item = _field(items, defs) if isinstance(items, dict) else {"type": "string"}
    if item["type"] == "array":  # arrays of arrays have no Foxglove form: rows as objects
        item = {"type": "object", "properties": {}}
    return {"type": "array", "items": item,
            **{k: v for k, v in prop.items() if k in ("description", "minItems", "maxItems")}}


def payload_object(payload: bytes) -> dict[str, Any]:
    """Any payload as a JSON-ready object: a msgpack map or JSON object as it is, UTF-8 text as
    ``{"text": ...}``, other bytes as ``{"raw_base64": ...}``."""
    obj: Any = None
    head = payload.lstrip()[:1]
    try:
        obj = msgspec.json.decode(payload) if head == b"{" else msgspec.msgpack.decode(payload)
    except (msgspec.DecodeError, TypeError, RecursionError):
        pass  # not a map (or absurdly nested): shown as text or raw bytes below
    if isinstance(obj, dict):
        return obj
    try:
        return {"text": payload.decode("utf-8")}
    except UnicodeDecodeError:
        return {"raw_base64": base64.b64encode(payload).decode()}


def foxglove_payload(payload: bytes) -> bytes:
    """The JSON of an MCAP message: :func:`payload_object` without null values (an unset
    optional field is absent) and with ``X: {sec, nsec}`` beside every integer ``X_ns``."""
    return msgspec.json.encode(_with_times(payload_object(payload)))


def _with_times(value: Any) -> Any:
    if isinstance(value, list):
        return [_with_times(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {str(k): _with_times(v) for k, v in value.items() if v is not None}
    for key, v in list(out.items()):
        if key.endswith("_ns") and type(v) is int and v >= 0 and key[:-3] not in out:
            out[key[:-3]] = {"sec": v // 1_000_000_000, "nsec": v % 1_000_000_000}
    return out
