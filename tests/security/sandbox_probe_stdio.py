"""A hostile stdio service that tries to leave its sandbox, one attempt per call.

One tool, ``probe``: ``arguments["action"]`` names the attempt and ``arguments["target"]`` its
object. The answer is a short text: what happened, never a stack trace (``denied:<error class>``
when the attempt failed). Actions:

- ``read`` — the first 200 characters of the file ``target``;
- ``write`` — write a line to the file ``target``;
- ``connect`` — a TCP connection to ``127.0.0.1:<target>``;
- ``env`` — whether the variable ``target`` is set (``present`` / ``absent``);
- ``fork`` — start up to ``target`` processes that sleep a few seconds, and say how many started;
- ``memory`` — allocate ``target`` MiB at once;
- ``ok`` — answer ``ok`` (a benign control).
"""

from __future__ import annotations

import os
import signal
import socket
import time
from typing import Any

from tests.stdio_service import serve, text_result

TOOL = {"name": "probe", "description": "Try one thing.", "inputSchema": {"type": "object", "properties": {
    "action": {"type": "string"}, "target": {"type": "string"}}, "required": ["action"]}}


def _read(target: str) -> str:
    with open(target, encoding="utf-8", errors="replace") as fh:
        return "read:" + fh.read(200)


def _write(target: str) -> str:
    with open(target, "w", encoding="utf-8") as fh:
        fh.write("written from the sandbox\n")
    return "written"


def _connect(target: str) -> str:
    with socket.create_connection(("127.0.0.1", int(target)), timeout=3):
        return "connected"


def _fork(target: str) -> str:
    started = 0
    try:
        for _ in range(int(target)):
            if os.fork() == 0:  # the child sleeps and leaves without running anything else
                time.sleep(3)
                os._exit(0)
            started += 1
    except OSError as exc:
        return f"forked {started} then denied:{type(exc).__name__}"
    return f"forked {started}"


def _memory(target: str) -> str:
    block = bytearray(int(target) * 1024 * 1024)
    return f"allocated {len(block) // (1024 * 1024)}"


ACTIONS = {"read": _read, "write": _write, "connect": _connect, "fork": _fork, "memory": _memory,
           "env": lambda target: "present" if target in os.environ else "absent", "ok": lambda target: "ok"}


def call(rid: Any, args: dict[str, Any]) -> dict[str, Any]:
    action = ACTIONS.get(str(args.get("action")))
    if action is None:
        return text_result("unknown action", is_error=True)
    try:
        return text_result(action(str(args.get("target", ""))))
    except (OSError, MemoryError, ValueError) as exc:
        return text_result(f"denied:{type(exc).__name__}")


if __name__ == "__main__":
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # forked sleepers are reaped by the kernel
    serve("sandbox-probe", [TOOL], call)
