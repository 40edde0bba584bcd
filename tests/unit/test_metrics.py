"""Gateway metrics: isolated registries, bounded label cardinality, a scrape Prometheus can parse."""

from __future__ import annotations

import logging
import random
import string
from dataclasses import dataclass

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from portcullis.observability import GatewayMetrics, MetricsConfig, cap_label, rule_label, tool_label
from portcullis.observability.metrics import OVERFLOW, UNKNOWN
from portcullis.pipeline.hooks import Hooks

KNOWN = frozenset({"billing.refund", "billing.lookup", "files.read"})


def samples(metrics: GatewayMetrics, name: str) -> list[tuple[dict[str, str], float]]:
    """The samples named ``name`` in a parsed scrape."""
    body, _ = metrics.render()
    return [(s.labels, s.value) for family in text_string_to_metric_families(body.decode())
            for s in family.samples if s.name == name]


def family_names(metrics: GatewayMetrics) -> set[str]:
    body, _ = metrics.render()
    return {family.name for family in text_string_to_metric_families(body.decode())}


def random_name(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_letters + string.digits + "._-/", k=rng.randint(1, 300)))


@dataclass(frozen=True)
class FakeDecision:
    rule_ids: tuple[str, ...]
    effect: str = "deny"


def test_two_gateways_keep_separate_registries() -> None:
    """A call counted by one gateway's metrics does not appear in another's, nor in the default registry."""
    first, second = GatewayMetrics(), GatewayMetrics()
    first.call_done("billing.refund", "allow", "ok", 0.002)
    assert samples(first, "portcullis_calls_total") == [
        ({"tool": "billing.refund", "decision": "allow", "outcome": "ok"}, 1.0)]
    assert samples(second, "portcullis_calls_total") == []
    assert first.registry is not prometheus_client.REGISTRY
    default_body = prometheus_client.generate_latest(prometheus_client.REGISTRY).decode()
    assert "portcullis_" not in default_body


def test_unknown_tool_names_collapse_to_unknown() -> None:
    """Ten thousand random tool names from callers leave one 'unknown' series, not ten thousand."""
    metrics, rng = GatewayMetrics(), random.Random(7)
    for _ in range(10_000):
        metrics.call_done(tool_label(random_name(rng), KNOWN), "none", "error", 1e-4)
    metrics.call_done(tool_label("billing.refund", KNOWN), "allow", "ok", 1e-3)
    calls = samples(metrics, "portcullis_calls_total")
    assert sorted(labels["tool"] for labels, _ in calls) == ["billing.refund", UNKNOWN]
    assert sum(value for _, value in calls) == 10_001
    assert len(samples(metrics, "portcullis_call_seconds_count")) == 2


def test_known_tools_given_to_gateway_metrics_bound_the_tool_label() -> None:
    """With ``known_tools``, raw names passed to call_done are mapped to 'unknown' by the metrics themselves."""
    metrics = GatewayMetrics(known_tools=KNOWN)
    metrics.call_done("not-a-tool", "none", "error", 1e-4)
    metrics.call_done("files.read", "allow", "ok", 1e-4)
    assert {labels["tool"] for labels, _ in samples(metrics, "portcullis_calls_total")} == {UNKNOWN, "files.read"}


def test_series_ceiling_holds_even_for_unbounded_raw_labels() -> None:
    """Past ``max_series`` every new label value is counted under 'other', and nothing is lost."""
    metrics, rng = GatewayMetrics(max_series=50), random.Random(11)
    for _ in range(10_000):
        metrics.limit_exceeded(random_name(rng))
    exceeded = samples(metrics, "portcullis_limit_exceeded_total")
    assert len(exceeded) == 51
    assert {"rule": OVERFLOW} in [labels for labels, _ in exceeded]
    assert sum(value for _, value in exceeded) == 10_000


def test_label_values_are_cut_to_128_characters() -> None:
    """A label value longer than 128 characters is stored cut, under one series however often it is sent."""
    metrics = GatewayMetrics()
    long_kind = "k" * 1000
    metrics.upstream_error("billing", long_kind)
    metrics.upstream_error("billing", long_kind)
    errors = samples(metrics, "portcullis_upstream_errors_total")
    assert errors == [({"service": "billing", "kind": "k" * 128}, 2.0)]
    assert cap_label("x" * 129) == "x" * 128
    assert cap_label(42) == "42"


@pytest.mark.parametrize("name", ["", "billing.refund ", "BILLING.REFUND", "billing.refund\n", "b" * 129,
                                  "billing.refund" + "\u200b", "../../etc/passwd"])
def test_tool_label_maps_every_unserved_name_to_unknown(name: str) -> None:
    """Anything that is not exactly a served tool name becomes 'unknown'."""
    assert tool_label(name, KNOWN | {"b" * 129}) == UNKNOWN


