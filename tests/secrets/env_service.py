"""A stdio MCP service whose ``env`` tool answers its environment's variable names and, apart, the sha256 of
each value: enough to check what a child was given without its values crossing the gateway. (Names and
digests side by side would read as ``API_KEY: <hex>``, which the output filter rightly redacts.)"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from tests.stdio_service import serve, text_result

TOOL = {"name": "env", "description": "Digests of this process's environment.", "annotations": {"readOnlyHint": True},
        "inputSchema": {"type": "object", "properties": {}}}


def call(rid: Any, arguments: dict[str, Any]) -> dict[str, Any]:
    digests = sorted(hashlib.sha256(value.encode()).hexdigest() for value in os.environ.values())
    return text_result(json.dumps({"names": sorted(os.environ), "digests": digests}))


if __name__ == "__main__":
    serve("env-stdio", [TOOL], call)
