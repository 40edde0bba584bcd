"""Observability: Prometheus metrics and OpenTelemetry traces, one instance of each per gateway.

Neither touches process-wide state (no default Prometheus registry, no global tracer provider),
so several gateways, or a gateway inside a larger application, can share a process. The pipeline
never imports these modules: metrics reach it as its :class:`~portcullis.pipeline.hooks.Hooks`
and tracing as the ``trace`` handle in the call context.
"""

from portcullis.observability.config import MetricsConfig, ObservabilityConfig, TracingConfig
from portcullis.observability.metrics import GatewayMetrics, cap_label, rule_label, tool_label
from portcullis.observability.tracing import CallSpan, SpanHandle, StageSpan, Tracing, parse_trace_context

__all__ = [
    "CallSpan",
    "GatewayMetrics",
    "MetricsConfig",
    "ObservabilityConfig",
    "SpanHandle",
    "StageSpan",
    "Tracing",
    "TracingConfig",
    "cap_label",
    "parse_trace_context",
    "rule_label",
    "tool_label",
]
