"""The rules of the Foxglove/Lichtblick JSON Schema reader, as a checker for MCAP exports.

Written from the reader's behaviour (``parseJsonSchema`` in ``packages/mcap-support`` of
foxglove/studio and Lichtblick): it fails on a schema whose root or nested object lacks
``"type": "object"`` or ``properties``, on a property whose ``type`` is missing, ``null``, a list
or unknown, on array items without one of the scalar or object types, on a ``contentEncoding``
other than base64, and it follows no ``$ref`` (a ``oneOf`` passes only as numeric constants).
"""

from __future__ import annotations

from typing import Any

SCALARS = {"boolean": (bool,), "string": (str,), "number": (int, float), "integer": (int,)}


def schema_problems(schema: Any, path: str = "$") -> list[str]:
    """Why the reader would refuse ``schema`` (an object schema); empty when it reads it."""
    if not isinstance(schema, dict) or schema.get("type") != "object":
        return [f'{path}: expected "type": "object", got {_type(schema)}']
    props = schema.get("properties")
    if not isinstance(props, dict):
        return [f"{path}: an object without properties"]
    problems: list[str] = []
    for name, prop in props.items():
        problems += _property(prop, f"{path}.{name}")
    return problems


def _type(schema: Any) -> str:
    return repr(schema.get("type")) if isinstance(schema, dict) else repr(schema)


def _property(prop: Any, path: str) -> list[str]:
    if not isinstance(prop, dict):
        return [f"{path}: not a schema"]
    if "oneOf" in prop:
        ok = all(isinstance(alt, dict) and isinstance(alt.get("const"), int | float)
                 for alt in prop["oneOf"])
        return [] if ok else [f"{path}: oneOf alternatives must be numeric constants"]
    kind = prop.get("type")
    if kind == "string":
        enc = prop.get("contentEncoding")
        return [] if enc in (None, "base64") else [f"{path}: contentEncoding {enc!r}"]
    if kind in SCALARS:
        return []
    if kind == "object":
        return schema_problems(prop, path)
    if kind == "array":
        item = prop.get("items")
        if not isinstance(item, dict) or item.get("type") not in (*SCALARS, "object"):
            return [f"{path}[]: array items of type {_type(item)}"]
        if item["type"] == "string" and item.get("contentEncoding") is not None:
            return [f"{path}[]: contentEncoding on array items"]
        return schema_problems(item, f"{path}[]") if item["type"] == "object" else []
    return [f"{path}: unsupported type {_type(prop)}"]


def value_problems(schema: dict[str, Any], value: Any, path: str = "$") -> list[str]:
    """Where a decoded message does not fit the datatypes its schema declares (absent fields
    are fine; a field the schema does not list is shown raw, also fine)."""
    if not isinstance(value, dict):
        return [f"{path}: not an object"]
    problems: list[str] = []
    for name, prop in schema.get("properties", {}).items():
        if name in value:
            problems += _value(prop, value[name], f"{path}.{name}")
    return problems


def _value(prop: dict[str, Any], v: Any, path: str) -> list[str]:
    kind = prop.get("type")
    if kind in SCALARS:
        fits = isinstance(v, SCALARS[kind]) and (kind == "boolean" or not isinstance(v, bool))
        return [] if fits else [f"{path}: {v!r} is not {kind}"]
    if kind == "object":
        return value_problems(prop, v, path)
    if not isinstance(v, list):
        return [f"{path}: {v!r} is not an array"]
    return [p for i, item in enumerate(v) for p in _value(prop["items"], item, f"{path}[{i}]")]
