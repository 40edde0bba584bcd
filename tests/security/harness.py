"""An in-process gateway for hostile-input tables: the real dispatcher (``_meta`` parsing), the
real pipeline in its declared order (every stage), the real policy engine, approval service,
audit chain and state store; only the upstream is the project's test double
(:class:`~portcullis.upstream.testing.FakeConnector`), so what reaches the service is visible.

Requests go in as JSON-RPC ``tools/call`` params; answers come back as the bytes the one error
mapper (:func:`portcullis.errors.to_wire`) turns them into.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import orjson

from portcullis.approvals.notify import LinkSigner
from portcullis.approvals.service import ApprovalService
from portcullis.approvals.store import SqliteApprovalStore
from portcullis.audit.record import AuditRecord
from portcullis.audit.store import AuditStore, SqliteAuditStore
from portcullis.audit.writer import AuditWriter
from portcullis.catalog import Catalog
from portcullis.config.loader import Deployment, LoadedManifest
from portcullis.config.model import ApprovalsConfig, GatewayConfig, GovernanceConfig, RiskConfig, ToolManifest
from portcullis.errors import to_wire
from portcullis.identity.minting import KeyRing, TokenMinter
from portcullis.identity.principal import Principal
from portcullis.pinning import definition_hash
from portcullis.pipeline.auditing import CallAuditor
from portcullis.pipeline.chain import PipelineParts, build_pipeline
from portcullis.pipeline.context import Stage
from portcullis.pipeline.hooks import NullHooks
from portcullis.pipeline.stages.content import OutputFilter
from portcullis.policy.active import ActivePolicy
from portcullis.policy.engine import PolicyEngine, tool_policies
from portcullis.policy.limits import LimitRule
from portcullis.policy.rego import RegoPolicy
from portcullis.policy.rego_pool import PoolSettings
from portcullis.state.memory import InMemoryStateStore
from portcullis.state.response_cache import ResponseCacheStore
from portcullis.transport.jsonrpc import Message
from portcullis.transport.protocol import Dispatcher, Request
from portcullis.upstream.registry import ServiceHandle, UpstreamRegistry
from portcullis.upstream.testing import FakeConnector, ToolFn

REFUND = "billing.process_refund"
INVOICE = "billing.get_invoice"
SECRET_TOOL = "billing.void_ledger"  # a tool only the auditors may call: hidden from everyone else
NO_SUCH_TOOL = "billing.no_such_tool"
MODERN = "2026-07-28"
APPROVAL_ID = "io.portcullis/approval-id"
APPROVAL_POLL = "io.portcullis/approval-poll"
JUSTIFICATION = "io.portcullis/justification"
NOW = 1_800_000_000.0  # a Friday, 08:00 UTC

BOT = Principal(client_id="bot-client", auth_method="dev", issuer="dev", issuer_name="dev", user_id="alice",
                agent_id="billing-bot")
OTHER_BOT = Principal(client_id="bot-client", auth_method="dev", issuer="dev", issuer_name="dev", user_id="mallory",
                      agent_id="billing-bot")
BOB = Principal(client_id="bob", auth_method="dev", issuer="dev", issuer_name="dev", user_id="bob",
                roles=("finance-approver",), person=True)
CAROL = Principal(client_id="carol", auth_method="dev", issuer="dev", issuer_name="dev", user_id="carol",
                  roles=("finance-approver",), person=True)
STRANGER = Principal(client_id="stranger", auth_method="dev", issuer="dev", issuer_name="dev", agent_id="rogue-bot")

_STRING = {"type": "string"}
_LIVE = {
    "process_refund": {"name": "process_refund", "description": "Refund.", "inputSchema": {
        "type": "object", "properties": {"order_id": _STRING, "amount": {"type": "number"}, "currency": _STRING,
                                         "reason": _STRING}, "required": ["order_id", "amount", "currency"]}},
    "get_invoice": {"name": "get_invoice", "description": "Invoice.", "inputSchema": {
        "type": "object", "properties": {"invoice_id": _STRING}, "required": ["invoice_id"]}},
    "void_ledger": {"name": "void_ledger", "description": "Void.", "inputSchema": {
        "type": "object", "properties": {"ledger": _STRING}, "required": ["ledger"]}},
}
_POLICIES: dict[str, dict[str, Any]] = {
    "process_refund": {"allowed_callers": ["agent:billing-bot"], "max_amount": 500, "requires_approval_over": 100,
                       "requires_two_approvals_over": 400, "allowed_currencies": ["USD", "EUR"],
                       "constraints": [{"pointer": "/order_id", "pattern": "^ORD-[0-9]{1,10}$"}]},
    "get_invoice": {"allowed_callers": ["agent:billing-bot", "role:finance-approver"]},
    "void_ledger": {"allowed_callers": ["role:auditor"]},
}
APPROVERS = {"approvers": [{"tools": ["billing.*"], "approvers": ["role:finance-approver"]}], "ttl_s": 600}


def refund(amount: float, *, order: str = "ORD-1", currency: str = "USD") -> dict[str, Any]:
    return {"order_id": order, "amount": amount, "currency": currency, "reason": "duplicate"}


def deployment(*, limits: list[dict[str, Any]] | None = None, policies: Mapping[str, Any] | None = None,
               manifests: Mapping[str, Mapping[str, Any]] | None = None) -> Deployment:
    """``manifests`` adds or replaces manifest keys per tool (``egress``, ``classification``, ``cache``, …)."""
    gateway = GatewayConfig.model_validate({"services": {"billing": {"transport": "http",
                                                                     "url": "http://127.0.0.1:1/mcp"}},
                                            "authorization": {"limits": limits or []}})
    changes = {name: (manifests or {}).get(name, {}) for name in _LIVE}
    loaded = []
    for name, live in _LIVE.items():
        manifest = ToolManifest.model_validate({
            "name": name, "service": "billing", "owner": "t@example.com", "description": live["description"],
            "risk": "high" if name != "get_invoice" else "low",
            "classification": {"input": "Confidential", "output": "Confidential"},
            "input_schema": live["inputSchema"], "pin": definition_hash(live),
            "egress": False,  # billing tools send nothing out (the toxic-flow rule leaves them alone)
            "policy": (policies or {}).get(name, _POLICIES[name]), **changes[name]})
        loaded.append(LoadedManifest(Path(f"/dep/tools/billing/{name}.yml"), "billing", manifest,
                                     f"billing.{name}"))
    return Deployment(Path("/dep"), gateway, tuple(loaded))


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@dataclass
class Answer:
    """One answer: the result, or the wire error (``body`` is what the mapper puts on the wire)."""

    result: dict[str, Any] | None = None
    body: dict[str, Any] | None = None
    status: int = 200  # the HTTP status the mapper chose

    @property
    def error(self) -> dict[str, Any]:
        assert self.body is not None, f"expected an error, got {self.result}"
        return self.body["error"]  # type: ignore[no-any-return]

    @property
    def code(self) -> int | None:
        return None if self.body is None else int(self.body["error"]["code"])

    def wire_bytes(self) -> bytes:
        """The error's wire body without its JSON-RPC id (for byte-for-byte comparisons)."""
        assert self.body is not None
        return orjson.dumps({k: v for k, v in self.body.items() if k != "id"}, option=orjson.OPT_SORT_KEYS)


