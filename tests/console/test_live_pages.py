"""Live view: calls per tool and decision, p50/p95 from the call histogram, errors and queue depths, read
from the registry /metrics serves; the polled fragment; tool names inert and visible."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from portcullis.console.live_metrics import live_figures, quantile
from portcullis.observability.metrics import GatewayMetrics
from tests.console.conftest import dev_login
from tests.console.ops import Ops, ops_console


@pytest.fixture
async def ops(tmp_path: Path) -> AsyncIterator[Ops]:
    async for value in ops_console(tmp_path):
        yield value


def test_quantiles_from_cumulative_buckets() -> None:
    buckets = [(0.1, 50.0), (0.5, 90.0), (1.0, 100.0), (float("inf"), 100.0)]
    assert quantile(0.5, buckets) == 0.1
    assert quantile(0.95, buckets) == pytest.approx(0.75)
    assert quantile(0.5, [(float("inf"), 0.0)]) is None
    assert quantile(0.99, [(0.1, 1.0), (float("inf"), 10.0)]) == 0.1  # the open top bucket: its lower bound


def test_figures_from_the_gateway_registry() -> None:
    metrics = GatewayMetrics(process_metrics=False)
    for _ in range(9):
        metrics.call_done("unknown", "allow", "ok", 0.02)
    metrics.call_done("unknown", "deny", "denied", 0.001)
    metrics.call_done("unknown", "allow", "error", 2.0)
    metrics.upstream_error("billing", "timeout")
    metrics.set_approvals_source(lambda: {"pending": 3})
    figures = live_figures(metrics.render()[0].decode())
    assert {(c["tool"], c["decision"], c["count"]) for c in figures["calls"]} == {("unknown", "allow", 10),
                                                                                  ("unknown", "deny", 1)}
    [latency] = figures["latency"]
    assert latency["count"] == 11 and latency["p50"].endswith(" ms") and latency["p95"] != "—"
    errors = {e["what"]: e["count"] for e in figures["errors"]}
    assert errors == {"calls: error": 1, "upstream billing: timeout": 1}
    assert {"what": "approvals pending", "depth": 3} in figures["queues"]


async def test_the_live_page_and_its_polled_fragment(ops: Ops) -> None:
    ops.metrics._known_tools = {"billing.get_invoice", "<b>x</b>\u202e"}  # served tools (the label bound)
    ops.metrics.call_done("billing.get_invoice", "allow", "ok", 0.05)
    ops.metrics.call_done("<b>x</b>\u202e", "deny", "denied", 0.01)
    await dev_login(ops.client, "olga", "platform")
    page = await ops.client.get("/console/live")
    assert page.status_code == 200 and 'hx-get="/console/live/figures"' in page.text and 'id="live-calls"' in page.text
    fragment = (await ops.client.get("/console/live/figures", headers={"hx-request": "true"})).text
    assert "<html" not in fragment and "billing.get_invoice" in fragment and 'id="live-latency"' in fragment
    assert "audit queue" in fragment
    assert "<b>x</b>" not in fragment and r"&lt;b&gt;x&lt;/b&gt;\u{202E}" in fragment
