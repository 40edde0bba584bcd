"""Per-read cost of ``resources/read`` through a gateway process, over raw 2026-07-28 HTTP.

The gateway serves the e2e surface service (tests/e2e/surface_service.py, the official SDK's
``MCPServer``) over Streamable HTTP (the raw relay). One keep-alive client sends ``ROUNDS`` reads of
the same resource after ``WARMUP`` and reports the wall-time p50/p95/mean per read. Run it against
another checkout with ``PYTHONPATH=<checkout>/src`` to compare (the gateway child inherits it).

    .venv/bin/python -m bench.surface_reads [rounds]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx2
from tests.e2e.harness import GatewayProcess, stop_child
from tests.e2e.test_surface_e2e import NOTES, _deployment, start_http_service

WARMUP = 50


def main(rounds: int = 500) -> None:
    child, url = start_http_service()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = _deployment(Path(tmp) / "deployment", {"transport": "http", "url": url})
            with GatewayProcess(root) as gateway, httpx2.Client(timeout=30) as http:
                headers = {"Authorization": f"Bearer {gateway.token(roles=['writer'])}",
                           "Content-Type": "application/json", "Accept": "application/json",
                           "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "resources/read", "Mcp-Name": NOTES}
                body = {"jsonrpc": "2.0", "id": 1, "method": "resources/read",
                        "params": {"uri": NOTES, "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                                                           "io.modelcontextprotocol/clientCapabilities": {}}}}
                times = []
                for i in range(WARMUP + rounds):
                    started = time.perf_counter()
                    answer = http.post(gateway.url, headers=headers, json=body)
                    elapsed = time.perf_counter() - started
                    assert answer.status_code == 200 and "result" in answer.json(), answer.text[:300]
                    if i >= WARMUP:
                        times.append(elapsed * 1000)
        times.sort()
        print(f"resources/read through the gateway, {rounds} reads: p50 {statistics.median(times):.2f} ms, "
              f"p95 {times[int(0.95 * len(times))]:.2f} ms, mean {statistics.fmean(times):.2f} ms")
    finally:
        stop_child(child)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 500)
