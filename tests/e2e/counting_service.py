"""A stdio MCP service that counts the calls it answers: ``lookup`` returns ``"<key> #<n>"``, where
``n`` is how many calls this process has answered so far (so a cached answer shows an old ``n``).
Raw newline-delimited JSON-RPC, legacy handshake (:mod:`tests.stdio_service`)."""

from __future__ import annotations

import itertools
from typing import Any

from tests.stdio_service import serve, text_result

TOOL = {"name": "lookup", "description": "Look a key up.", "annotations": {"readOnlyHint": True},
        "inputSchema": {"type": "object", "properties": {"key": {"type": "string"}}, "required": ["key"]}}
_ANSWERED = itertools.count(1)


def call(rid: Any, arguments: dict[str, Any]) -> dict[str, Any]:
    key = str(arguments.get("key", ""))
    return text_result(f"{key} #{next(_ANSWERED)}", is_error=key == "fail")


def main() -> None:
    serve("counting-stdio", [TOOL], call)


if __name__ == "__main__":
    main()
