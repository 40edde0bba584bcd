"""A console with the responders' and operators' services: a real kill switch service (SQLite store),
a real policy reloader over the demo deployment, a real SQLite audit trail (records written by an
AuditWriter, read by the gateway's read-only reader), the gateway metrics registry."""

from __future__ import annotations

import shutil
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2

from portcullis.audit.keys import AuditKeys
from portcullis.audit.reader import open_sqlite_reader
from portcullis.audit.store import SqliteAuditStore
from portcullis.audit.writer import AuditWriter
from portcullis.config.console import ConsoleConfig
from portcullis.config.loader import load_deployment
from portcullis.console.app import ConsoleApp
from portcullis.console.build import build_console
from portcullis.console.services import ConsoleServices
from portcullis.console.store import MemoryConsoleStore
from portcullis.identity.config import ClaimMap
from portcullis.kill.runtime import KillSwitches
from portcullis.kill.store import SqliteKillSwitchStore
from portcullis.observability.metrics import GatewayMetrics
from portcullis.policy import policy_set
from portcullis.policy.active import ActivePolicy
from portcullis.policy.engine import PolicyEngine
from portcullis.policy.rego_pool import PoolSettings
from portcullis.policy.reloader import PolicyReloader, ReloadSettings
from portcullis.policy.versions import MemoryPolicyVersionStore
from portcullis.transport.admin import AdminApp
from portcullis.transport.origin_guard import OriginGuard
from tests.console.conftest import ADMIN, APPROVERS, ORIGIN, Audit, Revocations, issuer_config

DEMO = Path(__file__).resolve().parents[2] / "src" / "portcullis" / "demo" / "deployment"
GET_INVOICE = "tools/billing/get_invoice.yml"
HOSTILE = "<script>alert(1)</script>\u202egnp.exe\u200b<img src=x onerror=alert(2)>"


@dataclass
class Ops:
    client: httpx2.AsyncClient
    console: ConsoleApp
    kills: KillSwitches
    reloader: PolicyReloader
    writer: AuditWriter
    audit_path: Path
    metrics: GatewayMetrics
    files: dict[str, str]  # the demo's policy set (the start version)

    def new_client(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(transport=self.client._transport, base_url=ADMIN,
                                  headers={"origin": ORIGIN, "sec-fetch-site": "same-origin"})

    async def records(self, kind: str) -> list[Any]:
        from portcullis.audit.query import AuditQuery

        async with open_sqlite_reader(self.audit_path) as reader:
            return await reader.search(AuditQuery(kind=kind, limit=100))


async def ops_console(tmp_path: Path, *, with_policy: bool = True, replay: Any = None) -> AsyncIterator[Ops]:
    from portcullis.approvals.service import ApprovalService
    from portcullis.approvals.store import SqliteApprovalStore

    audit_path = tmp_path / "audit.sqlite3"
    store = await SqliteAuditStore.open(audit_path, durability="process")
    writer = AuditWriter(store, clock=time.time)
    keys = AuditKeys.load_or_create(tmp_path)

    async def kill_audit(request_id: str, fields: Mapping[str, Any]) -> None:
        await writer.record("kill_switch", request_id, fields)

    kills = KillSwitches(SqliteKillSwitchStore(tmp_path / "kill.sqlite3"))
    kills.start(kill_audit)

    root = Path(shutil.copytree(DEMO, tmp_path / "deployment"))
    deployment = load_deployment(root)
    engine = PolicyEngine.from_deployment(deployment, environment="production", rego_budget_s=10)

    async def policy_audit(fields: Mapping[str, Any]) -> None:
        await writer.record("policy_version", "policy-test", fields)

    settings = ReloadSettings(root=root, gateway_yaml=(root / "gateway.yaml").read_bytes(), scratch=tmp_path / "s",
                              rego_dir="policy", environment="production", rego_budget_s=10, pool=PoolSettings())
    reloader = PolicyReloader(ActivePolicy(engine), MemoryPolicyVersionStore(), settings, policy_audit)
    await reloader.start()
    metrics = GatewayMetrics(process_metrics=False)
    metrics.set_audit_queue_depth_source(writer.queue_depth)

    approvals = ApprovalService(SqliteApprovalStore.open(tmp_path / "approvals.sqlite3"), APPROVERS,
                                clock=time.time, audit=Audit())
    services = ConsoleServices(approvals=approvals, revocations=Revocations(), kills=kills, policy=reloader,
                               audit=store, metrics=metrics.render, responders=("role:oncall",),
                               operators=("role:platform",), audit_reader=lambda: open_sqlite_reader(audit_path),
                               audit_public_key=keys.signing_key.public_key(), replay=replay)
    config = ConsoleConfig.model_validate({"enabled": True, "dev_login": True})
    console = build_console(config, services, store=MemoryConsoleStore(), issuers=[issuer_config()], caches={},
                            claim_map=ClaimMap(), origin=tmp_path / "gateway.yaml")
    admin = AdminApp(metrics=metrics.render, readiness=lambda: (True, {}),
                     guard=OriginGuard(("127.0.0.1:*",), ("https://127.0.0.1:*",)), console=console)
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=admin), base_url=ADMIN,
                                  headers={"origin": ORIGIN, "sec-fetch-site": "same-origin"}) as client:
        try:
            yield Ops(client, console, kills, reloader, writer, audit_path, metrics, policy_set.collect(root))
        finally:
            await store.aclose()
