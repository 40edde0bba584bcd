"""A stdio MCP service that reports, as its serverInfo version, the text of the file ``VERSIONED_FILE``
(read at start), so a test can restart it as another build."""

from __future__ import annotations

import os
from pathlib import Path

from mcp.server import MCPServer

server = MCPServer("versioned", version=Path(os.environ["VERSIONED_FILE"]).read_text().strip()
                   if "VERSIONED_FILE" in os.environ else "0")


@server.tool(description="The version this process reported.")
def version() -> str:
    return server.version or ""


@server.tool(description="Exit the process (the gateway restarts it).")
def stop() -> str:
    os._exit(0)


if __name__ == "__main__":
    server.run()
