"""The AsyncAPI document of the bus: generated from schemas/, current in docs/, and valid for
the AsyncAPI project's own parser (npm ``@asyncapi/parser``, run by node)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from robobus import testing
from robobus.asyncapi import MAX_INSTRUCTION_CHARS, document, topic_table
from robobus.schemas.codec import parse_instruction
from robobus.schemas.contract import FIELD_SHAPES, MESSAGE_TYPES, RETAINED_TOPICS, TOPIC_TYPES
from robobus.schemas.errors import DecodeError

DOCS = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.json"


def _cli(*args: str) -> str:
    return subprocess.run(testing.robobus_cmd(*args), capture_output=True, text=True, check=True,
                          timeout=60).stdout


def test_the_docs_copy_is_current() -> None:
    assert json.loads(DOCS.read_text()) == document(), \
        "docs/asyncapi.json is stale: robobus schema --asyncapi > docs/asyncapi.json"


def test_the_parser_accepts_it_and_lists_every_channel_and_message(open_npm: Path,
                                                                   tmp_path: Path) -> None:
    out = tmp_path / "asyncapi.json"
    out.write_text(_cli("schema", "--asyncapi", "--prefix", "site/a"))
    run = subprocess.run(["node", "validate_asyncapi.mjs", str(out)], cwd=open_npm,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    parsed = json.loads(run.stdout)
    assert [d for d in parsed["diagnostics"] if d["severity"] in ("error", "warning")] == []
    assert set(topic_table("site/a")) <= set(parsed["channels"])
    assert "site/a/robots/{robot}/skills/{skill}" in parsed["channels"]
    assert set(MESSAGE_TYPES) <= set(parsed["messages"])


def test_the_parser_refuses_a_broken_schema(open_npm: Path, tmp_path: Path) -> None:
    """The check has teeth: a payload schema with an impossible type is an error."""
    doc = document()
    doc["components"]["schemas"]["Pose"]["properties"]["x"]["type"] = "float"
    out = tmp_path / "bad.json"
    out.write_text(json.dumps(doc))
    run = subprocess.run(["node", "validate_asyncapi.mjs", str(out)], cwd=open_npm,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert any("Pose" in d["path"] or "pose" in d["path"]
               for d in json.loads(run.stdout)["diagnostics"] if d["severity"] == "error")


def test_retain_qos_limits_and_prefix_are_in_the_document() -> None:
    doc = document("x/y")
    ops = doc["operations"]
    state = ops["on.robots.robot.state"]["bindings"]["mqtt"]
    assert (state["retain"], state["qos"]) == (True, 0)
    assert ops["on.instructions"]["action"] == "receive"
    assert ops["on.memory.query"]["reply"]["channel"] == {"$ref": "#/channels/memory.query.reply"}
    assert sum(op["bindings"]["mqtt"]["retain"] for op in ops.values()) == len(RETAINED_TOPICS)
    assert doc["servers"]["mosquitto"]["variables"]["prefix"]["default"] == "x/y"
    assert doc["channels"]["tasks.task_id"]["address"] == "x/y/tasks/{task_id}"
    inst = doc["components"]["schemas"]["Instruction"]["properties"]
    assert inst["text"]["maxLength"] == MAX_INSTRUCTION_CHARS
    parse_instruction(b"a" * MAX_INSTRUCTION_CHARS)  # the limit is the codec's own
    with pytest.raises(DecodeError):
        parse_instruction(b"a" * (MAX_INSTRUCTION_CHARS + 1))
    assert inst["task_id"]["anyOf"][0]["maxLength"] == 128
    assert doc["info"]["x-max-payload-bytes"] == 1 << 20


def test_plain_schema_has_the_topic_map_and_every_message() -> None:
    doc = json.loads(_cli("schema"))
    assert doc["version"]
    assert len(doc["topics"]) == len(TOPIC_TYPES) + 1  # and the retained world/scene
    assert doc["topics"]["robobus/robots/{robot}/state"] == {
        "message": "RobotState", "retained": True, "qos": 0}
    assert doc["topics"]["robobus/memory/query"]["reply"] == ["QueryReply"]
    assert doc["topics"]["robobus/instructions"]["reply"] == ["TaskStatus", "ErrorReport"]
    names = {t.__name__ for t in (*MESSAGE_TYPES.values(), *FIELD_SHAPES)}
    assert names <= set(doc["$defs"])
    one = json.loads(_cli("schema", "WorldEvent"))
    assert one["$ref"] == "#/$defs/WorldEvent" and "WorldChange" in one["$defs"]
