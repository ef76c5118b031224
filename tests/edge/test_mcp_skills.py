"""Skills from MCP servers: a real MCPServer (FastMCP) process over stdio and streamable HTTP.

The edge agent runs in the test's event loop (harness); the skill server is a separate process
(examples/mcp_skill_server.py). The scenario tests (stdio and HTTP) run hub, memory, brain and edge
as processes.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
import yaml

pytest.importorskip("mcp")

from mcp_types import Tool  # noqa: E402  (the mcp extra)

from robobus.edge_agent.errors import ProfileError  # noqa: E402
from robobus.edge_agent.harness import EdgeHarness  # noqa: E402
from robobus.edge_agent.mcp_skills import McpUnavailable, args_struct, change_args  # noqa: E402
from robobus.edge_agent.profile import McpTool, RobotProfile, parse_profile  # noqa: E402
from robobus.launch.runner import RunOptions, run_scenario  # noqa: E402
from robobus.schemas.messages import RobotRegistration  # noqa: E402
from robobus.testing import free_port, robobus_cmd  # noqa: E402

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "examples" / "mcp_skill_server.py"
GARBAGE = Path(__file__).with_name("mcp_garbage_server.py")
NAV = {"resource": "base", "change": "move", "param_kinds": {"target": "place"},
       "preconditions": ["mobile(?robot)", "is_place(?target)"],
       "effects": ["robot_at(?robot, ?target)"]}


def profile(server: dict[str, Any], **tools: Any) -> RobotProfile:
    return parse_profile({
        "name": "gardener", "type": "mcp_gardener", "start": "kitchenTable",
        "embodiment": {"mobile": True, "arms": 1, "speed": 1.0},
        "skills": {"detect": {"duration_s": 0.1}},
        "mcp": [{"name": "garden", "timeout_s": 5.0, "connect_timeout_s": 20.0, **server,
                 "tools": {"navigate_to": NAV, **tools}}],
    }, "test")


STDIO = {"command": [sys.executable, str(SERVER)]}


async def test_stdio_tools_are_skills_with_schema_effects_and_errors(scene: dict[str, Any]) -> None:
    prof = profile(STDIO, stall={"timeout_s": 0.5})
    async with EdgeHarness(scene) as h:
        async with h.bus.subscribe(h.topics.registration("gardener"), RobotRegistration) as regs:
            await h.add_robot(prof)
            with anyio.fail_after(5):
                reg: RobotRegistration = (await regs.__anext__()).data
        specs = {s.name: s for s in reg.skills}
        assert {"detect", "navigate_to", "water_plants", "scan_shelf", "stall"} <= set(specs)
        assert specs["water_plants"].args_schema["required"] == ["zone"]  # the tool's inputSchema
        assert specs["water_plants"].args_schema["properties"]["litres"]["default"] == 1.0
        assert (specs["navigate_to"].change, specs["navigate_to"].effects) == (
            "move", ["robot_at(?robot, ?target)"])

        fb = await h.run("gardener", "water_plants", zone="roses")
        assert (fb.status, fb.result) == ("done", {"zone": "roses", "litres": 1.0})
        progress = [f.progress for f in h.feedback[fb.command_id] if f.status == "progress"]
        assert progress == [50.0, 100.0]  # the tool's MCP progress notifications
        fb = await h.run("gardener", "navigate_to", target="officeDesk")
        assert fb.status == "done" and h.world.robots["gardener"].place == "officeDesk"
        bad = await h.run("gardener", "water_plants", zonee="roses")
        assert (bad.status, bad.reason_code) == ("rejected", "bad_args")

        refused = await h.run("gardener", "refuse", reason="soil too wet")
        assert (refused.status, refused.reason_code) == ("failed", "tool_error")
        assert "soil too wet" in (refused.reason or "")

        hung = await h.run("gardener", "stall", label="late")
        assert (hung.status, hung.reason_code) == ("failed", "timeout")
        cid = await h.send("gardener", "stall", {"label": "stopped"})
        await h.wait(cid, {"started"})
        await h.cancel("gardener", cid, "stall")
        assert (await h.wait(cid)).status == "cancelled"
        seen = await h.run("gardener", "cancelled_calls")  # the server saw both cancellations
        assert seen.status == "done" and sorted(seen.result["result"]) == ["late", "stopped"]

        died = await h.run("gardener", "crash")
        assert (died.status, died.reason_code) == ("failed", "server_down")
        assert "closed the connection" in (died.reason or "")
        assert (await h.run("gardener", "detect", kind="fruit")).status == "done"
        again = await h.run("gardener", "scan_shelf", shelf="A3", timeout=30)  # a new server
        assert again.status == "done", again
        assert again.result["items"] == ["A3-box-1", "A3-box-2"]


async def test_a_server_that_answers_garbage(scene: dict[str, Any]) -> None:
    prof = parse_profile({
        "name": "junker", "type": "junker", "embodiment": {"mobile": False}, "skills": {},
        "mcp": [{"name": "broken", "command": [sys.executable, str(GARBAGE)], "timeout_s": 5.0}],
    }, "test")
    async with EdgeHarness(scene) as h:
        await h.add_robot(prof, at="kitchenTable")
        line = await h.run("junker", "junk", mode="line")
        assert (line.status, line.reason_code) == ("failed", "bad_reply"), line
        assert "not MCP" in (line.reason or "") and "this is not json" in (line.reason or "")
        shape = await h.run("junker", "junk", mode="shape")
        assert (shape.status, shape.reason_code) == ("failed", "bad_reply"), shape
        assert "invalid result for 'junk'" in (shape.reason or "")


def test_argument_structs_and_profile_checks() -> None:
    tool = Tool.model_validate({"name": "t", "inputSchema": {
        "type": "object", "required": ["from"],
        "properties": {"from": {"type": "string"}, "n": {"type": ["integer", "null"]},
                       "any": {"anyOf": [{"type": "string"}, {"type": "null"}]}}}})
    args = args_struct(tool)
    value = msgspec.convert({"from": "a", "any": 3}, args, strict=False)
    assert msgspec.to_builtins(value) == {"from": "a", "any": 3}  # n left to the server
    for bad, why in [({"n": 1}, "missing required field `from`"), ({"from": "a", "n": "x"}, "$.n"),
                     ({"from": "a", "to": "b"}, "unknown field `to`")]:
        with pytest.raises(msgspec.ValidationError, match=re.escape(why)):
            msgspec.convert(bad, args, strict=False)
    placing = McpTool(change="place", param_kinds={"object": "object", "affordance": "place|container"})
    assert change_args(placing, {"affordance": "basket", "object": "apple"}) == ("apple", "basket")
    arm = {"grasp": {"resource": "arm"}}
    with pytest.raises(ProfileError, match=r"mcp\.0\.tools\.grasp\.resource: needs a 'arm'"):
        parse_profile({"name": "n", "type": "t", "embodiment": {"mobile": False, "arms": 0},
                       "skills": {}, "mcp": [{"name": "s", **STDIO, "tools": arm}]}, "test")
    with pytest.raises(ProfileError, match="also in skills"):
        profile(STDIO, water_plants={"skill": "detect"})


def test_robobus_edge_says_which_server_is_unusable(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(json.dumps({  # JSON is YAML
        "name": "broken_1", "type": "broken", "embodiment": {"mobile": False}, "skills": {},
        "mcp": [{"name": "nowhere", "url": f"http://127.0.0.1:{free_port()}/mcp"}]}))
    proc = subprocess.run(robobus_cmd("edge", "--profile", str(path), "--bus", "memory://x", "--at", "a"),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "robobus edge: MCP server 'nowhere': ConnectError" in proc.stderr
    assert "Traceback" not in proc.stderr


def _http_server(port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, str(SERVER), "--http", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    with anyio.fail_after(timeout):
        while proc.poll() is None:
            try:
                stream = await anyio.connect_tcp("127.0.0.1", port)
            except OSError:
                await anyio.sleep(0.05)
                continue
            await stream.aclose()
            return
    raise AssertionError(f"MCP HTTP server exited with {proc.returncode}")


async def test_streamable_http_server_and_its_death(scene: dict[str, Any]) -> None:
    port = free_port()
    proc = _http_server(port)
    try:
        await _wait_port(port, proc)
        prof = profile({"url": f"http://127.0.0.1:{port}/mcp", "connect_timeout_s": 3.0},
                       stall={"timeout_s": 0.5})
        async with EdgeHarness(scene) as h:
            await h.add_robot(prof)
            fb = await h.run("gardener", "scan_shelf", shelf="B1")
            assert (fb.status, fb.result["shelf"]) == ("done", "B1")
            fb = await h.run("gardener", "navigate_to", target="customTable")
            assert fb.status == "done" and h.world.robots["gardener"].place == "customTable"
            hung = await h.run("gardener", "stall", label="http")
            assert (hung.status, hung.reason_code) == ("failed", "timeout")
            seen = await h.run("gardener", "cancelled_calls")  # the cancellation went over HTTP
            assert (seen.status, seen.result) == ("done", {"result": ["http"]})
            proc.kill()
            proc.wait(10)
            gone = await h.run("gardener", "water_plants", zone="herbs", timeout=20)
            assert gone.status == "failed"
            assert (gone.reason_code, gone.status) == ("server_down", "failed"), gone
            assert "MCP server 'garden' closed the connection" in (gone.reason or "")
            assert (await h.run("gardener", "detect", kind="fruit")).status == "done"
            proc = _http_server(port)  # the server is back: the next call reconnects
            await _wait_port(port, proc)
            back = await h.run("gardener", "water_plants", zone="herbs", litres=2, timeout=20)
            assert (back.status, back.result) == ("done", {"zone": "herbs", "litres": 2.0}), back
    finally:
        proc.kill()
        proc.wait(10)


async def test_bad_servers_are_refused_at_start_with_the_reason(scene: dict[str, Any]) -> None:
    with pytest.raises(ProfileError, match="exactly one of command"):
        profile({"url": "http://127.0.0.1:1/mcp", **STDIO})
    garbage = {"command": [sys.executable, "-c", "print('hello, not json'); input()"],
               "connect_timeout_s": 3.0}
    missing = {"command": [str(ROOT / "no-such-server")]}
    async with EdgeHarness(scene) as h:
        for server, reason in [(garbage, "not MCP"), (missing, "No such file"),
                               (STDIO | {"expose": "declared"}, None)]:
            tools = {"fly": {}} if reason is None else {}
            with pytest.raises(McpUnavailable) as err:
                await h.add_robot(profile(server, **tools))
            assert err.value.server == "garden"
            assert (reason or "no tool fly; it offers: cancelled_calls, crash,") in err.value.reason


async def test_a_scenario_the_brain_plans_onto_mcp_tools(hub_url: str, tmp_path: Path) -> None:
    opts = RunOptions(bus_url=hub_url, speed=20.0, report_dir=tmp_path / "run",
                      prefix=f"rb{secrets.token_hex(3)}")
    result = await run_scenario(ROOT / "scenarios" / "mcp_skills.yaml", opts)
    failures = "; ".join(f"{r.expect}: {r.reason}" for r in result.failures())
    assert result.passed, result.error or failures
    events = [json.loads(line) for line in (result.report_dir / "events.jsonl").read_text().splitlines()]
    done = [e["data"]["skill"] for e in events
            if e["type"] == "SkillFeedback" and e["data"]["status"] == "done"]
    assert {"navigate_to", "grasp", "place_on"} <= set(done), done


async def test_a_scenario_the_brain_plans_onto_mcp_tools_over_http(hub_url: str,
                                                                   tmp_path: Path) -> None:
    """The same scenario with the gardener's profile pointed at the example server as an HTTP
    process (``url:`` instead of ``command:``): hub, memory, brain and edge are processes."""
    port = free_port()
    served = tmp_path / "server.log"
    with served.open("wb") as out:
        server = subprocess.Popen([sys.executable, str(SERVER), "--http", "--port", str(port)],
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        await _wait_port(port, server)
        prof = yaml.safe_load((ROOT / "profiles" / "mcp_gardener.yaml").read_text())
        del prof["mcp"][0]["command"]
        prof["mcp"][0]["url"] = f"http://127.0.0.1:{port}/mcp"
        (tmp_path / "gardener_http.yaml").write_text(yaml.safe_dump(prof))
        sc = yaml.safe_load((ROOT / "scenarios" / "mcp_skills.yaml").read_text())
        sc["robots"][0]["profile"] = "gardener_http.yaml"  # beside the scenario: found first
        (tmp_path / "mcp_skills_http.yaml").write_text(yaml.safe_dump(sc))
        opts = RunOptions(bus_url=hub_url, speed=20.0, report_dir=tmp_path / "run",
                          prefix=f"rb{secrets.token_hex(3)}")
        result = await run_scenario(tmp_path / "mcp_skills_http.yaml", opts)
        assert server.poll() is None, served.read_text()
    finally:
        server.kill()
        server.wait(10)
    failures = "; ".join(f"{r.expect}: {r.reason}" for r in result.failures())
    assert result.passed, result.error or failures
    events = [json.loads(line) for line in (result.report_dir / "events.jsonl").read_text().splitlines()]
    done = [e["data"]["skill"] for e in events
            if e["type"] == "SkillFeedback" and e["data"]["status"] == "done"]
    assert {"navigate_to", "grasp", "place_on"} <= set(done), done
    calls = re.findall(r'"POST /mcp HTTP/1.1" 200', served.read_text())
    # initialize and tools/list, then one tools/call per skill run: every call went over HTTP
    assert len(calls) >= 2 + len(done), served.read_text()
