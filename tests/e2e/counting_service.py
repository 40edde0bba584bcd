"""A stdio MCP service that counts the calls it answers: ``lookup`` returns ``"<key> #<n>"``, where
``n`` is how many calls this process has answered so far (so a cached answer shows an old ``n``).
Raw newline-delimited JSON-RPC, legacy handshake."""

from __future__ import annotations

import json
import sys
from typing import Any

TOOL = {"name": "lookup", "description": "Look a key up.", "annotations": {"readOnlyHint": True},
        "inputSchema": {"type": "object", "properties": {"key": {"type": "string"}}, "required": ["key"]}}


def send(message: dict[str, Any]) -> None:
    sys.stdout.buffer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
    sys.stdout.buffer.flush()


def main() -> None:
    answered = 0
    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        message = json.loads(line)
        method, rid = message.get("method"), message.get("id")
        if rid is None or method is None:
            continue
        if method == "initialize":
            send({"jsonrpc": "2.0", "id": rid, "result": {
                "protocolVersion": message["params"]["protocolVersion"], "capabilities": {"tools": {}},
                "serverInfo": {"name": "counting-stdio", "version": "1"}}})
        elif method == "tools/list":
            send({"jsonrpc": "2.0", "id": rid, "result": {"tools": [TOOL]}})
        elif method == "tools/call":
            answered += 1
            key = str((message["params"].get("arguments") or {}).get("key", ""))
            send({"jsonrpc": "2.0", "id": rid, "result": {
                "content": [{"type": "text", "text": f"{key} #{answered}"}], "isError": key == "fail"}})
        else:
            send({"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": "Method not found"}})


if __name__ == "__main__":
    main()
