"""The official MCP SDK client through a real gateway process to the real demo services."""

from __future__ import annotations

import asyncio
import json

import pytest
from mcp import MCPError, types

from tests.e2e.harness import GatewayProcess

MODES = ["auto", "legacy", "2026-07-28"]
EXPECTED_ERA = {"auto": "2026-07-28", "legacy": "2025-11-25", "2026-07-28": "2026-07-28"}
def staff(gateway: GatewayProcess) -> str:
    """billing-bot acting for a full-time analyst: the demo policies admit it to all five tools."""
    return gateway.token(roles=["analyst", "employee"], employment_type="full_time")


DEMO_TOOLS = ["analytics.summarize_revenue", "billing.get_invoice", "billing.process_refund",
              "files.list_dir", "files.read_file"]


@pytest.mark.parametrize("mode", MODES)
async def test_client_lists_exactly_the_manifest_tools(demo_gateway: GatewayProcess, mode: str) -> None:
    """Every client mode negotiates its era and sees the five namespaced manifest tools."""
    async with demo_gateway.client(mode=mode, token=staff(demo_gateway)) as client:  # type: ignore[arg-type]
        assert client.protocol_version == EXPECTED_ERA[mode]
        tools = (await client.list_tools()).tools
    assert [t.name for t in tools] == DEMO_TOOLS
    refund = next(t for t in tools if t.name == "billing.process_refund")
    assert refund.input_schema["additionalProperties"] is False  # the manifest's schema, not the upstream's


@pytest.mark.parametrize("mode", MODES)
async def test_read_only_and_side_effecting_calls_succeed(demo_gateway: GatewayProcess, mode: str) -> None:
    """get_invoice, process_refund, summarize_revenue and list_dir work in every era."""
    async with demo_gateway.client(mode=mode, token=staff(demo_gateway)) as client:  # type: ignore[arg-type]
        invoice = await client.call_tool("billing.get_invoice", {"invoice_id": "INV-1001"})
        refund = await client.call_tool("billing.process_refund", {
            "order_id": "ORD-20001", "amount": 80, "currency": "USD", "reason": "damaged"})
        revenue = await client.call_tool("analytics.summarize_revenue", {})
        listing = await client.call_tool("files.list_dir", {"path": "."})
    assert not invoice.is_error and invoice.structured_content["invoice_id"] == "INV-1001"
    assert not refund.is_error and refund.structured_content["status"] == "processed"
    assert not revenue.is_error and revenue.structured_content["row_count"] > 0
    assert not listing.is_error


@pytest.mark.parametrize("mode", MODES)
async def test_arguments_outside_the_manifest_schema_never_reach_the_service(
        demo_gateway: GatewayProcess, mode: str) -> None:
    """A negative amount and a lowercase currency are refused with the failing paths and rules."""
    async with demo_gateway.client(mode=mode) as client:  # type: ignore[arg-type]
        with pytest.raises(MCPError) as caught:
            await client.call_tool("billing.process_refund", {
                "order_id": "ORD-20001", "amount": -5, "currency": "usd", "reason": "x"})
    assert caught.value.code == -32602
    assert caught.value.error.data == {"errors": [{"path": "/amount", "rule": "exclusiveMinimum"},
                                                  {"path": "/currency", "rule": "pattern"}]}
    assert "-5" not in caught.value.error.message


@pytest.mark.parametrize("name", [
    "billing.nope", "process_refund", "BILLING.process_refund", "billing.process_refund ",
    "billing.process\u200b_refund", "billing.proc\u0435ss_refund", "bil\uff4cing.process_refund", "",
    "billing.unmanifested",
])
async def test_unknown_and_look_alike_names_all_read_unknown_tool(demo_gateway: GatewayProcess, name: str) -> None:
    """Unknown names, case changes, trailing spaces, zero-width and homoglyph names fail identically."""
    async with demo_gateway.client() as client:
        with pytest.raises(MCPError) as caught:
            await client.call_tool(name, {"order_id": "ORD-20001", "amount": 1, "currency": "USD", "reason": "r"})
    assert (caught.value.code, caught.value.error.message) == (-32602, "Unknown tool")


