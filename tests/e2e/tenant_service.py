"""A stdio MCP service whose results carry a tenant tag (``_meta["io.portcullis/tenant"]``), for the
data-governance end-to-end tests: ``account`` answers for whichever tenant it is asked about, as a
multi-tenant backend with a confused-deputy bug would."""

from __future__ import annotations

from mcp.server import MCPServer
from mcp_types import CallToolResult, TextContent

server = MCPServer("tenants")


@server.tool(description="The account summary of a tenant.")
def account(tenant: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=f"balance of {tenant}: 1200.00")],
                          _meta={"io.portcullis/tenant": tenant})


@server.tool(description="Move an amount between tenants' accounts.")
def transfer(source: str, target: str) -> str:
    return f"moved from {source} to {target}"


if __name__ == "__main__":
    server.run()
