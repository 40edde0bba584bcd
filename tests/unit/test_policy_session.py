"""Session history in the Rego input: the running totals of the limits that apply to a call."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest

from portcullis.catalog import Catalog
from portcullis.cli.main import demo_deployment
from portcullis.config.loader import load_deployment
from portcullis.errors import PolicyRefused
from portcullis.identity.principal import Principal
from portcullis.pipeline.context import CallContext, CallResult
from portcullis.pipeline.hooks import NullHooks
from portcullis.pipeline.stages import authorize
from portcullis.policy import PolicyEngine
from portcullis.policy.engine import tool_policies
from portcullis.policy.limits import LimitRule, counter_key, session_totals
from portcullis.policy.rego import RegoPolicy
from portcullis.state.memory import FailingStateStore, InMemoryStateStore

REFUND = "billing.process_refund"
DEMO = load_deployment(demo_deployment())
BOT = Principal(client_id="c", auth_method="dev", issuer="test", issuer_name="dev", agent_id="billing-bot")
OTHER = Principal(client_id="c", auth_method="dev", issuer="test", issuer_name="dev", agent_id="support-bot",
                  source_app="customer-support-ui")
RULE = LimitRule.model_validate({"id": "refunds-day", "tools": [REFUND], "per": ["agent"], "window_s": 86400,
                                 "max_total": 1000, "amount_pointer": "/amount"})
CALLS = LimitRule.model_validate({"id": "billing-hourly", "tools": ["billing.*"], "per": ["agent"],
                                  "window_s": 3600, "max_calls": 20})
# a refund that would take the agent's day past 150 needs approval (the native rule asks above 100)
MODULE = """
package portcullis.velocity

import rego.v1

require_approval contains {"id": "velocity/daily_refunds", "reason": "refund_velocity"} if {
    input.tool.name == "billing.process_refund"
    input.session.limits["refunds-day"] + input.arguments.amount > 150
}
"""
NOW = 1_780_000_000.0


def engine(module: str = MODULE) -> PolicyEngine:
    return PolicyEngine.build(tool_policies(DEMO.manifests), RegoPolicy.compile({"velocity.rego": module}, budget_s=10),
                              environment="production")


def ctx(principal: Principal, amount: int) -> CallContext:
    loaded = next(m for m in DEMO.manifests if m.exposed_name == REFUND)
    route = Catalog(DEMO)._route(loaded.manifest.service, loaded)
    return CallContext(request_id="r", jsonrpc_id=1, protocol_version="2026-07-28", tool_name=REFUND,
                       arguments={"order_id": "ORD-1", "amount": amount, "currency": "USD", "reason": "x"},
                       started_ns=time.perf_counter_ns(), principal=principal, route=route)


async def forwarded(ctx: CallContext) -> CallResult:
    return {"content": [], "isError": False}


async def test_session_totals_are_the_principals_running_totals_before_the_call() -> None:
    store = InMemoryStateStore()
    for amount in (40, 50):
        await store.window_add(counter_key(RULE, BOT), Decimal(amount), window_s=86400, limit=1000, now=NOW)
    args: dict[str, Any] = {"amount": 10}
    assert await session_totals([RULE, CALLS], store, tool=REFUND, principal=BOT, arguments=args, now=NOW) == {
        "limits": {"refunds-day": 90, "billing-hourly": 0}}
    assert await session_totals([RULE], store, tool=REFUND, principal=OTHER, arguments=args, now=NOW) == {
        "limits": {"refunds-day": 0}}
    assert await session_totals([RULE], store, tool="files.read_file", principal=BOT, arguments={}, now=NOW) == {}


async def test_a_rego_rule_on_session_history_turns_the_call_into_an_approval() -> None:
    """The same 60 USD refund: allowed on a fresh day, approval once the agent refunded 100 today."""
    store = InMemoryStateStore()
    stage = authorize.make_stage(engine(), lambda: NOW, NullHooks(), [RULE], store)
    assert (await stage(ctx(BOT, 60), forwarded))["isError"] is False
    await store.window_add(counter_key(RULE, BOT), Decimal(100), window_s=86400, limit=1000, now=NOW)
    seen: list[CallContext] = []

    async def approve_stage(c: CallContext) -> CallResult:  # the next stages see the decision
        seen.append(c)
        return await forwarded(c)

    await stage(ctx(BOT, 60), approve_stage)
    assert seen[0].decision.effect == "require_approval"
    assert "rego/velocity/daily_refunds" in seen[0].decision.rule_ids
    assert (await stage(ctx(BOT, 10), forwarded))["isError"] is False  # 100 + 10 stays under 150
    assert (await stage(ctx(OTHER, 60), forwarded))["isError"] is False  # another agent's day is its own


async def test_an_unreachable_state_store_denies_when_the_policy_reads_history() -> None:
    stage = authorize.make_stage(engine(), lambda: NOW, NullHooks(), [RULE], FailingStateStore())
    with pytest.raises(PolicyRefused) as denied:
        await stage(ctx(BOT, 60), forwarded)
    assert denied.value.decision.reasons == ("policy_error",)


async def test_history_is_not_fetched_when_no_module_reads_it() -> None:
    """A failing store is never touched by authorize when the modules do not read input.session."""
    module = MODULE.replace('input.session.limits["refunds-day"] + ', "")
    store = FailingStateStore()
    stage = authorize.make_stage(engine(module), lambda: NOW, NullHooks(), [RULE], store)
    assert (await stage(ctx(BOT, 60), forwarded))["isError"] is False
    assert store.calls == 0
