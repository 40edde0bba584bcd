"""Rotation of the gateway's upstream signing keys while it runs, with kit-verified services."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx2
import yaml
from mcp import MCPError

from tests.e2e.harness import GatewayProcess, copy_demo


async def test_services_keep_verifying_across_rotations(tmp_path: Path) -> None:
    """Children are restarted ahead of need (new child up before the old one goes): no call ever fails."""
    root = copy_demo(tmp_path / "deployment")
    config = yaml.safe_load((root / "gateway.yaml").read_text())
    config["upstream_tokens"] = {"rotate_every_s": 2.0, "prepublished_keys": 1}
    (root / "gateway.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    with GatewayProcess(root) as gateway:
        kids_seen: set[str] = set()
        ok = failures = 0
        deadline = time.monotonic() + 7.5  # three rotations
        async with gateway.client() as client:
            while time.monotonic() < deadline:
                kids_seen.add(httpx2.get(f"{gateway.base}/.well-known/jwks.json").json()["keys"][0]["kid"])
                try:
                    result = await client.call_tool("billing.get_invoice", {"invoice_id": "INV-1001"})
                    assert not result.is_error, result.content
                    ok += 1
                except MCPError as exc:
                    assert exc.code == -31002  # only "unavailable" while a child restarts
                    failures += 1
                await asyncio.sleep(0.05)
        log = gateway.log()
    assert len(kids_seen) >= 3  # the current key changed at least twice
    assert ok > 20
    assert "service restarted to refresh the gateway's keys" in log
    assert "unauthenticated" not in log
    assert failures == 0
