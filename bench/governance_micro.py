"""What data governance costs per call, in process: the two stages around a call that does nothing.

``govern_check`` (request side) and ``govern`` (response side) from :mod:`portcullis.pipeline.stages.govern`
wrap a terminal handler that returns a fixed result, for a non-egress tool, an egress tool (one
windowed-counter read, :class:`SqliteStateStore` as ``portcullis serve`` uses) and an egress tool whose
caller's result is tainted each call (one counter write too). Reported: p50 / p99 of the whole
wrapped call minus the bare handler's.

Run: ``.venv/bin/python -m bench.governance_micro`` (``--calls 2000`` for a short run).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from portcullis.catalog import Route
from portcullis.config.loader import LoadedManifest
from portcullis.config.model import GovernanceConfig, ToolManifest
from portcullis.identity.principal import Principal
from portcullis.pipeline.chain import compose
from portcullis.pipeline.context import CallContext, CallRecord, CallResult
from portcullis.pipeline.hooks import NullHooks
from portcullis.pipeline.stages import govern
from portcullis.policy.decision import Decision
from portcullis.state import SqliteStateStore

RESULT: CallResult = {"content": [{"type": "text", "text": "x" * 4096}], "isError": False}
BOT = Principal(client_id="console", auth_method="bearer", issuer="https://idp.example", agent_id="bot", tenant="acme")


@dataclasses.dataclass(frozen=True)
class _Signals:
    sensitive: bool = True
    injection: bool = False


def _route(egress: bool) -> Route:
    manifest = ToolManifest.model_validate({
        "name": "t", "service": "s", "owner": "o@example.com", "description": "d", "risk": "low",
        "classification": {"input": "Internal", "output": "Internal"}, "egress": egress,
        "input_schema": {"type": "object"}, "policy": {"allowed_callers": ["agent:bot"]}})
    return Route(exposed_name="s.t", service="s", upstream_name="t",
                 manifest=LoadedManifest(Path("/t.yml"), "s", manifest, "s.t"), validator=None,  # type: ignore[arg-type]
                 wire={}, timeout_s=None)


async def _terminal(ctx: CallContext) -> CallResult:
    return RESULT


async def _tainting(ctx: CallContext) -> CallResult:
    ctx.record.content = _Signals()
    return RESULT


async def measure(handler: Any, route: Route | None, calls: int) -> list[float]:
    decision = Decision(effect="allow", reasons=(), rule_ids=(), obligations=(), policy_version="v")
    times = []
    for _ in range(calls):
        ctx = CallContext(request_id="r", jsonrpc_id=1, protocol_version="2026-07-28", tool_name="s.t", arguments={},
                          started_ns=0, principal=BOT, route=route, decision=decision, record=CallRecord())
        start = time.perf_counter_ns()
        await handler(ctx)
        times.append((time.perf_counter_ns() - start) / 1e3)
    return times


async def main(calls: int) -> None:
    config = GovernanceConfig(toxic_flow={"window_s": 1.0})  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStateStore.open(Path(tmp) / "counters.sqlite3")
        try:
            check = govern.make_check(config, store, time.time, NullHooks(), "production")
            hook = govern.make_hook(config, store, time.time)
            bare = await measure(_terminal, _route(False), calls)
            rows = [("non-egress tool", _route(False), _terminal), ("egress tool, clean session", _route(True),
                                                                      _terminal),
                    ("non-egress tool, tainting result", _route(False), _tainting)]
            base = statistics.median(bare)
            print(f"bare handler p50 {base:.2f} µs")
            for name, route, terminal in rows:
                times = await measure(compose([check, hook], terminal), route, calls)
                p50, p99 = statistics.median(times), statistics.quantiles(times, n=100)[98]
                print(f"{name:36s} added p50 {p50 - base:6.2f} µs   p99 {p99 - base:6.2f} µs")
        finally:
            store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20_000)
    anyio.run(main, parser.parse_args().calls)
