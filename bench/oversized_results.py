"""Resident memory of the gateway under a stream of oversized upstream results (issue 10, item 9).

Run from the repository root::

    .venv/bin/python -m bench.oversized_results                 # 50 calls per transport, 64 MiB answers
    .venv/bin/python -m bench.oversized_results --calls 10 --size-mib 32

What it does, all on 127.0.0.1, every loop with a fixed count and a time limit:

1. starts an HTTP upstream (2026-07-28, so the gateway's relay serves it) whose ``blob`` tool
   answers with a JSON result of ``--size-mib`` MiB, streamed chunked, and writes a deployment
   with it and a stdio service (this file run with ``--stdio-child``) whose ``blob`` answers one
   line of the same size; pins it and starts ``portcullis serve`` with default limits;
2. samples the gateway's ``VmRSS`` after start, then calls ``blob`` ``--calls`` times on each
   service (checking each call fails with -31005, or with any error on a gateway without the
   limit), sampling ``VmRSS`` after every call and ``VmHWM`` (the peak) at the end; a stdio child is
   restarted after each oversized line, so the loop waits for its small ``ping`` tool first.

``PYTHONPATH=<other>/src`` runs the same measurement against another checkout's gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2
import yaml

from bench.run import HOST, Child, envelope, free_port, issue_token, modern_headers, pin, wait_until

BLOB = {"name": "blob", "description": "A very large answer.", "inputSchema": {"type": "object"}}
PING = {"name": "ping", "description": "A small answer.", "inputSchema": {"type": "object"}}
CHUNK = 1 << 16


# ---------------------------------------------------------------------------- the upstreams


async def http_upstream(port: int, size: int) -> None:
    """A raw 2026-07-28 service: discover, tools/list, and a ``blob`` call streamed chunked."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                message = json.loads(await reader.readexactly(length))
                rid, method = message.get("id"), message.get("method")
                if method == "tools/call":
                    prefix = b'{"jsonrpc":"2.0","id":%d,"result":{"content":[{"type":"text","text":"' % rid
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n%s\r\n" % (len(prefix), prefix))
                    piece = b"%x\r\n%s\r\n" % (CHUNK, b"x" * CHUNK)
                    for _ in range(size // CHUNK):
                        writer.write(piece)
                        await writer.drain()
                    tail = b'"}]}}'
                    writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(tail), tail))
                else:
                    result = {"tools": [BLOB]} if method == "tools/list" else {
                        "supportedVersions": ["2026-07-28"], "capabilities": {"tools": {}},
                        "serverInfo": {"name": "oversized", "version": "1"}}
                    body = json.dumps({"jsonrpc": "2.0", "id": rid, "result": result}).encode()
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, IndexError):
            pass
        writer.close()

    server = await asyncio.start_server(handle, HOST, port)
    async with server:
        await server.serve_forever()


def stdio_child(size: int) -> None:
    """A raw stdio service (legacy handshake): ``ping`` answers small, ``blob`` one huge line."""
    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        message = json.loads(line) if line.strip() else {}
        rid, method = message.get("id"), message.get("method")
        if rid is None:
            continue
        if method == "initialize":
            result: Any = {"protocolVersion": message["params"]["protocolVersion"], "capabilities": {"tools": {}},
                           "serverInfo": {"name": "oversized-stdio", "version": "1"}}
        elif method == "tools/list":
            result = {"tools": [BLOB, PING]}
        elif method == "tools/call" and message["params"]["name"] == "blob":
            out.write(b'{"jsonrpc":"2.0","id":%d,"result":{"content":[{"type":"text","text":"' % rid)
            for _ in range(size // CHUNK):
                out.write(b"x" * CHUNK)
            out.write(b'"}]}}\n')
            out.flush()
            continue
        elif method == "tools/call":
            result = {"content": [{"type": "text", "text": "pong"}]}
        else:
            out.write(json.dumps({"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": "no"}}).encode()
                      + b"\n")
            out.flush()
            continue
        out.write(json.dumps({"jsonrpc": "2.0", "id": rid, "result": result}).encode() + b"\n")
        out.flush()


# ---------------------------------------------------------------------------- the measurement


def rss_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


