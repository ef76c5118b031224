"""The bus as an AsyncAPI 3.0 document, generated from the contract in ``schemas/``.

Channels come from :data:`~robobus.schemas.contract.TOPIC_TYPES` (a ``+`` level becomes a
parameter: ``robobus/robots/{robot}/state``), payloads from msgspec's JSON Schema of each
message type, retain flags from ``RETAINED_TOPICS`` and the QoS of each publisher from
:data:`PUBLISH_QOS` below (a test checks it covers every topic). Limits that the agents enforce
outside the types (instruction text, task ids, payload size) are added as schema constraints.
``robobus schema --asyncapi`` prints it; ``docs/asyncapi.json`` is a copy checked to be current.
"""

from __future__ import annotations

from typing import Any

import msgspec

from robobus import __version__
from robobus.bus.api import BusOptions
from robobus.schemas import codec
from robobus.schemas.contract import (
    COMMAND_TOPICS,
    FIELD_SHAPES,
    MESSAGE_TYPES,
    RETAINED_TOPICS,
    TOPIC_TYPES,
)
from robobus.schemas.topics import DEFAULT_PREFIX

ASYNCAPI_VERSION = "3.0.0"
MQTT_BINDING = "0.2.0"
#: what the agents put on the wire by default; JSON objects are read on every topic too
CONTENT_TYPE = "application/msgpack"
MAX_PAYLOAD = BusOptions().max_payload
MAX_INSTRUCTION_CHARS: int = codec._MAX_INSTRUCTION_CHARS  # enforced by parse_instruction

#: QoS each topic is published with by its agents (docs/contracts.md: qos 1 for commands, task
#: statuses, feedback, registration and presence; 0 for state telemetry). Clients may use any.
#: A topic missing here is documented with :data:`DEFAULT_QOS`.
PUBLISH_QOS: dict[tuple[str, ...], int] = {
    ("instructions",): 1,
    ("errors",): 0,
    ("tasks", "+"): 1,
    ("robots", "+", "registration"): 1,
    ("robots", "+", "alive"): 1,
    ("robots", "+", "state"): 0,
    ("robots", "+", "feedback"): 1,
    ("robots", "+", "faults"): 1,
    ("robots", "+", "skills", "+"): 1,
    ("brain", "status"): 1,
    ("brain", "+", "status"): 1,
    ("instructions", "+"): 1,
    ("groups", "+", "instructions"): 1,
    ("groups", "+", "instructions", "+"): 1,
    ("groups", "+", "brain", "status"): 1,
    ("memory", "query"): 1,
    ("memory", "status"): 1,
    ("memory", "change"): 1,
    ("world", "events"): 1,
    ("world", "scene"): 1,
}

DEFAULT_QOS = 1
#: the name of the parameter a ``+`` level stands for, by the level before it
_PARAMETERS = {"tasks": "task_id", "robots": "robot", "skills": "skill"}
#: request topics and the messages their replies (on the requester's response topic) carry: an
#: instruction's task statuses (all but progress) and refusals (brain_agent/replies.py), the
#: memory agent's answers
REPLIES: dict[tuple[str, ...], tuple[str, ...]] = {("instructions",): ("TaskStatus", "ErrorReport"),
                                                   ("memory", "query"): ("QueryReply",),
                                                   ("memory", "change"): ("WorldReply",)}
_SCENE = ("world", "scene")


def address(levels: tuple[str, ...], prefix: str = DEFAULT_PREFIX) -> str:
    """``("robots", "+", "state")`` -> ``robobus/robots/{robot}/state``."""
    named = [f"{{{_parameter(levels, i)}}}" if level == "+" else level
             for i, level in enumerate(levels)]
    return "/".join([prefix, *named])


def _parameter(levels: tuple[str, ...], i: int) -> str:
    """The name of the ``+`` at ``levels[i]``: what the level before it lists."""
    before = levels[i - 1] if i else "level"
    return _PARAMETERS.get(before, before)


