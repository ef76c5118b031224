"""A Node.js client in the suite (issue 14, item 6): examples/node/client.mjs, which knows the
bus only from docs/asyncapi.json, against a real Mosquitto and a fleet of agent processes. It
sends an instruction with an MQTT 5 response topic, follows it to ``done`` and validates every
message it sees with Ajv against the document's schemas; msgpack and JSON."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import anyio
import pytest

from bench import scenes
from tests.brain.test_processes import fleet
from tests.open.conftest import brain_ready, npm_folder

pytestmark = [pytest.mark.anyio, pytest.mark.broker]
NODE = Path(__file__).resolve().parents[2] / "examples" / "node"


@pytest.fixture(scope="session")
def node_client() -> Path:
    return npm_folder(NODE)


@pytest.mark.parametrize("codec", ["msgpack", "json"])
async def test_node_client_follows_an_instruction_to_done(node_client: Path, tmp_path: Path,
                                                          mosquitto_url: str, codec: str) -> None:
    url = mosquitto_url if codec == "msgpack" else f"{mosquitto_url}?codec=json"
    async with fleet(tmp_path, url, scenes.DEMO_SCENE, scenes.DEMO_ROBOTS) as (fl, bus):
        await brain_ready(bus, fl.topics)
        cmd = ["node", "client.mjs", "--url", mosquitto_url, "--prefix", fl.prefix,
               "--codec", codec, "--timeout", "60",
               "--text", "Bring the fruit nearest the cup and a fruit knife to the office desk"]
        done = await anyio.to_thread.run_sync(lambda: subprocess.run(
            cmd, cwd=node_client, capture_output=True, text=True, timeout=120))
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(done.stdout.splitlines()[-1])
    assert summary["final"] == "done" and summary["invalid"] == []
    assert summary["valid"] == summary["seen"] > 10
    assert {"TaskStatus", "SkillCommand", "SkillFeedback", "RobotState"} <= set(summary["types"])
    assert summary["unknown"] == []
    assert summary["types"].get("QueryReply", 0) + summary["types"].get("WorldReply", 0) > 0
    assert set(summary["encodings"]) == {codec}  # the fleet and the client speak one encoding
    # the brain answered on the response topic, correlation echoed, up to the final status
    assert summary["replies"] == summary["correlated"] > 0
    assert "reply:done" in summary["statuses"]
