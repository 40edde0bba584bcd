"""A test service whose tools ask their caller something mid-call (push-style, 2025-era session).

``python -m tests.e2e.asking_service stdio`` or ``… http --port P``. Tools:

* ``ask_name(message)``: ``elicitation/create`` (form: one string ``name``);
* ``ask_llm(prompt)``: ``sampling/createMessage``;
* ``ask_roots()``: ``roots/list``.

Each returns what it got (``"elicited action=… content=…"``, ``"sampled <text>"``, ``"roots <uris>"``)
or ``"refused <code> <message>"`` when the request failed, so a test can see what the upstream saw.
"""

from __future__ import annotations

import json
import sys
import warnings

import mcp.types as types
from mcp import MCPError
from mcp.server import MCPServer
from mcp.server.mcpserver import Context


def _failed(exc: Exception) -> str:
    if isinstance(exc, MCPError):
        return f"refused {exc.error.code} {exc.error.message}"
    return f"refused {type(exc).__name__}"


def build_server() -> MCPServer:
    server = MCPServer("asker")

    @server.tool(structured_output=False)
    async def ask_name(message: str, ctx: Context) -> str:
        """Ask the caller's user for a name."""
        schema = {"type": "object", "properties": {"name": {"type": "string", "description": "Your name"}},
                  "required": ["name"]}
        try:
            result = await ctx.session.elicit_form(message, schema,
                                                   related_request_id=ctx.request_context.request_id)
        except Exception as exc:
            return _failed(exc)
        return f"elicited action={result.action} content={json.dumps(result.content or {}, sort_keys=True)}"

    @server.tool(structured_output=False)
    async def ask_llm(prompt: str, ctx: Context) -> str:
        """Ask the caller's LLM to answer a prompt."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = await ctx.session.create_message(
                    [types.SamplingMessage(role="user", content=types.TextContent(type="text", text=prompt))],
                    max_tokens=50, related_request_id=ctx.request_context.request_id)
        except Exception as exc:
            return _failed(exc)
        content = result.content
        return f"sampled {content.text if isinstance(content, types.TextContent) else content}"

    @server.tool(structured_output=False)
    async def ask_roots(ctx: Context) -> str:
        """Ask the caller for its roots."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = await ctx.session.list_roots()
        except Exception as exc:
            return _failed(exc)
        return "roots " + " ".join(str(root.uri) for root in result.roots)

    return server


def main() -> None:
    server = build_server()
    if sys.argv[1] == "stdio":
        server.run("stdio")
        return
    import uvicorn

    port = int(sys.argv[sys.argv.index("--port") + 1])
    uvicorn.run(server.streamable_http_app(host="127.0.0.1"), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
