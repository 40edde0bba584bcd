"""Rotation of the gateway's upstream signing keys while it runs, with kit-verified services."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx2
import yaml
from mcp import MCPError

from tests.e2e.harness import REPO, GatewayProcess, copy_demo


async def test_children_slower_to_start_than_the_rotation_never_fail_a_call(tmp_path: Path) -> None:
    """Keys rotate every second while each billing child takes three seconds to start: the child
    still serving verifies tokens signed by keys published after its spawn (the endorsed key set
    rides with the call), so no call fails, whatever the machine's speed."""
    root = copy_demo(tmp_path / "deployment")
    config = yaml.safe_load((root / "gateway.yaml").read_text())
    config["upstream_tokens"] = {"rotate_every_s": 1.0, "prepublished_keys": 1}
    # billing is Confidential, whose data may not reach logs by default, which withholds the child's
    # stderr; this test reads the child's "key set adopted" line, so its class may reach logs here
    config.setdefault("governance", {})["sinks"] = {
        "Public": ["caller", "audit", "siem", "cache", "approval_view", "logs"],
        "Internal": ["caller", "audit", "siem", "cache", "approval_view", "logs"],
        "Confidential": ["caller", "audit", "siem", "cache", "approval_view", "logs"],
        "Restricted": ["caller", "approval_view"]}
    config["services"]["billing"] = {"transport": "stdio", "module": "tests.e2e.slow_billing", "cwd": str(REPO),
                                     "env": {"SLOW_START_S": "3"}}
    (root / "gateway.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    with GatewayProcess(root) as gateway:
        kids_seen: set[str] = set()
        ok, failures = 0, []
        deadline = time.monotonic() + 300  # a bound for a hung run only: the loop ends on what it saw
        async with gateway.client() as client:
            while (len(kids_seen) < 6 or ok < 20) and time.monotonic() < deadline:
                kids_seen.add(httpx2.get(f"{gateway.base}/.well-known/jwks.json").json()["keys"][0]["kid"])
                try:
                    result = await client.call_tool("billing.get_invoice", {"invoice_id": "INV-1001"})
                    assert not result.is_error, result.content
                    ok += 1
                except MCPError as exc:
                    failures.append((exc.code, exc.error.message))
                await asyncio.sleep(0.05)
        log = gateway.log()
    assert failures == []
    assert len(kids_seen) >= 6 and ok >= 20  # five rotations, calls throughout
    assert "gateway key set adopted" in log  # a child really did serve tokens signed after its spawn
    assert "service restarted to refresh the gateway's keys" in log
    assert "actor token refused" not in log
