"""Issue 16, "Prove it": PostgreSQL or Redis stopped mid-load fails calls closed with a clear error, and service
resumes when they return, without restarting the gateways; a token revocation made against the cluster applies on
every replica within a second.

Two gateway replicas (tests/cluster/replicas.py) over a PostgreSQL and a Redis of the test's own
(tests/cluster/private_servers.py), which the test stops and starts again (same port, same data); the shared
servers are never touched. Load: stateless 2026-07-28 ``tools/call`` POSTs, each with a fresh token (its ``jti``
names the call in the audit chain), from a few workers per replica. Times are polled and printed (``-rP``), never
asserted tightly, except the revocation's issue bound.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import psycopg
import pytest
import yaml

from portcullis.identity.pg_revocation import revoke
from portcullis.storage.config import PostgresConfig, StorageConfig
from portcullis.storage.postgres import Database, StorageUnavailable
from portcullis.storage.redis_build import announce, build_notice_bus
from tests.cluster.private_servers import PrivatePostgres, PrivateRedis
from tests.cluster.replicas import ClusterDeployment, cluster_deployment, replicas
from tests.e2e.harness import GatewayProcess, run_cli

pytestmark = pytest.mark.xdist_group("cluster/test_outages.py")
LIMITED, AUDITED = "files.list_dir", "billing.get_invoice"
REDIS_PW, PG_PW = "r3dis-s3cret-pw", "pg-s3cret-pw"
POLICY_REFUSED, NOT_COMPLETED = -31020, -31001
GRACE_S = 1.0  # calls in flight when a server stops may still finish
RECOVERY_S = 60.0  # generous: a loaded machine; the figures printed are what matters


@dataclass
class Servers:
    pg: PrivatePostgres
    redis: PrivateRedis
    cluster: ClusterDeployment
    gateways: list[GatewayProcess]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """The private servers and two replicas over them, shared by this module's tests (starting replicas is the
    slow part); each test leaves both servers running."""
    tmp = tmp_path_factory.mktemp("outages")
    pg = PrivatePostgres()
    try:
        pg.start()
        redis = PrivateRedis(tmp, password=REDIS_PW).start()
        try:
            # trust auth ignores the password: it is there to prove it never reaches an answer or a log
            pg_url = pg.url.replace("postgres@", f"postgres:{PG_PW}@")
            storage = {"postgresql": {"url_ref": "secret://env/PORTCULLIS_TEST_PG_URL", "connect_timeout_s": 2,
                                      "statement_timeout_ms": 5000},
                       "redis": {"url_ref": "secret://env/PORTCULLIS_TEST_REDIS_URL", "key_prefix": "outage:",
                                 "connect_timeout_s": 1, "op_timeout_s": 1}}
            cluster = cluster_deployment(tmp / "deployment", pg_url, redis.url, "outage:",
                                         services=("billing", "files"), edit={
                "storage": storage, "admin": {"responders": ["role:oncall"]},
                "authorization": {"environment": "production", "limits": [
                    {"id": "roomy", "tools": [LIMITED], "per": ["issuer"], "window_s": 60, "max_calls": 1_000_000}]}})
            started = time.monotonic()
            with replicas(cluster, 2) as gateways:
                print(f"replicas ready after {time.monotonic() - started:.1f} s")
                yield Servers(pg, redis, cluster, gateways)
            for gateway in gateways:  # stopped by SIGINT in time (not SIGKILLed), its pools closed without a trace
                log = (gateway.config.parent / f"gateway-{gateway.port}.log").read_text(errors="replace")
                assert gateway.proc.returncode in (0, 130) and "Traceback" not in log, log[-3000:]  # not killed
        finally:
            redis.stop()
    finally:
        pg.remove()


@pytest.fixture(autouse=True)
def _servers_running(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that failed half-way leaves the next one running servers (and live replicas) all the same."""
    yield
    if "servers" not in request.fixturenames:
        return
    servers: Servers = request.getfixturevalue("servers")
    if not servers.redis.running():
        servers.redis.start()
    if not servers.pg.running():
        servers.pg.start()


def _jti(token: str) -> str:
    payload = token.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["jti"])


async def _call(http: httpx2.AsyncClient, gateway: GatewayProcess, tool: str, token: str) -> tuple[int, str, Any]:
    """(HTTP status, raw body, parsed body or None) of one stateless ``tools/call``."""
    arguments = {"path": "."} if tool == LIMITED else {"invoice_id": "INV-1001"}
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": tool, "arguments": arguments,
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                  "io.modelcontextprotocol/clientCapabilities": {}}}}
    answer = await http.post(gateway.url, json=body, headers={
        "Authorization": f"Bearer {token}", "Accept": "application/json", "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call", "Mcp-Name": tool})
    try:
        parsed = answer.json()
    except ValueError:
        parsed = None
    return answer.status_code, answer.text, parsed


