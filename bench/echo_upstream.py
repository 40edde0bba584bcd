"""A minimal echo MCP service over Streamable HTTP, the upstream the benchmark calls.

``python bench/echo_upstream.py --port P`` serves ``http://127.0.0.1:P/mcp`` with one tool,
``echo(text: str) -> str``, using the official SDK's ``MCPServer`` under uvicorn with the same
fast HTTP stack as the gateway (httptools + uvloop), so the direct and the gateway figures
differ only by the gateway.

``--keep-alive-s`` sets uvicorn's idle keep-alive timeout (uvicorn's default is 5 s). The
benchmark raises it: with 5 s, an idle pooled connection of the gateway's relay can be reused
at the very moment the service closes it, and that call fails (see BENCHMARKS.md).
"""

from __future__ import annotations

import argparse

import uvicorn
from mcp.server import MCPServer

server = MCPServer("echo")


@server.tool()
def echo(text: str) -> str:
    """Return ``text`` unchanged."""
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Echo MCP service over Streamable HTTP (benchmark upstream).")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--keep-alive-s", type=int, default=5,
                        help="uvicorn's idle keep-alive timeout in seconds (uvicorn's default: 5)")
    args = parser.parse_args(argv)
    uvicorn.run(server.streamable_http_app(), host="127.0.0.1", port=args.port, log_level="warning",
                access_log=False, http="httptools", loop="uvloop", timeout_keep_alive=args.keep_alive_s)


if __name__ == "__main__":
    main()
