"""Issue 16's acceptance across replicas: 2-3 replicas over the real PostgreSQL and Redis (a fresh schema and key
prefix per cluster, the schema created by `portcullis storage migrate`) with tests/cluster/replicas.py.

Starting replicas is the slow part, so the tests that leave their replicas running share three (one set with the
billing service, one with the files service, each with its own schema and prefix): each of them calls as an agent
of its own (the limit counts per agent, a chain check reads its own calls by their tokens), so none sees another's
counters or records. The test that kills a replica starts its own two.

No timing asserts except the issue's own "a kill switch set on one applies on all within one second", measured
from the set's answer to the other replicas' first refusal (polled every 20 ms over open sessions).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import psycopg
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.cluster.conftest import REDIS_BASE, fresh_pg_schema, pg_url_for, private_redis_prefix
from tests.cluster.replicas import ClusterDeployment, cluster_deployment, replicas
from tests.e2e.harness import GatewayProcess, run_cli
from tests.e2e.test_approvals import REFUND, approver, ask, pending, refund, vote
from tests.e2e.test_sessions_across_replicas import AlternatingTransport

LIMITED = "files.list_dir"
LIMIT = 100
RULE = "global-list"
POLICY_REFUSED, APPROVAL_REFUSED, KILLED = -31020, -31013, -31050
POLL_S = 0.02
pytestmark = pytest.mark.xdist_group("cluster/test_replicas_acceptance.py")  # one worker: shared replicas


def _cluster(tmp_path: Path, pg_url: str, redis_url: str, redis_prefix: str, service: str) -> ClusterDeployment:
    # `per: [issuer, agent]`: every call of one agent of the development issuer shares one counter, on whichever
    # replica; only the one demo service the tests call (every replica start spawns each service)
    return cluster_deployment(tmp_path / "deployment", pg_url, redis_url, redis_prefix, services=(service,), edit={
        "admin": {"responders": ["role:oncall"]},
        "authorization": {"environment": "production", "limits": [
            {"id": RULE, "tools": [LIMITED], "per": ["issuer", "agent"], "window_s": 120, "max_calls": LIMIT}]}})


@dataclass(frozen=True, slots=True)
class Replicas:
    cluster: ClusterDeployment
    gateways: list[GatewayProcess]


@contextmanager
def _shared(tmp_path: Path, service: str) -> Iterator[Replicas]:
    """Three ready replicas over a schema and key prefix of their own, stopped afterwards."""
    with fresh_pg_schema() as schema, private_redis_prefix() as prefix:
        cluster = _cluster(tmp_path, pg_url_for(schema), REDIS_BASE, prefix, service)
        with replicas(cluster, 3) as gateways:
            yield Replicas(cluster, gateways)


def _alive(shared: Replicas) -> Replicas:
    dead = [g.port for g in shared.gateways if g.proc.poll() is not None]
    assert not dead, f"a shared replica exited (an earlier test?): {dead}"
    return shared


@pytest.fixture(scope="module")
def files_replicas_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    with _shared(tmp_path_factory.mktemp("files"), "files") as shared:
        yield shared


@pytest.fixture(scope="module")
def billing_replicas_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    with _shared(tmp_path_factory.mktemp("billing"), "billing") as shared:
        yield shared


@pytest.fixture
def files_replicas(files_replicas_module: Replicas) -> Replicas:
    """Three replicas with the files service only (``files.list_dir``, the limited tool), shared."""
    return _alive(files_replicas_module)


@pytest.fixture
def billing_replicas(billing_replicas_module: Replicas) -> Replicas:
    """Three replicas with the billing service only (invoices and refunds), shared."""
    return _alive(billing_replicas_module)


@pytest.fixture
def billing_cluster(tmp_path: Path, pg_url: str, redis_url: str, redis_prefix: str) -> ClusterDeployment:
    """A cluster of its own with the billing service only, for the test that kills a replica."""
    return _cluster(tmp_path, pg_url, redis_url, redis_prefix, "billing")


def _jti(token: str) -> str:
    payload = token.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["jti"])


def _chain(cluster: ClusterDeployment) -> list[tuple[str, str, dict[str, Any]]]:
    """(kind, request_id, fields) of every record in the PostgreSQL chain, in chain order."""
    with psycopg.connect(cluster.env["PORTCULLIS_TEST_PG_URL"], connect_timeout=10) as conn:
        rows = conn.execute("SELECT kind, request_id, fields FROM audit_record ORDER BY idx").fetchall()
    return [(kind, request_id, json.loads(fields)) for kind, request_id, fields in rows]


def _verify(cluster: ClusterDeployment) -> str:
    verified = run_cli("audit", "verify", "--config", str(cluster.root), "--state-dir", str(cluster.state_dir),
                       env=cluster.env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    return verified.stdout


async def _sessions(stack: AsyncExitStack, gateways: list[GatewayProcess], agent: str) -> list[Any]:
    """One SDK session per replica, as ``agent`` (a token of its own on each)."""
    return [await stack.enter_async_context(g.client(token=g.token(agent=agent))) for g in gateways]


async def _list_dir(client: Any) -> MCPError | None:
    """None when the call was served, else the refusal."""
    try:
        result = await client.call_tool(LIMITED, {"path": "."})
    except MCPError as exc:
        return exc
    assert not result.is_error, result
    return None


async def _until(condition: Callable[[], Awaitable[bool]], deadline_s: float) -> float:
    """Poll ``condition`` every 20 ms; the seconds it took to hold (fails past ``deadline_s``)."""
    start = time.monotonic()
    while not await condition():
        assert time.monotonic() - start < deadline_s, f"not within {deadline_s} s"
        await asyncio.sleep(POLL_S)
    return time.monotonic() - start


async def test_any_replica_serves_any_session(billing_replicas: Replicas) -> None:
    """One SDK session alternates over three replicas request by request, every call served."""
    gateways = billing_replicas.gateways
    transport = AlternatingTransport([g.port for g in gateways])
    async with httpx2.AsyncClient(transport=transport, timeout=30, headers=gateways[0].auth_headers()) as http:
        async with Client(streamable_http_client(gateways[0].url, http_client=http), cache=None,
                          mode="legacy") as client:
            for i in range(9):
                assert not (await client.call_tool("billing.get_invoice", {"invoice_id": f"INV-100{i % 3 + 1}"}
                                                   )).is_error
    posts = [(port, status) for port, method, status in transport.served if method == "POST"]
    assert {port for port, _ in posts} == {g.port for g in gateways}
    assert all(status < 400 for _, status in posts), posts


async def test_a_global_limit_holds_within_five_percent_across_three_replicas(files_replicas: Replicas) -> None:
    """2 x LIMIT concurrent calls spread over three replicas: LIMIT (within 5%) are served, not 3 x LIMIT, and
    every other one is refused by the limit itself (not by a store error)."""
    gateways = files_replicas.gateways
    async with AsyncExitStack() as stack:
        clients = await _sessions(stack, gateways, "support-limit")
        gate = asyncio.Semaphore(24)

        async def one(i: int) -> tuple[int, MCPError | None]:
            async with gate:
                return i % 3, await _list_dir(clients[i % 3])

        results = await asyncio.gather(*(one(i) for i in range(2 * LIMIT)))
    served = [replica for replica, refusal in results if refusal is None]
    refusals = [refusal for _, refusal in results if refusal is not None]
    assert LIMIT * 0.95 <= len(served) <= LIMIT * 1.05, len(served)
    assert set(served) == {0, 1, 2}  # every replica served some: the counter is shared, not partitioned
    assert all(r.code == POLICY_REFUSED and (r.data or {}).get("rule_id") == f"limits/{RULE}" for r in refusals), \
        {(r.code, json.dumps(r.data)) for r in refusals}


async def test_a_kill_switch_set_on_one_replica_applies_on_all_within_a_second(files_replicas: Replicas
                                                                              ) -> None:
    """A switch set through replica 0's admin API refuses the tool on replicas 1 and 2 within 1 s of the set's
    answer; lifted with the CLI (`portcullis kill lift -c`, straight to PostgreSQL), the tool works again
    everywhere."""
    gateways = files_replicas.gateways
    async with AsyncExitStack() as stack:
        clients = await _sessions(stack, gateways, "support-kill")
        assert [await _list_dir(c) for c in clients] == [None, None, None]
        responder = gateways[0].token(user="olivia", agent=None, roles=["oncall"])
        async with httpx2.AsyncClient(timeout=30) as admin:
            made = await admin.post(gateways[0].admin_base + "/kill-switches",
                                    headers={"authorization": f"Bearer {responder}"},
                                    json={"kind": "tool", "target": LIMITED, "reason": "incident"})
        set_at = time.monotonic()
        assert made.status_code == 201, made.text
        switch_id = made.json()["id"]

        async def refused_on(client: Any) -> float:
            async def refused() -> bool:
                refusal = await _list_dir(client)
                assert refusal is None or refusal.code == KILLED, refusal
                return refusal is not None
            await _until(refused, 15.0)
            return time.monotonic() - set_at

        elapsed = await asyncio.gather(*(refused_on(c) for c in clients[1:]))
        print(f"kill switch in force on replicas 1, 2 after {[round(e, 3) for e in elapsed]} s")  # -rP shows it
        assert max(elapsed) < 1.0, f"kill switch applied after {elapsed} s on replicas 1, 2"
        assert (await _list_dir(clients[0])) is not None

        lifted = run_cli("kill", "lift", switch_id, "--reason", "resolved", "-c", str(files_replicas.cluster.root),
                         env=files_replicas.cluster.env)
        assert lifted.returncode == 0, lifted.stdout + lifted.stderr
        for client in clients:
            async def served(client: Any = client) -> bool:
                return await _list_dir(client) is None
            await _until(served, 15.0)


async def test_an_approval_granted_on_one_replica_is_redeemed_once_on_another(billing_replicas: Replicas
                                                                             ) -> None:
    """Asked on replica 0, approved on replica 1, then redeemed on all three at once: exactly one redemption
    runs the refund (the trail has one served refund), the others and any later replay are refused."""
    gateways = billing_replicas.gateways
    asked = await pending(gateways[0], refund(120))
    approval_id = asked["approval_id"]
    # the approver's view on another replica shows the requester's decided calls, read from PostgreSQL
    view = httpx2.get(f"{gateways[2].admin_base}/approvals/{approval_id}",
                      headers={"Authorization": f"Bearer {approver(gateways[2], 'bob')}"}, timeout=15)
    assert view.status_code == 200, view.text
    assert [c["effect"] for c in view.json()["recent_calls"]] == ["require_approval"], view.text
    assert vote(gateways[1], approval_id, "approve", approver(gateways[1], "bob")).status_code == 200
    answers = await asyncio.gather(*(ask(g, refund(120), approval_id=approval_id) for g in gateways))
    served = [a for a in answers if not isinstance(a, MCPError)]
    assert len(served) == 1 and not served[0].is_error, answers
    assert all(a.code == APPROVAL_REFUSED for a in answers if isinstance(a, MCPError)), answers
    for gateway in gateways:
        replay = await ask(gateway, refund(120), approval_id=approval_id)
        assert isinstance(replay, MCPError) and replay.code == APPROVAL_REFUSED, replay
    chain = _chain(billing_replicas.cluster)
    refunds = {rid for kind, rid, f in chain if kind == "decision" and f["tool"]["name"] == REFUND}
    assert [f["outcome"] for kind, rid, f in chain if kind == "outcome" and rid in refunds].count("ok") == 1


async def test_the_audit_verifies_after_concurrent_writers(files_replicas: Replicas) -> None:
    """Three replicas writing at once leave one chain `portcullis audit verify` (reading PostgreSQL) accepts,
    holding every call's decision and outcome."""
    gateways = files_replicas.gateways
    tokens = [g.token(agent="support-audit") for g in gateways]
    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(g.client(token=t)) for g, t in zip(gateways, tokens, strict=True)]
        results = await asyncio.gather(*(_list_dir(clients[i % 3]) for i in range(60)))
    assert results == [None] * 60
    chain = _chain(files_replicas.cluster)
    mine = {_jti(t) for t in tokens}  # the shared chain also holds the other tests' calls
    decisions = [rid for kind, rid, f in chain if kind == "decision" and f["tool"]["name"] == LIMITED
                 and (f.get("credential") or {}).get("jti") in mine]
    outcomes = {rid for kind, rid, _ in chain if kind == "outcome"}
    assert len(decisions) == 60 and set(decisions) <= outcomes
    out = _verify(files_replicas.cluster)
    assert re.search(rf"OK: {len(chain)} record\(s\) verified", out), out


