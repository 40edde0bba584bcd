"""Observability configuration: ``observability:`` in ``gateway.yaml``.

Frozen, unknown keys are errors, every field documented. Metrics are on by default (a few
microseconds a call, and no request data); tracing is off by default because it needs
somewhere to send spans.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

TracingExporter = Literal["none", "console", "memory", "otlp"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TracingConfig(_Model):
    """OpenTelemetry tracing of ``tools/call``: a server span per call and a span per pipeline stage."""

    exporter: TracingExporter = Field(
        "none",
        description="Where spans go. 'none': the gateway records no spans, but still passes a valid incoming "
        "W3C trace context through to upstreams; 'console': stderr, for development; 'memory': kept in "
        "process, for tests only (unbounded, warns at start); 'otlp': OTLP/HTTP to otlp_endpoint (needs the "
        "optional package opentelemetry-exporter-otlp-proto-http).")
    sample_ratio: float = Field(
        1.0, ge=0.0, le=1.0,
        description="Fraction of new traces sampled (parent-based: a call that continues a caller's trace "
        "follows the caller's sampled flag).")
    otlp_endpoint: str | None = Field(
        None, pattern=r"^https?://[^\s#]+$",
        description="Full OTLP/HTTP traces URL, e.g. http://collector:4318/v1/traces. Required for, and only "
        "allowed with, exporter 'otlp'.")

    @model_validator(mode="after")
    def _endpoint_matches_exporter(self) -> TracingConfig:
        if self.exporter == "otlp" and self.otlp_endpoint is None:
            raise ValueError("exporter 'otlp' needs otlp_endpoint")
        if self.exporter != "otlp" and self.otlp_endpoint is not None:
            raise ValueError("otlp_endpoint is set but exporter is not 'otlp'")
        return self


class MetricsConfig(_Model):
    """Prometheus metrics, served at ``/metrics``."""

    enabled: bool = Field(True, description="Collect metrics and serve them at /metrics.")


class ObservabilityConfig(_Model):
    """Metrics and tracing."""

    tracing: TracingConfig = Field(default_factory=TracingConfig, description="OpenTelemetry tracing.")
    metrics: MetricsConfig = Field(default_factory=MetricsConfig, description="Prometheus metrics.")