@pytest.mark.parametrize("path", [
    "../../../../etc/passwd", "%2e%2e/%2e%2e/etc/passwd", "..%252f..%252fetc/passwd", "%c0%ae%c0%ae/etc/passwd",
    "\uff0e\uff0e/etc/passwd", "....//....//etc/passwd", "file:///etc/passwd", "~/.ssh/id_rsa",
    "reports/../../etc/passwd",
])
async def test_path_escape_is_denied_at_the_gateway(demo_gateway: GatewayProcess, path: str) -> None:
    """A ../ escape, in any encoding, breaks read_file's within_root policy: refused naming that rule, never forwarded.

    (The files service refuses the same paths itself; tests/security/test_path_traversal.py shows
    that second line of defence and the full table.)
    """
    async with demo_gateway.client() as client:
        with pytest.raises(MCPError) as caught:
            await client.call_tool("files.read_file", {"path": path})
    assert (caught.value.code, caught.value.error.message) == (-31020, "Call refused by policy")
    assert caught.value.error.data == {"rule_id": "files.read_file/constraint/path/within_root"}
    assert "root:" not in str(caught.value.error)


async def test_inner_parent_segment_that_stays_inside_is_served(demo_gateway: GatewayProcess) -> None:
    """``handbook/../reports/q3-summary.md`` stays inside the root, so it is allowed and read."""
    async with demo_gateway.client(token=staff(demo_gateway)) as client:
        result = await client.call_tool("files.read_file", {"path": "handbook/../reports/q3-summary.md"})
    assert not result.is_error
    assert result.structured_content["path"] == "reports/q3-summary.md"


async def test_results_do_not_leak_upstream_server_info(demo_gateway: GatewayProcess) -> None:
    """The result's _meta carries the gateway's serverInfo only, never the upstream's (P1)."""
    async with demo_gateway.client(mode="2026-07-28") as client:
        result = await client.call_tool("billing.get_invoice", {"invoice_id": "INV-1001"})
    meta = result.meta or {}
    assert meta.get("io.modelcontextprotocol/serverInfo", {}).get("name") == "portcullis"
    assert "billing" not in str(meta)


async def test_every_call_writes_one_structured_log_line(demo_gateway: GatewayProcess) -> None:
    """Allowed, refused and unknown calls each leave exactly one JSON access line with id and outcome."""
    marker = "INV-1004"
    async with demo_gateway.client() as client:
        await client.call_tool("billing.get_invoice", {"invoice_id": marker})
        with pytest.raises(MCPError):
            await client.call_tool("billing.get_invoice", {"invoice_id": "nope"})
        with pytest.raises(MCPError):
            await client.call_tool("billing.missing_tool", {})
    for _ in range(50):  # the log is written by a background thread
        lines = [json.loads(line) for line in demo_gateway.log().splitlines() if line.startswith("{")]
        access = [line for line in lines if line.get("logger") == "portcullis.access"]
        if len(access) >= 3 and access[-1].get("tool") == "billing.missing_tool":
            break
        await asyncio.sleep(0.1)
    ok, invalid, unknown = access[-3:]
    assert (ok["tool"], ok["outcome"]) == ("billing.get_invoice", "ok")
    assert (invalid["outcome"], invalid["error_code"]) == ("InvalidParams", -32602)
    assert unknown["tool"] == "billing.missing_tool" and unknown["error_code"] == -32602
    assert all(len(line["request_id"]) == 32 and line["duration_ms"] >= 0 for line in (ok, invalid, unknown))
    assert len({line["request_id"] for line in (ok, invalid, unknown)}) == 3


@pytest.mark.parametrize("mode", MODES)
async def test_demo_resource_template_and_prompt(demo_gateway: GatewayProcess, mode: str) -> None:
    """The files service's handbook resource, its page template and the summarize_file prompt (issue 13)."""
    async with demo_gateway.client(mode=mode, token=staff(demo_gateway)) as client:  # type: ignore[arg-type]
        resources = [r.uri for r in (await client.list_resources()).resources]
        templates = [t.uri_template for t in (await client.list_resource_templates()).resource_templates]
        prompts = [p.name for p in (await client.list_prompts()).prompts]
        index = (await client.read_resource("files+handbook://index")).contents[0]
        page = (await client.read_resource("files+handbook://pages/holidays")).contents[0]
        prompt = await client.get_prompt("files.summarize_file", {"path": "handbook/expenses.txt"})
        topics = await client.complete(types.ResourceTemplateReference(
            type="ref/resource", uri="files+handbook://pages/{topic}"), {"name": "topic", "value": "h"})
        paths = await client.complete(types.PromptReference(type="ref/prompt", name="files.summarize_file"),
                                      {"name": "path", "value": "handbook/e"})
    assert topics.completion.values == ["holidays"] and paths.completion.values == ["handbook/expenses.txt"]
    assert resources == ["files+handbook://index"] and templates == ["files+handbook://pages/{topic}"]
    assert prompts == ["files.summarize_file"]
    assert index.text.split("\n") == ["expenses", "holidays"]
    assert page.uri == "files+handbook://pages/holidays" and page.text
    assert prompt.messages[0].content.text.startswith("Summarize this file (handbook/expenses.txt)")
