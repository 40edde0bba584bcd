"""Risk scoring: parts, thresholds, and the stage that can only make a decision stricter."""

from __future__ import annotations

import time
from typing import Any

import pytest

from portcullis.approvals.risk import score
from portcullis.catalog import Catalog
from portcullis.cli.main import demo_deployment
from portcullis.config.loader import load_deployment
from portcullis.config.model import Classification, RiskConfig
from portcullis.errors import PolicyRefused
from portcullis.identity.principal import Principal
from portcullis.pipeline.context import CallContext, CallResult
from portcullis.pipeline.hooks import NullHooks
from portcullis.pipeline.stages import risk
from portcullis.policy.decision import Decision
from portcullis.state.memory import FailingStateStore, InMemoryStateStore

DEMO = load_deployment(demo_deployment())
BOT = Principal(client_id="c", auth_method="dev", issuer="dev", user_id="alice", agent_id="billing-bot")
CONFIG = RiskConfig.model_validate({
    "tool_risk": {"low": 0, "medium": 10, "high": 30}, "environment": {"production": 20, "sandbox": 0},
    "classification": {"Public": 0, "Internal": 0, "Confidential": 10, "Restricted": 20},
    "amount": {"pointer": "/amount", "points_per_unit": 0.1, "max_points": 40},
    "rate": {"window_s": 3600, "points_per_call": 5, "max_points": 20},
    "thresholds": {"one_approver": 70, "two_approvers": 85, "deny": 110}})


def test_the_score_is_the_sum_of_its_capped_parts() -> None:
    scored = score(CONFIG, risk="high", classification_in=Classification.INTERNAL,
                   classification_out=Classification.CONFIDENTIAL, environment="production",
                   arguments={"amount": 1e12}, earlier_calls=100)
    assert scored["parts"] == {"tool_risk": 30, "classification": 10, "environment": 20, "amount": 40, "rate": 20}
    assert scored["score"] == 120 and scored["verdict"] == "deny"
    calm = score(CONFIG, risk="low", classification_in=Classification.PUBLIC, classification_out=Classification.PUBLIC,
                 environment="sandbox", arguments={"amount": True}, earlier_calls=0)
    assert calm["score"] == 0 and calm["verdict"] == "allow" and "amount" not in calm["parts"]


def test_thresholds_must_be_ordered() -> None:
    with pytest.raises(ValueError):
        RiskConfig.model_validate({"thresholds": {"one_approver": 50, "two_approvers": 40, "deny": 100}})


def ctx(amount: float, effect: str = "allow") -> CallContext:
    loaded = next(m for m in DEMO.manifests if m.exposed_name == "billing.process_refund")
    route = Catalog(DEMO)._route(loaded.manifest.service, loaded)
    return CallContext(request_id="r", jsonrpc_id=1, protocol_version="2026-07-28", tool_name=route.exposed_name,
                       arguments={"order_id": "O", "amount": amount, "currency": "USD", "reason": "x"},
                       started_ns=time.perf_counter_ns(), principal=BOT, route=route,
                       decision=Decision(effect=effect, policy_version="pv"))  # type: ignore[arg-type]


async def run(stage: Any, call: CallContext) -> Decision:
    seen: list[Decision] = []

    async def after(c: CallContext) -> CallResult:
        seen.append(c.decision)  # type: ignore[arg-type]
        return {"content": [], "isError": False}

    await stage(call, after)
    return seen[0]


async def test_the_stage_turns_risky_calls_into_approvals_and_records_the_score() -> None:
    stage = risk.make_stage(CONFIG, InMemoryStateStore(), lambda: 1000.0, NullHooks(), "production")
    first = await run(stage, ctx(10))  # high 30 + Confidential 10 + production 20 + amount 1 = 61
    assert first.effect == "allow" and first.risk is not None and first.risk["verdict"] == "allow"
    burst = [await run(stage, ctx(10)) for _ in range(3)]  # the rate signal grows with each call
    assert [d.risk["parts"]["rate"] for d in burst] == [5, 10, 15]  # type: ignore[index]
    assert burst[-1].effect == "require_approval" and "risk/one_approver" in burst[-1].rule_ids
    fresh = risk.make_stage(CONFIG, InMemoryStateStore(), lambda: 1000.0, NullHooks(), "production")
    big = await run(fresh, ctx(400))  # 30 + 10 + 20 + 40 = 100: two approvers
    assert big.effect == "require_approval" and big.risk["approvers"] == 2  # type: ignore[index]
    with pytest.raises(PolicyRefused) as denied:  # the fifth call in the hour: 100 + rate 20
        await run(stage, ctx(10_000))
    assert "risk/deny" in denied.value.decision.rule_ids and denied.value.decision.risk["verdict"] == "deny"


async def test_a_policy_approval_is_never_relaxed_by_a_low_score() -> None:
    stage = risk.make_stage(CONFIG, InMemoryStateStore(), lambda: 1000.0, NullHooks(), "sandbox")
    assert (await run(stage, ctx(1, effect="require_approval"))).effect == "require_approval"


async def test_an_unavailable_rate_signal_denies() -> None:
    stage = risk.make_stage(CONFIG, FailingStateStore(), lambda: 1000.0, NullHooks(), "production")
    with pytest.raises(PolicyRefused) as denied:
        await run(stage, ctx(1))
    assert "policy_error" in denied.value.decision.reasons