def channel_id(levels: tuple[str, ...]) -> str:
    """A stable identifier for a topic: ``robots.robot.state``, ``tasks.task_id``."""
    return ".".join(_parameter(levels, i) if level == "+" else level
                    for i, level in enumerate(levels))


def payload_schemas(ref_template: str = "#/components/schemas/{name}", *,
                    draft07: bool = False) -> dict[str, Any]:
    """JSON Schema of every message and field shape, refs as ``ref_template``, with the limits
    the agents enforce beyond the types. ``draft07``: tuples as draft-07 writes them (the
    AsyncAPI Schema Object's base), not 2020-12's ``prefixItems``."""
    types = [*MESSAGE_TYPES.values(), *FIELD_SHAPES]
    _, components = msgspec.json.schema_components(types, ref_template=ref_template)
    components = msgspec.json.decode(msgspec.json.encode(components))  # plain JSON data
    inst = components["Instruction"]["properties"]
    inst["text"].update(minLength=1, maxLength=MAX_INSTRUCTION_CHARS)
    inst["task_id"] = {"anyOf": [_task_id(), {"type": "null"}], "default": None,
                       "description": "a new task's id: one topic level, unique"}
    components["Scene"] = {"title": "Scene", "type": "object",
                           "description": "The scene the world was seeded from (places, objects)"}
    if draft07:
        _tuples_as_draft07(components)
    return dict(sorted(components.items()))


def _tuples_as_draft07(node: Any) -> None:
    """``{"prefixItems": [A, B], "items": false}`` -> ``{"items": [A, B], "additionalItems":
    false}``: under draft 7, ``items: false`` alone would allow only the empty array."""
    if isinstance(node, list):
        for item in node:
            _tuples_as_draft07(item)
    elif isinstance(node, dict):
        if "prefixItems" in node:
            node["items"] = node.pop("prefixItems")
            node["additionalItems"] = False
        for value in node.values():
            _tuples_as_draft07(value)


def _task_id() -> dict[str, Any]:
    """A new task's id as the brain checks it (brain_agent.agent._refuse_task_id)."""
    from robobus.brain_agent.agent import MAX_TASK_ID  # the brain's planners load slowly

    return {"type": "string", "minLength": 1, "maxLength": MAX_TASK_ID,
            "pattern": "^[^/+#\\u0000]+$"}


def _message(name: str, retained: bool) -> dict[str, Any]:
    schema_ref = {"$ref": f"#/components/schemas/{name}"}
    doc = (MESSAGE_TYPES[name].__doc__ or "").strip().split("\n\n")[0] if name in MESSAGE_TYPES \
        else "The scene the world was seeded from"
    return {"name": name, "title": name, "summary": " ".join(doc.split()),
            "contentType": CONTENT_TYPE, "payload": schema_ref,
            "bindings": {"mqtt": {"bindingVersion": MQTT_BINDING,
                                  "contentType": CONTENT_TYPE}},
            **({"x-retained": True} if retained else {})}


def _channel(levels: tuple[str, ...], message: str, prefix: str) -> dict[str, Any]:
    params = {_parameter(levels, i): {"description": f"one topic level: the {_parameter(levels, i)}"}
              for i, level in enumerate(levels) if level == "+"}
    ch: dict[str, Any] = {"address": address(levels, prefix), "messages": {message: {
        "$ref": f"#/components/messages/{message}"}}}
    if params:
        ch["parameters"] = params
    return ch


