"""A test service that sends progress and log notifications during a call, over stdio or HTTP.

``python -m tests.e2e.notify_service stdio`` (the 2025-era handshake, :mod:`tests.stdio_service`);
``… http --port P`` (a 2026-07-28 upstream answering each call with an SSE stream). One tool,
``work(who, steps, canary, split, late)``: for each step a ``notifications/progress`` (when the call
carries a progress token) with message ``"<who> step <i>"`` and a ``notifications/message`` at
``info`` with data ``"<who> log <i>"`` and one at ``debug``; ``canary``: a log message carrying an
AWS key id; ``split``: the key split across two log messages; then the result ``"<who> done"``;
``late``: a log and a progress notification after the result.

``hold``: the notifications before the result are sent, then the result is held back: over HTTP until
the test releases it (a ``test/release`` request with ``{"who": …}`` to the service's URL) or the
gateway closes the connection (the relay's cancellation: ``gone <who>`` is written to the journal);
over stdio until the gateway sends ``notifications/cancelled`` for it (``cancelled <who>``). The
journal is the file named by ``NOTIFY_JOURNAL``: how a test observes a cancellation, no sleeps.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import orjson

from tests.security import hostile_http
from tests.security.canaries import CANARIES
from tests.security.hostile_http import Reply, http, rpc_body, service_main
from tests.stdio_service import send, text_result

CANARY = CANARIES["aws_access_key_id"]
WORK_TOOL = {"name": "work", "description": "Work in steps, reporting progress and logs.", "inputSchema": {
    "type": "object", "properties": {"who": {"type": "string"}, "steps": {"type": "integer"},
                                     "canary": {"type": "boolean"}, "split": {"type": "boolean"},
                                     "late": {"type": "boolean"}, "hold": {"type": "boolean"}},
    "required": ["who"]}}
RELEASED: dict[str, asyncio.Event] = {}


def journal(line: str) -> None:
    """Tell the test what this service saw (``NOTIFY_JOURNAL``; nothing without it)."""
    path = os.environ.get("NOTIFY_JOURNAL")
    if path:
        with open(path, "a") as out:
            out.write(line + "\n")


def notes(arguments: dict[str, Any], token: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the notifications before the result, those after it) for one call."""
    who = str(arguments.get("who", ""))
    before: list[dict[str, Any]] = []
    for i in range(int(arguments.get("steps", 2))):
        if token is not None:
            before.append({"jsonrpc": "2.0", "method": "notifications/progress", "params": {
                "progressToken": token, "progress": i + 1, "total": 10, "message": f"{who} step {i}"}})
        before.append({"jsonrpc": "2.0", "method": "notifications/message",
                       "params": {"level": "info", "logger": "work", "data": f"{who} log {i}"}})
        before.append({"jsonrpc": "2.0", "method": "notifications/message",
                       "params": {"level": "debug", "logger": "work", "data": f"{who} debug {i}"}})
    if arguments.get("canary"):
        before.append({"jsonrpc": "2.0", "method": "notifications/message",
                       "params": {"level": "warning", "data": f"{who} key {CANARY} leaked"}})
    if arguments.get("split"):
        half = len(CANARY) // 2
        for part in (f"{who} key {CANARY[:half]}", f"{CANARY[half:]} tail"):
            before.append({"jsonrpc": "2.0", "method": "notifications/message",
                           "params": {"level": "warning", "data": part}})
    after: list[dict[str, Any]] = []
    if arguments.get("late"):
        after.append({"jsonrpc": "2.0", "method": "notifications/message",
                      "params": {"level": "error", "data": f"{who} late log"}})
        if token is not None:
            after.append({"jsonrpc": "2.0", "method": "notifications/progress",
                          "params": {"progressToken": token, "progress": 99, "message": f"{who} late step"}})
    return before, after


def _token(message: dict[str, Any]) -> Any:
    meta = message.get("params", {}).get("_meta") or {}
    return meta.get("progressToken")


def stdio_main() -> None:
    """Read requests line by line (the scaffold's ``serve`` hands a call its arguments only, and the
    progress token is in ``params._meta``)."""
    held: dict[Any, str] = {}  # request id -> who, for calls whose result is held back
    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        message = json.loads(line)
        if message.get("method") == "notifications/cancelled":
            who = held.pop(message.get("params", {}).get("requestId"), None)
            journal(f"cancelled {who}")
            continue
        if message.get("method") == "tools/call" and "id" in message:
            arguments = message["params"].get("arguments") or {}
            before, after = notes(arguments, _token(message))
            for note in before:
                send(note)
            if arguments.get("hold"):
                held[message["id"]] = str(arguments.get("who"))
                continue
            send({"jsonrpc": "2.0", "id": message["id"], "result": text_result(f"{arguments.get('who')} done")})
            for note in after:
                send(note)
            continue
        _answer_other(message)


def _answer_other(message: dict[str, Any]) -> None:
    method, rid = message.get("method"), message.get("id")
    if rid is None or method is None:
        return
    if method == "initialize":
        send({"jsonrpc": "2.0", "id": rid, "result": {
            "protocolVersion": message["params"]["protocolVersion"], "capabilities": {"tools": {}, "logging": {}},
            "serverInfo": {"name": "notify", "version": "1"}}})
    elif method == "tools/list":
        send({"jsonrpc": "2.0", "id": rid, "result": {"tools": [WORK_TOOL]}})
    else:
        send({"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": "Method not found"}})


def _sse(message: dict[str, Any]) -> bytes:
    return b"event: message\ndata: " + orjson.dumps(message) + b"\n\n"


def http_script(message: dict[str, Any], index: int) -> Reply:
    arguments = message.get("params", {}).get("arguments") or {}
    before, after = notes(arguments, _token(message))
    first = b"".join(_sse(n) for n in before)
    body = first + _sse(orjson.loads(rpc_body(
        message["id"], text_result(f"{arguments.get('who')} done")))) + b"".join(_sse(n) for n in after)
    answer = http(body, content_type=b"text/event-stream")
    if not arguments.get("hold"):
        return Reply((answer,))
    who = str(arguments.get("who"))
    released = RELEASED.setdefault(who, asyncio.Event())

    async def until_released(_: int) -> None:
        await released.wait()

    cut = len(answer) - len(body) + len(first)  # the head and the notifications now, the rest when released
    return Reply((answer[:cut], answer[cut:]), before=until_released, gone=lambda: journal(f"gone {who}"))


async def control(message: dict[str, Any]) -> bytes:
    """``test/release``: let the held call of ``params.who`` send its result."""
    who = str(message.get("params", {}).get("who"))
    RELEASED.setdefault(who, asyncio.Event()).set()
    return http(rpc_body(message.get("id"), {}))


def main() -> None:
    hostile_http.ECHO_TOOL = WORK_TOOL  # its correct tools/list answer lists this service's one tool
    service_main(stdio_main, http_script, control)


if __name__ == "__main__":
    main()
