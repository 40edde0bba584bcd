"""A 2025-era stdio MCP service on raw JSON-RPC whose tool names try to escape ``portcullis import``'s
output directory: ``../``, absolute paths, NUL, a very long name, a Cyrillic look-alike, bidi controls,
two names differing only in case — and one well-behaved tool, ``ok``."""

from __future__ import annotations

import json
import sys
from typing import Any

NAMES = ["../escaped", "../../tools/x/escaped", "/tmp/absolute-escape", "a\x00b", "x" * 300, "\u0430dd",
         "ok\u202egnp", "..", ".hidden", "con/../../escaped", "nested/dir", "Same", "same", "ok", "-dash"]
TOOLS = [{"name": name, "description": "A tool.", "inputSchema": {"type": "object"}} for name in NAMES]


def _send(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> None:
    for line in sys.stdin:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        method, request_id = message.get("method"), message.get("id")
        if request_id is None:
            continue
        if method == "initialize":
            _send({"jsonrpc": "2.0", "id": request_id, "result": {
                "protocolVersion": "2025-11-25", "capabilities": {"tools": {}},
                "serverInfo": {"name": "hostile-names", "version": "1"}}})
        elif method == "tools/list":
            _send({"jsonrpc": "2.0", "id": request_id, "result": {"tools": TOOLS}})
        elif method == "ping":
            _send({"jsonrpc": "2.0", "id": request_id, "result": {}})
        else:
            _send({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32601, "message": "Method not found"}})


if __name__ == "__main__":
    main()
