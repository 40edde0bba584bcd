"""What the pipeline reports as it runs, for metrics: one small seam, a no-op by default.

The pipeline never imports a metrics library. :class:`Hooks` is what it calls; the gateway
passes an adapter over :class:`~portcullis.observability.metrics.GatewayMetrics`, and tests pass
:class:`NullHooks` or a recorder. Every method is cheap and must never raise.
"""

from __future__ import annotations

from typing import Any, Protocol


class Hooks(Protocol):
    def call_done(self, tool: str, decision: str, outcome: str, seconds: float) -> None: ...
    def shadow(self, decision: Any) -> None: ...
    def shadow_version(self, result: str) -> None: ...
    def policy_error(self) -> None: ...
    def limit_exceeded(self, rule_id: str) -> None: ...
    def audit_record(self, kind: str) -> None: ...
    def audit_failure(self) -> None: ...
    def upstream_error(self, service: str, kind: str) -> None: ...


class NullHooks:
    """Reports nothing."""

    def call_done(self, tool: str, decision: str, outcome: str, seconds: float) -> None:
        pass

    def shadow(self, decision: Any) -> None:
        pass

    def shadow_version(self, result: str) -> None:
        pass

    def policy_error(self) -> None:
        pass

    def limit_exceeded(self, rule_id: str) -> None:
        pass

    def audit_record(self, kind: str) -> None:
        pass

    def audit_failure(self) -> None:
        pass

    def upstream_error(self, service: str, kind: str) -> None:
        pass
