"""Cost of the anomaly monitor, per call (no network, no event loop).

* ``observe``: what the record stage pays per ``tools/call`` (request path): a real
  :class:`~portcullis.pipeline.context.CallContext` and route of a high-risk, egress-capable tool.
* for scale, ``GatewayMetrics.call_done`` (what every call already pays for ``/metrics``), same run.
* ``drain``: what the background task pays per observation (detector update; windows closed once a
  minute), with 1,000 distinct callers in play.
Run: ``.venv/bin/python -m bench.alerts_micro``.
"""

from __future__ import annotations

import gc
import time
from types import SimpleNamespace

from portcullis.identity.principal import Principal
from portcullis.monitoring.detectors import Settings
from portcullis.monitoring.monitor import Monitor, _observation
from portcullis.observability.metrics import GatewayMetrics
from portcullis.pipeline.context import CallContext, CallRecord

N = 200_000


def _ctx(agent: str) -> CallContext:
    manifest = SimpleNamespace(risk="high", egress=True, annotations=SimpleNamespace(openWorldHint=None))
    record = CallRecord()
    record.route = SimpleNamespace(exposed_name="mail.send", manifest=SimpleNamespace(manifest=manifest))  # type: ignore[assignment]
    principal = Principal(client_id="c", auth_method="dev", issuer="dev", agent_id=agent, user_id="alice")
    return CallContext(request_id="r", jsonrpc_id=1, protocol_version="2026-07-28", tool_name="mail.send",
                       arguments={"to": "bob@example.com", "subject": "hi", "body": "x" * 500}, started_ns=0,
                       principal=principal, record=record)


def main() -> None:
    now = [1_800_000_000.0]
    monitor = Monitor(Settings(learn_s=0), clock=lambda: now[0], max_pending=N + 1)
    contexts = [_ctx(f"agent-{i}") for i in range(1000)]
    gc.collect()
    gc.disable()
    start = time.perf_counter_ns()
    for i in range(N):
        monitor.observe(contexts[i % 1000], "ok", 1234)
    observe_ns = (time.perf_counter_ns() - start) / N
    start = time.perf_counter_ns()
    while monitor._pending:
        monitor.detector.observe(_observation(monitor._pending.popleft()))
        now[0] += 0.001  # 200,000 calls over 200 s: a few window closes
    now[0] += 60
    monitor.detector.tick(now[0])
    drain_ns = (time.perf_counter_ns() - start) / N
    metrics = GatewayMetrics(process_metrics=False)
    start = time.perf_counter_ns()
    for _ in range(N):
        metrics.call_done("mail.send", "allow", "ok", 0.001)
    metrics_ns = (time.perf_counter_ns() - start) / N
    gc.enable()
    print(f"observe (request path): {observe_ns / 1000:.2f} µs/call "
          f"(metrics call_done, same run: {metrics_ns / 1000:.2f} µs)")
    print(f"drain (background):     {drain_ns / 1000:.2f} µs/observation")


if __name__ == "__main__":
    main()