def test_rule_labels_are_bounded_by_known_rules() -> None:
    """With ``known_rules``, shadow and limit counts for unconfigured rule ids go under 'unknown'."""
    rules = frozenset({"billing.refund/max_amount", "per_user_rate"})
    metrics = GatewayMetrics(known_rules=rules)
    metrics.shadow(FakeDecision(rule_ids=("billing.refund/max_amount", "rego/built-from-input-123")))
    metrics.limit_exceeded("per_user_rate")
    metrics.limit_exceeded("made-up")
    assert sorted(labels["rule"] for labels, _ in samples(metrics, "portcullis_policy_shadow_total")) == [
        "billing.refund/max_amount", UNKNOWN]
    assert sorted(labels["rule"] for labels, _ in samples(metrics, "portcullis_limit_exceeded_total")) == [
        "per_user_rate", UNKNOWN]
    assert rule_label("per_user_rate", rules) == "per_user_rate"


def test_shadow_decision_without_rule_ids_counts_under_none() -> None:
    """A shadow decision that names no rule (no policy at all) is still counted."""
    metrics = GatewayMetrics()
    metrics.shadow(FakeDecision(rule_ids=()))
    assert samples(metrics, "portcullis_policy_shadow_total") == [({"rule": "none"}, 1.0)]


def test_gateway_metrics_serve_as_the_pipeline_hooks() -> None:
    """Every Hooks method lands in its metric."""
    hooks: Hooks = GatewayMetrics()
    hooks.call_done("files.read", "deny", "denied", 3e-4)
    hooks.policy_error()
    hooks.audit_record("decision")
    hooks.audit_record("outcome")
    hooks.audit_failure()
    hooks.upstream_error("files", "timeout")
    assert isinstance(hooks, GatewayMetrics)
    assert samples(hooks, "portcullis_policy_errors_total") == [({}, 1.0)]
    assert samples(hooks, "portcullis_audit_failures_total") == [({}, 1.0)]
    assert sorted(labels["kind"] for labels, _ in samples(hooks, "portcullis_audit_records_total")) == [
        "decision", "outcome"]
    assert samples(hooks, "portcullis_upstream_errors_total") == [({"service": "files", "kind": "timeout"}, 1.0)]


def test_unlabelled_counters_are_exposed_at_zero_from_the_start() -> None:
    """Rates over policy and audit failures work before the first failure happens."""
    metrics = GatewayMetrics()
    assert samples(metrics, "portcullis_policy_errors_total") == [({}, 0.0)]
    assert samples(metrics, "portcullis_audit_failures_total") == [({}, 0.0)]


def test_scrape_parses_with_cumulative_histogram_buckets() -> None:
    """The rendered text parses, and a stage histogram has cumulative buckets, count and sum."""
    metrics = GatewayMetrics()
    authorize = metrics.stage_seconds.labels("authorize")
    for seconds in (1e-5, 2e-5, 3e-4, 7.0):
        authorize.observe(seconds)
    metrics.stage_done("route", 4e-5)
    body, content_type = metrics.render()
    assert content_type == prometheus_client.CONTENT_TYPE_LATEST
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert families["portcullis_stage_seconds"].type == "histogram"
    buckets = {s.labels["le"]: s.value for s in families["portcullis_stage_seconds"].samples
               if s.name.endswith("_bucket") and s.labels["stage"] == "authorize"}
    assert buckets["1e-05"] == 1  # upper bounds are inclusive
    assert buckets["2.5e-05"] == 2
    assert buckets["0.0005"] == 3
    assert buckets["5.0"] == 3
    assert buckets["+Inf"] == 4
    by_name = {(s.name, s.labels.get("stage")): s.value for s in families["portcullis_stage_seconds"].samples}
    assert by_name["portcullis_stage_seconds_count", "authorize"] == 4
    assert by_name["portcullis_stage_seconds_sum", "authorize"] == pytest.approx(7.00033)
    assert by_name["portcullis_stage_seconds_count", "route"] == 1


def test_scrape_offers_openmetrics_when_the_scraper_asks() -> None:
    """An OpenMetrics Accept header gets the OpenMetrics format, ending in # EOF."""
    metrics = GatewayMetrics()
    metrics.call_done("files.read", "allow", "ok", 1e-3)
    body, content_type = metrics.render("application/openmetrics-text; version=1.0.0,text/plain;q=0.5")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")
    assert b'portcullis_calls_total{decision="allow",outcome="ok",tool="files.read"} 1.0' in body


def test_export_stats_are_read_from_the_source_at_each_scrape() -> None:
    """Exporter counters and queue depth come from the registered callback, read when scraped."""
    metrics = GatewayMetrics()
    stats = {"siem": {"sent": 10, "dropped": 1, "depth": 3, "failed_attempts": 2}}
    metrics.set_export_stats_source(lambda: stats)
    assert samples(metrics, "portcullis_export_sent_total") == [({"exporter": "siem"}, 10.0)]
    stats["siem"] = {"sent": 12, "dropped": 4, "depth": 0, "failed_attempts": 2}
    assert samples(metrics, "portcullis_export_sent_total") == [({"exporter": "siem"}, 12.0)]
    assert samples(metrics, "portcullis_export_dropped_total") == [({"exporter": "siem"}, 4.0)]
    assert samples(metrics, "portcullis_export_failed_attempts_total") == [({"exporter": "siem"}, 2.0)]
    assert samples(metrics, "portcullis_export_queue_depth") == [({"exporter": "siem"}, 0.0)]


