"""The scaffold the raw stdio test services share: newline-delimited JSON-RPC on stdin and stdout,
the 2025-era (legacy) handshake, one ``tools/list`` page, ``tools/call`` handed to the service.

A service is its tool list and a ``call(rid, arguments)`` function: a returned dict is sent as the
call's result; ``None`` means the function wrote its own answer (or none) with :func:`send` or
:func:`write`, as the hostile services do. Notifications get no answer; any other method is
answered "Method not found" (so ``server/discover`` tells the gateway this is a legacy service).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

Call = Callable[[Any, dict[str, Any]], "dict[str, Any] | None"]


def write(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def send(message: dict[str, Any]) -> None:
    write(json.dumps(message, separators=(",", ":")).encode() + b"\n")


def text_result(text: str, *, is_error: bool = False) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "isError": is_error}


def serve(name: str, tools: Sequence[dict[str, Any]], call: Call) -> None:
    """Answer requests on stdin until it closes."""
    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        message = json.loads(line)
        method, rid = message.get("method"), message.get("id")
        if rid is None or method is None:
            continue  # notifications and anything else get no answer
        if method == "initialize":
            send({"jsonrpc": "2.0", "id": rid, "result": {
                "protocolVersion": message["params"]["protocolVersion"], "capabilities": {"tools": {}},
                "serverInfo": {"name": name, "version": "1"}}})
        elif method == "tools/list":
            send({"jsonrpc": "2.0", "id": rid, "result": {"tools": list(tools)}})
        elif method == "tools/call":
            result = call(rid, message["params"].get("arguments") or {})
            if result is not None:
                send({"jsonrpc": "2.0", "id": rid, "result": result})
        else:
            send({"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": "Method not found"}})
