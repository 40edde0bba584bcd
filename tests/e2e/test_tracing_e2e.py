"""Tracing end to end: the caller's W3C trace context is continued, every pipeline stage gets a
span, the upstream receives a ``traceparent`` whose parent is the gateway's forward span, and the
audit records name the trace, the call's span and the upstream's parent span."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
import yaml
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.e2e.audit_load import STORE_FILE, read_chain
from tests.e2e.harness import GatewayProcess
from tests.e2e.test_upstream_failures import DECLARED, build

STAGES = ("route", "gate", "validate", "authorize", "limits", "audit", "forward")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    root = build(tmp_path_factory.mktemp("tracing") / "deployment", declared=(*DECLARED, "trace_context"))
    config = yaml.safe_load((root / "gateway.yaml").read_text())
    config["observability"] = {"tracing": {"exporter": "console"}}  # spans to stderr, which the harness logs
    (root / "gateway.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    with GatewayProcess(root) as process:
        yield process


async def call_with(gateway: GatewayProcess, tool: str, headers: dict[str, str]) -> str:
    http = httpx2.AsyncClient(headers={**gateway.auth_headers(), **headers}, timeout=30)
    async with http, Client(streamable_http_client(gateway.url, http_client=http), cache=None) as client:
        result = await client.call_tool(tool, {})
    return result.structured_content["result"]


async def test_the_callers_trace_is_continued_through_every_stage_to_the_upstream_and_audit(
        gateway: GatewayProcess) -> None:
    trace_id, caller_span = os.urandom(16).hex(), os.urandom(8).hex()
    seen = await call_with(gateway, "flaky.trace_context", {"traceparent": f"00-{trace_id}-{caller_span}-01"})

    # the upstream continues the same trace, from a span of the gateway's (not the caller's)
    match = re.fullmatch(r"00-([0-9a-f]{32})-([0-9a-f]{16})-0[13]", seen)
    assert match is not None, seen
    assert match[1] == trace_id and match[2] != caller_span
    upstream_parent = match[2]

    # the audit trail names the trace, the call's server span and the upstream's parent span
    records = [r for r in await read_chain(gateway.state_dir / STORE_FILE)
               if r.fields.get("trace_id") == trace_id or r.fields.get("upstream_span_id") == upstream_parent]
    decision = next(r for r in records if r.kind == "decision")
    outcome = next(r for r in records if r.kind == "outcome" and r.request_id == decision.request_id)
    assert outcome.fields["upstream_span_id"] == upstream_parent
    call_span = decision.fields["span_id"]
    assert call_span and call_span not in (caller_span, upstream_parent)

    # the spans: one server span for the call (child of the caller's), one per stage under it
    log = gateway.log()
    assert f'"trace_id": "0x{trace_id}"' in log
    assert f'"span_id": "0x{call_span}"' in log and f'"parent_id": "0x{caller_span}"' in log
    assert f'"span_id": "0x{upstream_parent}"' in log
    for stage in STAGES:
        assert f'"name": "{stage}"' in log, stage
    assert '"name": "tools/call flaky.trace_context"' in log


async def test_a_malformed_traceparent_starts_a_new_trace(gateway: GatewayProcess) -> None:
    seen = await call_with(gateway, "flaky.trace_context", {"traceparent": "00-" + "0" * 32 + "-" + "1" * 16 + "-01"})
    match = re.fullmatch(r"00-([0-9a-f]{32})-([0-9a-f]{16})-0[13]", seen)
    assert match is not None and match[1] != "0" * 32, seen


def test_stage_names_match_the_pipeline() -> None:
    """The names this test looks for are the pipeline's own (a renamed stage fails here first)."""
    source = (Path(__file__).parents[2] / "src/portcullis/pipeline/chain.py").read_text()
    for stage in STAGES[:-1]:
        assert f'("{stage}", ' in source, stage
