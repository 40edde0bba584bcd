"""Cluster load bench: throughput and CPU per call with 1, 2 and 3 replicas and with ``serve --workers 2``.

Needs PostgreSQL and Redis running; ``--dry-run`` prints the plan without starting anything.

    python -m bench.cluster --pg-url postgresql://postgres@127.0.0.1:5432/test --redis-url redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

SETUPS = {"1-replica": (1, 1), "2-replicas": (2, 1), "3-replicas": (3, 1), "workers-2": (1, 2)}


@dataclass(frozen=True, slots=True)
class Plan:
    setups: tuple[str, ...]
    calls: int
    concurrency: int
    pg_url: str
    redis_url: str
    dry_run: bool


def parse(argv: list[str]) -> Plan:
    parser = argparse.ArgumentParser(prog="bench.cluster", description=__doc__)
    parser.add_argument("--setup", action="append", choices=sorted(SETUPS), help="Repeatable; default: all.")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--pg-url", default=os.environ.get("PORTCULLIS_TEST_PG_DSN",
                                                           "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--redis-url", default=os.environ.get("PORTCULLIS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--dry-run", action="store_true", help="Print the plan; start nothing.")
    args = parser.parse_args(argv)
    if args.calls < 1 or args.concurrency < 1:
        parser.error("--calls and --concurrency must be positive")
    return Plan(tuple(args.setup or SETUPS), args.calls, args.concurrency, args.pg_url, args.redis_url, args.dry_run)


def _cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of ``pids`` and their children (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        for task in [pid, *map(int, Path(f"/proc/{pid}/task/{pid}/children").read_text().split())]:
            fields = Path(f"/proc/{task}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


async def _load(gateways: list[object], calls: int, concurrency: int) -> int:
    queue = iter(range(calls))
    done = 0

    async def worker(gateway: object) -> None:
        nonlocal done
        async with gateway.client() as client:  # type: ignore[attr-defined]
            for i in queue:
                await client.call_tool("billing.get_invoice", {"invoice_id": f"INV-100{i % 3 + 1}"})
                done += 1
    await asyncio.gather(*(worker(gateways[i % len(gateways)]) for i in range(concurrency)))
    return done


def run_setup(name: str, plan: Plan, schema_url: str, prefix: str) -> dict[str, float | str]:
    from tests.cluster.replicas import cluster_deployment, replicas, start_supervisor

    count, workers = SETUPS[name]
    with tempfile.TemporaryDirectory() as tmp:
        cluster = cluster_deployment(Path(tmp) / "deployment", schema_url, plan.redis_url, prefix)
        if workers > 1:
            gateway = start_supervisor(cluster, workers)
            gateway.wait_ready()
            gateways, stop = [gateway], gateway.stop
        else:
            context = replicas(cluster, count)
            gateways, stop = context.__enter__(), lambda: context.__exit__(None, None, None)
        try:
            pids = [g.proc.pid for g in gateways]  # type: ignore[attr-defined]
            cpu0, t0 = _cpu_s(pids), time.perf_counter()
            done = asyncio.run(_load(gateways, plan.calls, plan.concurrency))
            elapsed, cpu = time.perf_counter() - t0, _cpu_s(pids) - cpu0
        finally:
            stop()
    return {"setup": name, "calls": done, "calls_per_s": done / elapsed, "cpu_ms_per_call": 1000 * cpu / max(done, 1)}


def main(argv: list[str]) -> int:
    plan = parse(argv)
    if plan.dry_run:
        print(json.dumps({"plan": asdict(plan)}, indent=2))
        return 0
    import secrets

    import psycopg

    for name in plan.setups:
        schema = "bench_" + secrets.token_hex(6)
        with psycopg.connect(plan.pg_url, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        try:
            from tests.cluster.conftest import pg_url_for

            print(json.dumps(run_setup(name, plan, pg_url_for(schema), f"b{secrets.token_hex(6)}:")), flush=True)
        finally:
            with psycopg.connect(plan.pg_url, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
