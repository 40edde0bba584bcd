"""Per-call cost of metrics and tracing, in microseconds (no network, no event loop).

One "call" is what the pipeline would do for one ``tools/call``: for metrics, ``calls_total``
plus five stage observations plus ``call_seconds``; for tracing, one server span (continuing an
incoming ``traceparent``) and five stage spans, plus one ``traceparent`` for the upstream.
``prometheus_client``'s own ``Counter``/``Histogram`` are timed too, as the baseline the
cached-child design is measured against. Run: ``.venv/bin/python -m bench.observability_micro``.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, Counter, Histogram

from portcullis.observability.metrics import CALL_BUCKETS_S, STAGE_BUCKETS_S, GatewayMetrics
from portcullis.observability.tracing import SpanHandle, Tracing

STAGES = ("route", "gate", "validate", "authorize", "audit")
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class _Discard(SpanExporter):
    """Drops spans: times the SDK and the batch processor, not an exporter."""

    def export(self, spans: object) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _us_per_call(run: Callable[[], None], n: int, rounds: int = 7) -> float:
    """Best of ``rounds`` of the mean time of ``n`` calls, in microseconds (the minimum is the
    least disturbed by other load on the machine)."""
    for _ in range(n // 10):
        run()
    results = []
    for _ in range(rounds):
        gc.collect()
        start = time.perf_counter()
        for _ in range(n):
            run()
        results.append((time.perf_counter() - start) / n * 1e6)
    return min(results)


def metrics_call(metrics: GatewayMetrics) -> Callable[[], None]:
    stage_children = [metrics.stage_seconds.labels(s) for s in STAGES]  # fetched once, as the pipeline should

    def run() -> None:
        for child in stage_children:
            child.observe(3e-5)
        metrics.call_done("billing.refund", "allow", "ok", 4e-4)

    return run


def metrics_call_by_name(metrics: GatewayMetrics) -> Callable[[], None]:
    def run() -> None:
        for stage in STAGES:
            metrics.stage_done(stage, 3e-5)
        metrics.call_done("billing.refund", "allow", "ok", 4e-4)

    return run


def prometheus_client_call() -> Callable[[], None]:
    registry = CollectorRegistry()
    calls = Counter("calls_total", "c", ["tool", "decision", "outcome"], registry=registry)
    stage = Histogram("stage_seconds", "s", ["stage"], registry=registry, buckets=STAGE_BUCKETS_S)
    call = Histogram("call_seconds", "c", ["tool"], registry=registry, buckets=CALL_BUCKETS_S)

    def run() -> None:
        for name in STAGES:
            stage.labels(name).observe(3e-5)
        calls.labels("billing.refund", "allow", "ok").inc()
        call.labels("billing.refund").observe(4e-4)

    return run


def tracing_call(tracing: Tracing, traceparent: str | None, stages: tuple[str, ...] = STAGES) -> Callable[[], None]:
    def run() -> None:
        span = tracing.start_call(traceparent, request_id="r-1", protocol_version="2025-11-25")
        last: SpanHandle = span
        for name in stages:
            with tracing.stage(name, span) as stage:
                last = stage
        tracing.traceparent_for(last)  # the forward stage's, for the upstream
        span.set_tool("billing.refund")
        span.set_decision("allow")
        span.end("ok")

    return run


def main(n: int = 20_000) -> None:
    metrics = GatewayMetrics()
    rows = [
        ("metrics: 1 call, stage series fetched once", _us_per_call(metrics_call(metrics), n)),
        ("metrics: 1 call, stage series looked up by name", _us_per_call(metrics_call_by_name(metrics), n)),
        ("metrics: same with prometheus_client Counter/Histogram", _us_per_call(prometheus_client_call(), n)),
    ]
    off = Tracing.disabled()
    rows += [
        ("tracing off (none), no traceparent", _us_per_call(tracing_call(off, None), n)),
        ("tracing off (none), traceparent passed through", _us_per_call(tracing_call(off, TRACEPARENT), n)),
    ]
    unsampled = Tracing.with_exporter(_Discard(), "bench", sample_ratio=0.0)
    rows.append(("tracing on, root not sampled (ratio 0)", _us_per_call(tracing_call(unsampled, None), n)))
    memory = InMemorySpanExporter()
    sampled = Tracing.with_exporter(memory, "bench")
    rows.append(("tracing on, sampled, in-memory: server span only",
                 _us_per_call(tracing_call(sampled, TRACEPARENT, ()), n // 4)))
    memory.clear()
    rows.append(("tracing on, sampled, in-memory: server + 5 stage spans",
                 _us_per_call(tracing_call(sampled, TRACEPARENT), n // 4)))
    memory.clear()
    batched = Tracing.with_exporter(_Discard(), "bench", batch=True)
    rows.append(("tracing on, sampled, batch processor: server + 5 stage spans",
                 _us_per_call(tracing_call(batched, TRACEPARENT), n // 4)))
    for tracing in (unsampled, sampled, batched):
        tracing.shutdown()
    width = max(len(label) for label, _ in rows)
    for label, us in rows:
        print(f"{label:<{width}}  {us:8.2f} us/call")


if __name__ == "__main__":
    main()
