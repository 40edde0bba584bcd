"""Cost of the anomaly monitor, per call (no network, no event loop).

* ``observe``: what the record stage pays per ``tools/call`` (request path): a real
  :class:`~portcullis.pipeline.context.CallContext` and route of a high-risk, egress-capable tool.
* for scale, ``GatewayMetrics.call_done`` (what every call already pays for ``/metrics``), same run.
* ``drain``: what the background task pays per observation (detector update; windows closed once a
  minute), with 1,000 distinct callers in play.
* ``region``: the region lookup per observation (background task): 3 regions, 300 CIDRs of 5 prefix
  lengths, addresses inside and outside them, IPv4 and IPv6, and a principal attribute fallback.
* ``snapshot``: one snapshot of 10,000 callers saved to SQLite (worker thread, once per window).
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
    _regions()
    _snapshot()


def _regions() -> None:
    from types import SimpleNamespace

    from portcullis.monitoring.regions import RegionMap

    cidrs = {name: [f"10.{base + i}.0.0/{16 + (i % 5) * 2}" for i in range(100)]
             for name, base in (("eu", 0), ("us", 100))}
    cidrs["ap"] = [f"2001:db8:{i:x}::/48" for i in range(100)]
    regions = RegionMap(cidrs, attribute="region")
    principal = SimpleNamespace(attributes={"region": "eu"})
    addresses = ["10.5.1.2", "10.150.3.4", "192.0.2.7", "2001:db8:5::1", "2001:db8:ffff::1", "::ffff:10.7.0.1"]
    n = 300_000
    start = time.perf_counter_ns()
    for i in range(n):
        regions.region(addresses[i % 6], principal)
    warm = (time.perf_counter_ns() - start) / n
    cold_addresses = [f"10.{i % 250}.{(i // 250) % 250}.{i % 7}" for i in range(n // 2)]
    cold_addresses += [f"2001:db8:{i % 200:x}::{i:x}" for i in range(n // 2)]
    start = time.perf_counter_ns()
    for address in cold_addresses:  # every one new: more than the cache holds, so each is parsed and probed
        regions.region(address, principal)
    cold = (time.perf_counter_ns() - start) / n
    print(f"region lookup:          {warm / 1000:.2f} µs/observation (address seen recently), "
          f"{cold / 1000:.2f} µs (new address)")


def _snapshot() -> None:
    import tempfile
    from pathlib import Path

    from portcullis.monitoring.detectors import Detector, Observation
    from portcullis.monitoring.snapshot import take
    from portcullis.monitoring.state import SqliteMonitorStateStore

    detector = Detector(Settings(learn_s=0), started=1_800_000_000.0)
    for i in range(10_000):
        detector.observe(Observation(1_800_000_000.0 + i * 0.001, "mail.send", "high", (("agent", f"a-{i}"),),
                                     "t", 10, 10, False, False, None))
    detector.tick(1_800_000_060.0)
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteMonitorStateStore(Path(tmp) / "m.sqlite3")
        start = time.perf_counter_ns()
        store.save(take(detector, 1_800_000_060.0))
        saved = time.perf_counter_ns() - start
        start = time.perf_counter_ns()
        store.load(10_000)
        loaded = time.perf_counter_ns() - start
        size = (Path(tmp) / "m.sqlite3").stat().st_size + (Path(tmp) / "m.sqlite3-wal").stat().st_size
        store.close()
    print(f"snapshot of 10,000 callers + identities: take+save {saved / 1e6:.0f} ms, load {loaded / 1e6:.0f} ms, "
          f"{size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
