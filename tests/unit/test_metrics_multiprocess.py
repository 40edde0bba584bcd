"""Multiprocess mode (``serve --workers N``): any worker's scrape reports every worker of the host.

Each "worker" here is a GatewayMetrics over its own prometheus-client value class with a pid of its own, in one
process and one directory, as the supervisor's workers are in theirs (tests/cluster/test_metrics_workers.py
runs the real supervisor).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import values
from prometheus_client.multiprocess import mark_process_dead
from prometheus_client.parser import text_string_to_metric_families

from portcullis.observability import GatewayMetrics
from portcullis.observability.multiprocess import MULTIPROC_ENV, SharedMetrics

KNOWN = frozenset({"billing.refund"})


@pytest.fixture
def directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    return tmp_path


def worker(directory: Path, pid: int) -> GatewayMetrics:
    shared = SharedMetrics(directory, value_class=values.MultiProcessValue(process_identifier=lambda: pid))
    return GatewayMetrics(known_tools=KNOWN, shared=shared)


def scrape(metrics: GatewayMetrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    body, _ = metrics.render()
    return {tuple(sorted(s.labels.items())): s.value for family in text_string_to_metric_families(body.decode())
            for s in family.samples if s.name == name}


def calls(metrics: GatewayMetrics) -> float:
    return sum(scrape(metrics, "portcullis_calls_total").values())


def test_either_worker_reports_the_calls_and_latencies_of_both(directory: Path) -> None:
    a, b = worker(directory, 101), worker(directory, 102)
    for _ in range(3):
        a.call_done("billing.refund", "allow", "ok", 0.002)
    for _ in range(4):
        b.call_done("billing.refund", "allow", "ok", 0.2)
    b.call_done("billing.refund", "deny", "denied", 0.001)
    for metrics in (a, b):
        assert scrape(metrics, "portcullis_calls_total") == {
            (("decision", "allow"), ("outcome", "ok"), ("tool", "billing.refund")): 7.0,
            (("decision", "deny"), ("outcome", "denied"), ("tool", "billing.refund")): 1.0}
        assert scrape(metrics, "portcullis_call_seconds_count") == {(("tool", "billing.refund"),): 8.0}
        assert scrape(metrics, "portcullis_call_seconds_sum")[(("tool", "billing.refund"),)] == pytest.approx(0.807)
        buckets = scrape(metrics, "portcullis_call_seconds_bucket")
        assert buckets[(("le", "0.0025"), ("tool", "billing.refund"))] == 4.0  # cumulative across workers
        assert buckets[(("le", "+Inf"), ("tool", "billing.refund"))] == 8.0
        assert scrape(metrics, "portcullis_policy_errors_total") == {(): 0.0}  # present at 0 from the start
    assert a.calls_total.labels("billing.refund", "allow", "ok").value == 3  # each worker's own value too


def test_a_dead_workers_counts_stay_and_its_replacement_adds_to_them(directory: Path) -> None:
    """Counters: the dead worker's file stays in the sum and the replacement (a new pid) starts at 0, so the
    total neither drops nor doubles. Live gauges (queues): the dead worker's share leaves the sum."""
    a, b = worker(directory, 201), worker(directory, 202)
    a.set_audit_queue_depth_source(lambda: 5)
    b.set_audit_queue_depth_source(lambda: 2)
    for _ in range(5):
        a.call_done("billing.refund", "allow", "ok", 0.01)
    b.call_done("billing.refund", "allow", "ok", 0.01)
    assert scrape(b, "portcullis_audit_queue_depth") == {(): 2.0}  # b's own copy is fresh; a's is not yet in
    a.render()  # a copies its scrape-time figures (its background task does it every second)
    assert scrape(b, "portcullis_audit_queue_depth") == {(): 7.0}
    mark_process_dead(201, str(directory))  # the supervisor reaped a
    assert calls(b) == 6
    assert scrape(b, "portcullis_audit_queue_depth") == {(): 2.0}
    replacement = worker(directory, 203)
    assert calls(replacement) == 6
    replacement.call_done("billing.refund", "allow", "ok", 0.01)
    assert calls(b) == calls(replacement) == 7
    reused = worker(directory, 201)  # a later worker given the dead one's pid continues its file: still exact
    reused.call_done("billing.refund", "allow", "ok", 0.01)
    assert calls(b) == 8


def test_scrape_time_counters_are_summed_and_open_approvals_are_not(directory: Path) -> None:
    """Exporter counters are per worker (summed); approvals come from the shared store (the same in every
    worker), so the answering worker's reading is reported once, not multiplied."""
    a, b = worker(directory, 301), worker(directory, 302)
    for metrics, sent in ((a, 10), (b, 7)):
        metrics.set_export_stats_source(lambda sent=sent: {"siem": {"sent": sent, "dropped": 0, "depth": 1,
                                                                    "failed_attempts": 0}})
        metrics.set_approvals_source(lambda: {"pending": 3, "approved": 1})
    a.render()
    assert scrape(b, "portcullis_export_sent_total") == {(("exporter", "siem"),): 17.0}
    assert scrape(b, "portcullis_export_queue_depth") == {(("exporter", "siem"),): 2.0}
    assert scrape(b, "portcullis_approvals_open") == {(("status", "pending"),): 3.0, (("status", "approved"),): 1.0}


def test_per_process_figures_are_left_out_and_python_info_stays(directory: Path) -> None:
    names = {family.name for family in text_string_to_metric_families(worker(directory, 401).render()[0].decode())}
    assert "python_info" in names and "portcullis_calls" not in names  # no series yet: no family
    assert not any(name.startswith(("process_", "python_gc_")) for name in names)
    body, content_type = worker(directory, 402).render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text") and body.endswith(b"# EOF\n")
    single = {family.name for family in text_string_to_metric_families(GatewayMetrics().render()[0].decode())}
    assert "process_cpu_seconds" in single and "portcullis_calls" in single  # the one-process mode: as before


def test_multiprocess_mode_needs_the_directory_named_before_prometheus_client_was_imported(directory: Path) -> None:
    """In this test process prometheus_client was imported without PROMETHEUS_MULTIPROC_DIR: its value class is
    the in-memory one, and SharedMetrics refuses it rather than silently report one worker."""
    with pytest.raises(RuntimeError, match="multiprocess mode"):
        SharedMetrics(directory)
    with pytest.raises(RuntimeError, match="must name"):
        SharedMetrics(directory / "elsewhere")
