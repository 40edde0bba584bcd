"""Attempt records end to end: a running gateway writes the first refusal of a key at once (no stop
needed), counts refusals by reason in /metrics, and flushes the counted repeats at a clean stop."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import anyio
import httpx2

from portcullis.audit.record import AuditRecord
from portcullis.audit.store import SqliteAuditStore
from tests.e2e.harness import GatewayProcess
from tests.security.conftest import demo_with

HEADERS = {"Content-Type": "application/json", "Accept": "application/json", "MCP-Protocol-Version": "2026-07-28",
           "Mcp-Method": "tools/list"}


def read(path: Path) -> list[AuditRecord]:
    async def go() -> list[AuditRecord]:
        async with await SqliteAuditStore.open_readonly(path) as store:
            return await store.read(0, 100_000)
    return anyio.run(go)


def attempts(path: Path) -> list[dict]:
    return [r.fields for r in read(path) if r.kind == "attempt"] if path.exists() else []


def test_refusals_are_written_at_once_counted_in_metrics_and_flushed_at_stop(tmp_path: Path) -> None:
    root = demo_with(tmp_path / "deployment", audit={"attempts": {"window_s": 600}})
    gateway = GatewayProcess(root)
    store = gateway.state_dir / "audit.sqlite3"
    try:
        gateway.wait_ready()
        with httpx2.Client(timeout=30) as client:
            for _ in range(50):
                assert client.post(gateway.url, headers=HEADERS, content=b"{}").status_code == 401
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not attempts(store):
                time.sleep(0.1)
            running = attempts(store)  # the window (600 s) has not closed: only the first is written
            assert [(f["reason"], f["count"]) for f in running] == [("missing_credentials", 1)]
            scrape = client.get(f"{gateway.admin_base}/metrics").text
        assert 'portcullis_attempts_total{reason="missing_credentials"} 50.0' in scrape
    finally:
        gateway.stop()
    stopped = attempts(store)
    assert [f["count"] for f in stopped] == [1, 49]  # the clean stop wrote the repeats
    assert stopped[1]["first_ts"] <= stopped[1]["last_ts"]


def test_too_many_connections_from_one_address_is_an_attempt(tmp_path: Path) -> None:
    count = 3
    root = demo_with(tmp_path / "deployment", limits={"max_connections_per_client": 1})
    gateway = GatewayProcess(root)
    store = gateway.state_dir / "audit.sqlite3"
    try:
        gateway.wait_ready()
        held = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
        try:
            for _ in range(count):
                extra = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
                assert extra.recv(64).startswith(b"HTTP/1.1 503")
                extra.close()
        finally:
            held.close()
    finally:
        gateway.stop()
    refused = [f for f in attempts(store) if f["reason"] == "too_many_connections"]
    assert sum(f["count"] for f in refused) == count
    assert all(f["status"] == 503 and f["source"] == "127.0.0.1" for f in refused)
