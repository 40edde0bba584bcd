"""What the tamper-evident audit trail costs, in process (no network, no HTTP).

1. **Per-call overhead**: the gateway's real audit stage (decision record write-ahead, then the
   outcome record) around a forwarder that answers at once, against that forwarder called
   directly, in the same run. The record is the demo's ``billing.process_refund`` call with its
   real policy decision, principal and arguments, on a fresh SQLite store, for each durability.
   Target (issue 5): the audit adds at most 0.2 ms per call at p50.
2. **Append throughput**: records/s through :class:`AuditWriter` with the chain and group
   commit, 64 concurrent writers, for each durability; the chain is verified afterwards.
   Rows: no checkpointer; checkpoints every 1,000 records or 10 s (the cadence before issue 11);
   every 1,000 records or 1 s after any record (the default since), its window task running.
3. **One checkpoint**: signing and storing one (what a record arriving after a quiet second
   pays, and a busy gateway pays once a second), and the C2SP note for the SIEM exporters.

Run: ``.venv/bin/python -m bench.audit_micro`` (``--calls 2000`` for a short run).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from portcullis.audit.checkpoint import Checkpointer, CheckpointPolicy
from portcullis.audit.keys import AuditKeys
from portcullis.audit.note import checkpoint_export
from portcullis.audit.store import SqliteAuditStore
from portcullis.audit.verify import verify_store
from portcullis.audit.writer import AuditWriter
from portcullis.catalog import Catalog
from portcullis.cli.main import demo_deployment
from portcullis.config.loader import load_deployment
from portcullis.identity.principal import Principal
from portcullis.pipeline.auditing import CallAuditor
from portcullis.pipeline.context import CallContext, CallRecord, CallResult
from portcullis.pipeline.hooks import NullHooks
from portcullis.pipeline.stages import audit
from portcullis.policy.engine import PolicyEngine

TARGET_P50_MS = 0.2
TOOL = "billing.process_refund"
ARGUMENTS = {"invoice_id": "INV-1001", "amount": 80, "currency": "USD", "reason": "duplicate charge"}
RESULT: CallResult = {"content": [{"type": "text", "text": "refund RF-1 issued for 80 USD"}],
                      "structuredContent": {"refund_id": "RF-1", "amount": 80, "currency": "USD"}, "isError": False}
PRINCIPAL = Principal(client_id="agent-console", auth_method="bearer", issuer="https://idp.example",
                      user_id="alice", agent_id="billing-bot", roles=("finance",), scopes=("mcp:tools",),
                      tenant="acme")


def route_and_context() -> tuple[Any, CallContext, PolicyEngine]:
    deployment = load_deployment(demo_deployment())
    loaded = next(m for m in deployment.manifests if m.exposed_name == TOOL)
    route = Catalog(deployment)._route(loaded.manifest.service, loaded)  # served as the gateway would
    engine = PolicyEngine.from_deployment(deployment, environment="production")
    now = datetime.now(UTC)
    decision = engine.decide(TOOL, PRINCIPAL, ARGUMENTS, now=now)
    ctx = CallContext(request_id="0" * 32, jsonrpc_id=1, protocol_version="2026-07-28", tool_name=TOOL,
                      arguments=ARGUMENTS, started_ns=time.perf_counter_ns(), principal=PRINCIPAL, route=route,
                      decision=decision)
    return route, ctx, engine


async def answer(ctx: CallContext) -> CallResult:
    return RESULT


def pct(samples: list[int], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e3


async def per_call(durability: str, calls: int, warmup: int) -> dict[str, float]:
    _, ctx, _ = route_and_context()
    with tempfile.TemporaryDirectory() as tmp:
        keys = AuditKeys.load_or_create(Path(tmp))
        store = SqliteAuditStore.open_sync(Path(tmp) / "audit.sqlite3", durability=durability)  # type: ignore[arg-type]
        writer = AuditWriter(store, clock=time.time)
        stage = audit.make_stage(CallAuditor(writer, audit_key=keys.hmac_key, environment="production",
                                             hooks=NullHooks()))
        direct: list[int] = []
        audited: list[int] = []
        async with writer:
            for i in range(warmup + calls):  # interleaved, so both see the same machine state
                call_ctx = ctx.evolve(request_id=f"{i:032x}", record=CallRecord())  # each call's own record
                start = time.perf_counter_ns()
                await answer(call_ctx)
                middle = time.perf_counter_ns()
                await stage(call_ctx, answer)
                end = time.perf_counter_ns()
                if i >= warmup:
                    direct.append(middle - start)
                    audited.append(end - middle)
        report = await verify_store(store, keys.signing_key.public_key())
        await store.aclose()
    assert report.ok and report.records_checked == 2 * (warmup + calls), report
    return {"direct_p50_us": pct(direct, 0.5), "audited_p50_us": pct(audited, 0.5),
            "audited_p99_us": pct(audited, 0.99), "added_p50_ms": (pct(audited, 0.5) - pct(direct, 0.5)) / 1e3}


async def throughput(durability: str, records: int, concurrency: int,
                     every_s: float | None = None) -> dict[str, float]:
    fields = {"tool": {"name": TOOL}, "principal": PRINCIPAL.to_claims(), "arguments": ARGUMENTS,
              "decision": {"effect": "allow", "rule_ids": ["process_refund/allowed_callers"], "policy_version": "v1"}}
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteAuditStore.open_sync(Path(tmp) / "audit.sqlite3", durability=durability)  # type: ignore[arg-type]
        key = Ed25519PrivateKey.generate()
        checkpointer = None if every_s is None else Checkpointer(
            store, key, clock=time.time, policy=CheckpointPolicy(every_records=1000, every_s=every_s))
        writer = AuditWriter(store, clock=time.time, checkpointer=checkpointer)

        async def worker(w: int) -> None:
            for i in range(records // concurrency):
                await writer.record("decision", f"req-{w}-{i}", fields)

        async with writer, anyio.create_task_group() as window:
            if checkpointer is not None:
                window.start_soon(checkpointer.run)
            start = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for w in range(concurrency):
                    tg.start_soon(worker, w)
            elapsed = time.perf_counter() - start
            window.cancel_scope.cancel()
        written = records // concurrency * concurrency
        report = await verify_store(store, key.public_key())
        checkpoints = len(await store.checkpoints())
        await store.aclose()
    assert report.ok and report.records_checked == written, report
    return {"records": written, "records_per_s": written / elapsed, "checkpoints": checkpoints}


async def checkpoint_cost(durability: str, n: int = 500) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteAuditStore.open_sync(Path(tmp) / "audit.sqlite3", durability=durability)  # type: ignore[arg-type]
        key = Ed25519PrivateKey.generate()
        checkpointer = Checkpointer(store, key, clock=time.time)
        writer = AuditWriter(store, clock=time.time)
        samples: list[int] = []
        notes: list[int] = []
        async with writer:
            for i in range(n):
                record = await writer.record("decision", f"r{i}", {"n": i})
                start = time.perf_counter_ns()
                checkpoint = await checkpointer.after_append((record.index, record.hash), force=True)
                middle = time.perf_counter_ns()
                assert checkpoint is not None
                checkpoint_export(key, checkpoint)
                samples.append(middle - start)
                notes.append(time.perf_counter_ns() - middle)
        await store.aclose()
    return {"p50_us": pct(samples, 0.5), "p99_us": pct(samples, 0.99), "note_p50_us": pct(notes, 0.5)}


async def main_async(calls: int, records: int) -> None:
    print(f"machine: {os.cpu_count()} CPUs; {calls} calls per durability after {calls // 5} warm-up calls")
    print(f"{'durability':<11} {'direct p50 us':>14} {'audited p50 us':>15} {'p99 us':>9} {'added p50 ms':>13}")
    figures = {}
    for durability in ("process", "power"):
        f = figures[durability] = await per_call(durability, calls, calls // 5)
        print(f"{durability:<11} {f['direct_p50_us']:>14.1f} {f['audited_p50_us']:>15.1f} {f['audited_p99_us']:>9.1f}"
              f" {f['added_p50_ms']:>13.3f}")
    added = figures["process"]["added_p50_ms"]
    print(f"\naudit overhead p50 (ms), default durability 'process': {added:.3f}  (target <= {TARGET_P50_MS:.3f})  "
          f"{'PASS' if added <= TARGET_P50_MS else 'FAIL'}")
    print(f"\nappend throughput, {records} records, 64 concurrent writers, chain verified afterwards:")
    cadences: list[tuple[str, float | None]] = [("no checkpoints", None), ("1000 rec / 10 s", 10.0),
                                                ("1000 rec / 1 s", 1.0)]
    for durability in ("process", "power"):
        for label, every_s in cadences:
            t = await throughput(durability, records, 64, every_s)
            print(f"{durability:<11} {label:<16} {t['records_per_s']:>10,.0f} records/s  "
                  f"({t['checkpoints']:.0f} checkpoints)")
    print("\none checkpoint (sign + store), and its C2SP note for the SIEM exporters:")
    for durability in ("process", "power"):
        c = await checkpoint_cost(durability)
        print(f"{durability:<11} sign+store p50 {c['p50_us']:>8.1f} us  p99 {c['p99_us']:>8.1f} us   "
              f"note p50 {c['note_p50_us']:>6.1f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--records", type=int, default=20_000)
    args = parser.parse_args()
    anyio.run(main_async, args.calls, args.records)


if __name__ == "__main__":
    main()
