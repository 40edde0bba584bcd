"""A hostile stdio MCP service: raw newline-delimited JSON-RPC, misbehaving as each call asks.

It speaks the legacy handshake (``server/discover`` is answered "method not found"), lists one
tool, ``echo``, and answers ``tools/call`` according to ``arguments["mode"]`` (see ``MODES``);
a correct answer echoes ``arguments["who"]``. ``arguments["size"]`` and ``["depth"]`` size the
oversized and deep answers.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from tests.stdio_service import send, serve, write

INSTANCE = os.urandom(8).hex()

TOOL = {"name": "echo", "description": "Echo who.", "inputSchema": {"type": "object", "properties": {
    "who": {"type": "string"}, "mode": {"type": "string"}, "size": {"type": "integer"},
    "depth": {"type": "integer"}, "count": {"type": "integer"}}}}


def result(who: str, structured: Any = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"content": [{"type": "text", "text": who}], "isError": False}
    if structured is not None:
        answer["structuredContent"] = structured
    return answer


def nested(depth: int) -> Any:
    """A value that, as a result's ``structuredContent``, makes the result ``depth`` deep."""
    value: Any = {}
    for _ in range(depth - 2):  # the result object is 1, structuredContent 2
        value = {"a": value}
    return value


def call(rid: Any, args: dict[str, Any]) -> None:  # writes its own answer, as each mode asks
    mode, who = args.get("mode", "ok"), args.get("who", "")
    ok = {"jsonrpc": "2.0", "id": rid, "result": result(who)}
    if mode == "ok":
        send(ok)
    elif mode == "big-int":  # valid JSON the gateway cannot write back: an integer beyond 64 bits
        send({"jsonrpc": "2.0", "id": rid, "result": result(who, {"n": 2**70})})
    elif mode == "pid":  # this process, apart from any other (in its own pid namespace it may always be 2)
        send({"jsonrpc": "2.0", "id": rid, "result": result(f"{os.getpid()}-{INSTANCE}")})
    elif mode in ("id-as-string", "id-as-float", "id-as-true", "id-unknown", "id-null", "id-missing"):
        wrong = {"id-as-string": str(rid), "id-as-float": float(rid), "id-as-true": True, "id-unknown": 987654,
                 "id-null": None}.get(mode)
        message = {k: v for k, v in ok.items() if k != "id"}
        if mode != "id-missing":
            message["id"] = wrong
        send(message)
    elif mode == "result-and-error":
        send({**ok, "error": {"code": 1, "message": "x"}})
    elif mode == "neither":
        send({"jsonrpc": "2.0", "id": rid})
    elif mode == "batch":
        write(json.dumps([ok]).encode() + b"\n")
    elif mode == "junk-then-ok":
        write(b"this is not json\n\n")
        send(ok)
    elif mode == "twice":
        send(ok)
        send(ok)
    elif mode == "notification-then-ok":
        send({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "x"}})
        send(ok)
    elif mode == "deep":
        send({"jsonrpc": "2.0", "id": rid, "result": result(who, nested(int(args["depth"])))})
    elif mode == "sized":  # one line of exactly ``size`` bytes (without its newline)
        frame = json.dumps({"jsonrpc": "2.0", "id": rid, "result": result("")}, separators=(",", ":")).encode()
        padding = int(args["size"]) - len(frame)
        text = b'"text":""'
        write(frame.replace(text, b'"text":"' + b"x" * padding + b'"') + b"\n")
    elif mode == "stderr":  # ``count`` stderr lines of ``size`` bytes each, then a correct answer
        for _ in range(int(args.get("count", 1))):
            sys.stderr.buffer.write(b"e" * int(args.get("size", 10)) + b"\n")
        sys.stderr.buffer.flush()
        send({"jsonrpc": "2.0", "id": rid, "result": result(who)})
    elif mode == "endless":  # a line that never ends, written as fast as the pipe takes it
        write(b'{"jsonrpc":"2.0","id":%d,"result":{"content":[{"type":"text","text":"' % rid)
        chunk = b"x" * 65536
        for _ in range(int(args.get("size", 1 << 30)) // len(chunk)):
            write(chunk)


def main() -> None:
    serve("hostile-stdio", [TOOL], call)


if __name__ == "__main__":
    main()