def test_audit_queue_depth_is_read_from_the_source_at_each_scrape() -> None:
    """The audit queue depth gauge follows its callback."""
    metrics, depth = GatewayMetrics(), [5]
    metrics.set_audit_queue_depth_source(lambda: depth[0])
    assert samples(metrics, "portcullis_audit_queue_depth") == [({}, 5.0)]
    depth[0] = 0
    assert samples(metrics, "portcullis_audit_queue_depth") == [({}, 0.0)]


def test_callback_metrics_are_absent_until_a_source_is_set() -> None:
    """No source, no export or queue-depth families (rather than misleading zeros)."""
    names = family_names(GatewayMetrics())
    assert not {n for n in names if n.startswith("portcullis_export_") or n == "portcullis_audit_queue_depth"}


def test_a_failing_source_leaves_the_rest_of_the_scrape_intact(caplog: pytest.LogCaptureFixture) -> None:
    """A callback that raises drops only its own families and logs a warning; the scrape still succeeds."""
    metrics = GatewayMetrics()
    metrics.call_done("files.read", "allow", "ok", 1e-3)

    def broken() -> dict[str, dict[str, int]]:
        raise RuntimeError("exporter gone")

    metrics.set_export_stats_source(broken)
    metrics.set_audit_queue_depth_source(lambda: int("not a number"))
    with caplog.at_level(logging.WARNING, logger="portcullis.metrics"):
        names = family_names(metrics)
    assert "portcullis_calls" in names
    assert not {n for n in names if n.startswith("portcullis_export_") or n == "portcullis_audit_queue_depth"}
    assert len(caplog.records) == 2


def test_a_malformed_export_entry_drops_all_export_families() -> None:
    """Export families are built whole before any is yielded, so a bad entry cannot leave half of them."""
    metrics = GatewayMetrics()
    metrics.set_export_stats_source(lambda: {"siem": {"sent": 1}, "bad": {"sent": "many"}})  # type: ignore[dict-item]
    assert not {n for n in family_names(metrics) if n.startswith("portcullis_export_")}


def test_process_metrics_are_included_unless_turned_off() -> None:
    """The standard process and Python metrics are in the scrape by default and can be left out."""
    assert "python_info" in family_names(GatewayMetrics())
    assert not {n for n in family_names(GatewayMetrics(process_metrics=False)) if not n.startswith("portcullis_")}


def test_a_wrong_number_of_label_values_is_an_error() -> None:
    """Passing too few label values is a programming error, not a silent new series."""
    with pytest.raises(ValueError, match="takes labels"):
        GatewayMetrics().calls_total.labels("files.read")


def test_max_series_must_be_positive() -> None:
    """A ceiling of zero series would drop everything, so it is refused."""
    with pytest.raises(ValueError, match="max_series"):
        GatewayMetrics(max_series=0)


def test_metrics_config_is_on_by_default_and_strict() -> None:
    """Metrics default to enabled; unknown keys are errors and the model is frozen."""
    config = MetricsConfig()
    assert config.enabled is True
    with pytest.raises(ValidationError):
        MetricsConfig.model_validate({"enabled": True, "port": 9090})
    with pytest.raises(ValidationError):
        config.enabled = False  # type: ignore[misc]


def test_open_approvals_are_read_at_scrape_time_and_a_failing_source_is_left_out() -> None:
    from portcullis.observability.metrics import GatewayMetrics

    metrics = GatewayMetrics(process_metrics=False)
    metrics.set_approvals_source(lambda: {"pending": 3})
    body, _ = metrics.render()
    assert b'portcullis_approvals_open{status="pending"} 3.0' in body
    assert b'portcullis_approvals_open{status="approved"} 0.0' in body

    def broken() -> dict[str, int]:
        raise RuntimeError("store down")

    metrics.set_approvals_source(broken)
    body, _ = metrics.render()
    assert b"portcullis_approvals_open" not in body and b"portcullis_calls_total" in body


def test_state_store_errors_are_counted_by_store_and_a_closed_set_of_operations() -> None:
    """portcullis_state_store_errors_total{store,op}: a known op keeps its name, anything else is ``other``."""
    metrics = GatewayMetrics(process_metrics=False)
    metrics.state_store_error("redis", "window_add")
    metrics.state_store_error("redis", "window_add")
    metrics.state_store_error("redis", "evil\n{op}")
    text = metrics.render()[0].decode()
    assert 'portcullis_state_store_errors_total{op="window_add",store="redis"} 2.0' in text
    assert 'portcullis_state_store_errors_total{op="other",store="redis"} 1.0' in text
