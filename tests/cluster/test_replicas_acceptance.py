"""Issue 16's acceptance across replicas. Each test starts its own 2-3 replicas over the real PostgreSQL and
Redis (fresh schema and key prefix per test, the schema created by `portcullis storage migrate`) with
tests/cluster/replicas.py.
"""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import httpx2
import pytest
import yaml
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.cluster.replicas import ClusterDeployment, cluster_deployment, replicas
from tests.e2e.harness import GatewayProcess, run_cli
from tests.e2e.test_approvals import approver, ask, pending, refund, vote
from tests.e2e.test_sessions_across_replicas import AlternatingTransport

LIMITED = "files.list_dir"
LIMIT = 100


@pytest.fixture
def cluster(tmp_path: Any, pg_url: str, redis_url: str, redis_prefix: str) -> ClusterDeployment:
    return cluster_deployment(tmp_path / "deployment", pg_url, redis_url, redis_prefix, edit={
        "admin": {"responders": ["role:oncall"]},
        "authorization": {"environment": "production", "limits": [
            {"id": "global-list", "tools": [LIMITED], "per": ["tool"], "window_s": 60, "max_calls": LIMIT}]}})


async def _list_dir(gateway: GatewayProcess) -> bool:
    async with gateway.client() as client:
        try:
            return not (await client.call_tool(LIMITED, {"path": "."})).is_error
        except MCPError:
            return False


async def test_any_replica_serves_any_session(cluster: ClusterDeployment) -> None:
    """One SDK session alternates over three replicas, every call served."""
    with replicas(cluster, 3) as gateways:
        transport = AlternatingTransport([g.port for g in gateways])
        async with httpx2.AsyncClient(transport=transport, timeout=30, headers=gateways[0].auth_headers()) as http:
            async with Client(streamable_http_client(gateways[0].url, http_client=http), cache=None,
                              mode="legacy") as client:
                for i in range(9):
                    assert not (await client.call_tool("billing.get_invoice", {"invoice_id": f"INV-100{i % 3 + 1}"}
                                                       )).is_error
        assert {port for port, _, _ in transport.served} == {g.port for g in gateways}


async def test_a_global_limit_holds_within_five_percent_across_three_replicas(cluster: ClusterDeployment) -> None:
    """Calls spread over three replicas: at most LIMIT succeed (within 5%) in the window, not 3 x LIMIT."""
    with replicas(cluster, 3) as gateways:
        results = await asyncio.gather(*(_list_dir(gateways[i % 3]) for i in range(2 * LIMIT)))
    assert LIMIT * 0.95 <= sum(results) <= LIMIT * 1.05


async def test_a_kill_switch_set_on_one_replica_applies_on_all_within_a_second(cluster: ClusterDeployment) -> None:
    """A switch made through replica 0's admin API refuses the tool on replicas 1 and 2 within 1 s."""
    with replicas(cluster, 3) as gateways:
        assert all([await _list_dir(g) for g in gateways])
        responder = gateways[0].token(user="olivia", agent=None, roles=["oncall"])
        made = httpx2.post(gateways[0].admin_base + "/kill-switches", headers={"authorization": f"Bearer {responder}"},
                           json={"kind": "tool", "target": LIMITED, "reason": "incident"}, timeout=30)
        assert made.status_code == 201, made.text
        set_at = time.monotonic()
        for gateway in gateways[1:]:
            while await _list_dir(gateway):
                assert time.monotonic() - set_at < 1.0, "kill switch not applied within 1 s"


async def test_an_approval_granted_on_one_replica_is_redeemed_once_on_another(cluster: ClusterDeployment) -> None:
    """Asked on replica 0, approved on replica 1, redeemed on replica 2; a replay anywhere is refused."""
    with replicas(cluster, 3) as gateways:
        approval_id = (await pending(gateways[0], refund(120)))["approval_id"]
        assert vote(gateways[1], approval_id, "approve", approver(gateways[1], "bob")).status_code == 200
        assert not isinstance(await ask(gateways[2], refund(120), approval_id=approval_id), MCPError)
        for gateway in gateways:
            replay = await ask(gateway, refund(120), approval_id=approval_id)
            assert isinstance(replay, MCPError) and replay.code == -31013


async def test_the_audit_verifies_after_concurrent_writers(cluster: ClusterDeployment) -> None:
    """Three replicas writing at once leave a trail `portcullis audit verify` accepts."""
    with replicas(cluster, 3) as gateways:
        await asyncio.gather(*(_list_dir(gateways[i % 3]) for i in range(60)))
    verified = run_cli("audit", "verify", "--config", str(cluster.root), "--state-dir", str(cluster.state_dir),
                       env=cluster.env)
    assert verified.returncode == 0, verified.stdout + verified.stderr


async def test_a_replica_killed_mid_load_loses_no_acknowledged_record(cluster: ClusterDeployment) -> None:
    """Every call acknowledged by a replica SIGKILLed mid-load has its decision and outcome in the trail."""
    with replicas(cluster, 2) as gateways:
        acknowledged: list[str] = []

        async def one(i: int) -> None:
            async with gateways[i % 2].client() as client:
                try:
                    result = await client.call_tool("billing.get_invoice", {"invoice_id": f"INV-100{i % 3 + 1}"})
                except (MCPError, httpx2.HTTPError, OSError):
                    return
                if not result.is_error:
                    acknowledged.append(str(i))

        load = [asyncio.create_task(one(i)) for i in range(80)]
        await asyncio.sleep(1.0)
        gateways[1].proc.send_signal(signal.SIGKILL)
        await asyncio.gather(*load, return_exceptions=True)
    assert acknowledged
    searched = run_cli("audit", "search", "--config", str(cluster.root), "--kind", "outcome", "--limit", "100000",
                       "--json", env=cluster.env)
    assert searched.returncode == 0, searched.stderr
    outcomes = [yaml.safe_load(line) for line in searched.stdout.splitlines() if line.strip()]
    assert len(outcomes) >= len(acknowledged)