@dataclass
class InProcessGateway:
    dispatcher: Dispatcher
    approvals: ApprovalService
    connector: FakeConnector
    audit_store: SqliteAuditStore
    state: Any
    clock: Clock
    engine: PolicyEngine
    forwarded: list[dict[str, Any]] = field(default_factory=list)

    async def call(self, name: str, arguments: Any, *, meta: Any = None, principal: Principal = BOT,
                   modern: bool = True, extra_params: Mapping[str, Any] | None = None,
                   headers: Mapping[str, str] | None = None, jsonrpc_id: Any = 1) -> Answer:
        params: dict[str, Any] = {"name": name, "arguments": arguments}
        if modern:
            envelope = {"io.modelcontextprotocol/protocolVersion": MODERN,
                        "io.modelcontextprotocol/clientCapabilities": {}}
            params["_meta"] = {**envelope, **meta} if isinstance(meta, dict) else (meta if meta is not None
                                                                                  else envelope)
        elif meta is not None:
            params["_meta"] = meta
        params.update(extra_params or {})
        request = Request(message=Message("request", "tools/call", params, jsonrpc_id, True),
                          protocol_version=MODERN if modern else "2025-11-25", modern=modern,
                          headers=dict(headers or {}), principal=principal)
        try:
            result = await self.dispatcher.dispatch(request)
        except Exception as exc:
            wire = to_wire(exc, request_id=jsonrpc_id, modern=modern)
            assert wire.body is not None
            return Answer(body=wire.body, status=wire.status)
        return Answer(result=result)

    def listed(self, principal: Principal = BOT) -> set[str]:
        """The tool names ``tools/list`` shows ``principal``."""
        return {str(tool["name"]) for tool in self.dispatcher.listing(principal)}

    async def records(self) -> list[AuditRecord]:
        return await self.audit_store.read(0, 100_000)

    async def decision_of_last_call(self) -> dict[str, Any]:
        """The fields of the newest ``decision`` (or ``rejected``) record."""
        for record in reversed(await self.records()):
            if record.kind in ("decision", "rejected"):
                return dict(record.fields)
        raise AssertionError("no decision record")

    async def approve(self, approval_id: str, *voters: Principal) -> None:
        for voter in voters or (BOB,):
            await self.approvals.vote(approval_id, voter, "approve")

    async def pending_id(self, arguments: Mapping[str, Any], *, principal: Principal = BOT) -> str:
        answer = await self.call(REFUND, dict(arguments), principal=principal)
        assert answer.code == -31010, answer
        return str(answer.error["data"]["approval_id"])


async def _echo(arguments: Mapping[str, Any]) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": "done"}], "isError": False}


