"""The response cache through a real gateway (``portcullis serve``) and a counting stdio upstream.

Two tenants call the same cached tool with the same arguments: each is forwarded once and then
answered from its own entry (the upstream's count shows which answer is whose); an ``isError``
answer is never stored; the audit trail holds a decision and an outcome for every call, the
outcomes saying ``cache: miss`` / ``hit``; the metrics count hits and misses.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import httpx2

from tests.e2e.audit_load import STORE_FILE, read_chain
from tests.e2e.counting_service import TOOL
from tests.e2e.harness import REPO, GatewayProcess, manifest_from_live, run_cli, write_deployment

LOOKUP = "counting.lookup"


def build(root: Path) -> Path:
    gateway = {
        "version": 1,
        "identity": {"allow_insecure_dev_issuer": True},
        "services": {"counting": {"transport": "stdio", "command": sys.executable,
                                  "args": ["-m", "tests.e2e.counting_service"], "cwd": str(REPO),
                                  "timeout_s": 10}},
    }
    manifest = manifest_from_live("counting", TOOL, annotations={"readOnlyHint": True}, cache={"ttl_s": 600})
    write_deployment(root, gateway, [manifest])
    done = run_cli("pin", str(root))
    assert done.returncode == 0, done.stdout + done.stderr
    lint = run_cli("lint", str(root))
    assert lint.returncode == 0, lint.stdout + lint.stderr
    return root


def test_cache_partitions_by_tenant_and_is_audited(tmp_path: Path) -> None:
    root = build(tmp_path / "deployment")
    texts: dict[str, list[str]] = {"acme": [], "globex": []}

    async def calls(gateway: GatewayProcess) -> None:
        for _ in range(2):
            for tenant in ("acme", "globex"):
                async with gateway.client(token=gateway.token(tenant=tenant)) as client:
                    answer = await client.call_tool(LOOKUP, {"key": "k"})
                    texts[tenant].append(answer.content[0].text)  # type: ignore[union-attr]
        async with gateway.client() as client:
            for _ in range(2):
                failed = await client.call_tool(LOOKUP, {"key": "fail"})
                assert failed.is_error

    with GatewayProcess(root) as gateway:
        anyio.run(calls, gateway)
        scrape = httpx2.get(f"{gateway.admin_base}/metrics", timeout=10).text
    # each tenant was forwarded once (its own count) and then served its own entry
    assert texts["acme"][0] == texts["acme"][1] and texts["globex"][0] == texts["globex"][1]
    assert texts["acme"][0] != texts["globex"][0]
    assert {texts["acme"][0], texts["globex"][0]} == {"k #1", "k #2"}
    records = anyio.run(read_chain, gateway.state_dir / STORE_FILE)
    outcomes = [r.fields for r in records if r.kind == "outcome"]
    decisions = [r for r in records if r.kind == "decision"]
    assert len(decisions) == len(outcomes) == 6
    assert [o.get("cache") for o in outcomes] == ["miss", "miss", "hit", "hit", "miss", "miss"]
    assert [o["outcome"] for o in outcomes[-2:]] == ["tool_error", "tool_error"]
    assert 'portcullis_response_cache_total{event="hit"} 2.0' in scrape
    assert 'portcullis_response_cache_total{event="miss"} 4.0' in scrape
