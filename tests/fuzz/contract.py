"""Mutations of valid messages for every topic of the contract (``schemas.contract.TOPIC_TYPES``).

A topic added to the contract is fuzzed without an edit here: :func:`valid_sample` builds a
valid message of its type from the type itself (``msgspec.inspect``), and :func:`mutated`
derives hostile variants from it, in msgpack or JSON: a field's type swapped, integers at and
past their bounds (64-bit edges, beyond 64 bits: JSON only), NaN and infinities, lone surrogates
(JSON escapes; invalid UTF-8 in msgpack), deep nesting inside a field, required fields dropped,
unknown fields, strings past the payload limit. :class:`ContractJudge` extends the corpus
oracle to the topics no agent decodes (``errors``, ``brain/status``, ``memory/status``): those
must be recorded, never crash anything.

Loaded by path (tests/fuzz is not a package), like corpus.py.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import msgspec
import msgspec.inspect as mi
from hypothesis import strategies as st

from robobus.memory_store.views import Views
from robobus.schemas.contract import TOPIC_TYPES

MAX_PAYLOAD = 1 << 20
#: ``ROBOBUS_FUZZ_SCALE=N`` multiplies every fuzz budget (a long run); 1 in CI
SCALE = max(1, int(os.environ.get("ROBOBUS_FUZZ_SCALE", "1")))
#: topics that agents only record (or read without acting on a refusal): verdict ``accept``
RECORDED_ONLY = {("errors",), ("brain", "status"), ("memory", "status")}
LEVELS = {"+": "g1"}  # the wildcard level of a topic pattern, filled in per draw
INT_EDGES = [-1, 0, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, -(2**63), -(2**63) - 1]
HUGE_INTS = [2**64, -(2**64), 10**40]      # beyond msgpack: JSON only
FLOATS = [math.nan, math.inf, -math.inf, 1e308, -0.0, 5e-324]
SURROGATE = "\ud800"


def _value(t: mi.Type, depth: int = 0) -> Any:
    """A valid value of ``t`` (the shortest one that fits its constraints)."""
    if isinstance(t, mi.StructType):
        return _struct(t, depth + 1)
    if isinstance(t, mi.UnionType):
        kinds = [x for x in t.types if not isinstance(x, mi.NoneType)]
        return _value(kinds[0], depth) if kinds and depth < 4 else None
    if isinstance(t, mi.LiteralType):
        return t.values[0]
    if isinstance(t, mi.StrType):
        return "x" * max(1, t.min_length or 0)
    if isinstance(t, mi.BoolType):
        return True
    if isinstance(t, mi.IntType):
        return max(1, t.ge or 0, (t.gt or 0) + 1) if t.le is None or t.le >= 1 else t.le
    if isinstance(t, mi.FloatType):
        return 1.0 if t.le is None or t.le >= 1.0 else (t.ge if t.ge is not None else 0.0)
    if isinstance(t, mi.ListType | mi.SetType | mi.VarTupleType):
        return [_value(t.item_type, depth + 1)] * (t.min_length or 0)
    if isinstance(t, mi.TupleType):
        return [_value(x, depth + 1) for x in t.item_types]
    if isinstance(t, mi.DictType):
        return {}
    return None


def _struct(info: mi.StructType, depth: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in info.fields:
        if f.required:
            out[f.encode_name] = _value(f.type, depth)
    return out


def valid_sample(type_: type[msgspec.Struct]) -> dict[str, Any]:
    """A plain dict that decodes as ``type_`` (checked)."""
    info = mi.type_info(type_)
    assert isinstance(info, mi.StructType), type_
    sample = _struct(info, 0)
    msgspec.convert(sample, type_)  # raises if the type has a constraint this does not meet
    return sample


def field_names(type_: type[msgspec.Struct]) -> list[str]:
    info = mi.type_info(type_)
    assert isinstance(info, mi.StructType)
    return [f.encode_name for f in info.fields]


def concrete(pattern: tuple[str, ...], prefix: str, level: str = "g1") -> str:
    """A topic for a contract pattern: each ``+`` becomes ``level``."""
    return "/".join([prefix, *(level if p == "+" else p for p in pattern)])


# -- mutations ------------------------------------------------------------------------------
def _junk() -> st.SearchStrategy[Any]:
    leaves = st.one_of(st.none(), st.booleans(), st.sampled_from(INT_EDGES),
                       st.sampled_from(FLOATS), st.text(max_size=8), st.binary(max_size=8),
                       st.just(SURROGATE), st.just("x\x00y"))
    return st.recursive(leaves, lambda kids: st.lists(kids, max_size=3)
                        | st.dictionaries(st.text(max_size=4), kids, max_size=3), max_leaves=5)


class Deep:
    """A marker for a field nested ``depth`` levels deep (spliced into the encoded bytes)."""

    def __init__(self, depth: int) -> None:
        self.depth = depth


@st.composite
def mutated(draw: st.DrawFn, type_: type[msgspec.Struct],
            overrides: dict[str, Any] | None = None) -> tuple[bytes, str]:
    """(payload, what was done) for one hostile variant of a valid ``type_``; ``overrides``
    set fields of the valid base (the robot a robot topic names, say) where ``type_`` has them."""
    base = valid_sample(type_)
    names = field_names(type_)
    base.update({k: v for k, v in (overrides or {}).items() if k in names})
    msg = dict(base)
    how = draw(st.sampled_from(["swap", "int_edge", "huge_int", "float", "surrogate", "deep",
                                "drop", "unknown", "oversize", "valid"]))
    key = draw(st.sampled_from(names))
    if how == "swap":
        msg[key] = draw(_junk())
    elif how == "int_edge":
        msg[key] = draw(st.sampled_from(INT_EDGES))
    elif how == "huge_int":
        msg[key] = draw(st.sampled_from(HUGE_INTS))
    elif how == "float":
        msg[key] = draw(st.sampled_from(FLOATS))
    elif how == "surrogate":
        msg[key] = draw(st.sampled_from([SURROGATE, "a" + SURROGATE + "b", [SURROGATE]]))
    elif how == "deep":
        msg[key] = Deep(draw(st.sampled_from([100, 2_000, 50_000])))
    elif how == "drop" and base:
        msg.pop(draw(st.sampled_from(sorted(base))), None)
    elif how == "unknown":
        msg[draw(st.text(min_size=1, max_size=6))] = draw(_junk())
    elif how == "oversize":
        msg[key] = "z" * (MAX_PAYLOAD + draw(st.integers(1, 1000)))
    encoding = draw(st.sampled_from(["msgpack", "json"]))
    return encode(msg, encoding), f"{how}:{key}:{encoding}"


def encode(msg: dict[str, Any], encoding: str) -> bytes:
    """``msg`` as msgpack or JSON, whatever it holds: huge ints go to JSON, surrogates go out as
    JSON escapes or as invalid UTF-8 in a msgpack str, a :class:`Deep` is spliced in raw."""
    deep = {k: v for k, v in msg.items() if isinstance(v, Deep)}
    plain = {k: v for k, v in msg.items() if k not in deep}
    if encoding == "msgpack" and not _has_huge(plain):
        body = _msgpack(plain)
        for key, d in deep.items():  # bump the map's size and append key + nesting
            body = _append_msgpack(body, key, b"\x91" * d.depth + b"\x01")
        return body
    text = json.dumps(_jsonable(plain), allow_nan=True, ensure_ascii=True)
    for key, d in deep.items():
        inner = "[" * d.depth + "1" + "]" * d.depth
        text = text[:-1] + ("," if plain else "") + json.dumps(key) + ":" + inner + "}"
    return text.encode()


def _has_huge(v: Any) -> bool:
    if isinstance(v, int) and not isinstance(v, bool):
        return not -(2**63) <= v < 2**64
    if isinstance(v, dict):
        return any(_has_huge(x) for x in v.values())
    if isinstance(v, list):
        return any(_has_huge(x) for x in v)
    return False


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("latin-1")
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    return v


def _msgpack(v: Any) -> bytes:
    """msgpack that may carry lone surrogates (as the invalid UTF-8 a C client could send)."""
    try:
        return msgspec.msgpack.encode(v)
    except UnicodeEncodeError:
        marker = "\ue000"  # private use: swapped for the raw surrogate bytes after encoding
        raw = msgspec.msgpack.encode(_mark(v, marker))
        return raw.replace(marker.encode(), SURROGATE.encode("utf-8", "surrogatepass"))


def _mark(v: Any, marker: str) -> Any:
    if isinstance(v, str):
        return v.replace(SURROGATE, marker).encode("utf-8", "replace").decode()
    if isinstance(v, dict):
        return {_mark(k, marker): _mark(x, marker) for k, x in v.items()}
    if isinstance(v, list):
        return [_mark(x, marker) for x in v]
    return v


def _append_msgpack(body: bytes, key: str, value: bytes) -> bytes:
    head = body[0]
    if 0x80 <= head <= 0x8E:
        return bytes([head + 1]) + body[1:] + msgspec.msgpack.encode(key) + value
    if head == 0xDE:
        n = int.from_bytes(body[1:3], "big") + 1
        return b"\xde" + n.to_bytes(2, "big") + body[3:] + msgspec.msgpack.encode(key) + value
    return body  # 15+ fields in a fixmap never happens in our types


def topics_to_fuzz() -> dict[tuple[str, ...], type[msgspec.Struct]]:
    """Every topic of the contract (each one is subscribed by the memory agent at least)."""
    return dict(TOPIC_TYPES)


#: Crashers the fuzz found, kept as regression cases (pattern, payload, what it killed).
REGRESSIONS: list[tuple[tuple[str, ...], bytes, str]] = [
    # a wrong-typed field, then deep nesting: RecursionError out of decode_as (schemas/codec.py),
    # which ended the memory agent's views on any robot topic
    (("robots", "+", "alive"), b"\x82\xa5robot\x05\xa1z" + b"\x91" * 50_000 + b"\x01",
     "memory views: RecursionError"),
    (("robots", "+", "state"), b'{"robot": 5, "z": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
     "memory views: RecursionError (JSON)"),
    # the same with the rest truncated: msgspec.DecodeError instead of robobus' DecodeError
    (("robots", "+", "alive"), msgspec.msgpack.encode({"robot": 5, "online": True})[:-1],
     "decode_as: msgspec.DecodeError"),
    # an integer past 64 bits in JSON, in a field without bounds: the views kept it and the
    # memory agent's committer died encoding the record, again after every restart
    (("robots", "+", "state"), b'{"robot": "g1", "ts_ns": 18446744073709551616}',
     "memory committer: OverflowError"),
    # a lone surrogate where a number goes, read leniently: UnicodeEncodeError out of convert
    (("robots", "+", "faults"), b'{"skill": "g1", "times": "\\ud800"}',
     "decode_lenient: UnicodeEncodeError"),
]


def roundtrip(value: Any) -> None:
    """What an agent accepted must encode back (the brain died encoding its own status)."""
    data = msgspec.msgpack.encode(value)
    msgspec.msgpack.decode(data, type=type(value))


def seeded_views() -> Views:
    """The memory agent's views over a one-robot, one-place scene, as the handlers get them."""
    views = Views()
    views.seed({"places": {"kitchenTable": {"position": [2.0, 1.0]}},
                "objects": {"apple": {"kind": "fruit", "at": "kitchenTable"}}}, ["g1"])
    return views
