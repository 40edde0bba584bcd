"""An HTTPS MCP service that requires a client certificate (mTLS), for upstream-TLS tests."""

from __future__ import annotations

import argparse
import base64
import json

import uvicorn
from mcp.server import MCPServer
from mcp.server.mcpserver import Context

from portcullis.identity.tls import TlsConfig, uvicorn_kwargs

server = MCPServer("secure")


@server.tool(description="The audience of the bearer token this call arrived with.")
def token_audience(ctx: Context) -> str:
    auth = (ctx.headers or {}).get("authorization", "")
    if not auth.startswith("Bearer "):
        return "none"
    body = auth.removeprefix("Bearer ").split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))["aud"])


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("--port", "--cert", "--key", "--ca"):
        parser.add_argument(name, required=True)
    args = parser.parse_args()
    tls = TlsConfig(cert_file=args.cert, key_file=args.key, client_ca_file=args.ca, client_auth="required")
    config = uvicorn.Config(server.streamable_http_app(), host="127.0.0.1", port=int(args.port), log_level="warning",
                            lifespan="on", **uvicorn_kwargs(tls))
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
