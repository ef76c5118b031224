"""The AsyncAPI document of the bus: generated from schemas/, current in docs/, and valid for
the AsyncAPI project's own parser (npm ``@asyncapi/parser``, run by node)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from unittest.mock import patch

import pytest
from typer.testing import CliRunner

from robobus.asyncapi import MAX_INSTRUCTION_CHARS, PUBLISH_QOS, document, topic_table
from robobus.cli.main import app
from robobus.schemas.codec import parse_instruction
from robobus.schemas.contract import FIELD_SHAPES, MESSAGE_TYPES, RETAINED_TOPICS, TOPIC_TYPES
from robobus.schemas.errors import DecodeError

DOCS = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.json"


def _cli(*args: str) -> str:
    """``robobus ARGS`` in this process (typer's runner: no interpreter start per call)."""
    with patch("robobus.cli.main.setup_logging"):  # structlog is the test process's own
        result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def test_the_docs_copy_is_current() -> None:
    assert json.loads(DOCS.read_text()) == document(), \
        "docs/asyncapi.json is stale: robobus schema --asyncapi > docs/asyncapi.json"


def test_the_parser_accepts_it_and_refuses_a_broken_one(open_npm: Path, tmp_path: Path) -> None:
    """One node run parses two documents: the bus under another prefix (valid, every channel
    and message listed) and a copy with an impossible payload type (the check has teeth)."""
    good, bad = tmp_path / "asyncapi.json", tmp_path / "bad.json"
    good.write_text(_cli("schema", "--asyncapi", "--prefix", "site/a"))
    broken = document()
    broken["components"]["schemas"]["Pose"]["properties"]["x"]["type"] = "float"
    bad.write_text(json.dumps(broken))
    run = subprocess.run(["node", "validate_asyncapi.mjs", str(good), str(bad)], cwd=open_npm,
                         capture_output=True, text=True, timeout=120)
    parsed, refused = map(json.loads, run.stdout.splitlines())
    assert run.returncode == 1, run.stdout + run.stderr  # for the broken one only
    assert [d for d in parsed["diagnostics"] if d["severity"] in ("error", "warning")] == []
    assert set(topic_table("site/a")) <= set(parsed["channels"])
    assert "site/a/robots/{robot}/skills/{skill}" in parsed["channels"]
    assert set(MESSAGE_TYPES) <= set(parsed["messages"])
    assert any("Pose" in d["path"] or "pose" in d["path"]
               for d in refused["diagnostics"] if d["severity"] == "error")


def test_every_topic_has_its_publishers_qos() -> None:
    assert set(PUBLISH_QOS) == {*TOPIC_TYPES, ("world", "scene")}, \
        "a topic was added to schemas/contract.py: give its QoS in robobus/asyncapi.py"


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