def deployment(root: Path, upstream_url: str, size: int) -> Path:
    gateway = {"version": 1, "listen": {"host": HOST, "port": 0}, "identity": {"allow_insecure_dev_issuer": True},
               "state_dir": str(root.parent / "state"),
               "services": {
                   "big_http": {"transport": "http", "url": upstream_url, "timeout_s": 60},
                   "big_stdio": {"transport": "stdio", "command": sys.executable, "timeout_s": 60,
                                 "args": ["-m", "bench.oversized_results", "--stdio-child", "--size", str(size)],
                                 "cwd": str(Path(__file__).resolve().parents[1]), "env_passthrough": ["PYTHONPATH"],
                                 "health_interval_s": 1.0}}}
    root.mkdir(parents=True)
    (root / "gateway.yaml").write_text(yaml.safe_dump(gateway, sort_keys=False))
    for service, tools in (("big_http", [BLOB]), ("big_stdio", [BLOB, PING])):
        for tool in tools:
            manifest = {"name": tool["name"], "service": service, "owner": "bench@example.com",
                        "description": tool["description"], "risk": "low",
                        "classification": {"input": "Internal", "output": "Internal"},
                        "input_schema": tool["inputSchema"], "policy": {"allowed_callers": ["agent:bench-agent"]}}
            path = root / "tools" / service / f"{tool['name']}.yml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return root


def call(client: httpx2.Client, url: str, token: str, name: str) -> dict[str, Any]:
    headers = {**modern_headers("tools/call", name), "Authorization": f"Bearer {token}"}
    response = client.post(url, json=envelope(1, "tools/call", {"name": name, "arguments": {}}), headers=headers)
    return dict(response.json())


def measure(calls: int, size: int, workdir: Path) -> dict[str, Any]:
    upstream_port, port = free_port(), free_port()
    children: list[Child] = []
    try:
        upstream = Child("upstream", [sys.executable, "-m", "bench.oversized_results", "--upstream",
                                      str(upstream_port), "--size", str(size)], workdir)
        children.append(upstream)
        url = f"http://{HOST}:{upstream_port}/mcp"
        wait_until(upstream, lambda: httpx2.post(url, json=envelope(1, "server/discover", {}),
                                                 headers=modern_headers("server/discover"), timeout=2).is_success,
                   "upstream")
        root = deployment(workdir / "deployment", url, size)
        pin(root)
        gateway = Child("gateway", [sys.executable, "-m", "portcullis", "serve", "--config", str(root),
                                    "--port", str(port), "--admin-port", str(free_port())], workdir)
        children.append(gateway)
        base = f"http://{HOST}:{port}"
        wait_until(gateway, lambda: httpx2.get(f"{base}/healthz", timeout=2).status_code == 200, "gateway", 60)
        token = issue_token(root, port)
        figures: dict[str, Any] = {"size_mib": size >> 20, "calls": calls, "start_rss_kib": rss_kib(gateway.proc.pid)}
        with httpx2.Client(timeout=120) as client:
            for service in ("big_http", "big_stdio"):
                rss: list[int] = []
                codes: dict[str, int] = {}
                started = time.monotonic()
                for _ in range(calls):
                    if service == "big_stdio":  # restarted after every oversized line: wait for it
                        deadline = time.monotonic() + 60
                        while "result" not in call(client, f"{base}/mcp", token, "big_stdio.ping"):
                            if time.monotonic() > deadline:
                                raise TimeoutError("stdio service did not come back")
                            time.sleep(0.05)
                    answer = call(client, f"{base}/mcp", token, f"{service}.blob")
                    code = str(answer.get("error", {}).get("code", "ok"))
                    codes[code] = codes.get(code, 0) + 1
                    rss.append(rss_kib(gateway.proc.pid)["VmRSS"])
                figures[service] = {"codes": codes, "rss_max_kib": max(rss), "rss_last_kib": rss[-1],
                                    "seconds": round(time.monotonic() - started, 1)}
        figures["end_rss_kib"] = rss_kib(gateway.proc.pid)
        return figures
    finally:
        for child in reversed(children):
            child.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--stdio-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.upstream:
        asyncio.run(http_upstream(args.upstream, args.size))
    elif args.stdio_child:
        stdio_child(args.size)
    else:
        with tempfile.TemporaryDirectory(prefix="oversized-") as tmp:
            print(json.dumps(measure(args.calls, args.size_mib << 20, Path(tmp)), indent=2))


if __name__ == "__main__":
    main()
