"""A broken MCP server over stdio: it handshakes and lists one tool, then answers calls badly.

``junk(mode="line")`` gets a line that is not JSON; ``junk(mode="shape")`` gets a JSON-RPC
result that is not a CallToolResult. (An SDK-built server cannot do either: the SDK keeps
its stdout for the protocol.) Run by tests/edge/test_mcp_skills.py.
"""

from __future__ import annotations

import json
import sys

TOOL = {"name": "junk", "description": "Answers with garbage.",
        "inputSchema": {"type": "object", "properties": {"mode": {"type": "string"}},
                        "required": ["mode"]}}


def reply(msg_id: object, result: object) -> None:
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": msg_id, "result": result}) + "\n")
    sys.stdout.flush()


def main() -> None:
    for line in sys.stdin:
        msg = json.loads(line)
        method, msg_id = msg.get("method"), msg.get("id")
        if method == "initialize":
            reply(msg_id, {"protocolVersion": msg["params"]["protocolVersion"],
                           "capabilities": {"tools": {}},
                           "serverInfo": {"name": "garbage", "version": "0"}})
        elif method == "tools/list":
            reply(msg_id, {"tools": [TOOL]})
        elif method == "tools/call" and msg["params"]["arguments"]["mode"] == "line":
            sys.stdout.write("this is not json\n")
            sys.stdout.flush()
        elif method == "tools/call":
            reply(msg_id, {"content": "not a list of blocks", "isError": "maybe"})
        elif msg_id is not None:
            reply(msg_id, {})


if __name__ == "__main__":
    main()
