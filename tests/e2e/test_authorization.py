"""Authorization end to end: the official SDK client through a real gateway and the demo policies.

The demo's ``billing.process_refund`` carries the seed policy (billing-bot and the support UI;
at most 500; approval above 100; USD or EUR). A caller that may not see a tool gets exactly the
unknown-tool answer; a caller that sees it gets ``-31020`` naming the one rule that refused the
call. Nothing refused may reach the service, and every decision is in the audit trail.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from mcp import MCPError

from tests.e2e.harness import GatewayProcess, copy_demo_services

REFUND = "billing.process_refund"
UNKNOWN = (-32602, "Unknown tool")
REFUSED = (-31020, "Call refused by policy")


def refund(amount: float, currency: str = "USD") -> dict[str, Any]:
    return {"order_id": "ORD-20001", "amount": amount, "currency": currency, "reason": "damaged"}


def records(gateway: GatewayProcess) -> list[dict[str, Any]]:
    """Every audit record so far (read-only; the gateway keeps writing)."""
    conn = sqlite3.connect(f"file:{gateway.state_dir / 'audit.sqlite3'}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT idx, request_id, kind, fields FROM audit_record ORDER BY idx").fetchall()
    finally:
        conn.close()
    return [{"index": i, "request_id": r, "kind": k, "fields": orjson.loads(f)} for i, r, k, f in rows]


async def call_error(gateway: GatewayProcess, name: str, arguments: dict[str, Any], **token: Any) -> MCPError:
    async with gateway.client(token=gateway.token(**token)) as client:
        with pytest.raises(MCPError) as caught:
            await client.call_tool(name, arguments)
    return caught.value


@pytest.fixture(scope="module")
def limited_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """The demo with two session-aware limits added to its gateway.yaml (and without analytics: no test of
    the limits calls it)."""
    root = copy_demo_services(tmp_path_factory.mktemp("limits") / "deployment", "billing", "files")
    config = yaml.safe_load((root / "gateway.yaml").read_text())
    config["authorization"] = {"environment": "production", "limits": [
        {"id": "billing-bot-eur-daily", "tools": [REFUND], "per": ["agent"], "window_s": 86400,
         "max_total": 1000, "amount_pointer": "/amount", "match": {"/currency": "EUR"}},
        {"id": "files-hourly", "tools": ["files.*"], "per": ["agent"], "window_s": 3600, "max_calls": 3},
    ]}
    (root / "gateway.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    with GatewayProcess(root) as gateway:
        yield gateway


# ----------------------------------------------------------------------------- the seed table


async def test_billing_bot_refund_of_80_usd_is_allowed(demo_gateway: GatewayProcess) -> None:
    """80 USD by billing-bot is under the approval threshold: forwarded, processed and audited."""
    async with demo_gateway.client() as client:
        result = await client.call_tool(REFUND, refund(80))
    assert not result.is_error and result.structured_content["status"] == "processed"
    decision = [r for r in records(demo_gateway) if r["kind"] == "decision"][-1]
    assert decision["fields"]["decision"]["effect"] == "allow"
    assert decision["fields"]["decision"]["policy_version"].startswith("pv-")
    assert any(r["kind"] == "outcome" and r["request_id"] == decision["request_id"] for r in records(demo_gateway))


async def test_refund_of_300_usd_requires_approval_and_is_not_forwarded(demo_gateway: GatewayProcess) -> None:
    """300 USD is above requires_approval_over: -31010, a decision record, and no outcome (never sent)."""
    error = await call_error(demo_gateway, REFUND, refund(300))
    assert error.code == -31010
    decision = [r for r in records(demo_gateway) if r["kind"] == "decision"][-1]
    assert decision["fields"]["decision"]["effect"] == "require_approval"
    assert "billing.process_refund/requires_approval_over" in decision["fields"]["decision"]["rule_ids"]
    assert not any(r["kind"] == "outcome" and r["request_id"] == decision["request_id"]
                   for r in records(demo_gateway))


@pytest.mark.parametrize(("arguments", "token", "rule"), [
    (refund(600), {}, "billing.process_refund/max_amount"),
    (refund(50, "JPY"), {}, "billing.process_refund/allowed_currencies"),
], ids=["600-usd", "any-jpy"])
async def test_refused_refunds_name_the_one_rule_that_refused_them(
        demo_gateway: GatewayProcess, arguments: dict[str, Any], token: dict[str, Any], rule: str) -> None:
    """billing-bot sees process_refund: 600 USD and JPY answer -31020 with that rule's id only; audited."""
    denied = await call_error(demo_gateway, REFUND, arguments, **token)
    assert (denied.code, denied.error.message, denied.error.data) == (*REFUSED, {"rule_id": rule})
    decision = [r for r in records(demo_gateway) if r["kind"] == "decision"][-1]
    assert decision["fields"]["decision"]["effect"] == "deny"
    assert rule in decision["fields"]["decision"]["rule_ids"]
    assert not any(r["kind"] == "outcome" and r["request_id"] == decision["request_id"]
                   for r in records(demo_gateway))


