"""A stdio MCP service for failure tests: slow, hanging, crashing and shape-shifting tools.

The description of ``echo`` comes from the environment (``FLAKY_ECHO_DESCRIPTION``) so a test
can restart the service with a changed definition, as a rug pull would.
"""

from __future__ import annotations

import os

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver import Context

server = MCPServer("flaky")


@server.tool(description=os.environ.get("FLAKY_ECHO_DESCRIPTION", "Echo the text back."))
def echo(text: str) -> str:
    return text


@server.tool(description="Sleep for the given seconds, then answer.")
async def sleep(seconds: float) -> str:
    await anyio.sleep(seconds)
    return "slept"


@server.tool(description="The service's process id.")
def pid() -> int:
    return os.getpid()


@server.tool(description="The names of the environment variables the service sees.")
def env_names() -> list[str]:
    return sorted(os.environ)


@server.tool(description="The actor token the gateway sent with this call (a test probe).")
def actor_token(ctx: Context) -> str:
    meta = ctx.request_context.meta or {}
    value = meta.get("io.portcullis/actor-token") if isinstance(meta, dict) else getattr(meta, "model_extra", {}).get(
        "io.portcullis/actor-token")
    return str(value)


@server.tool(description="The W3C trace context the gateway sent with this call (a test probe).")
def trace_context(ctx: Context) -> str:
    meta = ctx.request_context.meta or {}
    extra = meta if isinstance(meta, dict) else (getattr(meta, "model_extra", None) or {})
    return str(extra.get("traceparent"))


@server.tool(description="A tool no manifest declares.")
def unmanifested() -> str:
    return "should never be reachable"


if __name__ == "__main__":
    server.run()