def _served(parsed: Any) -> bool:
    return isinstance(parsed, dict) and "result" in parsed and not parsed["result"].get("isError")


@dataclass
class Load:
    """Steady calls of ``tool`` on every replica; every answer kept as (replica, time, jti, status, body)."""

    gateways: list[GatewayProcess]
    tool: str
    answers: list[tuple[int, float, str, int, str, Any]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def worker(self, replica: int) -> None:
        gateway = self.gateways[replica]
        async with httpx2.AsyncClient(timeout=30) as http:
            while not self.stop.is_set():
                token = gateway.token()
                try:
                    status, text, parsed = await _call(http, gateway, self.tool, token)
                except httpx2.TransportError as exc:  # recorded: a wedged or dead gateway fails the test
                    status, text, parsed = 0, type(exc).__name__, None
                self.answers.append((replica, time.monotonic(), _jti(token), status, text, parsed))
                await asyncio.sleep(0.02)

    def served_since(self, replica: int, since: float) -> int:
        return sum(1 for r, at, _, _, _, p in self.answers if r == replica and at >= since and _served(p))

    def failed_since(self, replica: int, since: float) -> list[tuple[int, str, Any]]:
        return [(s, t, p) for r, at, _, s, t, p in self.answers if r == replica and at >= since and not _served(p)]

    async def until(self, condition: Any, what: str, deadline_s: float = RECOVERY_S) -> float:
        start = time.monotonic()
        while not condition():
            assert time.monotonic() - start < deadline_s, f"{what}: not within {deadline_s} s"
            await asyncio.sleep(0.02)
        return time.monotonic() - start


def _metric(gateway: GatewayProcess, name: str) -> float:
    text = httpx2.get(f"{gateway.admin_base}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


def _clean_log(gateway: GatewayProcess, *secrets: str) -> None:
    log = gateway.log()
    assert "Traceback" not in log, log[-3000:]
    for secret in secrets:
        assert secret not in log, f"{secret!r} in the gateway log"


async def _outage(load: Load, server: PrivatePostgres | PrivateRedis,
                  while_down: Callable[[list[tuple[int, str, Any]]], None]) -> tuple[float, float]:
    """Load on both replicas; ``server`` stopped once both have served, ``while_down(answers)`` once both have
    failed calls while it is down (none served: fail closed), then started again. The seconds from the restart
    to the first call served, and to both replicas serving again."""
    workers = [asyncio.create_task(load.worker(i % 2)) for i in range(4)]
    try:
        await load.until(lambda: all(load.served_since(r, 0) >= 5 for r in (0, 1)), "served before")
        server.stop()
        settled = time.monotonic() + GRACE_S  # calls answered later started after the stop
        await load.until(lambda: all(len(load.failed_since(r, settled)) >= 5 for r in (0, 1)), "refused while down")
        assert not any(load.served_since(r, settled) for r in (0, 1)), "a call was served while the store was down"
        while_down([a for r in (0, 1) for a in load.failed_since(r, settled)])
        server.start()
        restarted = time.monotonic()
        recovery = await load.until(lambda: all(load.served_since(r, restarted) >= 3 for r in (0, 1)),
                                    "served again after the store returned")
        first = min(at for _, at, _, _, _, p in load.answers if at >= restarted and _served(p)) - restarted
    finally:
        load.stop.set()
        await asyncio.gather(*workers)
    assert all(g.proc.poll() is None for g in load.gateways), "a gateway exited"
    return first, recovery


async def test_redis_stopped_mid_load_fails_limited_calls_closed_and_service_resumes(servers: Servers) -> None:
    """Redis stops under load: every limited call on both replicas is refused with -31020 limits/policy_error
    (nothing else, no URL, no trace), the store-error metric counts; Redis back, both serve again."""
    load = Load(servers.gateways, LIMITED)

    def while_down(answers: list[tuple[int, str, Any]]) -> None:
        for status, text, parsed in answers:
            assert status == 200 and parsed["error"] == {"code": POLICY_REFUSED, "message": "Call refused by policy",
                                                         "data": {"rule_id": "limits/policy_error"}}, text
            assert REDIS_PW not in text and "redis://" not in text and str(servers.redis.port) not in text
        assert all(_metric(g, "portcullis_state_store_errors_total") > 0 for g in servers.gateways)

    first, recovery = await _outage(load, servers.redis, while_down)
    print(f"Redis: first limited call served {first:.2f} s, both replicas {recovery:.2f} s after it returned "
          f"({len(load.answers)} calls)")
    for gateway in servers.gateways:
        _clean_log(gateway, REDIS_PW, "redis://")


async def test_postgresql_stopped_mid_load_fails_calls_closed_loses_no_acknowledged_record(servers: Servers
                                                                                          ) -> None:
    """PostgreSQL stops under load: calls are refused (the audit cannot be made durable: nothing forwarded), the
    gateways neither exit nor hang and leak no password; PostgreSQL back, both serve again without a restart,
    the chain verifies and every acknowledged call has its decision and its ``ok`` outcome."""
    cluster = servers.cluster
    load = Load(servers.gateways, AUDITED)

    def while_down(answers: list[tuple[int, str, Any]]) -> None:
        print(f"PostgreSQL down: answers {sorted({(s, t[:300]) for s, t, _ in answers})}")
        for status, text, _ in answers:
            assert status != 0, f"no answer while PostgreSQL is down: {text}"  # the gateway answers
            assert PG_PW not in text and "postgresql://" not in text and "Traceback" not in text, text
        codes = {p["error"]["code"] for _, _, p in answers if isinstance(p, dict) and isinstance(p.get("error"), dict)}
        assert NOT_COMPLETED in codes, {(s, t[:200]) for s, t, _ in answers}
        for gateway in servers.gateways:  # not wedged: health answers at once
            assert httpx2.get(f"{gateway.base}/healthz", timeout=10).status_code in (200, 503)
        responder = servers.gateways[0].token(user="olivia", agent=None, roles=["oncall"])
        switch = httpx2.post(servers.gateways[0].admin_base + "/kill-switches", timeout=30,
                             headers={"authorization": f"Bearer {responder}"},
                             json={"kind": "tool", "target": LIMITED, "reason": "incident"})
        # refused by the store, or before it once the revocation list is stale (both fail closed, no URL)
        assert switch.status_code == 503 and switch.json()["error"] in (
            "kill switch store unavailable", "Authentication temporarily unavailable"), switch.text

    first, recovery = await _outage(load, servers.pg, while_down)
    print(f"PostgreSQL: first call served {first:.2f} s, both replicas {recovery:.2f} s after it returned "
          f"({len(load.answers)} calls)")
    for gateway in servers.gateways:
        _clean_log(gateway, PG_PW)
    acknowledged = [jti for _, _, jti, _, _, parsed in load.answers if _served(parsed)]
    with psycopg.connect(cluster.env["PORTCULLIS_TEST_PG_URL"], connect_timeout=10) as conn:
        rows = conn.execute("SELECT kind, request_id, fields FROM audit_record ORDER BY idx").fetchall()
    chain = [(kind, rid, json.loads(fields)) for kind, rid, fields in rows]
    request_of = {f["credential"]["jti"]: rid for kind, rid, f in chain
                  if kind == "decision" and (f.get("credential") or {}).get("jti")}
    outcomes = {rid: f["outcome"] for kind, rid, f in chain if kind == "outcome"}
    lost = [jti for jti in acknowledged if jti not in request_of or outcomes.get(request_of[jti]) != "ok"]
    assert not lost, f"{len(lost)} of {len(acknowledged)} acknowledged calls have no record"
    verified = run_cli("audit", "verify", "-c", str(cluster.root), "--state-dir", str(cluster.state_dir),
                       env=cluster.env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert re.search(rf"OK: {len(chain)} record\(s\) verified", verified.stdout), verified.stdout


async def test_a_revocation_applies_on_every_replica_within_a_second(servers: Servers,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A revocation written to the cluster's PostgreSQL and announced on the Redis bus (`portcullis token revoke`
    in cluster mode) is in force on both replicas within 1 s of its commit; another token is still served."""
    cluster, gateways = servers.cluster, servers.gateways
    for name, value in cluster.env.items():
        monkeypatch.setenv(name, value)
    revoked_token, other_token = gateways[0].token(), gateways[0].token()  # one issuer key: valid on both
    async with httpx2.AsyncClient(timeout=30) as http:
        async def refused(gateway: GatewayProcess, token: str) -> bool:
            return not _served((await _call(http, gateway, AUDITED, token))[2])

        for gateway in gateways:
            assert not await refused(gateway, revoked_token) and not await refused(gateway, other_token)
        # what `portcullis token revoke` does in cluster mode, in this process so that the clock starts at the
        # commit (the CLI's own start-up takes seconds): the row, then the notice
        db = Database(cluster.env["PORTCULLIS_TEST_PG_URL"], _storage(cluster).postgresql).open()  # type: ignore[arg-type]
        try:
            revoke(db, "jti", _jti(revoked_token), "incident")
        finally:
            db.close()
        done = time.monotonic()
        assert await announce(_storage(cluster), "revocations", "jti", origin=cluster.root / "gateway.yaml")

        async def refused_on(gateway: GatewayProcess) -> float:
            while not await refused(gateway, revoked_token):
                assert time.monotonic() - done < 15, "revocation not applied within 15 s"
                await asyncio.sleep(0.02)
            return time.monotonic() - done

        elapsed = await asyncio.gather(*(refused_on(g) for g in gateways))
        print(f"revocation in force on replicas 0, 1 after {[round(e, 3) for e in elapsed]} s")
        assert max(elapsed) < 1.0, f"revocation applied after {elapsed} s"
        for gateway in gateways:
            assert not await refused(gateway, other_token)
    # the command itself, end to end: it writes the row and sends the notice (watched here on the bus)
    third = gateways[0].token()
    bus = build_notice_bus(_storage(cluster), origin=cluster.root / "gateway.yaml")
    heard: list[str] = []

    async def hear(payload: str) -> None:
        heard.append(payload)
    bus.subscribe("revocations", hear)
    listening = asyncio.create_task(bus.run())
    try:
        await asyncio.wait_for(bus.connected.wait(), 10)  # type: ignore[attr-defined]
        revoked = await asyncio.to_thread(run_cli, "token", "revoke", "--jti", _jti(third), "-c", str(cluster.root),
                                          env=cluster.env)
        assert revoked.returncode == 0, revoked.stdout + revoked.stderr
        deadline = time.monotonic() + 10
        while "jti" not in heard:
            assert time.monotonic() < deadline, "portcullis token revoke sent no notice"
            await asyncio.sleep(0.02)
    finally:
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)
        await bus.aclose()  # type: ignore[attr-defined]
    async with httpx2.AsyncClient(timeout=30) as http:
        assert all([not _served((await _call(http, g, AUDITED, third))[2]) for g in gateways])


def _storage(cluster: ClusterDeployment) -> StorageConfig:
    config = yaml.safe_load((cluster.root / "gateway.yaml").read_text())
    return StorageConfig.model_validate(config["storage"])


def test_the_pool_fails_closed_while_postgresql_is_down_and_reconnects_at_once_after(tmp_path: Path) -> None:
    """The store layer under a longer outage (8 s): every statement fails with the masked StorageUnavailable
    (no password, no hang past the connect timeout); PostgreSQL back, the next statements succeed within a few
    seconds, not after psycopg_pool's doubling reconnect backoff (which would wait until ~15 s here)."""
    pg = PrivatePostgres()
    try:
        pg.start()
        db = Database(pg.url.replace("postgres@", f"postgres:{PG_PW}@"),
                      PostgresConfig(url_ref="secret://env/PORTCULLIS_TEST_UNUSED", connect_timeout_s=1)).open()
        try:
            def select() -> object:
                return db.run(lambda c: c.execute("SELECT 1").fetchone(), lambda d: StorageUnavailable(detail=d))

            assert select() == (1,)
            pg.stop()
            stopped = time.monotonic()
            while time.monotonic() - stopped < 8:
                began = time.monotonic()
                with pytest.raises(StorageUnavailable) as refused:
                    select()
                assert time.monotonic() - began < 10, "a statement hung while PostgreSQL was down"
                assert PG_PW not in str(refused.value.detail) and PG_PW not in str(refused.value)
                time.sleep(0.1)
            pg.start()
            restarted = time.monotonic()
            while True:
                try:
                    assert select() == (1,)
                    break
                except StorageUnavailable:
                    assert time.monotonic() - restarted < RECOVERY_S, "the pool never reconnected"
                    time.sleep(0.05)
            recovery = time.monotonic() - restarted
            print(f"pool: first statement served {recovery:.2f} s after PostgreSQL returned from an 8 s outage")
            # fixed: ~0.02 s; with psycopg_pool's default reconnect (5 min of doubling backoff) ~6 s here
            assert recovery < 3.0, f"the pool reconnected only after {recovery:.1f} s (backoff?)"
        finally:
            db.close()
    finally:
        pg.remove()