async def test_a_caller_that_cannot_see_the_tool_gets_exactly_the_unknown_tool_answer(
        demo_gateway: GatewayProcess) -> None:
    """An unknown agent is refused with the unknown-tool error, as for a missing tool; the rule is audited."""
    arguments, token, rule = refund(80), {"agent": "rogue-bot"}, "billing.process_refund/caller"
    denied = await call_error(demo_gateway, REFUND, arguments, **token)
    missing = await call_error(demo_gateway, "billing.no_such_tool", arguments, **token)
    assert (denied.code, denied.error.message, denied.error.data) == (*UNKNOWN, None)
    assert (missing.code, missing.error.message, missing.error.data) == (*UNKNOWN, None)
    decision = [r for r in records(demo_gateway) if r["kind"] == "decision"][-1]
    assert decision["fields"]["decision"]["effect"] == "deny"
    assert rule in decision["fields"]["decision"]["rule_ids"]
    assert not any(r["kind"] == "outcome" and r["request_id"] == decision["request_id"]
                   for r in records(demo_gateway))


def test_a_hidden_tool_answers_the_same_bytes_as_a_missing_one(demo_gateway: GatewayProcess) -> None:
    """Over raw HTTP (2026-07-28), with the same JSON-RPC id: status, content type and body are equal.

    (The 2025 era needs a session; the SDK-client test above and tests/security cover it.)"""
    import httpx2

    token = demo_gateway.token(agent="rogue-bot", user=None)
    answers = []
    for name in (REFUND, "billing.no_such_tool"):
        body = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
            "name": name, "arguments": refund(80), "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {}}}}
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream",
                   "Content-Type": "application/json", "MCP-Protocol-Version": "2026-07-28",
                   "Mcp-Method": "tools/call", "Mcp-Name": name}
        answer = httpx2.post(demo_gateway.url, headers=headers, content=orjson.dumps(body), timeout=15)
        answers.append((answer.status_code, answer.headers.get("content-type"), answer.content))
    assert answers[0] == answers[1]
    assert b'"Unknown tool"' in answers[0][2]


async def test_hidden_tool_does_not_reveal_its_schema_through_validation(demo_gateway: GatewayProcess) -> None:
    """An agent the policy never admits gets "Unknown tool" even for invalid arguments (no schema errors)."""
    error = await call_error(demo_gateway, REFUND, {"amount": "lots"}, agent="rogue-bot")
    assert (error.code, error.error.message, error.error.data) == (*UNKNOWN, None)


async def test_tools_list_shows_a_caller_only_what_it_may_call(demo_gateway: GatewayProcess) -> None:
    """billing-bot sees the billing and files tools; an unknown agent sees none of them."""
    async with demo_gateway.client() as client:
        mine = {t.name for t in (await client.list_tools()).tools}
    async with demo_gateway.client(token=demo_gateway.token(agent="rogue-bot", user=None)) as client:
        theirs = {t.name for t in (await client.list_tools()).tools}
    assert {"billing.process_refund", "billing.get_invoice", "files.read_file"} <= mine
    assert "analytics.summarize_revenue" not in mine
    assert theirs == set()