@contextlib.asynccontextmanager
async def in_process_gateway(tmp_path: Path, *, risk: Mapping[str, Any] | None = None,
                             limits: list[dict[str, Any]] | None = None, rego: RegoPolicy | None = None,
                             links: bool = False, policies: Mapping[str, Any] | None = None,
                             approvals_config: Mapping[str, Any] | None = None, state: Any = None,
                             rego_workers: PoolSettings | None = None,
                             handlers: Mapping[str, ToolFn] | None = None,
                             wrap_audit_store: Callable[[AuditStore], AuditStore] | None = None,
                             response_cache: ResponseCacheStore | None = None,
                             cache_classifications: tuple[str, ...] = ("Public", "Internal"),
                             content: OutputFilter | None = None,
                             manifests: Mapping[str, Mapping[str, Any]] | None = None,
                             governance: Mapping[str, Any] | None = None,
                             inner_stages: Sequence[tuple[str, Stage]] = (),
                             observe: Callable[[Any, str, int], None] | None = None,
                             shadow: tuple[str, PolicyEngine] | None = None,
                             ) -> AsyncIterator[InProcessGateway]:
    """The gateway above; with ``rego_workers``, ``rego`` is evaluated in worker processes (as
    ``portcullis serve`` does), started before the first call and stopped at the end.
    ``handlers`` replace the upstream's answers per tool (default: every tool answers "done");
    ``wrap_audit_store`` puts a double (a failing store) between the writer and the real store;
    ``manifests`` adds or replaces manifest keys per tool (``cache``, ``egress``, ``classification``, …);
    ``response_cache`` turns the response cache stage on with that store; ``content`` is the output
    filter (default: none, results pass as the upstream sent them); ``governance`` is gateway.yaml's
    ``governance:`` and ``inner_stages`` run right before the forwarder (a double of the content filter);
    ``observe`` is the anomaly monitor's per-call observation; ``shadow`` a shadow version (policy/shadow.py)."""
    dep = deployment(limits=limits, policies=policies, manifests=manifests)
    clock = Clock()
    catalog = Catalog(dep)
    connector = FakeConnector("billing", list(_LIVE.values()), {**{name: _echo for name in _LIVE}, **(handlers or {})})
    handle = ServiceHandle("billing", [connector], catalog.update_service, health_interval_s=60, refresh_s=60)
    engine = PolicyEngine.build(tool_policies(dep.manifests), rego, environment="production")
    holder = ActivePolicy(engine)
    holder.shadow = shadow
    pool = None if rego is None or rego_workers is None else rego.workers(rego_workers)
    directory = tmp_path / f"gw-{uuid.uuid4().hex[:8]}"
    directory.mkdir()
    async with await SqliteAuditStore.open(directory / "audit.sqlite3") as store:
        async with AuditWriter(store if wrap_audit_store is None else wrap_audit_store(store), clock=clock,
                               max_delay_s=0) as writer:
            auditor = CallAuditor(writer, audit_key=b"k" * 32, environment="production", hooks=NullHooks())
            approvals = ApprovalService(
                SqliteApprovalStore.open(directory / "approvals.sqlite3"),
                ApprovalsConfig.model_validate({**APPROVERS, **(approvals_config or {})}), clock=clock,
                audit=auditor.approval, links=LinkSigner(b"l" * 32, "https://approvals.example") if links else None)
            state = InMemoryStateStore() if state is None else state
            rules = tuple(LimitRule.model_validate(rule) for rule in limits or ())
            pipeline = build_pipeline(PipelineParts(
                catalog=catalog, upstreams=UpstreamRegistry({"billing": handle}),
                minter=TokenMinter(KeyRing.generate(clock=clock), issuer="https://gw.example", clock=clock),
                engine=holder, auditor=auditor, state=state, limit_rules=rules, approvals=approvals,
                risk=None if risk is None else RiskConfig.model_validate(risk), clock=clock,
                response_cache=response_cache, cache_classifications=cache_classifications, content=content,
                governance=GovernanceConfig.model_validate(governance or {}), inner_stages=inner_stages,
                observe=observe))

            def visible(principal: Principal) -> frozenset[str]:
                from datetime import UTC, datetime

                return engine.visible_tools(principal, now=datetime.fromtimestamp(clock(), UTC))

            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(handle.run)
                    with anyio.fail_after(10):
                        await handle.ready.wait()
                    if pool is not None:
                        assert await pool.wait_ready(60), "Rego workers did not start"
                    gateway = InProcessGateway(Dispatcher(catalog, pipeline, visible), approvals, connector, store,
                                               state, clock, engine)
                    try:
                        yield gateway
                    finally:
                        tg.cancel_scope.cancel()
            finally:
                if pool is not None:
                    await pool.aclose()


def forwarded(gateway: InProcessGateway) -> list[tuple[str, dict[str, Any]]]:
    """Every call the upstream test double received so far."""
    conn = gateway.connector.current
    return [] if conn is None else list(conn.calls)