def _operation(levels: tuple[str, ...], cid: str, message: str) -> dict[str, Any]:
    """What the fleet does on a channel: it receives commands and requests, sends the rest."""
    command = levels in COMMAND_TOPICS or levels == ("memory", "query")
    op: dict[str, Any] = {
        "action": "receive" if command else "send",
        "channel": {"$ref": f"#/channels/{cid}"},
        "messages": [{"$ref": f"#/channels/{cid}/messages/{message}"}],
        "bindings": {"mqtt": {"bindingVersion": MQTT_BINDING, "qos": PUBLISH_QOS.get(levels, DEFAULT_QOS),
                              "retain": levels in RETAINED_TOPICS}},
    }
    reply = REPLIES.get(levels)
    if reply is not None:
        op["reply"] = {
            "address": {"location": "$message.header#/responseTopic",
                        "description": "the request's MQTT 5 Response Topic (ZeroMQ: its inbox)"},
            "channel": {"$ref": f"#/channels/{cid}.reply"},
            "messages": [{"$ref": f"#/channels/{cid}.reply/messages/{name}"} for name in reply]}
    return op


def topic_table(prefix: str = DEFAULT_PREFIX) -> dict[str, dict[str, Any]]:
    """Topic address -> its message name, retain flag and publishers' QoS."""
    return {address(levels, prefix): {"message": name, "retained": levels in RETAINED_TOPICS,
                                      "qos": PUBLISH_QOS.get(levels, DEFAULT_QOS),
                                      **({"reply": list(REPLIES[levels])} if levels in REPLIES else {})}
            for levels, name in _topics().items()}


def _topics() -> dict[tuple[str, ...], str]:
    """Every topic of the contract -> its message name (the retained scene included)."""
    table = {levels: type_.__name__ for levels, type_ in TOPIC_TYPES.items()}
    table[_SCENE] = "Scene"
    return table


def document(prefix: str = DEFAULT_PREFIX) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the bus under ``prefix``, as plain JSON-ready data."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for levels, name in _topics().items():
        cid = channel_id(levels)
        channels[cid] = _channel(levels, name, prefix)
        messages[name] = _message(name, levels in RETAINED_TOPICS)
        operations[f"on.{cid}"] = _operation(levels, cid, name)
        for reply in REPLIES.get(levels, ()):
            channels.setdefault(f"{cid}.reply", {
                "address": None, "description": "the requester's response topic",
                "messages": {}})["messages"][reply] = {"$ref": f"#/components/messages/{reply}"}
            messages.setdefault(reply, _message(reply, False))
    for name in MESSAGE_TYPES:  # carried inside replies (plans, snapshots, task records)
        messages.setdefault(name, _message(name, False))
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "id": "urn:robobus:bus",
        "info": _info(prefix),
        "defaultContentType": CONTENT_TYPE,
        "servers": _servers(prefix),
        "channels": channels,
        "operations": operations,
        "components": {"messages": dict(sorted(messages.items())),
                       "schemas": payload_schemas(draft07=True)},
    }


def _info(prefix: str) -> dict[str, Any]:
    return {
        "title": "robobus",
        "version": __version__,
        "description": (
            "The public topics of a robobus fleet (brain, edge and memory agents), seen from "
            "the fleet: `receive` operations are what a client may send it, `send` what it "
            "publishes. Channel addresses show the default prefix `robobus`; a deployment may "
            "use another (the server variable `prefix`). Payloads are msgpack maps (or JSON "
            "objects) with the fields of their schema; instructions may also be plain UTF-8 "
            f"text. Every payload is at most {MAX_PAYLOAD} bytes; retained topics are marked "
            "by the MQTT operation binding `retain` and the message extension `x-retained`."),
        "license": {"name": "See the robobus repository"},
        "x-max-payload-bytes": MAX_PAYLOAD,
    }


def _servers(prefix: str) -> dict[str, Any]:
    return {"mosquitto": {
        "host": "{host}:{port}",
        "pathname": "/{prefix}",
        "protocol": "mqtt",
        "protocolVersion": "5",
        "description": "Any MQTT 5 broker (robobus also runs on its own ZeroMQ hub). The "
                       "pathname is the topic prefix every channel address starts with.",
        "variables": {
            "host": {"default": "127.0.0.1"},
            "port": {"default": "1883"},
            "prefix": {"default": prefix,
                       "description": "topic prefix (--prefix, ROBOBUS_PREFIX)"},
        },
    }}
