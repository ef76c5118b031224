"""The fleet as an MCP server (issue 17, item 4): ``robobus mcp`` as a process, driven by the
official MCP client of the ``mcp`` SDK over stdio and streamable HTTP, against a fleet of agent
processes on the ZeroMQ hub."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from bench import scenes
from robobus import testing
from tests.brain.test_processes import Fleet, fleet
from tests.open.conftest import brain_ready

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
TOOLS = {"send_instruction", "task_status", "list_robots", "where_is"}


def _result(res: Any) -> dict[str, Any]:
    assert not res.is_error, res.content
    data: dict[str, Any] = res.structured_content or json.loads(res.content[0].text)
    return data


def _error(res: Any) -> str:
    assert res.is_error, res
    text: str = res.content[0].text
    return text


async def _drive(client: Client, fl: Fleet) -> None:
    """What an assistant does: look, instruct, check, and make mistakes."""
    assert {t.name for t in (await client.list_tools()).tools} == TOOLS
    robots = _result(await client.call_tool("list_robots", {}))["robots"]
    assert {r["robot"]: r["online"] for r in robots} == {r["name"]: True for r in fl.robots}
    assert _result(await client.call_tool("where_is", {"name": "apple"}))["place"] == "kitchenTable"
    heard: list[str] = []

    async def progress(n: float, total: float | None, line: str | None) -> None:
        heard.append(line or "")

    outcome = _result(await client.call_tool(
        "send_instruction", {"text": "Bring the apple to the office desk", "timeout_s": 60},
        read_timeout_seconds=90, progress_callback=progress))
    assert heard[0] == "accepted" and any(h.startswith("dispatched: ") for h in heard), heard
    assert (outcome["status"], outcome["final"]) == ("done", True), outcome
    assert [s["skill"] for s in outcome["steps"]][-1] == "place"
    assert fl.status(outcome["task_id"]).status == "done"  # the bus saw the same task
    record = _result(await client.call_tool("task_status", {"task_id": outcome["task_id"]}))
    assert record["status"] == "done" and record["text"] == "Bring the apple to the office desk"
    assert _result(await client.call_tool("where_is", {"name": "apple"}))["place"] == "officeDesk"
    # mistakes get clear errors, and the server goes on
    assert "priority" in _error(await client.call_tool(
        "send_instruction", {"text": "go to the office desk", "priority": 99}))
    assert "name" in _error(await client.call_tool("where_is", {}))
    assert "unicorn" in _error(await client.call_tool("where_is", {"name": "unicorn"}))
    early = _result(await client.call_tool("send_instruction", {"text": "g1 go to the kitchen table",
                                                                "timeout_s": 0.05}))
    assert not early["final"] and early["status"] not in ("done", "failed", "cancelled"), early
    nonsense = _result(await client.call_tool("send_instruction", {"text": "fly me to the moon"}))
    assert nonsense["status"] == "failed" and "expected" in nonsense["reason"]  # the brain's reason
    scene = json.loads((await client.read_resource("robobus://scene")).contents[0].text)
    assert "apple" in json.dumps(scene)
    doc = json.loads((await client.read_resource("robobus://asyncapi")).contents[0].text)
    assert doc["asyncapi"].startswith("3.") and any(fl.prefix in c["address"]
                                                    for c in doc["channels"].values())


async def test_an_mcp_client_drives_the_fleet_over_stdio_and_http(tmp_path: Path, hub_url: str) -> None:
    async with fleet(tmp_path, hub_url, scenes.DEMO_SCENE, scenes.DEMO_ROBOTS) as (fl, bus):
        await brain_ready(bus, fl.topics)
        argv = testing.robobus_cmd("mcp", "--bus", hub_url, "--prefix", fl.prefix)
        async with Client(StdioServerParameters(command=argv[0], args=argv[1:]),
                          read_timeout_seconds=30) as client:
            await _drive(client, fl)
        port = testing.free_port()
        with testing.spawn([*argv, "--http", str(port)], name="mcp-http", log_dir=tmp_path / "logs"):
            await anyio.to_thread.run_sync(testing.wait_port, port, 30.0)
            async with Client(f"http://127.0.0.1:{port}/mcp", read_timeout_seconds=30) as client:
                robots = _result(await client.call_tool("list_robots", {}))["robots"]
                assert len(robots) == len(fl.robots)
                assert _result(await client.call_tool("where_is", {"name": "apple"}))["place"] == "officeDesk"
                outcome = _result(await client.call_tool(
                    "send_instruction", {"text": "g1 go to the custom table", "timeout_s": 60},
                    read_timeout_seconds=90))
                assert outcome["status"] == "done", outcome
                assert "task_id" in _error(await client.call_tool("task_status", {"task_id": ""}))


async def test_without_a_brain_or_memory_the_tools_say_so(hub_url: str) -> None:
    argv = testing.robobus_cmd("mcp", "--bus", hub_url, "--prefix", "nobody", "--answer-timeout", "1")
    async with Client(StdioServerParameters(command=argv[0], args=argv[1:]),
                      read_timeout_seconds=30) as client:
        assert "no brain answered" in _error(await client.call_tool("send_instruction", {"text": "hi"}))
        assert "memory agent did not answer" in _error(await client.call_tool("list_robots", {}))
        assert {t.name for t in (await client.list_tools()).tools} == TOOLS  # still serving