# ----------------------------------------------------------------------------- attributes


@pytest.mark.parametrize(("employment", "allowed"), [("full_time", True), ("contractor", False)])
async def test_contractor_may_not_read_revenue_but_a_full_time_analyst_may(
        demo_gateway: GatewayProcess, employment: str, allowed: bool) -> None:
    """summarize_revenue requires employment_type full_time: the contractor is denied like an unknown tool."""
    token = demo_gateway.token(agent=None, roles=["analyst"], employment_type=employment)
    async with demo_gateway.client(token=token) as client:
        if allowed:
            result = await client.call_tool("analytics.summarize_revenue", {})
            assert not result.is_error
        else:
            with pytest.raises(MCPError) as caught:
                await client.call_tool("analytics.summarize_revenue", {})
            assert (caught.value.code, caught.value.error.message) == UNKNOWN


# ----------------------------------------------------------------------------- session-aware limits


async def test_eur_running_total_denies_the_refund_that_crosses_1000_per_day(limited_demo: GatewayProcess) -> None:
    """Ten 95 EUR refunds fit in 1,000 EUR per 24 h; the eleventh is denied; USD is not counted."""
    async with limited_demo.client() as client:
        for _ in range(10):
            result = await client.call_tool(REFUND, refund(95, "EUR"))
            assert not result.is_error
        with pytest.raises(MCPError) as caught:
            await client.call_tool(REFUND, refund(95, "EUR"))
        usd = await client.call_tool(REFUND, refund(95, "USD"))
    assert (caught.value.code, caught.value.error.message) == REFUSED
    assert caught.value.error.data == {"rule_id": "limits/billing-bot-eur-daily", "retry_after_s": 86400}
    assert not usd.is_error
    denied = [r for r in records(limited_demo) if r["kind"] == "decision"
              and r["fields"]["decision"]["effect"] == "deny"][-1]
    assert "limits/billing-bot-eur-daily" in denied["fields"]["decision"]["rule_ids"]


async def test_call_count_limit_applies_to_a_tool_glob(limited_demo: GatewayProcess) -> None:
    """At most three files.* calls per hour per agent: the fourth, to either tool, is denied."""
    token = limited_demo.token(agent="support-bot")
    async with limited_demo.client(token=token) as client:
        await client.call_tool("files.list_dir", {"path": "."})
        await client.call_tool("files.list_dir", {"path": "."})
        await client.call_tool("files.list_dir", {})
        with pytest.raises(MCPError) as caught:
            await client.call_tool("files.list_dir", {"path": "."})
    assert (caught.value.code, caught.value.error.message) == REFUSED
    assert caught.value.error.data == {"rule_id": "limits/files-hourly", "retry_after_s": 3600}


# ----------------------------------------------------------------------------- Rego failures


def test_rego_runtime_error_denies_with_policy_error(tmp_path: Path) -> None:
    """A Rego module that fails at evaluation time refuses every call it covers (policy_error), audited."""
    import anyio

    root = copy_demo_services(tmp_path / "deployment", "billing")  # the call below is billing's
    (root / "policy" / "broken.rego").write_text(
        "package portcullis.broken\n\n"
        "import rego.v1\n\n"
        "# two different values for one complete rule: a conflict error at evaluation time\n"
        "flag := 1 if input.tool.name\n"
        "flag := 2 if input.tool.name\n\n"
        "deny contains {\"id\": \"broken\", \"reason\": \"never\"} if flag == 3\n")
    with GatewayProcess(root) as gateway:
        async def attempt() -> MCPError:
            return await call_error(gateway, "billing.get_invoice", {"invoice_id": "INV-1001"})

        error = anyio.run(attempt)
        decision = [r for r in records(gateway) if r["kind"] == "decision"][-1]
    assert (error.code, error.error.message, error.error.data) == (*REFUSED, {"rule_id": "rego/policy_error"})
    assert decision["fields"]["decision"]["effect"] == "deny"
    assert "policy_error" in decision["fields"]["decision"]["reasons"]
