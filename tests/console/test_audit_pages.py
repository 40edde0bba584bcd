"""Audit pages: search by every filter, paged and bounded; a request's timeline; the chain status
verified in the background and cached (a view does not re-verify); authorization; hostile strings."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from portcullis.console import audit_pages
from tests.console.conftest import dev_login
from tests.console.ops import HOSTILE, Ops, ops_console

TOOL = "billing.process_refund"


@pytest.fixture
async def ops(tmp_path: Path) -> AsyncIterator[Ops]:
    async for value in ops_console(tmp_path):
        yield value


async def _call(ops: Ops, request_id: str, *, tool: str = TOOL, agent: str = "billing-bot", user: str = "alice",
                effect: str = "allow", arguments: dict[str, Any] | None = None) -> None:
    principal = {"client_id": agent, "agent_id": agent, "user_id": user}
    await ops.writer.record("decision", request_id, {
        "tool": {"name": tool}, "principal": principal, "decision": {"effect": effect, "rule_ids": [f"{tool}/r"]},
        "arguments": arguments or {"order_id": "ORD-1", "card": "hmac-sha256:" + "ab" * 32}})
    await ops.writer.record("outcome", request_id, {"tool": {"name": tool}, "principal": principal,
                                                    "outcome": "ok", "content": {"findings": 1}})


async def test_search_by_each_filter_and_open_a_request_timeline(ops: Ops) -> None:
    await _call(ops, "req-allow")
    await _call(ops, "req-deny", effect="deny", agent="other-bot", user="bob", tool="files.read")
    await ops.writer.record("approval", "req-allow", {"event": "approved", "status": "approved",
                                                      "tool": {"name": TOOL}, "approval_id": "apr_1"})
    await dev_login(ops.client, "rita", "oncall")
    cases = {"agent=other-bot": {"req-deny"}, "user=alice": {"req-allow"}, "tool=files.read": {"req-deny"},
             "decision=deny": {"req-deny"}, "request_id=req-allow": {"req-allow"},
             "since=2000-01-01T00:00&until=2999-01-01T00:00": {"req-allow", "req-deny"},
             "until=2000-01-01T00:00": set(),
             "agent=&user=&tool=&decision=&request_id=&since=&until=": {"req-allow", "req-deny"}}
    for query, expected in cases.items():
        page = await ops.client.get(f"/console/audit?{query}")
        assert page.status_code == 200, query
        found = {rid for rid in ("req-allow", "req-deny") if f"?id={rid}" in page.text}
        assert found == expected, query
    timeline = await ops.client.get("/console/audit/request?id=req-allow")
    text = timeline.text
    assert timeline.status_code == 200
    assert 'id="summary-decision">allow' in text and "approved (approved)" in text and 'id="summary-outcome">ok' in text
    assert "<code>/card</code>" in text  # the redacted argument's path
    assert text.count("<li>\n  <h3>") == 3  # decision, approval, outcome
    assert (await ops.client.get("/console/audit/request?id=nope")).status_code == 404


async def test_results_are_paged_and_bounded(ops: Ops) -> None:
    for i in range(audit_pages.PAGE + 5):
        await ops.writer.record("decision", f"req-{i:03d}", {"tool": {"name": TOOL}, "decision": {"effect": "allow"}})
    await dev_login(ops.client, "rita", "oncall")
    first = (await ops.client.get(f"/console/audit?tool={TOOL}")).text
    assert "?id=req-054" in first and "?id=req-004" not in first and 'id="audit-next"' in first
    second = (await ops.client.get(f"/console/audit?tool={TOOL}&page=2")).text
    assert "?id=req-004" in second and "?id=req-054" not in second and 'id="audit-next"' not in second
    too_far = await ops.client.get(f"/console/audit?tool={TOOL}&page={audit_pages.MAX_PAGES + 1}")
    assert too_far.status_code == 400 and "narrow the search" in too_far.text
    bad = await ops.client.get("/console/audit?since=yesterday")
    assert bad.status_code == 400 and 'id="audit-problem"' in bad.text


async def test_hostile_strings_from_the_trail_render_inert_and_visible(ops: Ops) -> None:
    await _call(ops, "req-" + HOSTILE, tool=HOSTILE, agent=HOSTILE, arguments={HOSTILE: HOSTILE})
    await dev_login(ops.client, "rita", "oncall")
    for path in ("/console/audit?decision=allow", "/console/audit/request?id=req-" + HOSTILE):
        page = (await ops.client.get(path, params=None)).text
        assert "<script>alert(1)" not in page and "<img src=x" not in page, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and r"\u{202E}" in page and r"\u{200B}" in page, path
        assert "\u202e" not in page and "\u200b" not in page, path


async def test_the_audit_is_for_responders_and_operators_only(ops: Ops) -> None:
    await _call(ops, "req-secret", tool="secret.tool")
    await dev_login(ops.client, "eve", "finance-approver")
    for path in ("/console/audit?tool=secret.tool", "/console/audit/request?id=req-secret", "/console/audit/chain",
                 "/console/live", "/console/live/figures"):
        page = await ops.client.get(path)
        assert page.status_code == 403 and "secret.tool" not in page.text and "req-secret" not in page.text, path
    operator = ops.new_client()
    await dev_login(operator, "olga", "platform")
    assert "?id=req-secret" in (await operator.get("/console/audit?tool=secret.tool")).text


async def test_chain_status_is_verified_in_the_background_and_cached(ops: Ops, monkeypatch: pytest.MonkeyPatch
                                                                     ) -> None:
    runs: list[int] = []
    real = audit_pages.verify_store

    async def counting(store: Any, key: Any) -> Any:
        runs.append(1)
        return await real(store, key)

    monkeypatch.setattr(audit_pages, "verify_store", counting)
    await _call(ops, "req-1")
    await dev_login(ops.client, "rita", "oncall")
    first = (await ops.client.get("/console/audit")).text
    assert 'data-state="running"' in first or 'data-state="ok"' in first
    fragment = ""
    for _ in range(200):  # the background verification ends; poll the fragment the page polls
        fragment = (await ops.client.get("/console/audit/chain", headers={"hx-request": "true"})).text
        if 'data-state="ok"' in fragment:
            break
        await asyncio.sleep(0.05)
    assert 'data-state="ok"' in fragment and "2 records verified" in fragment
    for _ in range(5):
        await ops.client.get("/console/audit")
        await asyncio.sleep(0.02)  # a verification a view started would begin here
    assert len(runs) == 1  # cached: views do not re-verify
    # a tampered record shows as broken once the cache expires
    with sqlite3.connect(ops.audit_path) as db:
        db.execute("UPDATE audit_record SET fields = replace(fields, 'ORD-1', 'ORD-2') WHERE idx = 0")
    monkeypatch.setattr(time, "time", lambda real_time=time.time: real_time() + audit_pages.MAX_AGE_S + 1)
    await ops.client.get("/console/audit")
    for _ in range(200):
        fragment = (await ops.client.get("/console/audit/chain")).text
        if 'data-state="broken"' in fragment:
            break
        await asyncio.sleep(0.05)
    assert 'data-state="broken"' in fragment and "record 0" in fragment and len(runs) == 2