async def test_a_replica_killed_mid_load_loses_no_acknowledged_record(billing_cluster: ClusterDeployment) -> None:
    """Load on two replicas; replica 1 is SIGKILLed once it has acknowledged calls. Every acknowledged call (by
    its token's jti) has its decision and outcome in the PostgreSQL chain, and the chain still verifies."""
    with replicas(billing_cluster, 2) as gateways:
        acknowledged: list[tuple[int, str]] = []
        stop = asyncio.Event()

        async def worker(replica: int) -> None:
            gateway = gateways[replica]
            while not stop.is_set():
                token = gateway.token()
                try:
                    async with gateway.client(token=token) as client:
                        result = await client.call_tool("billing.get_invoice", {"invoice_id": "INV-1001"})
                except Exception:  # the killed replica fails calls in every way there is
                    if replica == 1 and gateway.proc.poll() is not None:
                        return
                    await asyncio.sleep(0.05)
                    continue
                if not result.is_error:
                    acknowledged.append((replica, _jti(token)))

        load = [asyncio.create_task(worker(i % 2)) for i in range(8)]

        async def replica_1_acknowledged() -> bool:
            return sum(1 for replica, _ in acknowledged if replica == 1) >= 10
        await _until(replica_1_acknowledged, 60.0)
        gateways[1].proc.send_signal(signal.SIGKILL)  # mid-load: four workers have calls in flight on it
        killed_at = len(acknowledged)

        async def more_on_replica_0() -> bool:
            return sum(1 for replica, _ in acknowledged[killed_at:] if replica == 0) >= 10
        await _until(more_on_replica_0, 60.0)
        stop.set()
        await asyncio.gather(*load)
    chain = _chain(billing_cluster)
    request_of = {f["credential"]["jti"]: rid for kind, rid, f in chain
                  if kind == "decision" and (f.get("credential") or {}).get("jti")}
    outcomes = {rid: f["outcome"] for kind, rid, f in chain if kind == "outcome"}
    lost = [(replica, jti) for replica, jti in acknowledged
            if jti not in request_of or outcomes.get(request_of[jti]) != "ok"]
    assert not lost, f"{len(lost)} of {len(acknowledged)} acknowledged calls have no record: {lost[:5]}"
    _verify(billing_cluster)
