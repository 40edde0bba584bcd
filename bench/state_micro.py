"""What limits cost per call, in process: the in-memory store against the persistent embedded default.

:func:`portcullis.policy.limits.check_limits` with the demo's two kinds of rule (a call count and
a running total, each keyed per agent) decides one call against :class:`InMemoryStateStore`
(nothing written) and :class:`SqliteStateStore` (each counted call written through to a SQLite
WAL before it counts), same rules, same principals, same run. Reported: p50 / p99 per call and
the difference, which is what persistence adds to every limited call.

Run: ``.venv/bin/python -m bench.state_micro`` (``--calls 2000`` for a short run).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from portcullis.identity.principal import Principal
from portcullis.policy.limits import LimitRule, check_limits
from portcullis.state import InMemoryStateStore, SqliteStateStore

RULES = [
    LimitRule.model_validate({"id": "calls", "tools": ["billing.*"], "per": ["agent"], "window_s": 86_400,
                              "max_calls": 10**9}),
    LimitRule.model_validate({"id": "eur", "tools": ["billing.process_refund"], "per": ["agent"],
                              "window_s": 86_400, "max_total": 10**15, "amount_pointer": "/amount"}),
]
AGENTS = [Principal(client_id="console", auth_method="bearer", issuer="https://idp.example", agent_id=f"bot-{n}")
          for n in range(50)]


async def measure(store: Any, calls: int) -> list[float]:
    times = []
    now = 1_700_000_000.0
    for i in range(calls):
        now += 0.05
        start = time.perf_counter_ns()
        outcome = await check_limits(RULES, store, tool="billing.process_refund", principal=AGENTS[i % len(AGENTS)],
                                     arguments={"amount": 12.5, "currency": "EUR"}, now=now)
        times.append((time.perf_counter_ns() - start) / 1000)
        if not outcome.allowed:
            raise SystemExit(f"unexpected denial: {outcome}")
    return times


def summary(times: list[float]) -> tuple[float, float]:
    ordered = sorted(times)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.99)]


async def main(calls: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = SqliteStateStore.open(Path(tmp) / "counters.sqlite3")
        memory = InMemoryStateStore()
        await measure(memory, 500)  # warm-up
        await measure(sqlite, 500)
        results = {}
        for name, store in (("in-memory", memory), ("sqlite", sqlite), ("in-memory again", InMemoryStateStore())):
            results[name] = summary(await measure(store, calls))
        sqlite.close()
    print(f"check_limits, 2 rules, {calls} calls, µs per call")
    for name, (p50, p99) in results.items():
        print(f"  {name:16} p50 {p50:7.1f}  p99 {p99:7.1f}")
    print(f"  persistence adds p50 {results['sqlite'][0] - results['in-memory'][0]:+.1f} µs")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    anyio.run(main, parser.parse_args().calls)
