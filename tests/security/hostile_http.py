"""A hostile 2026-07-28 MCP upstream on a loopback socket, writing exactly the bytes a test gives it.

It answers ``server/discover`` and ``tools/list`` correctly; each ``tools/call`` is answered by the
test's ``script`` (``None`` means a correct answer). A correct answer echoes the call's
``arguments["who"]``, so a test can tell whose answer a caller received.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson

from portcullis.config.model import HttpService
from portcullis.upstream.http_relay import HttpRelayConnector
from portcullis.upstream.sdk_client import SdkConnector

ECHO_TOOL = {"name": "echo", "description": "Echo who.", "inputSchema": {
    "type": "object", "properties": {"who": {"type": "string"}}, "required": ["who"]}}


def http(body: bytes, *, content_type: bytes = b"application/json", status: bytes = b"200 OK",
         extra: bytes = b"") -> bytes:
    """A well-formed response with a Content-Length."""
    return (b"HTTP/1.1 " + status + b"\r\nContent-Type: " + content_type + b"\r\nContent-Length: %d\r\n" % len(body)
            + extra + b"\r\n" + body)


def rpc_body(request_id: Any, result: Any) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": request_id, "result": result})


def echo_result(who: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": who}], "isError": False}


def correct(message: dict[str, Any], *, legacy: bool = False) -> bytes:
    """The right answer to ``message`` (discover, tools/list or an echo call).

    ``legacy``: a 2025-era service, which knows no ``server/discover`` and has an ``initialize``."""
    method = message["method"]
    if "id" not in message:
        return b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"
    if legacy and method == "server/discover":
        return http(orjson.dumps({"jsonrpc": "2.0", "id": message["id"],
                                  "error": {"code": -32601, "message": "Method not found"}}))
    if method == "initialize":
        result: dict[str, Any] = {"protocolVersion": message["params"]["protocolVersion"],
                                  "capabilities": {"tools": {}}, "serverInfo": {"name": "hostile", "version": "1"}}
    elif method == "server/discover":
        result = {"supportedVersions": ["2026-07-28"], "capabilities": {"tools": {}},
                                  "serverInfo": {"name": "hostile", "version": "1"}}
    elif method == "tools/list":
        result = {"tools": [ECHO_TOOL]}
    else:
        result = echo_result(message["params"]["arguments"]["who"])
    return http(rpc_body(message["id"], result))


@dataclass(frozen=True)
class Reply:
    """What the upstream writes for one call: ``chunks`` one write each, then maybe close.

    ``pause_s`` between writes models a slow upstream (an interim response now, the answer later);
    no test outcome depends on its length. ``before(n)``, if given, is awaited before chunk ``n``
    (n >= 1) is written: a test holds the answer back until an event it controls is set; ``gone()``
    is called if the gateway closes the connection meanwhile."""

    chunks: tuple[bytes, ...]
    close: bool = False
    pause_s: float = 0.0
    before: Callable[[int], Awaitable[None]] | None = None
    gone: Callable[[], None] | None = None


Script = Callable[[dict[str, Any], int], Reply | None]  # (request, index of this tools/call) -> reply
Control = Callable[[dict[str, Any]], Awaitable[bytes]]  # a test's own ``test/…`` request -> the HTTP answer


@dataclass
class HostileUpstream:
    script: Script
    legacy: bool = False
    connections: int = 0
    calls: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    server: asyncio.Server | None = None
    gone_while_held: asyncio.Event = field(default_factory=asyncio.Event)  # see _held
    control: Control | None = None  # answers requests whose method starts with ``test/``

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/mcp"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"POST "):  # the SDK's GET stream and DELETE: not offered
                    writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nAllow: POST\r\nContent-Length: 0\r\n\r\n")
                    continue
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                message = orjson.loads(await reader.readexactly(length))
                self.requests.append(message)
                reply = None
                if self.control is not None and str(message.get("method")).startswith("test/"):
                    reply = Reply((await self.control(message),))
                elif message["method"] == "tools/call":
                    reply = self.script(message, self.calls)
                    self.calls += 1
                gone = False  # the gateway closed the connection while the answer was held back
                for n, chunk in enumerate(reply.chunks if reply else (correct(message, legacy=self.legacy),)):
                    if n and reply is not None and reply.pause_s:
                        await asyncio.sleep(reply.pause_s)
                    if n and reply is not None and reply.before is not None:
                        gone = not await self._held(reply, n, reader)
                        if gone:
                            break
                    writer.write(chunk)
                    await writer.drain()
                if gone or (reply is not None and reply.close):
                    break
        except (asyncio.IncompleteReadError, ConnectionError, StopIteration):
            pass
        except asyncio.CancelledError:  # the test is over and the server closes: nothing to report
            pass
        finally:
            writer.close()

    async def _held(self, reply: Reply, n: int, reader: asyncio.StreamReader) -> bool:
        """Await ``reply.before(n)``; False (and :attr:`gone_while_held` set) if the gateway closed the
        connection first: how a test sees a relayed call cancelled (the relay closes its request stream)."""
        assert reply.before is not None
        held = asyncio.ensure_future(reply.before(n))
        eof = asyncio.ensure_future(reader.read(1))
        await asyncio.wait({held, eof}, return_when=asyncio.FIRST_COMPLETED)
        if held.done():
            eof.cancel()
            return True
        held.cancel()
        self.gone_while_held.set()
        if reply.gone is not None:
            reply.gone()
        return False


@asynccontextmanager
async def hostile_upstream(script: Script, *, legacy: bool = False) -> AsyncIterator[HostileUpstream]:
    upstream = HostileUpstream(script, legacy)
    upstream.server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    async with upstream.server:
        yield upstream


@asynccontextmanager
async def relay_to(upstream: HostileUpstream, **service: Any) -> AsyncIterator[Any]:
    """The gateway's relay connection to ``upstream`` (service settings as in gateway.yaml)."""
    cfg = HttpService.model_validate({"transport": "http", "url": upstream.url, **service})
    async with HttpRelayConnector("hostile", cfg).open() as connection:
        yield connection


@asynccontextmanager
async def sdk_client_to(upstream: HostileUpstream, **service: Any) -> AsyncIterator[Any]:
    """The gateway's SDK-client connection to a legacy-era ``upstream``."""
    cfg = HttpService.model_validate({"transport": "http", "url": upstream.url, **service})
    async with SdkConnector("hostile", cfg, {}).open() as connection:
        yield connection


async def echo(connection: Any, who: str, *, timeout_s: float = 10.0) -> str:
    """Call echo as ``who``; return the text of the answer."""
    result = await connection.call_tool("echo", {"who": who}, timeout_s=timeout_s, request_id=f"req-{who}")
    return str(result["content"][0]["text"])


async def serve_script(script: Script, port: int, control: Control | None = None) -> None:
    """Serve ``script`` on ``127.0.0.1:port`` until cancelled (a test service's HTTP mode)."""
    upstream = HostileUpstream(script, control=control)
    upstream.server = await asyncio.start_server(upstream.handle, "127.0.0.1", port)
    async with upstream.server:
        await upstream.server.serve_forever()


def service_main(stdio_main: Callable[[], None], script: Script, control: Control | None = None) -> None:
    """``python -m <service> stdio`` or ``… http --port P``: a test service's command line."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("transport", choices=("stdio", "http"))
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    if args.transport == "stdio":
        stdio_main()
        return
    try:
        asyncio.run(serve_script(script, args.port, control))
    except KeyboardInterrupt:  # the test stops it with SIGINT
        pass
