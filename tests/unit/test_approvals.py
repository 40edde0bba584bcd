"""Approvals without a network: binding, expiry, single use under concurrency, what approvers
see, the service kit's check of the approval claim, and a failing store."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

from portcullis.approvals.model import arguments_hash, visible, visible_json
from portcullis.approvals.service import ApprovalService, ApproverRefused, approvers_required
from portcullis.approvals.store import ApprovalStoreUnavailable, SqliteApprovalStore
from portcullis.cli.main import demo_deployment
from portcullis.config.model import ApprovalsConfig
from portcullis.errors import ApprovalExpired, ApprovalInvalid, ApprovalRequired
from portcullis.identity.principal import Principal
from portcullis.policy.decision import Decision
from portcullis.policy.model import ToolPolicy
from portcullis.service.policy_guard import ServicePolicies

TOOL = "billing.process_refund"
ARGS = {"order_id": "ORD-1", "amount": 300, "currency": "USD", "reason": "x"}
BOT = Principal(client_id="c", auth_method="dev", issuer="dev", user_id="alice", agent_id="billing-bot")
BOB = Principal(client_id="bob", auth_method="dev", issuer="dev", user_id="bob", roles=("finance-approver",),
                person=True)
CAROL = Principal(client_id="carol", auth_method="dev", issuer="dev", user_id="carol", roles=("finance-approver",),
                  person=True)
DECISION = Decision(effect="require_approval", reasons=("amount_needs_approval",),
                    rule_ids=(f"{TOOL}/requires_approval_over",), policy_version="pv-1")
CONFIG = ApprovalsConfig.model_validate({"ttl_s": 60, "approvers": [{"tools": ["billing.*"],
                                                                       "approvers": ["role:finance-approver"]}]})


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Audit:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    async def __call__(self, event: str, approval: Any, **_: Any) -> None:
        self.events.append((event, approval.id))


@pytest.fixture
def setup(tmp_path: Path) -> tuple[ApprovalService, Clock, Audit, SqliteApprovalStore]:
    clock, audit = Clock(), Audit()
    store = SqliteApprovalStore.open(tmp_path / "approvals.sqlite3")
    return ApprovalService(store, CONFIG, clock=clock, audit=audit), clock, audit, store


async def propose(service: ApprovalService, required: int = 1) -> str:
    approval = await service.propose(tool=TOOL, arguments=ARGS, principal=BOT, decision=DECISION, required=required,
                                     justification="", request_id="r1")
    return approval.id


async def redeem(service: ApprovalService, approval_id: str, arguments: dict[str, Any] = ARGS) -> Any:
    async def nothing() -> None:
        pass

    return await service.redeem(approval_id=approval_id, tool=TOOL, arguments=arguments, principal=BOT,
                                decision=DECISION, request_id="r2", before_use=nothing)


async def test_expiry_means_deny_for_the_agent_and_the_approver(setup: Any) -> None:
    service, clock, audit, _ = setup
    approval_id = await propose(service)
    clock.now += 61
    with pytest.raises(ApproverRefused) as late:
        await service.vote(approval_id, BOB, "approve")
    assert late.value.status == 409
    with pytest.raises(ApprovalExpired):
        await redeem(service, approval_id)
    assert [e for e, _ in audit.events] == ["proposed", "expired"]


async def test_an_approved_but_unused_approval_expires_too(setup: Any) -> None:
    service, clock, audit, _ = setup
    approval_id = await propose(service)
    await service.vote(approval_id, BOB, "approve")
    clock.now += 61
    assert await service.sweep() == 1
    with pytest.raises(ApprovalExpired):
        await redeem(service, approval_id)
    assert [e for e, _ in audit.events] == ["proposed", "approved", "expired"]


async def test_concurrent_redeems_use_an_approval_once(setup: Any) -> None:
    service, _, audit, _ = setup
    approval_id = await propose(service)
    await service.vote(approval_id, BOB, "approve")
    outcomes: list[str] = []

    async def attempt() -> None:
        try:
            await redeem(service, approval_id)
            outcomes.append("ran")
        except ApprovalInvalid:
            outcomes.append("refused")

    async with anyio.create_task_group() as tg:
        for _ in range(8):
            tg.start_soon(attempt)
    assert sorted(outcomes) == ["ran"] + ["refused"] * 7
    assert [e for e, _ in audit.events].count("executed") == 1


async def test_pending_and_mismatched_redeems(setup: Any) -> None:
    service, _, _, _ = setup
    approval_id = await propose(service, required=2)
    with pytest.raises(ApprovalRequired) as waiting:
        await redeem(service, approval_id)
    assert waiting.value.data["status"] == "pending" and waiting.value.data["required_approvers"] == 2
    await service.vote(approval_id, BOB, "approve")
    await service.vote(approval_id, CAROL, "approve")
    with pytest.raises(ApprovalInvalid):
        await redeem(service, approval_id, {**ARGS, "amount": 300.0001})
    with pytest.raises(ApprovalInvalid):
        await redeem(service, "apr_" + "0" * 32)
    other_policy = Decision(effect="require_approval", policy_version="pv-2")
    with pytest.raises(ApprovalInvalid):
        await service.redeem(approval_id=approval_id, tool=TOOL, arguments=ARGS, principal=BOT,
                             decision=other_policy, request_id="r", before_use=anyio.lowlevel.checkpoint)
    assert (await redeem(service, approval_id)).status == "executed"


@pytest.mark.parametrize("who", [
    Principal(client_id="x", auth_method="dev", issuer="dev", user_id="alice", roles=("finance-approver",),
              person=True),
    Principal(client_id="x", auth_method="dev", issuer="dev", user_id="zed", agent_id="billing-bot",
              roles=("finance-approver",)),
    Principal(client_id="x", auth_method="dev", issuer="dev", roles=("finance-approver",)),
    Principal(client_id="x", auth_method="dev", issuer="dev", user_id="eve", roles=("analyst",), person=True),
    Principal(client_id="x", auth_method="dev", issuer="dev", user_id="zed", roles=("finance-approver",)),
], ids=["requester-user", "an-agent", "no-user", "no-approver-role", "user-without-person-signal"])
async def test_who_may_not_approve(setup: Any, who: Principal) -> None:
    service, _, audit, _ = setup
    approval_id = await propose(service)
    with pytest.raises(ApproverRefused) as refused:
        await service.vote(approval_id, who, "approve")
    assert refused.value.status == 403
    assert [e for e, _ in audit.events] == ["proposed"]


def test_approvers_see_invisible_characters_and_nothing_is_cut() -> None:
    text = "pay\u200bee\u202eevil\ttab\nline\x00nul\\" + "x" * 5000
    shown = visible(text)
    assert "\\u{200B}" in shown and "\\u{202E}" in shown and "\\u{0000}" in shown
    assert "\\t" in shown and "\\n" in shown and "\\\\" in shown
    assert shown.endswith("x" * 5000)
    assert visible_json({"k\u2028": ["\u00e9", 1]}) == {"k\\u{2028}": ["\u00e9", 1]}


def test_the_hash_binds_every_byte_of_the_arguments() -> None:
    assert arguments_hash({"a": 1, "b": "x"}) == arguments_hash({"b": "x", "a": 1})
    assert arguments_hash({"a": 1}) != arguments_hash({"a": 1.0000001})
    assert arguments_hash({"a": "x"}) != arguments_hash({"a": "x "})
    assert arguments_hash({"a": "\u00e9"}) != arguments_hash({"a": "e\u0301"})


def test_two_approvers_above_the_second_threshold() -> None:
    policy = ToolPolicy.model_validate({"allowed_callers": ["agent:billing-bot"], "requires_approval_over": 100,
                                        "requires_two_approvals_over": 400})
    assert [approvers_required(policy, {"amount": a}) for a in (150, 400, 400.5, 10_000)] == [1, 1, 2, 2]
    assert approvers_required(policy, {"amount": True}) == 1
    with pytest.raises(ValueError):
        ToolPolicy.model_validate({"allowed_callers": ["agent:x"], "requires_two_approvals_over": 400})


def test_the_service_kit_runs_a_require_approval_call_only_with_a_matching_approval_claim() -> None:
    policies = ServicePolicies.load(demo_deployment(), "billing", environment="production")
    now = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    args = {"order_id": "ORD-1", "amount": 300, "currency": "USD", "reason": "x"}
    claim = {"id": "apr_" + "1" * 32, "args": arguments_hash(args), "by": ["bob"]}
    bot = Principal(client_id="c", auth_method="dev", issuer="dev", issuer_name="dev", agent_id="billing-bot")
    assert policies.check("process_refund", bot, args, now).effect == "deny"
    assert policies.check("process_refund", bot, args, now, approval=claim).effect == "allow"
    assert policies.check("process_refund", bot, {**args, "amount": 301}, now, approval=claim).effect == "deny"
    assert policies.check("process_refund", bot, {**args, "amount": 900}, now, approval=claim).effect == "deny"


async def test_a_failing_store_fails_closed(setup: Any) -> None:
    service, _, _, store = setup
    store.close()
    with pytest.raises(ApprovalStoreUnavailable):
        await propose(service)


def test_an_unopenable_store_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ApprovalStoreUnavailable) as failed:
        SqliteApprovalStore.open(tmp_path / "missing" / "approvals.sqlite3")
    assert "cannot be opened" in failed.value.detail


async def test_approver_rules_can_depend_on_the_tools_risk_level(tmp_path: Path) -> None:
    config = ApprovalsConfig.model_validate({"approvers": [
        {"tools": ["*"], "risk": ["high"], "approvers": ["role:security"]},
        {"tools": ["billing.*"], "risk": ["low", "medium"], "approvers": ["role:finance-approver"]}]})
    store = SqliteApprovalStore.open(tmp_path / "a.sqlite3")
    service = ApprovalService(store, config, clock=Clock(), audit=Audit())
    sec = Principal(client_id="s", auth_method="dev", issuer="dev", user_id="sec", roles=("security",), person=True)

    async def ask(risk: str) -> str:
        approval = await service.propose(tool=TOOL, arguments=ARGS, principal=BOT, decision=DECISION, required=1,
                                         justification="", request_id="r", tool_risk=risk)
        return approval.id

    high, low = await ask("high"), await ask("low")
    with pytest.raises(ApproverRefused):
        await service.vote(high, BOB, "approve")  # finance approves low and medium risk only
    assert (await service.vote(high, sec, "approve")).status == "approved"
    with pytest.raises(ApproverRefused):
        await service.vote(low, sec, "approve")
    assert (await service.vote(low, BOB, "approve")).status == "approved"


class FailingAudit(Audit):
    """Records ``proposed``, then fails from the ``fail_from``-th event on (an audit outage)."""

    def __init__(self, fail_from: int) -> None:
        super().__init__()
        self.fail_from = fail_from

    async def __call__(self, event: str, approval: Any, **kwargs: Any) -> None:
        from portcullis.audit.errors import AuditUnavailable

        if len(self.events) >= self.fail_from:
            raise AuditUnavailable(detail="audit store down")
        await super().__call__(event, approval, **kwargs)


async def test_a_vote_or_a_use_that_cannot_be_audited_does_not_count(tmp_path: Path) -> None:
    from portcullis.audit.errors import AuditUnavailable

    audit = FailingAudit(fail_from=1)
    store = SqliteApprovalStore.open(tmp_path / "a.sqlite3")
    service = ApprovalService(store, CONFIG, clock=Clock(), audit=audit)
    approval_id = await propose(service)
    with pytest.raises(AuditUnavailable):
        await service.vote(approval_id, BOB, "approve")
    assert (await store.get(approval_id)).status == "pending"  # type: ignore[union-attr]
    assert (await store.get(approval_id)).votes == ()  # type: ignore[union-attr]
    audit.fail_from = 2
    await service.vote(approval_id, BOB, "approve")
    with pytest.raises(AuditUnavailable):
        await redeem(service, approval_id)
    assert (await store.get(approval_id)).status == "approved"  # type: ignore[union-attr]  # still usable
    audit.fail_from = 99
    assert (await redeem(service, approval_id)).status == "executed"


async def test_a_request_that_cannot_be_audited_is_not_stored(tmp_path: Path) -> None:
    from portcullis.audit.errors import AuditUnavailable

    store = SqliteApprovalStore.open(tmp_path / "a.sqlite3")
    service = ApprovalService(store, CONFIG, clock=Clock(), audit=FailingAudit(fail_from=0))
    with pytest.raises(AuditUnavailable):
        await propose(service)
    assert await store.list() == []
