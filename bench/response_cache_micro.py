"""What the response cache stage costs per call, in process, on a 4 KB result.

The real cache stage (:mod:`portcullis.pipeline.stages.cache`) over the real in-process store, with
a terminal that returns a prepared 4 KB result at once (so the figure is the stage's own work, not
an upstream's). Three cases, same run:

* ``no cache``: a tool without ``cache`` in its manifest (what every other tool pays: one stage call);
* ``miss``: key, lookup, forward, encode and store (a new argument each call);
* ``hit``: key, lookup and decode of the stored answer (the forward is skipped).

Reported: p50 / p99 per call in µs. A hit saves the whole forward (an upstream round trip: see
BENCHMARKS.md for the direct-call figures); a miss adds the stated cost to it.

Run: ``.venv/bin/python -m bench.response_cache_micro`` (``--calls 2000`` for a short run).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import anyio

from portcullis.catalog import Route
from portcullis.config.loader import LoadedManifest
from portcullis.config.model import ToolManifest
from portcullis.identity.principal import Principal
from portcullis.pipeline.context import CallContext, CallRecord
from portcullis.pipeline.stages.cache import make_stage
from portcullis.policy.decision import Decision, Obligation
from portcullis.state.response_cache import MemoryResponseCache

RESULT = {"content": [{"type": "text", "text": "x" * 4000}], "isError": False}


def _route(cached: bool) -> Route:
    manifest = ToolManifest.model_validate({
        "name": "get_invoice", "service": "billing", "owner": "t@example.com", "description": "Invoice.",
        "risk": "low", "classification": {"input": "Internal", "output": "Internal"},
        "annotations": {"readOnlyHint": True}, "input_schema": {"type": "object"},
        "pin": "sha256:" + "a" * 64, **({"cache": {"ttl_s": 3600}} if cached else {})})
    loaded = LoadedManifest(Path("/x.yml"), "billing", manifest, "billing.get_invoice")
    return Route("billing.get_invoice", "billing", "get_invoice", loaded, None, {}, None)  # type: ignore[arg-type]


async def measure(case: str, calls: int) -> list[float]:
    stage = make_stage(MemoryResponseCache(max_entries=100_000, max_bytes=1 << 30), time.time,
                       ("Public", "Internal"))
    route = _route(case != "no cache")
    principal = Principal(client_id="console", auth_method="bearer", issuer="https://idp.example",
                          agent_id="bot", tenant="acme")
    decision = Decision(effect="allow", policy_version="v1", obligations=(Obligation(kind="audit"),))

    async def terminal(ctx: CallContext) -> dict[str, Any]:
        return dict(RESULT)

    times = []
    for i in range(calls):
        args = {"invoice_id": f"INV-{i if case == 'miss' else 1}", "currency": "EUR"}
        ctx = CallContext(request_id="r", jsonrpc_id=1, protocol_version="2026-07-28",
                          tool_name="billing.get_invoice", arguments=args, started_ns=0, principal=principal,
                          route=route, decision=decision, record=CallRecord())
        start = time.perf_counter_ns()
        await stage(ctx, terminal)
        times.append((time.perf_counter_ns() - start) / 1000)
    return times[calls // 10:]  # the first tenth warms up (and, for hits, stores the one entry)


async def main(calls: int) -> None:
    for case in ("no cache", "miss", "hit"):
        times = sorted(await measure(case, calls))
        p50, p99 = statistics.median(times), times[int(len(times) * 0.99)]
        print(f"{case:>9}: p50 {p50:7.2f} µs   p99 {p99:7.2f} µs   (4 KB result, {len(times)} calls)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    anyio.run(main, parser.parse_args().calls)
